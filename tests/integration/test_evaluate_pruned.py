"""evaluate.py with mask_application prune / auto writes the JSON that folding writes."""

from __future__ import annotations

import json

import pytest
import torch

from ahamask.config import load_decode_config
from ahamask.evaluation.evaluator import evaluate
from ahamask.masking.checkpoint import save_mask


@pytest.mark.slow
def test_pruned_auto_and_folded_decoding_write_the_same_json(tiny_bundle, tmp_path):
    # 6 of the tiny model's 8 heads kept (75%): auto prunes it.
    mask = save_mask(torch.tensor([2.0, -1.0, 2.0, 2.0, 0.5, 2.0, 2.0, -2.0, 2.0, 0.5]), tmp_path / "m.pth")
    outputs = {}
    for how in ("fold", "prune", "auto"):
        cfg = load_decode_config(
            tiny_bundle / "decode_config.yaml",
            [
                f"output_path={tmp_path / how}.json",
                f"model.weight_mask_path={mask}",
                f"mask_application={how}",
            ],
        )
        outputs[how] = json.loads(evaluate(cfg).read_text())["prediction"]
    assert outputs["prune"] == outputs["fold"] == outputs["auto"]
    assert len(outputs["fold"]) == 4
