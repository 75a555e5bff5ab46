"""Device selection for CPU, CUDA and (optionally) Ascend NPU.

The device always comes from the config (never a hard-coded ``.cuda()``). Ascend support needs the
``torch_npu`` plug-in, which is imported only when it is installed; unlike the official code we do not
import ``torch_npu.contrib.transfer_to_npu``, which silently redirects every CUDA call to the NPU.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from types import ModuleType

import torch

logger = logging.getLogger(__name__)

__all__ = ["dist_backend_for", "npu_module", "resolve_device"]

# Accepted spellings: auto, cpu, cuda, cuda:<i>, npu, npu:<i>.
_SPEC_RE = re.compile(r"^(?:(?P<auto>auto)|(?P<cpu>cpu)|(?P<type>cuda|npu)(?::(?P<index>\d+))?)$")
_EXPECTED_FORMS = "auto, cpu, cuda, cuda:<i>, npu or npu:<i>"

_DIST_BACKENDS = {"cuda": "nccl", "npu": "hccl", "cpu": "gloo"}


def npu_module() -> ModuleType | None:
    """Returns ``torch.npu`` when the ``torch_npu`` plug-in is installed, else None.

    Importing ``torch_npu`` registers the ``npu`` device type with torch, so it happens here, lazily,
    and only when the package exists; a machine without it never pays the import.
    """
    if importlib.util.find_spec("torch_npu") is None:
        return None
    import torch_npu  # noqa: F401  (import registers torch.npu)

    return getattr(torch, "npu", None)


def _accelerator(kind: str) -> tuple[bool, int]:
    """Returns (available, device_count) for ``cuda`` or ``npu``."""
    if kind == "cuda":
        available = torch.cuda.is_available()
        return available, torch.cuda.device_count() if available else 0
    module = npu_module()
    if module is None or not module.is_available():
        return False, 0
    return True, module.device_count()


def resolve_device(spec: str, local_rank: int | None = None) -> torch.device:
    """Turns a config device string into a checked ``torch.device``.

    ``auto`` picks CUDA, then Ascend NPU, then CPU. An accelerator without an index gets
    ``local_rank`` (one process per device under torchrun/SLURM), or index 0 when it is None.

    Args:
        spec: One of ``auto``, ``cpu``, ``cuda``, ``cuda:<i>``, ``npu``, ``npu:<i>`` (case-insensitive).
        local_rank: Index used when ``spec`` names an accelerator without an index.

    Returns:
        The device, e.g. ``device(type='cuda', index=1)``.

    Raises:
        ValueError: If the spec is malformed or names a device that is not available, with the value.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    text = str(spec).strip().lower()
    match = _SPEC_RE.match(text)
    if match is None:
        raise ValueError(f"device: malformed value {spec!r}; expected {_EXPECTED_FORMS}")
    if match["cpu"]:
        return torch.device("cpu")
    if match["auto"]:
        for kind in ("cuda", "npu"):
            available, _ = _accelerator(kind)
            if available:
                return resolve_device(kind, local_rank)
        return torch.device("cpu")
    kind = match["type"]
    available, count = _accelerator(kind)
    if not available:
        hint = " (is torch_npu installed?)" if kind == "npu" else ""
        raise ValueError(f"device: {spec!r} requested but no {kind} device is available{hint}")
    index = int(match["index"]) if match["index"] is not None else (local_rank or 0)
    if index >= count:
        raise ValueError(
            f"device: {spec!r} resolves to {kind}:{index} but only {count} {kind} device(s) exist"
        )
    return torch.device(kind, index)


def dist_backend_for(device: torch.device) -> str:
    """Returns the ``torch.distributed`` backend for a device type.

    Args:
        device: A device from :func:`resolve_device`.

    Returns:
        ``"nccl"`` for CUDA, ``"hccl"`` for Ascend NPU, ``"gloo"`` for CPU.

    Raises:
        ValueError: For any other device type.

    Example:
        >>> dist_backend_for(torch.device("cpu"))
        'gloo'
    """
    try:
        return _DIST_BACKENDS[device.type]
    except KeyError:
        raise ValueError(f"device: no distributed backend for device type {device.type!r}") from None
