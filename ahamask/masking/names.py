"""Which file a mask reference means: a path, a mask folder, or the bare name of a released mask.

Kept free of torch (as :mod:`ahamask.masking.released` is) so the pre-flight checks and the command-line
tools can resolve ``model.weight_mask_path`` before anything heavy is imported. :mod:`ahamask.masking.checkpoint`
re-exports everything here; :func:`~ahamask.masking.checkpoint.load_mask` resolves through it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .released import RELEASE_FILE, RELEASED_MASKS

__all__ = ["LEGACY_DIR_NAME", "MASK_FILE_NAME", "REPO_ROOT", "MaskFileError", "resolve_mask_path"]

MASK_FILE_NAME = "mask.safetensors"
LEGACY_DIR_NAME = "legacy_checkpoints"
# legacy_checkpoints/ is looked for here after the working directory: the folder above the package.
REPO_ROOT = Path(__file__).resolve().parents[2]


class MaskFileError(ValueError):
    """A mask file is missing, unreadable or not in a known format."""


def _is_bare_name(spec: str) -> bool:
    """``gender_librispeech``: no folder part and no suffix, so the name of a mask rather than a path."""
    path = Path(spec)
    return bool(spec) and len(path.parts) == 1 and not path.suffix and spec not in (".", "..")


def _mask_in_folder(folder: Path) -> Path | None:
    """The mask file of a folder: the shareable ``mask.safetensors`` first, else a released checkpoint.pth."""
    for name in (MASK_FILE_NAME, RELEASE_FILE):
        if (folder / name).is_file():
            return folder / name
    return None


def _legacy_dirs() -> list[Path]:
    """Where bare names are looked up, in order: ./legacy_checkpoints, then the repository's."""
    dirs = [Path.cwd() / LEGACY_DIR_NAME, REPO_ROOT / LEGACY_DIR_NAME]
    return [d for i, d in enumerate(dirs) if d.resolve() not in {e.resolve() for e in dirs[:i]}]


def resolve_mask_path(spec: str | os.PathLike, key: str = "") -> Path:
    """Turn a mask path, a mask folder or the bare name of a released mask into the file to read.

    Args:
        spec: a file (``checkpoint.pth``, ``*.safetensors``), a folder holding ``mask.safetensors`` or
            ``checkpoint.pth``, or a bare name such as ``gender_librispeech`` (no folder, no suffix), which
            means ``legacy_checkpoints/<name>/checkpoint.pth`` under the working directory or, failing
            that, under the repository root.
        key: the config key the value came from, put in front of error messages.

    Returns:
        The mask file. A path that does not exist is returned as it is, so :func:`load_mask` reports it.

    Raises:
        MaskFileError: a folder without a mask file, or a bare name found nowhere (the message lists the
            known names and where it looked).

    Example:
        >>> resolve_mask_path("gender_librispeech")  # after scripts/import_released_masks.py
        PosixPath('/.../legacy_checkpoints/gender_librispeech/checkpoint.pth')
    """
    prefix = f"{key}: " if key else ""
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        found = _mask_in_folder(path)
        if found is None:
            # A run folder from before the folder form: point at its epoch checkpoints.
            others = sorted(p.name for p in path.glob("*.pth"))
            hint = (
                f"; it has {', '.join(others[:4])}{' ...' if len(others) > 4 else ''}: name one"
                if others
                else ""
            )
            raise MaskFileError(
                f"{prefix}{path}: folder holds neither {MASK_FILE_NAME} nor {RELEASE_FILE}{hint}"
            )
        return found
    if path.exists() or not _is_bare_name(text):
        return path
    dirs = _legacy_dirs()
    for folder in dirs:
        found = _mask_in_folder(folder / text)
        if found is not None:
            return found
    local = sorted({p.parent.name for d in dirs if d.is_dir() for p in d.glob(f"*/{RELEASE_FILE}")})
    where = " or ".join(str(d) for d in dirs)
    if text in RELEASED_MASKS:
        raise MaskFileError(
            f"{prefix}{text}: a released mask, but {LEGACY_DIR_NAME}/{text}/{RELEASE_FILE} is not in {where}; "
            "copy the release there with scripts/import_released_masks.py SRC"
        )
    known = sorted(set(RELEASED_MASKS) | set(local))
    raise MaskFileError(
        f"{prefix}{text}: no such mask file, and no mask of that name in {where}; "
        f"known names: {', '.join(known)}"
    )
