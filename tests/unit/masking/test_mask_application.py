"""mask_application: auto prunes sparse masks, folds dense ones; fold and hooks stay reachable."""

from __future__ import annotations

import pytest
import torch

from ahamask.config import ConfigError, load_decode_config
from ahamask.masking.apply import PRUNE_MAX_DENSITY, choose_application
from ahamask.masking.released import RELEASED_HEAD_FRACTIONS
from ahamask.masking.value import Mask
from tests.conftest import reference_dir

RELEASED = RELEASED_HEAD_FRACTIONS


def choose_mask_application(requested, weights, n_layers, n_heads):
    """The rule on a gate tensor of the given geometry (as the evaluator hands it over)."""
    mask = None if weights is None else Mask.from_gates(weights).fit(n_layers, n_heads)
    return choose_application(requested, mask)


SPARSE = {"asr_gender_librispeech", "asr_gender_json_librispeech", "emotion_iemocap", "gender_librispeech"}


def _mask(keep: int, layers: int = 40, heads: int = 40) -> torch.Tensor:
    grid = torch.zeros(layers * heads)
    grid[torch.randperm(layers * heads, generator=torch.Generator().manual_seed(0))[:keep]] = 1.0
    return torch.cat([grid.reshape(layers, heads), torch.ones(layers, 1)], dim=1).reshape(-1)


def test_auto_prunes_exactly_the_sparse_released_densities():
    for task, density in RELEASED.items():
        mask = _mask(round(density * 1600))
        expected = "prune" if task in SPARSE else "fold"
        assert choose_mask_application("auto", mask, 40, 40) == expected, task
    assert 0.787 <= PRUNE_MAX_DENSITY < 0.819


def test_the_released_files_follow_the_same_rule():
    from ahamask.masking.checkpoint import load_mask
    from ahamask.masking.mask import binarize

    folder = reference_dir("legacy_checkpoints")
    for task in RELEASED:
        weights = binarize(load_mask(folder / task / "checkpoint.pth").values)
        expected = "prune" if task in SPARSE else "fold"
        assert choose_mask_application("auto", weights, 40, 40) == expected, task


def test_explicit_choices_and_soft_or_per_sample_masks():
    sparse = _mask(800)
    assert choose_mask_application("fold", sparse, 40, 40) == "fold"
    assert choose_mask_application("hooks", sparse, 40, 40) == "hooks"
    assert choose_mask_application("prune", _mask(1550), 40, 40) == "prune"  # asked for: honoured when dense
    assert choose_mask_application("auto", None, 40, 40) is None
    assert choose_mask_application("auto", sparse * 0.5, 40, 40) == "hooks"  # soft: neither fold nor prune
    per_sample = torch.stack([sparse, _mask(900)])
    assert choose_mask_application("prune", per_sample, 40, 40) == "hooks"


def test_the_config_accepts_the_four_values_only(tiny_bundle):
    path = tiny_bundle / "decode_config.yaml"
    assert load_decode_config(path).mask_application == "auto"
    for value in ("fold", "hooks", "prune"):
        assert load_decode_config(path, [f"mask_application={value}"]).mask_application == value
    with pytest.raises(ConfigError, match="mask_application: 'pruned' is not auto, fold, hooks or prune"):
        load_decode_config(path, ["mask_application=pruned"])
