"""Mask files: the released ``.pth`` format, safetensors, the folder form, and names of released masks.

Released format (what the official trainer saves and every existing loader reads)::

    torch.save({"model": {"tensor": logits}, ...}, "checkpoint.pth")   # logits: float32 [L*(H+1)]

Training checkpoints add ``optimizer``, ``config``, ``scaler`` and ``epoch`` beside ``model``; only
``model.tensor`` is read here, always with ``weights_only=True`` (a mask file from the internet must not be
able to run code). The safetensors variant stores the tensor under ``tensor`` and the geometry
(n_layers, n_heads, has_ffn, base model, ahamask version) as string metadata in its header.

The folder form (what a training run and ``convert_mask`` write, and what can be shared) is
``mask.safetensors`` plus a ``mask_config.json`` sidecar with the same geometry, keys sorted. A sidecar
beside any mask file states its geometry; :func:`load_mask` checks the tensor against it and, when the
caller names the model's geometry, names the dimension that differs.

:func:`resolve_mask_path` turns what a user writes in ``model.weight_mask_path`` into a file: a path, a
folder of the folder form, or the bare name of a released mask (``gender_librispeech`` ->
``legacy_checkpoints/gender_librispeech/checkpoint.pth``, looked up in the working directory, then in
the repository).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors

from .. import __version__
from ..utils.io import atomic_open, atomic_write_json
from .mask import MaskShapeError, check_mask_length
from .names import MASK_FILE_NAME, MaskFileError, resolve_mask_path
from .value import Mask

__all__ = [
    "MASK_CONFIG_NAME",
    "MASK_FILE_NAME",
    "MaskFileError",
    "load_mask",
    "mask_geometry",
    "read_mask_config",
    "read_mask_metadata",
    "resolve_mask_path",
    "save_mask",
    "save_mask_folder",
    "write_mask_config",
]

_SAFETENSORS_SUFFIXES = (".safetensors", ".st")
MASK_CONFIG_NAME = "mask_config.json"
MASK_FORMAT = "ahamask-head-mask"


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """First line of an exception message, shortened: torch's unpickling errors run to a dozen lines."""
    message = str(exc)
    # torch.load(weights_only=True) opens with a paragraph on defaults; the reason comes after it.
    if message.lstrip().startswith("Weights only load failed"):
        marker = "WeightsUnpickler error:"
        message = message.split(marker, 1)[1] if marker in message else message.split("\n", 1)[-1]
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def read_mask_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The geometry metadata of a safetensors mask (empty for ``.pth`` files, which carry none).

    Raises:
        MaskFileError: the file is not a readable safetensors file.
    """
    path = Path(path)
    if path.suffix not in _SAFETENSORS_SUFFIXES:
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise MaskFileError(f"{path}: not a readable safetensors file ({_one_line(exc)})") from exc


def _mask_config_dict(
    n_layers: int, n_heads: int, base_model: str, has_ffn: bool, extra: dict | None
) -> dict:
    """The sidecar's content: the geometry the loader checks plus what the mask was made from."""
    return dict(
        sorted(
            {
                **(extra or {}),
                "ahamask_version": __version__,
                "base_model": base_model,
                "format": MASK_FORMAT,
                "has_ffn": bool(has_ffn),
                "n_heads": int(n_heads),
                "n_layers": int(n_layers),
            }.items()
        )
    )


def write_mask_config(
    folder: str | os.PathLike,
    n_layers: int,
    n_heads: int,
    *,
    base_model: str = "",
    has_ffn: bool = True,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``mask_config.json`` (sorted keys, atomically) into ``folder``.

    Args:
        folder: the folder of the mask file it describes.
        n_layers, n_heads: the geometry; the mask holds ``n_layers * (n_heads + 1)`` logits.
        base_model: the model the mask was trained on (a hub id or a description).
        has_ffn: whether the last entry of each layer is an FFN gate (always true for AHAMask files).
        extra: more keys (task, source); the geometry keys cannot be overridden.

    Returns:
        The sidecar path.

    Example:
        >>> write_mask_config("/tmp/ahamask_doc/run", 2, 4, base_model="tiny").name
        'mask_config.json'
    """
    content = _mask_config_dict(n_layers, n_heads, base_model, has_ffn, extra)
    return atomic_write_json(content, Path(folder) / MASK_CONFIG_NAME, indent=2, sort_keys=True)


def read_mask_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``mask_config.json`` beside a mask file (or inside a folder), or None when there is none.

    Raises:
        MaskFileError: the sidecar is not JSON, or its ``n_layers`` / ``n_heads`` are not positive integers.
    """
    path = Path(path)
    sidecar = (path if path.is_dir() else path.parent) / MASK_CONFIG_NAME
    if not sidecar.is_file():
        return None
    try:
        content = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MaskFileError(f"{sidecar}: not a readable JSON file ({_one_line(exc)})") from exc
    if not isinstance(content, dict):
        raise MaskFileError(f"{sidecar}: expected a JSON object with n_layers and n_heads")
    for dim in ("n_layers", "n_heads"):
        value = content.get(dim)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MaskFileError(f"{sidecar}: {dim} must be a positive integer, got {value!r}")
    return content


def mask_geometry(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(n_layers, n_heads)`` as the file states it (safetensors metadata or the sidecar), else None.

    Raises:
        MaskFileError: metadata and sidecar disagree (the dimension is named), or either is malformed.
    """
    path = Path(path)
    stated: dict[str, tuple[int, int]] = {}
    meta = read_mask_metadata(path)
    if "n_layers" in meta and "n_heads" in meta:
        try:
            stated["metadata"] = (int(meta["n_layers"]), int(meta["n_heads"]))
        except ValueError as exc:
            raise MaskFileError(f"{path}: metadata n_layers/n_heads are not integers ({exc})") from exc
    sidecar = read_mask_config(path)
    if sidecar is not None:
        stated[MASK_CONFIG_NAME] = (sidecar["n_layers"], sidecar["n_heads"])
    if len(stated) == 2 and stated["metadata"] != stated[MASK_CONFIG_NAME]:
        (ml, mh), (sl, sh) = stated["metadata"], stated[MASK_CONFIG_NAME]
        dim, a, b = ("n_layers", ml, sl) if ml != sl else ("n_heads", mh, sh)
        raise MaskFileError(f"{path}: {dim} is {a} in the file's metadata but {b} in {MASK_CONFIG_NAME}")
    return next(iter(stated.values()), None)


def load_mask(path: str | os.PathLike, *, n_layers: int | None = None, n_heads: int | None = None) -> Mask:
    """Read a mask (logits) from a released ``.pth``, a safetensors file, a mask folder or a released name.

    Args:
        path: ``checkpoint.pth`` (released / training format), ``*.safetensors``, a folder holding
            ``mask.safetensors`` (+ ``mask_config.json``), or a bare released name (``gender_librispeech``):
            see :func:`resolve_mask_path`.
        n_layers, n_heads: the geometry of the model the mask is for; when given the mask is checked
            against it (and against the geometry its metadata or sidecar states).

    Returns:
        A logits :class:`~ahamask.masking.value.Mask`: ``.values`` is a float32 tensor [L*(H+1)] (a 2-D
        ``[L, H+1]`` tensor is flattened layer-major); its geometry is the one the caller named or the file
        states (None for a released ``.pth`` without a sidecar), its ``source`` the path.

    Raises:
        MaskFileError: missing file, unsafe or corrupt pickle, no tensor inside, non-finite values, a
            length that contradicts the stated geometry.
        MaskShapeError: the mask was made for another geometry than ``n_layers`` x ``n_heads``; the
            message names the dimension that differs.

    Example:
        >>> mask = load_mask("../shared/reference/legacy_checkpoints/gender_librispeech/checkpoint.pth")
        >>> mask.values.shape
        torch.Size([1640])
    """
    path = resolve_mask_path(path)
    if not path.is_file():
        raise MaskFileError(f"{path}: no such mask file")
    tensor = _read_mask_tensor(path)
    stated = _checked_mask_geometry(path, tensor, n_layers, n_heads)
    n_layers, n_heads = stated if stated is not None else (None, None)
    return Mask(tensor, "logits", n_layers, n_heads, source=str(path))


def _read_mask_tensor(path: Path) -> torch.Tensor:
    """The file's logits as a flat float32 tensor, read without unpickling code (safetensors or a
    weights-only torch load), every failure turned into a :class:`MaskFileError` naming the file."""
    if path.suffix in _SAFETENSORS_SUFFIXES:
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise MaskFileError(f"{path}: not a readable safetensors file ({_one_line(exc)})") from exc
        tensor = _extract_tensor(tensors, path)
    else:
        try:
            with warnings.catch_warnings():
                # Files written with pickle protocol 4 (most .pth files) load fine; torch warns anyway.
                warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle raises many types; all mean "not a safe mask file"
            raise MaskFileError(
                f"{path}: cannot be read as a weights-only torch file ({_one_line(exc)})"
            ) from exc
        tensor = _extract_tensor(obj, path)
    tensor = tensor.detach().float().reshape(-1)
    if not torch.isfinite(tensor).all():
        raise MaskFileError(f"{path}: the mask holds non-finite values")
    return tensor


def _checked_mask_geometry(
    path: Path, tensor: torch.Tensor, n_layers: int | None, n_heads: int | None
) -> tuple[int, int] | None:
    """The mask's geometry: the caller's when given, else the one the file states (None when neither),
    after checking the length against the stated geometry and the stated one against the caller's, so a
    mask for another model fails here with the differing dimension named, not later as a shape error."""
    stated = mask_geometry(path)
    if stated is not None and tensor.numel() != stated[0] * (stated[1] + 1):
        raise MaskFileError(
            f"{path}: holds {tensor.numel()} logits but states {stated[0]} layers x {stated[1]} heads, "
            f"which needs {stated[0] * (stated[1] + 1)}"
        )
    if n_layers is not None and n_heads is not None:
        if stated is not None and stated != (n_layers, n_heads):
            dim, made, model = (
                ("n_layers", stated[0], n_layers)
                if stated[0] != n_layers
                else ("n_heads", stated[1], n_heads)
            )
            raise MaskShapeError(
                f"{path}: {dim} differs: the mask was made for {made}, the model has {model} "
                f"(mask {stated[0]} x {stated[1]}, model {n_layers} x {n_heads})"
            )
        check_mask_length(tensor, n_layers, n_heads, source=str(path))
        stated = (n_layers, n_heads)
    return stated


def save_mask(
    logits: torch.Tensor | Mask,
    path: str | os.PathLike,
    *,
    n_layers: int | None = None,
    n_heads: int | None = None,
    base_model: str = "",
    extra: dict | None = None,
) -> Path:
    """Write mask logits atomically, in the released ``.pth`` format or as safetensors (by suffix).

    Args:
        logits: [L*(H+1)] or [L, H+1], or a logits :class:`Mask`.
        path: destination; ``.safetensors`` selects safetensors, anything else the released format.
        n_layers, n_heads: checked against the length when given, and recorded (safetensors metadata).
        base_model: an identifier of the model the mask was trained on (recorded in safetensors metadata).
        extra: more entries for the ``.pth`` dict (e.g. ``epoch``), as training checkpoints have.

    Returns:
        The path written.
    """
    path = Path(path)
    if isinstance(logits, Mask):  # a Mask states its geometry; the caller's, when given, must agree
        n_layers = n_layers if n_layers is not None else logits.n_layers
        n_heads = n_heads if n_heads is not None else logits.n_heads
        logits = logits.logits
    flat = logits.detach().float().cpu().reshape(-1).contiguous()
    if n_layers is not None and n_heads is not None:
        check_mask_length(flat, n_layers, n_heads, source=str(path))
    # One atomic writer (ahamask.utils.io) for both formats: a crash never leaves half a mask, and the
    # file gets the usual umask permissions rather than a temporary file's 0600.
    with atomic_open(path, "wb") as handle:
        if path.suffix in _SAFETENSORS_SUFFIXES:
            metadata = {
                "format": MASK_FORMAT,
                "ahamask_version": __version__,
                "base_model": base_model,
                "has_ffn": "true",
            }
            if n_layers is not None and n_heads is not None:
                metadata.update(n_layers=str(n_layers), n_heads=str(n_heads))
            handle.write(save_safetensors({"tensor": flat}, metadata=dict(sorted(metadata.items()))))
        else:
            torch.save({"model": {"tensor": flat}, **(extra or {})}, handle)
    return path


def save_mask_folder(
    logits: torch.Tensor,
    folder: str | os.PathLike,
    n_layers: int,
    n_heads: int,
    *,
    base_model: str = "",
    extra_config: dict[str, Any] | None = None,
) -> Path:
    """Write the folder form: ``mask.safetensors`` (geometry in its metadata) and ``mask_config.json``.

    Both files are written atomically; the sidecar is written last, so a folder with a sidecar always has
    its mask.

    Args:
        logits: [L*(H+1)] or [L, H+1].
        folder: the destination folder (created; existing files of these two names are replaced).
        n_layers, n_heads: the geometry (checked against the length).
        base_model: the model the mask was trained on.
        extra_config: more sidecar keys (task, source).

    Returns:
        The path of ``mask.safetensors``.

    Raises:
        MaskShapeError: the length does not fit ``n_layers`` x ``n_heads``.

    Example:
        >>> save_mask_folder(torch.zeros(10), "/tmp/ahamask_doc/tiny_mask", 2, 4).name
        'mask.safetensors'
    """
    folder = Path(folder)
    out = save_mask(
        logits, folder / MASK_FILE_NAME, n_layers=n_layers, n_heads=n_heads, base_model=base_model
    )
    write_mask_config(folder, n_layers, n_heads, base_model=base_model, extra=extra_config)
    return out
