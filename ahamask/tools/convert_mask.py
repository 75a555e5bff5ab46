"""Convert a mask between the released ``.pth`` file and the shareable folder form.

Usage:
    python scripts/convert_mask.py SRC DST [--base-model ID] [--n-layers L --n-heads H]

* DST ending in ``.pth``: the released format, ``{"model": {"tensor": logits}}``, which the official code
  and every ahamask command read.
* any other DST: a folder with ``mask.safetensors`` and ``mask_config.json`` (n_layers, n_heads, has_ffn,
  base model, ahamask version, sorted keys), the form a training run leaves and that can be shared.

SRC is a mask file, a mask folder or a released name (``gender_librispeech``). The logits are copied
unchanged. DST must not exist: nothing is overwritten, and nothing half-written is left on failure.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import uuid
from pathlib import Path

from ._common import LoadedMask, ToolError, fail, load_with_geometry, user_errors

__all__ = ["build_parser", "convert", "main"]

PROG = "convert_mask"


def build_parser() -> argparse.ArgumentParser:
    """The command line (no torch needed to build it, so ``--help`` is instant)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", help="mask file, mask folder or released mask name")
    parser.add_argument("dst", type=Path, help="DST.pth (released format) or a new folder (folder form)")
    parser.add_argument(
        "--base-model", help="base model recorded in the folder form (default: the source's, if known)"
    )
    parser.add_argument("--n-layers", type=int, help="fallback geometry for a vector that states none")
    parser.add_argument("--n-heads", type=int, help="fallback geometry for a vector that states none")
    return parser


def _base_model(path: Path, n_layers: int, n_heads: int) -> str:
    """The source's base model: its sidecar or metadata, else the known geometry's (SALMONN-13B), else ''."""
    from ..masking.checkpoint import read_mask_config, read_mask_metadata
    from ..masking.released import geometry_for_length

    stated = (read_mask_config(path) or {}).get("base_model") or read_mask_metadata(path).get("base_model")
    if stated:
        return str(stated)
    known = geometry_for_length(n_layers * (n_heads + 1))
    return known.base_model if known and (known.n_layers, known.n_heads) == (n_layers, n_heads) else ""


def convert(
    src: str,
    dst: str | os.PathLike,
    *,
    base_model: str | None = None,
    n_layers: int | None = None,
    n_heads: int | None = None,
) -> Path:
    """Write the mask ``src`` to ``dst`` in the other form (see the module docstring).

    Args:
        src: a mask file, mask folder or released name.
        dst: ``*.pth`` for the released format, anything else for the folder form.
        base_model: recorded in the folder form; by default the source's (or SALMONN-13B's for a
            released 1640-logit mask).
        n_layers, n_heads: the geometry when the source states none and its length is not a known one.

    Returns:
        The path written (the ``.pth`` file or the folder).

    Raises:
        ToolError: ``dst`` exists, or no geometry is known.
        MaskFileError, MaskShapeError: ``src`` cannot be read.
    """
    from ..masking.checkpoint import save_mask

    dst = Path(dst)
    if dst.exists() or dst.is_symlink():
        raise ToolError(
            f"{dst}: already exists; convert_mask never overwrites, remove it or pick another name"
        )
    mask = load_with_geometry(src, n_layers, n_heads)
    if dst.suffix == ".pth":
        # save_mask writes through a temporary file and a rename: no partial DST.pth on failure.
        return save_mask(mask.logits, dst, n_layers=mask.n_layers, n_heads=mask.n_heads)
    if dst.suffix:
        raise ToolError(f"{dst}: expected DST.pth (released format) or a folder name without a suffix")
    _write_folder(mask, dst, base_model)
    return dst


def _write_folder(mask: LoadedMask, dst: Path, base_model: str | None) -> None:
    """Writes the folder form of ``mask`` (its source file's name and SHA-256, and the released task name,
    recorded in the config) beside ``dst`` under a hidden name and renames it at the end, so that ``dst``
    appears complete or not at all."""
    from ..masking.checkpoint import save_mask_folder
    from ..masking.released import RELEASED_MASKS

    extra = {
        "source": mask.path.name,
        "source_sha256": hashlib.sha256(mask.path.read_bytes()).hexdigest(),
    }
    if mask.label in RELEASED_MASKS:
        extra["task"] = mask.label
    tmp = dst.parent / f".{dst.name}.{uuid.uuid4().hex}.tmp"
    try:
        save_mask_folder(
            mask.logits,
            tmp,
            mask.n_layers,
            mask.n_heads,
            base_model=base_model
            if base_model is not None
            else _base_model(mask.path, mask.n_layers, mask.n_heads),
            extra_config=extra,
        )
        if dst.exists():
            raise ToolError(f"{dst}: appeared while converting; not overwritten")
        os.rename(tmp, dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the exit code (0, 1 for a bad file or an existing DST, 2 for usage errors).

    Example:
        >>> main(["gender_librispeech", "shared/gender_mask"])  # doctest: +SKIP
        0
    """
    args = build_parser().parse_args(argv)
    try:
        out = convert(
            args.src, args.dst, base_model=args.base_model, n_layers=args.n_layers, n_heads=args.n_heads
        )
    except user_errors() as exc:
        return fail(PROG, exc)
    print(f"{args.src} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
