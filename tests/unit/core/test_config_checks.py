"""Config validation: every decoding and run key against its range, all sections at once, no-effect keys."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ahamask import config as config_module
from ahamask.config import ConfigError, load_decode_config, load_train_config

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
DECODE = CONFIGS / "decode_config.yaml"
TRAIN = CONFIGS / "config.yaml"

# (override, the key the one-line error must name)
BAD_DECODE = [
    ("generate.num_beams=0", "generate.num_beams"),
    ("generate.num_beams=-2", "generate.num_beams"),
    ("generate.max_new_tokens=0", "generate.max_new_tokens"),
    ("generate.top_p=2", "generate.top_p"),
    ("generate.top_p=0", "generate.top_p"),
    ("generate.repetition_penalty=0", "generate.repetition_penalty"),
    ("generate.min_length=-1", "generate.min_length"),
    ("generate.min_length=500", "generate.min_length"),  # more than max_new_tokens (100) allows
    ("generate.length_penalty=inf", "generate.length_penalty"),
    ("num_workers=-1", "num_workers"),
    ("seed=-1", "seed"),
    ("device=gpu", "device"),
    ("output_path=", "output_path"),
    ("output_path=data/test/demo.json", "output_path"),  # the config's test_data_path
    ("prob_threshold=1", "prob_threshold"),
    ("model.lora_rank=0", "model.lora_rank"),
    ("model.lora_dropout=1", "model.lora_dropout"),
    ("model.qformer_num_heads=0", "model.qformer_num_heads"),
    ("model.second_stride=0", "model.second_stride"),
]
BAD_TRAIN = [
    ("run.optims.warmup_steps=-5", "run.optims.warmup_steps"),
    ("run.save_every_steps=-1", "run.save_every_steps"),
    ("run.num_workers=-1", "run.num_workers"),
    ("run.max_val_batches=-1", "run.max_val_batches"),
    ("run.optims.init_lr=0", "run.optims.init_lr"),
    ("run.optims.min_lr=1", "run.optims.min_lr"),  # above init_lr: the cosine would climb
    ("run.optims.beta2=1", "run.optims.beta2"),
    ("run.optims.weight_decay=-0.1", "run.optims.weight_decay"),
    ("run.norm_lambda=-1", "run.norm_lambda"),
    ("run.seed=-3", "run.seed"),
    ("run.device=tpu", "run.device"),
    ("run.world_size=0", "run.world_size"),
]


def _error(loader, path, overrides) -> str:
    with pytest.raises(ConfigError) as info:
        loader(path, overrides)
    return str(info.value)


@pytest.mark.parametrize(("override", "key"), BAD_DECODE, ids=[o for o, _ in BAD_DECODE])
def test_bad_decode_value_is_one_line_naming_the_key(override, key):
    message = _error(load_decode_config, DECODE, [override])
    assert "\n" not in message and message.startswith(str(DECODE))
    assert f"{key}: " in message


@pytest.mark.parametrize(("override", "key"), BAD_TRAIN, ids=[o for o, _ in BAD_TRAIN])
def test_bad_run_value_is_one_line_naming_the_key(override, key):
    message = _error(load_train_config, TRAIN, [override])
    assert "\n" not in message and f"{key}: " in message


def test_the_limits_themselves_are_accepted():
    cfg = load_decode_config(
        DECODE,
        [
            "generate.top_p=1",
            "generate.num_beams=1",
            "generate.temperature=0",  # greedy: unused
            "generate.min_length=101",  # max_new_tokens + 1 (a dummy BOS counts)
            "num_workers=0",
            "seed=0",
            "device=cuda:1",
        ],
    )
    assert (cfg.generate.top_p, cfg.generate.num_beams, cfg.device) == (1.0, 1, "cuda:1")
    run = load_train_config(TRAIN, ["run.optims.warmup_steps=0", "run.save_every_steps=0"]).run
    assert (run.optims.warmup_steps, run.save_every_steps) == (0, 0)


def test_sampling_needs_a_positive_temperature():
    message = _error(load_decode_config, DECODE, ["generate.do_sample=true", "generate.temperature=0"])
    assert "generate.temperature: 0.0 must be > 0 when sampling" in message


def test_problems_of_every_section_are_reported_at_once():
    message = _error(
        load_decode_config,
        DECODE,
        ["model.lora_rank=0", "generate.num_beams=0", "num_workers=-1", "generate.nmu_beams=3"],
    )
    for key in ("model.lora_rank", "generate.num_beams", "num_workers", "generate.nmu_beams"):
        assert f"{key}: " in message, (key, message)
    assert "did you mean generate.num_beams" in message
    train = _error(load_train_config, TRAIN, ["model.qformer_num_heads=0", "run.optims.warmup_steps=-5"])
    assert "model.qformer_num_heads: " in train and "run.optims.warmup_steps: " in train


def test_broken_yaml_is_one_line_with_the_position(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  llama_path: x\n bad: [\n")
    message = _error(load_decode_config, path, [])
    assert "\n" not in message and f"{path}: not valid YAML (line 3, column 2" in message


NO_EFFECT = [
    ("run.evaluate=true", "run.evaluate"),
    ("run.dist_url=tcp://10.0.0.1:23456", "run.dist_url"),
    ("run.world_size=4", "run.world_size"),
    ("model.device_8bit=1", "model.device_8bit"),
    ("model.test_prompt_path=prompts/test_prompt.json", "model.test_prompt_path"),
    ("model.norm_lambda=0.01", "model.norm_lambda"),
]


def _warnings(caplog, monkeypatch, overrides) -> list[str]:
    monkeypatch.setattr(config_module, "_warned", set())  # warnings are once per process
    monkeypatch.delenv("RANK", raising=False)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ahamask.config"):
        load_train_config(CONFIGS / "tiny_config.yaml", overrides)
    return [r.getMessage() for r in caplog.records if r.name == "ahamask.config"]


def test_each_no_effect_key_gets_one_warning_line(caplog, monkeypatch):
    assert _warnings(caplog, monkeypatch, []) == []  # defaults: silent
    for override, key in NO_EFFECT:
        lines = _warnings(caplog, monkeypatch, [override])
        assert len(lines) == 1 and lines[0].startswith(f"{key}: ") and "no effect" in lines[0], lines
    # norm_lambda: the trainer uses run.norm_lambda; the message says which value is used.
    assert "run.norm_lambda (0.0001)" in _warnings(caplog, monkeypatch, ["model.norm_lambda=0.01"])[0]
    # The same value in both places changes nothing: no warning.
    assert _warnings(caplog, monkeypatch, ["model.norm_lambda=0.01", "run.norm_lambda=0.01"]) == []


def test_no_effect_warnings_are_rank_zero_only(caplog, monkeypatch):
    monkeypatch.setattr(config_module, "_warned", set())
    monkeypatch.setenv("RANK", "1")
    with caplog.at_level(logging.WARNING, logger="ahamask.config"):
        load_train_config(CONFIGS / "tiny_config.yaml", ["run.world_size=4"])
    assert not [r for r in caplog.records if r.name == "ahamask.config"]
