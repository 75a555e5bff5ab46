"""Reading a ``--resume`` file: one line naming the file for anything that is not a usable checkpoint.

A resume file is either a checkpoint this trainer wrote (mask logits plus optimizer, scheduler, loader
position and random streams) or a released mask (logits only: training starts from them at step 0). It is
read with ``weights_only=True``: a file that holds code is refused, never executed. Everything is checked
before the model is built, except the geometry, which :func:`check_resume_geometry` compares with the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..utils.errors import describe_torch_load_error

__all__ = ["ResumeError", "read_resume_file", "check_resume_geometry", "TRAINER_KEYS"]

#: What a trainer checkpoint's ``trainer`` entry must hold to continue a run exactly.
TRAINER_KEYS = ("global_step", "next_epoch", "next_iter", "scheduler", "loader", "rng", "n_layers", "n_heads")


class ResumeError(ValueError):
    """The resume file is missing, unreadable, foreign or made for another model; the message names it."""


def read_resume_file(path: str | Path, key: str = "run.resume") -> dict[str, Any]:
    """Load and check a resume file.

    Args:
        path: the checkpoint.
        key: how the user gave it (``run.resume`` or ``--resume``), named in errors.

    Returns:
        The loaded state: ``{"model": {"tensor": logits}, ...}`` and, for trainer checkpoints, ``trainer``.

    Raises:
        ResumeError: missing, a directory, unreadable, truncated, not an AHAMask checkpoint, or a trainer
            checkpoint missing some of :data:`TRAINER_KEYS`.
    """
    path = Path(path)
    if path.is_dir():
        raise ResumeError(
            f"{key}: {path} is a directory; give a checkpoint file (e.g. {path}/checkpoint_0.pth)"
        )
    if not path.is_file():
        raise ResumeError(f"{key}: no such checkpoint file: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file; all mean the same here
        raise ResumeError(f"{key}: {path}: cannot be read: {describe_torch_load_error(exc)}") from None
    model = state.get("model") if isinstance(state, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("tensor"), torch.Tensor):
        found = sorted(state)[:6] if isinstance(state, dict) else type(state).__name__
        raise ResumeError(
            f"{key}: {path}: not an AHAMask checkpoint (expected {{'model': {{'tensor': logits}}}}, found {found})"
        )
    trainer = state.get("trainer")
    if trainer is not None:
        missing = [name for name in TRAINER_KEYS if name not in trainer]
        if missing:
            raise ResumeError(
                f"{key}: {path}: trainer state lacks {', '.join(missing)}; cannot resume exactly"
            )
    return state


def check_resume_geometry(state: dict[str, Any], path: str | Path, n_layers: int, n_heads: int) -> None:
    """Refuse a checkpoint made for another model, naming the dimension that differs.

    Raises:
        ResumeError: the logits' length or the saved geometry does not match ``n_layers x n_heads``.
    """
    trainer = state.get("trainer") or {}
    saved = (trainer.get("n_layers"), trainer.get("n_heads"))
    if saved != (None, None) and saved != (n_layers, n_heads):
        which = "n_layers" if saved[0] != n_layers else "n_heads"
        raise ResumeError(
            f"resume: {path} was trained on a model with {saved[0]} layers x {saved[1]} heads; this model has "
            f"{n_layers} x {n_heads} ({which} differs)"
        )
    numel = state["model"]["tensor"].numel()
    if numel != n_layers * (n_heads + 1):
        raise ResumeError(
            f"resume: {path} holds {numel} mask logits; this model needs {n_layers} layers x ({n_heads} heads + 1) "
            f"= {n_layers * (n_heads + 1)}"
        )
