"""Mask files: the ten released masks, save/load round trips, and errors for bad files."""

from __future__ import annotations

import pickle

import pytest
import torch

from ahamask.masking.checkpoint import MaskFileError, load_mask, read_mask_metadata, save_mask
from ahamask.masking.mask import HeadMask, MaskShapeError, check_mask_length, mask_stats, shuffle_mask
from tests.conftest import reference_dir

# Share of the 1600 heads kept after sigmoid >= 0.5 (reference README), and the count behind it.
RELEASED = {
    "aac_audiocaps": (89.1, 1426),
    "asr_gender_json_librispeech": (70.2, 1124),
    "asr_gender_librispeech": (52.3, 837),
    "asr_librispeech": (95.3, 1525),
    "asv_voxceleb1": (81.9, 1311),
    "emotion_iemocap": (71.6, 1146),
    "gender_asr_librispeech": (82.2, 1315),
    "gender_librispeech": (78.7, 1259),
    "osr_libri2mix": (96.9, 1550),
    "s2tt_covost2": (96.9, 1551),
}


@pytest.mark.parametrize("task", sorted(RELEASED))
def test_released_masks_load_with_their_head_fractions(task):
    path = reference_dir("legacy_checkpoints", task, "checkpoint.pth")
    logits = load_mask(path).values
    assert logits.shape == (1640,) and logits.dtype == torch.float32
    stats = mask_stats(logits, n_layers=40, n_heads=40)
    percent, count = RELEASED[task]
    assert stats.active_heads == count
    assert round(stats.head_fraction * 100, 1) == percent


def test_gender_mask_official_print_counts_ffn_entries():
    logits = load_mask(reference_dir("legacy_checkpoints", "gender_librispeech", "checkpoint.pth")).values
    stats = mask_stats(logits, 40, 40)
    # The official evaluate.py divides by all 1640 entries: 1259 heads + 40 FFN entries.
    assert stats.active_entries == 1299
    assert round(stats.entry_fraction * 100, 2) == 79.21


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_save_load_round_trip(tmp_path, suffix):
    logits = torch.randn(10)
    path = save_mask(logits, tmp_path / f"sub/mask{suffix}", n_layers=2, n_heads=4, base_model="tiny")
    assert torch.equal(load_mask(path).values, logits)
    assert not list(path.parent.glob("*.tmp"))
    if suffix == ".safetensors":
        meta = read_mask_metadata(path)
        assert meta["n_layers"] == "2" and meta["n_heads"] == "4" and meta["base_model"] == "tiny"
    else:
        raw = torch.load(path, weights_only=True)
        assert set(raw) == {"model"} and torch.equal(raw["model"]["tensor"], logits)


def test_grid_masks_are_flattened_layer_major(tmp_path):
    grid = torch.arange(10.0).reshape(2, 5)
    path = save_mask(grid, tmp_path / "g.pth")
    assert load_mask(path).values.tolist() == list(range(10))


def test_save_rejects_wrong_geometry(tmp_path):
    with pytest.raises(MaskShapeError, match="12 entries .* 2 layers x 4 heads"):
        save_mask(torch.zeros(12), tmp_path / "m.pth", n_layers=2, n_heads=4)
    assert not list(tmp_path.iterdir())


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(MaskFileError, match="nope.pth: no such mask file"):
        load_mask(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"model": {"weights": torch.zeros(3)}}, bad)
    with pytest.raises(MaskFileError, match=r"bad.pth: no mask tensor found"):
        load_mask(bad)
    nan = tmp_path / "nan.pth"
    torch.save({"model": {"tensor": torch.tensor([1.0, float("nan")])}}, nan)
    with pytest.raises(MaskFileError, match="non-finite"):
        load_mask(nan)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_is_refused(tmp_path):
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as handle:
        pickle.dump({"model": {"tensor": _Payload()}}, handle)
    with pytest.raises(MaskFileError, match="weights-only"):
        load_mask(evil)


def test_check_length_message():
    with pytest.raises(
        MaskShapeError, match=r"has 7 entries but the model has 2 layers x 4 heads, which needs"
    ):
        check_mask_length(torch.zeros(7), 2, 4)


def test_shuffle_keeps_head_counts():
    torch.manual_seed(0)
    binary = (torch.rand(40 * 41) > 0.3).float()
    for mode in ("global", "per_layer"):
        shuffled = shuffle_mask(binary, 40, 40, mode=mode, seed=3)
        grid, orig = shuffled.view(40, 41), binary.view(40, 41)
        assert grid[:, :40].sum() == orig[:, :40].sum()
        assert torch.equal(grid[:, 40], orig[:, 40])  # FFN entries untouched
        assert not torch.equal(grid, orig)
        if mode == "per_layer":
            assert torch.equal(grid[:, :40].sum(1), orig[:, :40].sum(1))
    assert torch.equal(shuffle_mask(binary, 40, 40, seed=3), shuffle_mask(binary, 40, 40, seed=3))


def test_head_mask_module_contract(tmp_path):
    torch.manual_seed(0)
    mask = HeadMask(2, 4)
    assert mask.tensor.shape == (10,)
    assert torch.sigmoid(mask.tensor).min() > 0.97  # gates start at about 1
    assert mask.grid().shape == (2, 5)
    path = save_mask(mask(), tmp_path / "m.pth")
    other = HeadMask(2, 4, init_mean=0.0)
    other.load_logits(load_mask(path).values)
    assert torch.equal(other.tensor, mask.tensor)
    # the released format is exactly {'model': HeadMask.state_dict()}
    assert set(mask.state_dict()) == {"tensor"}
    with pytest.raises(MaskShapeError):
        other.load_logits(torch.zeros(1640))
