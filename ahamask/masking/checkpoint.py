"""Mask files: the released ``.pth`` format and safetensors.

Released format (what the official trainer saves and every existing loader reads)::

    torch.save({"model": {"tensor": logits}, ...}, "checkpoint.pth")   # logits: float32 [L*(H+1)]

Training checkpoints add ``optimizer``, ``config``, ``scaler`` and ``epoch`` beside ``model``; only
``model.tensor`` is read here, always with ``weights_only=True`` (a mask file from the internet must not be
able to run code). The safetensors variant stores the tensor under ``tensor`` and the geometry
(n_layers, n_heads, has_ffn, base model, ahamask version) as string metadata in its header.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import __version__
from .mask import check_mask_length

__all__ = ["MaskFileError", "load_mask", "save_mask", "read_mask_metadata"]

_SAFETENSORS_SUFFIXES = (".safetensors", ".st")


class MaskFileError(ValueError):
    """A mask file is missing, unreadable or not in a known format."""


def _extract_tensor(obj: object, path: Path) -> torch.Tensor:
    """Find the logits in a loaded ``.pth``: ``{'model': {'tensor': t}}``, ``{'tensor': t}`` or ``t``."""
    if isinstance(obj, dict) and "model" in obj:
        obj = obj["model"]
    if isinstance(obj, dict):
        if "tensor" not in obj:
            raise MaskFileError(
                f"{path}: no mask tensor found (expected {{'model': {{'tensor': ...}}}}, got keys {sorted(obj)[:8]})"
            )
        obj = obj["tensor"]
    if not isinstance(obj, torch.Tensor):
        raise MaskFileError(f"{path}: the mask entry is a {type(obj).__name__}, not a tensor")
    return obj


def load_mask(path: str | os.PathLike) -> torch.Tensor:
    """Read mask logits from a released ``.pth`` checkpoint or a safetensors file.

    Args:
        path: ``checkpoint.pth`` (released / training format) or ``*.safetensors``.

    Returns:
        float32 tensor [L*(H+1)] (a 2-D ``[L, H+1]`` tensor is flattened layer-major).

    Raises:
        MaskFileError: missing file, unsafe or corrupt pickle, no tensor inside, non-finite values.

    Example:
        >>> logits = load_mask("../shared/reference/legacy_checkpoints/gender_librispeech/checkpoint.pth")
        >>> logits.shape
        torch.Size([1640])
    """
    path = Path(path)
    if not path.is_file():
        raise MaskFileError(f"{path}: no such mask file")
    if path.suffix in _SAFETENSORS_SUFFIXES:
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise MaskFileError(f"{path}: not a readable safetensors file ({exc})") from exc
        tensor = _extract_tensor(tensors, path)
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle raises many types; all mean "not a safe mask file"
            raise MaskFileError(f"{path}: cannot be read as a weights-only torch file ({exc})") from exc
        tensor = _extract_tensor(obj, path)
    tensor = tensor.detach().float().reshape(-1)
    if not torch.isfinite(tensor).all():
        raise MaskFileError(f"{path}: the mask holds non-finite values")
    return tensor


def read_mask_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The geometry metadata of a safetensors mask (empty for ``.pth`` files, which carry none)."""
    path = Path(path)
    if path.suffix not in _SAFETENSORS_SUFFIXES:
        return {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def save_mask(
    logits: torch.Tensor,
    path: str | os.PathLike,
    *,
    n_layers: int | None = None,
    n_heads: int | None = None,
    base_model: str = "",
    extra: dict | None = None,
) -> Path:
    """Write mask logits atomically, in the released ``.pth`` format or as safetensors (by suffix).

    Args:
        logits: [L*(H+1)] or [L, H+1].
        path: destination; ``.safetensors`` selects safetensors, anything else the released format.
        n_layers, n_heads: checked against the length when given, and recorded (safetensors metadata).
        base_model: an identifier of the model the mask was trained on (recorded in safetensors metadata).
        extra: more entries for the ``.pth`` dict (e.g. ``epoch``), as training checkpoints have.

    Returns:
        The path written.
    """
    path = Path(path)
    flat = logits.detach().float().cpu().reshape(-1).contiguous()
    if n_layers is not None and n_heads is not None:
        check_mask_length(flat, n_layers, n_heads, source=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if path.suffix in _SAFETENSORS_SUFFIXES:
            metadata = {
                "format": "ahamask-head-mask",
                "ahamask_version": __version__,
                "base_model": base_model,
                "has_ffn": "true",
            }
            if n_layers is not None and n_heads is not None:
                metadata.update(n_layers=str(n_layers), n_heads=str(n_heads))
            save_file({"tensor": flat}, tmp, metadata=dict(sorted(metadata.items())))
        else:
            torch.save({"model": {"tensor": flat}, **(extra or {})}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def describe_metadata(path: str | os.PathLike) -> str:
    """Metadata of a safetensors mask as sorted JSON (for ``scripts/inspect_mask.py``)."""
    return json.dumps(read_mask_metadata(path), sort_keys=True)
