"""MaskConfig reads every mask key of the official configs, from the section the official code reads it."""

from __future__ import annotations

from ahamask.config import load_decode_config, load_train_config
from ahamask.masking.settings import MaskConfig


def test_train_keys_come_from_model_and_run(tiny_bundle):
    cfg = load_train_config(
        tiny_bundle / "config.yaml",
        [
            "model.use_gumbel=false",
            "model.gumbel_hard=false",
            "model.gumbel_noise=logistic",
            "model.apply_ffn_mask=true",
            "run.mask_init_mean=1.5",
            "run.mask_init_std=0.1",
            "run.tau_decay_steps=0.5",
            "run.tau_temp_begin=3.0",
            "run.tau_temp_end=0.2",
            "run.norm_lambda=0.01",
        ],
    )
    got = MaskConfig.from_train_config(cfg)
    assert (got.use_gumbel, got.gumbel_hard, got.gumbel_noise, got.apply_ffn) == (
        False,
        False,
        "logistic",
        True,
    )
    assert (got.init_mean, got.init_std) == (1.5, 0.1)
    assert (got.tau_decay_steps, got.tau_begin, got.tau_end, got.norm_lambda) == (0.5, 3.0, 0.2, 0.01)


def test_run_norm_lambda_wins_over_the_model_copy(tiny_bundle):
    cfg = load_train_config(tiny_bundle / "config.yaml", ["run.norm_lambda=0.02", "model.norm_lambda=0.5"])
    assert (
        MaskConfig.from_train_config(cfg).norm_lambda == 0.02
    )  # the official train.py overwrites the model's


def test_decode_keys_come_from_model_and_the_top_level(tiny_bundle):
    cfg = load_decode_config(
        tiny_bundle / "decode_config.yaml",
        [
            "prob_threshold=0.7",
            "mask_application=hooks",
            "model.weight_mask_path=gender_librispeech",
            "model.shuffle_mask=true",
            "model.shuffle_mask_mode=per_layer",
            "model.shuffle_mask_seed=3",
        ],
    )
    got = MaskConfig.from_decode_config(cfg)
    assert (got.prob_threshold, got.application) == (0.7, "hooks")
    assert (
        got.path
        and got.path.endswith("gender_librispeech/checkpoint.pth")
        or got.path == "gender_librispeech"
    )
    assert (got.shuffle, got.shuffle_mode, got.shuffle_seed) == (True, "per_layer", 3)
