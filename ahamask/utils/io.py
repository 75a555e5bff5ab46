"""Atomic file writes: a crash or an exception never leaves a half-written checkpoint or JSON.

Each writer fills a temporary file in the destination folder (same file system, so the final rename
is atomic), flushes and fsyncs it, then ``os.replace``-s it over the destination. On any error the
temporary file is removed and the previous destination file, if any, is left untouched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["atomic_open", "atomic_torch_save", "atomic_write_json", "atomic_write_text"]


def _fsync_dir(folder: Path) -> None:
    """Makes the rename itself durable; some platforms (Windows) cannot open folders, which is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """Opens a temporary file that replaces ``path`` only when the block exits without an error.

    Args:
        path: Destination file; its parent folders are created.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        encoding: Text encoding for ``"w"``.

    Yields:
        The open temporary file.

    Raises:
        ValueError: If ``mode`` is not ``"w"`` or ``"wb"``.

    Example:
        >>> with atomic_open("/tmp/ahamask_doc/out.txt") as f:
        ...     _ = f.write("done")
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A hidden, unique name in the same folder: same file system for os.replace, skipped by
    # glob("*.pth"). Opened with "x" rather than tempfile.mkstemp so the file gets the usual
    # umask-based permissions (mkstemp's 0600 would make shared checkpoints unreadable to the group).
    tmp_name = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.tmp"
    handle = open(tmp_name, mode.replace("w", "x"), encoding=None if "b" in mode else encoding)
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, dest)
    except BaseException:
        # BaseException too: a KeyboardInterrupt mid-write must not leave the temporary file behind.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(dest.parent)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` that never leaves a partial file at ``path``.

    Args:
        obj: Anything ``torch.save`` accepts (state dicts, tensors).
        path: Destination file.

    Returns:
        The destination path.

    Example:
        >>> atomic_torch_save({"w": torch.zeros(2)}, "/tmp/ahamask_doc/ckpt.pth").name
        'ckpt.pth'
    """
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)
    return Path(path)


def atomic_write_json(
    obj: Any, path: str | os.PathLike, indent: int | None = 4, sort_keys: bool = False
) -> Path:
    """Writes ``obj`` as UTF-8 JSON (non-ASCII text kept readable) with a trailing newline.

    Args:
        obj: A JSON-serialisable object.
        path: Destination file.
        indent: Indentation, None for a single line.
        sort_keys: Sort object keys (used for config files that are compared or diffed).

    Returns:
        The destination path.

    Raises:
        TypeError: If ``obj`` is not JSON-serialisable (the destination is left unchanged).

    Example:
        >>> atomic_write_json({"n_layers": 40}, "/tmp/ahamask_doc/mask_config.json").name
        'mask_config.json'
    """
    with atomic_open(path, "w") as handle:
        json.dump(obj, handle, indent=indent, ensure_ascii=False, sort_keys=sort_keys)
        handle.write("\n")
    return Path(path)


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Writes a UTF-8 text file atomically.

    Args:
        text: The full content.
        path: Destination file.

    Returns:
        The destination path.

    Example:
        >>> atomic_write_text("seed: 42\\n", "/tmp/ahamask_doc/config.yaml").name
        'config.yaml'
    """
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)
