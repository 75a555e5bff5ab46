"""The mini SALMONN's config, ChatML layout, training resume and checkpoint, on a tiny stand-in.

The stand-in has what matters of the real parts: a LLaMA with grouped-query attention (4 query heads over
2 KV heads) and a ChatML tokenizer whose BOS is ``<|im_start|>`` and EOS ``<|im_end|>`` (as SmolLM2-135M-
Instruct's), and a 4-second Whisper encoder. The same ChatML checks run on the real SmolLM2 tokenizer when
``pretrained/small`` is there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ahamask.config import ConfigError
from ahamask.mini.setup import build_mini_model, load_mini_config, mini_model_config
from ahamask.mini.training import CHECKPOINT_NAME, train_connector
from ahamask.models.tiny import make_tiny_bundle

from .stand_in import chatml_llm, fake_world, fake_world_info

REPO = Path(__file__).resolve().parents[3]
REAL_LLM = REPO / "pretrained" / "small" / "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mini")
    chatml_llm(root / "llm")
    bundle = make_tiny_bundle(root / "bundle")
    shutil.copytree(bundle / "whisper", root / "whisper")
    cfg = OmegaConf.load(REPO / "configs" / "mini_salmonn.yaml")
    cfg.model.llama_path = "llm"  # relative: resolved against the root given to load_mini_config
    cfg.model.whisper_path = "whisper"
    cfg.model.qformer_hidden_size, cfg.model.qformer_num_heads = 16, 2
    cfg.model.qformer_intermediate_size, cfg.model.qformer_num_layers = 32, 1
    cfg.train.update(
        {"steps": 4, "batch_size": 2, "warmup": 1, "save_every": 1, "valid_every": 4, "valid_clips": 2}
    )
    (root / "mini.yaml").write_text(OmegaConf.to_yaml(cfg))
    fake_world(root / "world")
    return root


def test_config_resolves_paths_and_names_a_bad_key(stand_in, tmp_path):
    cfg = load_mini_config(stand_in / "mini.yaml", stand_in)
    assert cfg.model.llama_path == str((stand_in / "llm").resolve())
    assert cfg.model.end_sym == "<|im_end|>" and cfg.world_splits["train"] == 1500
    raw = OmegaConf.load(stand_in / "mini.yaml")
    raw.train.stepz = 3
    (tmp_path / "bad.yaml").write_text(OmegaConf.to_yaml(raw))
    with pytest.raises(ConfigError, match="train.stepz"):
        load_mini_config(tmp_path / "bad.yaml", stand_in)


def test_committed_config_loads_with_the_real_layout():
    cfg = load_mini_config(REPO / "configs" / "mini_salmonn.yaml", REPO)
    assert cfg.model.llama_path.endswith("pretrained/small/smollm2-135m-instruct")
    assert cfg.model.whisper_path.endswith("pretrained/small/whisper-base-4s")
    assert cfg.model.lora and cfg.model.freeze_whisper and not cfg.model.beats_path
    assert set(cfg.train.tasks) == {"asr", "gender", "rate"} and cfg.train.default_task == "asr"


def _chatml_checks(model) -> None:
    tok = model.llama_tokenizer
    assert tok.bos_token == "<|im_start|>" and tok.eos_token == "<|im_end|>"
    prompt = model.prompt_for("male or female?")
    assert prompt == "user\n<Speech><SpeechHere></Speech> male or female?<|im_end|>\n<|im_start|>assistant\n"
    speech = torch.zeros(1, 3, model.llama_model.config.hidden_size)
    _, attention, labels = model.build_inputs(speech, [prompt], ["Male"])
    target = labels[0][labels[0] != -100].tolist()
    end = tok.convert_tokens_to_ids("<|im_end|>")
    # The answer is learned up to and including <|im_end|>, which is where generation stops.
    assert target == [*tok("Male", add_special_tokens=False)["input_ids"], end]
    assert model.generation_kwargs({})["eos_token_id"] == end
    assert int(attention.sum()) == attention.shape[1]


def test_chatml_layout_on_the_stand_in(stand_in):
    cfg = load_mini_config(stand_in / "mini.yaml", stand_in)
    model = build_mini_model(cfg.model, seed=0)
    _chatml_checks(model)
    assert (model.n_layers, model.n_heads, model.mask_size) == (2, 4, 10)  # query heads, not the 2 KV heads


@pytest.mark.skipif(not REAL_LLM.is_dir(), reason="pretrained/small is absent (make small-models)")
def test_chatml_layout_on_the_real_smollm2_tokenizer():
    from ahamask.models.loading import load_tokenizer

    tok = load_tokenizer(str(REAL_LLM))
    assert tok.bos_token == "<|im_start|>" and tok.eos_token == "<|im_end|>"
    ids = tok("user\nhi<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    assert ids.count(tok.convert_tokens_to_ids("<|im_end|>")) == 1  # a special token, not its characters


def test_same_seed_same_initial_model(stand_in):
    cfg = load_mini_config(stand_in / "mini.yaml", stand_in)
    a, b = build_mini_model(cfg.model, seed=5), build_mini_model(cfg.model, seed=5)
    c = build_mini_model(cfg.model, seed=6)
    sa, sb, sc = a.trainable_state_dict(), b.trainable_state_dict(), c.trainable_state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def _train(stand_in: Path, run: Path, stop_after: int | None = None):
    cfg = load_mini_config(stand_in / "mini.yaml", stand_in)
    model = build_mini_model(cfg.model, seed=cfg.train.seed)
    return train_connector(
        model, cfg.model, cfg.train, stand_in / "world", fake_world_info(), run, False, stop_after
    )


def test_resumed_training_equals_the_straight_run(stand_in, tmp_path):
    straight = _train(stand_in, tmp_path / "straight")
    assert _train(stand_in, tmp_path / "resumed", stop_after=2) is None
    assert not (tmp_path / "resumed" / CHECKPOINT_NAME).exists()
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["step"] == 2
    resumed = _train(stand_in, tmp_path / "resumed")
    assert (straight["resumed_from"], resumed["resumed_from"]) == (0, 2)
    a = torch.load(tmp_path / "straight" / CHECKPOINT_NAME, weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / CHECKPOINT_NAME, weights_only=True)["model"]
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert (
        straight["loss_curve"] == resumed["loss_curve"] and straight["final_valid"] == resumed["final_valid"]
    )
    initial = build_mini_model(load_mini_config(stand_in / "mini.yaml", stand_in).model, seed=0)
    assert not all(torch.equal(a[k], v) for k, v in initial.trainable_state_dict().items())  # it did train
    # The export is an official-layout checkpoint: model.ckpt loads it (every trained key, no extra one).
    cfg = mini_model_config(
        load_mini_config(stand_in / "mini.yaml", stand_in).model, tmp_path / "straight" / CHECKPOINT_NAME
    )
    from ahamask.models.salmonn import SALMONN

    loaded = SALMONN.from_config(cfg).trainable_state_dict()
    assert all(torch.equal(loaded[k], a[k]) for k in a)
    assert any(k.startswith("llama_model.") and "lora_" in k for k in a)
    assert not any(k.startswith("speech_encoder.") for k in a)


COMMITTED = REPO / "checkpoints" / "mini_salmonn"


def test_committed_checkpoint_matches_its_record_and_config():
    state = torch.load(COMMITTED / "salmonn_mini.pth", weights_only=True)["model"]  # no pickle
    training = json.loads((COMMITTED / "training.json").read_text())
    provenance = json.loads((COMMITTED / "provenance.json").read_text())
    assert (COMMITTED / "mini_salmonn.yaml").read_text() == (
        REPO / "configs" / "mini_salmonn.yaml"
    ).read_text()
    assert provenance["final_valid"] == training["final_valid"]
    assert training["valid_curve"][-1] == {"step": training["steps"], **training["final_valid"]}
    assert provenance["command"].startswith("python scripts/train_mini_salmonn.py")
    assert training["steps"] == OmegaConf.load(REPO / "configs" / "mini_salmonn.yaml").train.steps
    lora = [k for k in state if "lora_" in k]
    assert len(lora) == 30 * 2 * 2  # 30 layers x (q_proj, v_proj) x (A, B)
    assert state["speech_llama_proj.weight"].shape == (576, 256)  # SmolLM2 hidden x Q-Former width
    assert not any(k.startswith("speech_encoder.") for k in state)


@pytest.mark.skipif(not REAL_LLM.is_dir(), reason="pretrained/small is absent (make small-models)")
def test_committed_checkpoint_loads_into_the_real_mini_model():
    from ahamask.models.salmonn import SALMONN

    cfg = mini_model_config(
        load_mini_config(REPO / "configs" / "mini_salmonn.yaml", REPO).model, COMMITTED / "salmonn_mini.pth"
    )
    model = SALMONN.from_config(cfg)
    assert (model.n_layers, model.n_heads, model.mask_size) == (30, 9, 300)
    state = torch.load(COMMITTED / "salmonn_mini.pth", weights_only=True)["model"]
    loaded = model.trainable_state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
