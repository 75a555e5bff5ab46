"""Atomic writers (ahamask.utils.io) and random-state capture (ahamask.utils.seed)."""

import json
import os
import random

import numpy as np
import pytest
import torch

from ahamask.utils.io import atomic_open, atomic_torch_save, atomic_write_json, atomic_write_text
from ahamask.utils.seed import capture_rng_state, restore_rng_state, set_seed

# ---------------------------------------------------------------- atomic writes


def test_writers_create_folders_and_roundtrip(tmp_path):
    ckpt = atomic_torch_save(
        {"tensor": torch.arange(6.0).view(2, 3), "epoch": 3}, tmp_path / "a" / "b" / "ck.pth"
    )
    loaded = torch.load(ckpt, weights_only=True)
    assert loaded["epoch"] == 3 and loaded["tensor"][1, 2].item() == 5.0

    cfg = atomic_write_json({"z": 1, "a": "é"}, tmp_path / "cfg.json", sort_keys=True)
    assert cfg.read_text(encoding="utf-8") == '{\n    "a": "é",\n    "z": 1\n}\n'
    assert json.loads(cfg.read_text(encoding="utf-8")) == {"a": "é", "z": 1}

    text = atomic_write_text("seed: 42\nname: 中文\n", tmp_path / "config.yaml")
    assert text.read_text(encoding="utf-8") == "seed: 42\nname: 中文\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "cfg.json", "config.yaml"]


def test_failed_json_write_keeps_the_old_file(tmp_path):
    dest = atomic_write_json({"old": 1}, tmp_path / "log.json")
    # json.dump streams: the long list reaches the temporary file before the object() fails.
    with pytest.raises(TypeError, match="not JSON serializable"):
        atomic_write_json({"a": list(range(50_000)), "z": object()}, dest)
    assert json.loads(dest.read_text()) == {"old": 1}
    assert os.listdir(tmp_path) == ["log.json"]


def test_failed_torch_save_keeps_the_old_file(tmp_path):
    dest = atomic_torch_save({"w": torch.ones(3)}, tmp_path / "checkpoint.pth")
    with pytest.raises(Exception, match="lambda"):
        atomic_torch_save({"w": torch.zeros(100_000), "bad": lambda: 0}, dest)
    assert torch.equal(torch.load(dest, weights_only=True)["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["checkpoint.pth"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_leaves_no_partial_file(tmp_path, error):
    dest = tmp_path / "out.txt"
    with pytest.raises(error):
        with atomic_open(dest, "w") as handle:
            handle.write("half of the")
            handle.flush()
            # The partial content exists only under a hidden temporary name.
            assert not dest.exists() and len(os.listdir(tmp_path)) == 1
            raise error("crash")
    assert os.listdir(tmp_path) == []


def test_written_file_follows_umask(tmp_path):
    umask = os.umask(0o022)
    try:
        dest = atomic_write_text("x", tmp_path / "f.txt")
    finally:
        os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o644


def test_atomic_open_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb', got 'a'"):
        with atomic_open(tmp_path / "x", "a"):
            pass


# ---------------------------------------------------------------- seeds and random state


def _draw() -> tuple:
    return (
        random.random(),
        random.gauss(0, 1),
        np.random.rand(3).tolist(),
        np.random.randn(3).tolist(),
        torch.randn(4).tolist(),
    )


def test_set_seed_adds_the_rank():
    assert set_seed(42, rank=1) == 43
    seeded = _draw()
    random.seed(43)
    np.random.seed(43)
    torch.manual_seed(43)
    assert _draw() == seeded
    assert set_seed(42, rank=0) == 42 and _draw() != seeded


def test_rng_state_roundtrip_through_weights_only_load(tmp_path):
    set_seed(7)
    # Leave cached Gaussians in both Python's and numpy's generators, the easy-to-miss parts of the state.
    random.gauss(0, 1)
    np.random.randn(1)
    state = capture_rng_state()
    path = atomic_torch_save(state, tmp_path / "rng.pt")
    expected = _draw()

    restore_rng_state(torch.load(path, weights_only=True))
    assert _draw() == expected
    restore_rng_state(state)
    assert _draw() == expected


def test_restore_rng_state_names_missing_keys():
    state = capture_rng_state()
    del state["numpy"]
    with pytest.raises(ValueError, match=r"missing keys \['numpy'\]"):
        restore_rng_state(state)
