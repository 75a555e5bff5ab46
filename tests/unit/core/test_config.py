"""Config loading: the shipped YAMLs load, every error names the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ahamask.config import (
    ConfigError,
    DecodeConfig,
    TrainConfig,
    load_config,
    load_decode_config,
    load_train_config,
    parse_overrides,
)

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_yaml_loads(path):
    if path.name == "mini_salmonn.yaml":  # the mini model's own layout: model, world, train (ahamask.mini.setup)
        from ahamask.mini.setup import load_mini_config

        assert load_mini_config(path, CONFIGS.parent).model.llama_path
        return
    schema = DecodeConfig if "decode" in path.name or "eval" in path.name else TrainConfig
    if "???" in path.read_text():
        # A template (the demo fills its ??? paths): every key and type must be valid; only values are missing.
        with pytest.raises(ConfigError) as info:
            load_config(path, schema)
        problems = str(info.value).split(": ", 1)[1].split("; ")
        assert problems and all(p.endswith("missing mandatory value") for p in problems), problems
        return
    cfg = load_config(path, schema)
    assert cfg.model.llama_path


def test_official_training_defaults():
    cfg = load_train_config(CONFIGS / "config.yaml")
    assert cfg.run.norm_lambda == pytest.approx(
        1e-4
    )  # "1e-4" is a string to YAML 1.1; the schema makes it a float
    assert cfg.run.optims.init_lr == pytest.approx(1e-2) and cfg.run.optims.warmup_steps == 3000
    assert (cfg.run.tau_decay_steps, cfg.run.tau_temp_begin, cfg.run.tau_temp_end) == (0.3, 4.0, 0.05)
    assert cfg.model.prompt_template == "USER: {}\nASSISTANT:"
    assert (cfg.model.lora_rank, cfg.model.lora_alpha, cfg.model.lora_dropout) == (8, 32, 0.1)


def test_official_decode_defaults():
    cfg = load_decode_config(CONFIGS / "decode_config.yaml")
    assert cfg.model.weight_mask_path == "legacy_checkpoints/gender_librispeech/checkpoint.pth"
    assert cfg.generate.num_beams == 4 and cfg.generate.max_new_tokens == 100
    assert cfg.prob_threshold == 0.5 and cfg.batch_size_eval == 4


def test_overrides_in_both_forms():
    assert parse_overrides(["run.seed=3", "model.lora", "false", "prompt=a=b"]) == [
        ("run.seed", "3"),
        ("model.lora", "false"),
        ("prompt", "a=b"),
    ]
    cfg = load_train_config(CONFIGS / "config.yaml", ["run.seed", "7", "run.optims.init_lr=0.05"])
    assert cfg.run.seed == 7 and cfg.run.optims.init_lr == 0.05
    with pytest.raises(ConfigError, match="has no value"):
        parse_overrides(["run.seed"])
    with pytest.raises(ConfigError, match="flags are not overrides"):
        parse_overrides(["--run.seed=1"])


def test_all_errors_are_reported_at_once(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "model:\n  llama_path: x\n  whisper_path: y\n  lora_rnk: 4\nrun:\n  seed: abc\n  optims:\n    init_lrr: 0.1\n"
    )
    with pytest.raises(ConfigError) as info:
        load_train_config(bad)
    message = str(info.value)
    assert message.startswith(str(bad))
    assert "model.lora_rnk: unknown key (did you mean model.lora_rank?)" in message
    assert "run.optims.init_lrr: unknown key (did you mean run.optims.init_lr?)" in message
    assert "run.seed:" in message and "abc" in message
    assert "\n" not in message  # one line


def test_missing_values_and_checks(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  llama_path: x\n")
    with pytest.raises(ConfigError, match="model.whisper_path: missing mandatory value"):
        load_train_config(cfg)
    cfg.write_text("model:\n  llama_path: x\n  whisper_path: y\n  autocast_dtype: float8\n")
    with pytest.raises(ConfigError, match=r"c.yaml: model.autocast_dtype: 'float8' is not"):
        load_train_config(cfg)
    cfg.write_text("model:\n  llama_path: x\n  whisper_path: y\n  low_resource: true\n")
    with pytest.raises(ConfigError, match="model.low_resource: 8-bit loading"):
        load_train_config(cfg)
    with pytest.raises(ConfigError, match="no such config file"):
        load_train_config(tmp_path / "none.yaml")


def test_empty_value_means_empty_string(tmp_path):
    cfg = load_train_config(CONFIGS / "config.yaml", ["model.ckpt="])
    assert cfg.model.ckpt == ""
