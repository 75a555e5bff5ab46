"""What the mask tools share: one-line errors, loading a mask with its geometry, naming a mask.

Imports of torch and of the mask modules happen inside the functions: the tools call these only after
argparse has run.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..masking.released import RELEASE_FILE, geometry_for_length

if TYPE_CHECKING:
    import torch

__all__ = ["LoadedMask", "ToolError", "fail", "load_with_geometry", "mask_label", "user_errors"]


class ToolError(Exception):
    """A mistake the user can fix; the tool prints it as one line and exits with 1."""


def fail(prog: str, message: object) -> int:
    """Print ``prog: error: message`` as one line on stderr and return the exit code 1."""
    text = " ".join(str(message).split())  # one line even when the message has several
    print(f"{prog}: error: {text}", file=sys.stderr)
    return 1


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a bad mask file or bad arguments raise (reported as one line, no traceback)."""
    from ..masking.checkpoint import MaskFileError
    from ..masking.mask import MaskShapeError

    return (ToolError, MaskFileError, MaskShapeError, OSError, ValueError)


def mask_label(path: str | os.PathLike) -> str:
    """A short name: the folder of a ``checkpoint.pth`` / ``mask.safetensors``, else the file's stem."""
    from ..masking.checkpoint import MASK_FILE_NAME

    path = Path(path)
    if path.name in (RELEASE_FILE, MASK_FILE_NAME) and path.parent.name:
        return path.resolve().parent.name
    return path.stem


@dataclass(frozen=True)
class LoadedMask:
    """A mask file read with the geometry it was made for, and where that geometry came from."""

    path: Path
    logits: torch.Tensor
    n_layers: int
    n_heads: int
    geometry_source: str

    @property
    def label(self) -> str:
        return mask_label(self.path)


def load_with_geometry(spec: str, n_layers: int | None = None, n_heads: int | None = None) -> LoadedMask:
    """Load a mask and find its geometry: the file's metadata or sidecar, a known length, then the flags.

    Args:
        spec: a mask file, a mask folder or a released name (see ``resolve_mask_path``).
        n_layers, n_heads: the ``--n-layers`` / ``--n-heads`` fallback; when the file states its
            geometry they must agree with it.

    Raises:
        ToolError: no geometry can be found, the flags contradict the file, or only one flag is given.
        MaskFileError, MaskShapeError: the file cannot be read or does not fit the geometry.
    """
    from ..masking.checkpoint import load_mask, mask_geometry, read_mask_metadata, resolve_mask_path

    if (n_layers is None) != (n_heads is None):
        raise ToolError("--n-layers and --n-heads go together: give both or neither")
    path = resolve_mask_path(spec)
    logits = load_mask(path).values
    stated = mask_geometry(path)
    if stated is not None:
        if n_layers is not None and (n_layers, n_heads) != stated:
            raise ToolError(
                f"{path}: the file states {stated[0]} layers x {stated[1]} heads, "
                f"but --n-layers/--n-heads say {n_layers} x {n_heads}"
            )
        source = "safetensors metadata" if "n_layers" in read_mask_metadata(path) else "mask_config.json"
        return LoadedMask(path, logits, stated[0], stated[1], source)
    if n_layers is not None and n_heads is not None:
        if logits.numel() != n_layers * (n_heads + 1):
            raise ToolError(
                f"{path}: holds {logits.numel()} logits, but {n_layers} layers x {n_heads} heads "
                f"needs {n_layers * (n_heads + 1)}"
            )
        return LoadedMask(path, logits, n_layers, n_heads, "--n-layers/--n-heads")
    known = geometry_for_length(logits.numel())
    if known is not None:
        return LoadedMask(
            path, logits, known.n_layers, known.n_heads, f"{known.name}, recognised by its length"
        )
    raise ToolError(
        f"{path}: {logits.numel()} logits fit no known geometry (SALMONN-13B: 1640, SALMONN-7B: 1056) and "
        "the file states none; pass --n-layers and --n-heads"
    )
