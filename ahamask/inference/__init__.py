"""Talking to SALMONN interactively: the REPL behind ``cli_inference.py``.

``chat(cfg)`` runs the official question loop (wav path, then a prompt when no mask is applied);
``ChatSession`` answers one audio file at a time and switches masks. Both are imported on first use, so
the command line (:mod:`ahamask.inference.cli`) answers ``--help`` without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ChatSession", "chat"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".chat", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
