"""Device resolution, backend choice and the autocast context.

CUDA/NPU availability is patched, so these run the same on a CPU-only CI machine.
"""

import importlib.util
from types import SimpleNamespace

import pytest
import torch

from ahamask.utils import device as device_mod
from ahamask.utils.device import dist_backend_for, resolve_device


@pytest.fixture
def no_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "npu_module", lambda: None)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(device_mod, "npu_module", lambda: None)


class _FakeNpu:
    @staticmethod
    def is_available():
        return True

    @staticmethod
    def device_count():
        return 8


def test_cpu_and_auto_without_accelerators(no_accelerator):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_prefers_cuda_and_uses_local_rank(two_gpus):
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    # An explicit index wins over the local rank.
    assert resolve_device("cuda:0", local_rank=1) == torch.device("cuda", 0)


def test_auto_falls_back_to_npu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "npu_module", lambda: _FakeNpu)
    with pytest.raises(ValueError, match="'npu:8' resolves to npu:8 but only 8 npu"):
        resolve_device("npu:8")
    # torch.device("npu") only parses once torch_npu has registered the type, so record the call instead.
    monkeypatch.setattr(torch, "device", lambda kind, index=None: (kind, index))
    chosen = resolve_device("auto", local_rank=3)
    monkeypatch.undo()
    assert chosen == ("npu", 3)


def test_unavailable_index_names_the_value(two_gpus):
    with pytest.raises(ValueError, match="'cuda:2' resolves to cuda:2 but only 2 cuda"):
        resolve_device("cuda:2")


def test_missing_accelerators_and_bad_specs(no_accelerator):
    with pytest.raises(ValueError, match="'cuda' requested but no cuda device is available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="torch_npu installed"):
        resolve_device("npu:0")
    for bad in ("gpu", "cuda:", "cuda:x", "cpu:0", "mps", ""):
        with pytest.raises(ValueError, match=f"malformed value '{bad}'"):
            resolve_device(bad)


def test_npu_module_is_none_without_torch_npu():
    # torch_npu is not a dependency; without it nothing is imported and NPU support is off.
    if importlib.util.find_spec("torch_npu") is not None:
        pytest.skip("torch_npu is installed on this machine")
    assert device_mod.npu_module() is None


def test_dist_backend_for():
    assert dist_backend_for(torch.device("cuda", 1)) == "nccl"
    assert dist_backend_for(torch.device("cpu")) == "gloo"
    assert dist_backend_for(SimpleNamespace(type="npu")) == "hccl"  # see test_auto_falls_back_to_npu
    with pytest.raises(ValueError, match="'meta'"):
        dist_backend_for(torch.device("meta"))
