"""The small public API notebooks use."""

from __future__ import annotations

import subprocess
import sys

import torch

import ahamask


def test_public_names_resolve():
    assert ahamask.__version__
    for name in (
        "load_mask",
        "save_mask",
        "head_mask",
        "ablate_heads",
        "SALMONN",
        "make_tiny_bundle",
        "HeadMask",
    ):
        assert callable(getattr(ahamask, name)), name
    assert callable(ahamask.SALMONN.from_config)


def test_import_is_light():
    code = "import sys, ahamask; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_mask_round_trip_through_the_api(tmp_path):
    logits = torch.linspace(-2, 2, 10)
    ahamask.save_mask(logits, tmp_path / "m.safetensors", n_layers=2, n_heads=4)
    assert torch.equal(ahamask.load_mask(tmp_path / "m.safetensors").values, logits)


def test_head_mask_context_on_the_model(shared_tiny_model):
    llm = shared_tiny_model.llama_model
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        base = llm(input_ids=ids).logits
        with ahamask.head_mask(llm, torch.zeros(2, 10), logits=False):  # per-sample form, every head off
            off = llm(input_ids=ids.repeat(2, 1)).logits
        assert torch.equal(llm(input_ids=ids).logits, base)
    assert not torch.allclose(off[0], base[0])
