"""Qwen2-Audio and Audio Flamingo 3 behind the AudioLLM protocol: layout, processor parity, mask parity.

Mask parity: a masked forward / decode through the hooks, the fold and the prune equals the same model with
the masked heads' ``o_proj`` input columns zeroed by hand, with eager and sdpa attention, cached and uncached
greedy decoding and beam search; AF3's LLM has grouped-query attention (4 query heads over 2 KV heads).
"""

from __future__ import annotations

import pytest
import torch

from ahamask.masking.fold import fold_head_mask
from ahamask.masking.hf_layout import decoder_layers
from ahamask.masking.hooks import head_mask
from ahamask.masking.mask import MaskShapeError
from ahamask.masking.prune import prune_heads
from ahamask.models.backbone import AudioLLM
from ahamask.models.hf_audio_llm import audio_token_counts

from ..hf_audio_helpers import batch_of, decode, gates, load_model, make_bundle, tone, zeroed_by_hand

ARCHS = ["qwen2_audio", "audio_flamingo3"]
# Layer 0: one head of a KV group (AF3: group {0, 1}); layer 1: a whole KV group (AF3: {2, 3}).
DROPPED = {0: [1], 1: [2, 3]}


@pytest.fixture(scope="module", params=ARCHS)
def bundle(request, tmp_path_factory):
    return make_bundle(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def model(bundle):
    return load_model(bundle)[0]


@pytest.fixture(scope="module")
def batch():
    return batch_of(tone(1.3, 120.0, seed=1), tone(2.1, 230.0, seed=2))


def _finite_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert torch.equal(torch.isfinite(a), torch.isfinite(b))
    keep = torch.isfinite(a)
    return float((a[keep] - b[keep]).abs().max())


def test_protocol_layout_and_shared_weights(model):
    assert isinstance(model, AudioLLM)
    text = model.model.config.text_config
    assert model.geometry.n_layers == text.num_hidden_layers == 2
    assert model.geometry.n_heads == text.num_attention_heads == 4
    assert model.geometry.n_kv_heads == text.num_key_value_heads
    assert model.geometry.mask_size == 2 * 5
    # decoder_layers finds the LLM's layers, also in the composite model (the encoder's have out_proj).
    assert decoder_layers(model.decoder) is model.model.model.language_model.layers
    assert decoder_layers(model.model) is model.model.model.language_model.layers
    shared = {p.data_ptr() for p in model.model.parameters()}
    assert all(p.data_ptr() in shared for p in model.decoder.parameters())
    assert not any(p.requires_grad for p in model.model.parameters())
    assert model.frozen_front_end and not model.training


def test_processor_parity(model):
    """ids, audio positions and logits equal what the transformers processor + composite model give."""
    wave = tone(1.7, 180.0, seed=3)
    prompt = model.prompt_for("What is the gender of the speaker?")
    proc = model.processor(text=[prompt], audio=[wave.numpy()], return_tensors="pt", sampling_rate=16000)
    proc = {k: v for k, v in proc.items() if k != "num_audio_tokens"}
    embeds = model.encode_audio(batch_of(wave))
    inputs, attention, _, spans = model.build_inputs(embeds, [prompt])
    ids = proc["input_ids"][0]
    audio_id = model.tokenizer.convert_tokens_to_ids(model.audio_placeholder)
    start, stop = spans[0]
    assert inputs.shape[1] == len(ids) and audio_token_counts(embeds) == [int((ids == audio_id).sum())]
    assert bool((ids[start:stop] == audio_id).all()) and int((ids == audio_id).sum()) == stop - start
    with torch.no_grad():
        reference = model.model(**proc).logits
        mine = model.decoder(inputs_embeds=inputs, attention_mask=attention).logits
    diff = float((reference - mine).abs().max())
    print(f"processor parity: max abs logit diff {diff:.3g}")
    assert diff < 1e-5


def test_rows_padded_with_zeros_keep_their_counts(model, batch):
    embeds = model.encode_audio(batch)
    counts = audio_token_counts(embeds)
    assert counts[0] < counts[1] == embeds.shape[1]
    assert bool((embeds[0, counts[0] :] == 0).all()) and bool(embeds[0, : counts[0]].ne(0).any(-1).all())
    padded = torch.nn.functional.pad(embeds, (0, 0, 0, 7))  # stacking batches pads further: counts hold
    assert audio_token_counts(padded) == counts
    alone = model.encode_audio(batch_of(batch["raw_wav"][0, : int((~batch["padding_mask"][0]).sum())]))
    assert torch.allclose(alone[0], embeds[0, : counts[0]], atol=1e-6)


def test_batched_decode_equals_each_row_alone(model, batch):
    together = model.generate(batch, {"num_beams": 1, "max_new_tokens": 5})
    for i in range(2):
        n = int((~batch["padding_mask"][i]).sum())
        alone = batch_of(batch["raw_wav"][i, :n], texts=[batch["text"][i]])
        assert model.generate(alone, {"num_beams": 1, "max_new_tokens": 5}) == [together[i]]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_masked_forward_equals_hand_zeroed_columns(bundle, batch, attn):
    model, _ = load_model(bundle, attn_implementation=attn)
    mask, head_dim = gates(model.geometry, DROPPED), model.geometry.head_dim
    embeds = model.encode_audio(batch)
    prompts = [model.prompt_for("")] * 2
    with torch.no_grad():
        plain = model(batch, prompts=prompts, speech_embeds=embeds)["logits"]
        with zeroed_by_hand(model.decoder, DROPPED, head_dim):
            hand = model(batch, prompts=prompts, speech_embeds=embeds)["logits"]
        with head_mask(model.decoder, mask, logits=False):
            hooked = model(batch, prompts=prompts, speech_embeds=embeds)["logits"]
        with fold_head_mask(model.decoder, mask):
            folded = model(batch, prompts=prompts, speech_embeds=embeds)["logits"]
        pruned = prune_heads(model.decoder, mask)
        inputs, attention, _, _ = model.build_inputs(embeds, prompts, batch["text"])
        pruned_logits = pruned(inputs_embeds=inputs, attention_mask=attention).logits
    diffs = [float((x - hand).abs().max()) for x in (hooked, folded, pruned_logits)]
    print(f"{model.cfg.arch} {attn}: hooks {diffs[0]:.3g} fold {diffs[1]:.3g} prune {diffs[2]:.3g}")
    assert float((plain - hand).abs().max()) > 1e-3  # the mask changes the output: the test can fail
    assert max(diffs) < 1e-5


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("num_beams,use_cache", [(1, True), (1, False), (2, True)])
def test_masked_decode_equals_hand_zeroed_columns(bundle, batch, attn, num_beams, use_cache):
    model, _ = load_model(bundle, attn_implementation=attn)
    mask = gates(model.geometry, DROPPED)
    with zeroed_by_hand(model.decoder, DROPPED, model.geometry.head_dim):
        hand_seq, hand_scores = decode(model, batch, num_beams=num_beams, use_cache=use_cache)
    with head_mask(model.decoder, mask, logits=False):
        hook_seq, hook_scores = decode(model, batch, num_beams=num_beams, use_cache=use_cache)
    pruned = prune_heads(model.decoder, mask)
    prune_seq, prune_scores = decode(model, batch, num_beams=num_beams, use_cache=use_cache, decoder=pruned)
    assert torch.equal(hook_seq, hand_seq) and torch.equal(prune_seq, hand_seq)
    diff = max(_finite_diff(hook_scores, hand_scores), _finite_diff(prune_scores, hand_scores))
    print(f"{model.cfg.arch} {attn} beams={num_beams} cache={use_cache}: max abs score diff {diff:.3g}")
    assert diff < 1e-4


def test_mask_of_another_geometry_is_one_line_error(model):
    salmonn_13b = torch.ones(40 * 41)
    with pytest.raises(MaskShapeError) as err:
        with head_mask(model.decoder, salmonn_13b, logits=False):
            pass
    assert "\n" not in str(err.value) and "1640" in str(err.value)
    with pytest.raises(MaskShapeError):
        with fold_head_mask(model.decoder, salmonn_13b):
            pass


def test_speech_cache_key_follows_the_front_end(model):
    key = model.speech_cache_key()
    assert len(key) == 64 and model.speech_cache_key() == key
    weight = model.model.model.multi_modal_projector.state_dict()[
        next(iter(model.model.model.multi_modal_projector.state_dict()))
    ]
    with torch.no_grad():
        weight.view(-1)[0] += 1.0
    model._speech_key = None
    try:
        assert model.speech_cache_key() != key
    finally:
        with torch.no_grad():
            weight.view(-1)[0] -= 1.0
        model._speech_key = None


def test_training_loss_reaches_the_target_and_end_token(model, batch):
    out = model(batch, prompts=None)
    labels = out["labels"]
    end_id = model.tokenizer.convert_tokens_to_ids(model.stop_tokens[0])
    for i, text in enumerate(batch["text"]):
        target = labels[i][labels[i] != -100].tolist()
        assert target == model.tokenizer(text, add_special_tokens=False)["input_ids"] + [end_id]
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad is False
