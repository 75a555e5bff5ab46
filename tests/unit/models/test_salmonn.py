"""The SALMONN model: official key names, checkpoint loading, tokenisation, sequences, decoding."""

from __future__ import annotations

import dataclasses

import pytest
import sentencepiece as spm
import torch

from ahamask.masking.apply import decoding_mask
from ahamask.masking.hooks import head_mask
from ahamask.masking.value import Mask
from ahamask.models.checkpoint import CheckpointKeyError, load_salmonn_checkpoint
from ahamask.models.prompts import split_prompt, wrap_instruction
from ahamask.models.qformer import official_name
from ahamask.models.salmonn import SALMONN


def official_names(n_llm_layers: int = 2, n_qformer_layers: int = 2, with_beats: bool = False) -> set[str]:
    """The key set of an official SALMONN checkpoint, written out from the official naming scheme."""
    names = {
        "speech_query_tokens",
        "ln_speech.weight",
        "ln_speech.bias",
        "speech_llama_proj.weight",
        "speech_llama_proj.bias",
        "speech_Qformer.bert.embeddings.LayerNorm.weight",
        "speech_Qformer.bert.embeddings.LayerNorm.bias",
    }
    if with_beats:
        names |= {"ln_audio.weight", "ln_audio.bias"}
    for i in range(n_qformer_layers):
        p = f"speech_Qformer.bert.encoder.layer.{i}."
        for block in ("attention", "crossattention"):
            for lin in ("self.query", "self.key", "self.value", "output.dense", "output.LayerNorm"):
                names |= {f"{p}{block}.{lin}.weight", f"{p}{block}.{lin}.bias"}
        for lin in ("intermediate_query.dense", "output_query.dense", "output_query.LayerNorm"):
            names |= {f"{p}{lin}.weight", f"{p}{lin}.bias"}
    for i in range(n_llm_layers):
        for proj in ("q_proj", "v_proj"):
            for ab in ("lora_A", "lora_B"):
                names.add(
                    f"llama_model.base_model.model.model.layers.{i}.self_attn.{proj}.{ab}.default.weight"
                )
    return names


def test_key_set_matches_the_official_naming_scheme(shared_tiny_model):
    assert set(shared_tiny_model.official_trainable_names()) == official_names()
    assert "speech_Qformer.bert.encoder.layer.0.crossattention.self.key.weight" in official_names()


def test_checkpoint_loads_every_tensor_and_skips_known_buffers(tiny_bundle, shared_tiny_model):
    state = torch.load(tiny_bundle / "salmonn.pth", weights_only=True)["model"]
    report = load_salmonn_checkpoint(shared_tiny_model, tiny_bundle / "salmonn.pth")
    assert set(report["loaded"]) == official_names()
    assert report["skipped"] == sorted(
        ["speech_Qformer.bert.embeddings.position_ids"]
        + [f"llama_model.base_model.model.model.layers.{i}.self_attn.rotary_emb.inv_freq" for i in range(2)]
    )
    params = {official_name(n): p for n, p in shared_tiny_model.named_parameters()}
    for key in report["loaded"]:
        assert torch.equal(params[key].detach(), state[key]), key
    # LoRA B is non-zero in the bundle, so LoRA really changes the LLM
    assert any(state[k].abs().sum() > 0 for k in state if "lora_B" in k)


def _ckpt_variant(tmp_path, tiny_bundle, edit):
    state = dict(torch.load(tiny_bundle / "salmonn.pth", weights_only=True)["model"])
    edit(state)
    path = tmp_path / "variant.pth"
    torch.save({"model": state}, path)
    return path


def test_checkpoint_with_unexpected_keys_is_refused(tmp_path, tiny_bundle, shared_tiny_model):
    def add(state):
        state["speech_Qformer.cls.predictions.bias"] = torch.zeros(3)

    path = _ckpt_variant(tmp_path, tiny_bundle, add)
    with pytest.raises(
        CheckpointKeyError, match=r"variant.pth: .*1 unexpected keys: speech_Qformer.cls.predictions.bias"
    ):
        load_salmonn_checkpoint(shared_tiny_model, path)


def test_checkpoint_with_missing_keys_is_refused(tmp_path, tiny_bundle, shared_tiny_model):
    def drop(state):
        del state["speech_llama_proj.bias"]

    path = _ckpt_variant(tmp_path, tiny_bundle, drop)
    with pytest.raises(CheckpointKeyError, match=r"1 missing keys: speech_llama_proj.bias"):
        load_salmonn_checkpoint(shared_tiny_model, path)


def test_checkpoint_with_wrong_shapes_is_refused(tmp_path, tiny_bundle, shared_tiny_model):
    def reshape(state):
        state["ln_speech.weight"] = torch.ones(7)

    path = _ckpt_variant(tmp_path, tiny_bundle, reshape)
    with pytest.raises(CheckpointKeyError, match=r"ln_speech.weight: file \(7,\) vs model \(32,\)"):
        load_salmonn_checkpoint(shared_tiny_model, path)


def test_missing_paths_name_the_config_key(tiny_decode_cfg, tmp_path):
    cfg = dataclasses.replace(tiny_decode_cfg.model, ckpt=str(tmp_path / "none.pth"))
    with pytest.raises(FileNotFoundError, match=r"model.ckpt: no such checkpoint file: .*none.pth"):
        SALMONN.from_config(cfg)
    cfg = dataclasses.replace(tiny_decode_cfg.model, llama_path=str(tmp_path / "nollama"))
    with pytest.raises(FileNotFoundError, match=r"model.llama_path: no such directory"):
        SALMONN.from_config(cfg)


def _slow_tokenizer_ids(sp: spm.SentencePieceProcessor, text: str) -> list[int]:
    """transformers 4.28's slow LlamaTokenizer without specials: split at '</s>', sentencepiece each chunk."""
    ids: list[int] = []
    chunks = text.split("</s>")
    for i, chunk in enumerate(chunks):
        if chunk:
            ids += sp.encode(chunk)
        if i < len(chunks) - 1:
            ids.append(sp.eos_id())
    return ids


@pytest.mark.parametrize("instruction", ["", "What is the gender of the speaker?", "Recognize the speech."])
def test_prompt_pieces_have_the_official_ids(shared_tiny_model, tiny_bundle, instruction):
    sp = spm.SentencePieceProcessor(model_file=str(tiny_bundle / "llama" / "tokenizer.model"))
    before, after = split_prompt(wrap_instruction(instruction, "USER: {}\nASSISTANT:"))
    assert before == "USER: <Speech>"
    assert after == ("</Speech> " + instruction + "\nASSISTANT:" if instruction else "</Speech> \nASSISTANT:")
    for piece in (before, after):
        assert shared_tiny_model._encode_cached(piece) == _slow_tokenizer_ids(sp, piece)
    pieces = sp.id_to_piece(shared_tiny_model._encode_cached(after))
    assert pieces[0].startswith("▁")  # the dummy-prefix space that is not in the text
    assert "<0x0A>" in pieces  # the newline through byte fallback, as in LLaMA
    if not instruction:
        assert pieces[pieces.index("<0x0A>") - 1] == "▁"  # the space before \n is its own piece


@pytest.mark.parametrize("target", ["Male", "Female", "he hoped there would be stew for dinner"])
def test_targets_end_with_eos_id(shared_tiny_model, tiny_bundle, target):
    sp = spm.SentencePieceProcessor(model_file=str(tiny_bundle / "llama" / "tokenizer.model"))
    ids = shared_tiny_model._encode_cached(target + "</s>")
    assert ids == _slow_tokenizer_ids(sp, target + "</s>")
    assert ids[-1] == 2 and sp.id_to_piece(ids[0]).startswith("▁")


def test_tokenizer_is_right_padded_with_a_pad_token(shared_tiny_model):
    tok = shared_tiny_model.llama_tokenizer
    assert tok.padding_side == "right" and tok.pad_token == "[PAD]"
    assert (tok.bos_token_id, tok.eos_token_id) == (1, 2)
    assert shared_tiny_model.llama_model.get_input_embeddings().weight.shape[0] == len(tok)


def test_pad_row_is_the_mean_row_at_every_load(tiny_decode_cfg):
    heads = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = SALMONN.from_config(tiny_decode_cfg.model)
        head = model.llama_model.get_output_embeddings().weight.detach()
        assert torch.allclose(head[-1], head[:-1].mean(0), atol=1e-6)
        heads.append(head[-1].clone())
    assert torch.equal(heads[0], heads[1])


def _batch(n: int, frames: int = 400, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {
        "spectrogram": torch.randn(n, 80, frames, generator=gen),
        "text": ["Male", "Female", "Male", "Female"][:n],
        "task": ["gender_recognition"] * n,
        "Q": [""] * n,
    }


def test_sequence_layout_and_labels(shared_tiny_model):
    model = shared_tiny_model
    speech = torch.randn(2, 11, 64)
    prompts = [model.prompt_for(""), model.prompt_for("What is the gender of the speaker?")]
    embeds, attention, labels = model.build_inputs(speech, prompts, ["Male", "Female"])
    before = model._encode_cached("USER: <Speech>")
    for i, prompt in enumerate(prompts):
        after = model._encode_cached(split_prompt(prompt)[1])
        target = model._encode_cached(["Male", "Female"][i] + "</s>")
        length = 1 + len(before) + 11 + len(after) + len(target)
        assert attention[i].sum() == length and attention[i, :length].all()  # right padding
        assert torch.equal(embeds[i, 0], model.embed_tokens(torch.tensor([1]))[0])  # BOS first
        assert torch.equal(embeds[i, 1 + len(before) : 1 + len(before) + 11], speech[i])
        assert labels[i][labels[i] != -100].tolist() == target
        assert (labels[i, : length - len(target)] == -100).all()


def test_forward_loss_is_token_mean_cross_entropy(shared_tiny_model):
    model = shared_tiny_model
    prompts = [model.prompt_for("")] * 2
    out = model(_batch(2), prompts=prompts)
    logits, labels = out["logits"][:, :-1], out["labels"][:, 1:]
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    assert torch.allclose(out["loss"], expected, atol=1e-6)


def test_window_count_of_a_30_second_input(shared_tiny_model):
    # 1500 encoder frames in windows of 17 with stride 17: 88 windows (the last 4 frames dropped).
    model = shared_tiny_model
    assert (model.window, model.stride) == (17, 17)
    with torch.no_grad():
        out = model.encode_auditory_features(torch.randn(1, 1500, 32))
    assert out.shape == (1, 88, 64)


def test_generation_does_not_depend_on_batch_composition(shared_tiny_model):
    model = shared_tiny_model
    batch = _batch(3)
    prompts = [
        model.prompt_for(""),
        model.prompt_for("What is the gender of the speaker?"),
        model.prompt_for("x"),
    ]
    cfg = {"max_new_tokens": 6, "num_beams": 1, "do_sample": False}
    together = model.generate(batch, cfg, prompts=prompts)
    for i in range(3):
        single = {k: v[i : i + 1] for k, v in batch.items()}
        assert model.generate(single, cfg, prompts=prompts[i : i + 1]) == [together[i]]


def test_generate_with_mask_logits_equals_binary_weights(shared_tiny_model):
    model = shared_tiny_model
    batch, prompts = _batch(2), [model.prompt_for("")] * 2
    logits = torch.full((10,), 2.0)
    logits[[0, 6]] = -1.0
    binary = (logits > 0).float()
    cfg = {"max_new_tokens": 5, "num_beams": 2}
    with decoding_mask(model.decoder, Mask.from_logits(logits), "hooks"):
        from_logits = model.generate(batch, cfg, prompts)
    with head_mask(model.decoder, binary):
        assert from_logits == model.generate(batch, cfg, prompts)
