"""Decoding with a steering file: which kind it is, read from its metadata, and the context it needs.

``evaluate.py`` and ``cli_inference.py`` take ``steering_path`` + ``steering_strength``; the file says what
it is (``format`` in its safetensors metadata): an audio-silence direction
(:mod:`ahamask.analysis.silence_steering`, strength = beta) or instruction-contrast vectors
(:mod:`ahamask.analysis.contrast_steering`, strength = alpha). A strength of 0 is bit-identical to no
steering (tested in both modules).
"""

from __future__ import annotations

import contextlib
import os

from safetensors import SafetensorError, safe_open

from ..models.backbone import AudioLLM

__all__ = ["steering_format", "steering_from_file"]


def steering_format(path: str | os.PathLike) -> str:
    """The ``format`` metadata of a steering file.

    Raises:
        FileNotFoundError: no such file (the key ``steering_path`` is named).
        ValueError: not a readable safetensors file, or no ``format`` in it.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"steering_path: no such file: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            fmt = (handle.metadata() or {}).get("format", "")
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"steering_path: {path} is not a readable safetensors file ({exc})") from None
    if not fmt:
        raise ValueError(f"steering_path: {path} has no 'format' metadata (not a steering file)")
    return fmt


def steering_from_file(
    model: AudioLLM, path: str | os.PathLike | None, strength: float
) -> contextlib.AbstractContextManager:
    """The context to decode in: the file's steering at ``strength``, or nothing when ``path`` is empty.

    Raises:
        FileNotFoundError / ValueError: a missing file, an unknown format, or one that does not fit the model.
    """
    if not path:
        return contextlib.nullcontext()
    from . import contrast_steering, silence_steering

    fmt = steering_format(path)
    if fmt == silence_steering.DIRECTION_FORMAT:
        return silence_steering.steering_context(model, path, strength)
    if fmt == contrast_steering.FORMAT:
        return contrast_steering.steering_context(model, path, strength)
    known = (silence_steering.DIRECTION_FORMAT, contrast_steering.FORMAT)
    raise ValueError(f"steering_path: {path} has format {fmt!r}, not one of {known}")
