"""evaluate.py with a steering file: strength 0 is the unsteered run, a real strength changes the answers."""

from __future__ import annotations

import json

import pytest
import torch

from ahamask.analysis.contrast_steering import save_vectors
from ahamask.config import load_decode_config
from ahamask.evaluation.evaluator import evaluate
from ahamask.preflight import PreflightError


def _outputs(tiny_bundle, tmp_path, name: str, *options: str) -> list[str]:
    cfg = load_decode_config(
        tiny_bundle / "decode_config.yaml",
        [f"output_path={tmp_path / name}", "generate.num_beams=1", "generate.max_new_tokens=6", *options],
    )
    return [p["output"] for p in json.loads(evaluate(cfg).read_text())["prediction"]]


def test_steering_strength_zero_is_the_plain_run_and_a_strength_changes_answers(tiny_bundle, tmp_path):
    gen = torch.Generator().manual_seed(0)
    vectors = {layer: torch.randn(64, generator=gen) * 4 for layer in (0, 1)}
    path = save_vectors(tmp_path / "v.safetensors", vectors, {"inject_layers": [0, 1], "positions": "all"})
    plain = _outputs(tiny_bundle, tmp_path, "plain.json")
    zero = _outputs(tiny_bundle, tmp_path, "zero.json", f"steering_path={path}", "steering_strength=0")
    steered = _outputs(tiny_bundle, tmp_path, "steered.json", f"steering_path={path}", "steering_strength=8")
    assert zero == plain
    assert steered != plain


def test_a_missing_or_foreign_steering_file_is_one_line(tiny_bundle, tmp_path):
    with pytest.raises(PreflightError, match="steering_path: no such file"):
        _outputs(tiny_bundle, tmp_path, "a.json", f"steering_path={tmp_path / 'none.safetensors'}")
    mask = tmp_path / "mask.safetensors"
    from ahamask.masking.checkpoint import save_mask

    save_mask(torch.zeros(10), mask, n_layers=2, n_heads=4)
    with pytest.raises(ValueError, match="steering_path: .* has format 'ahamask-head-mask'"):
        _outputs(tiny_bundle, tmp_path, "b.json", f"steering_path={mask}")
