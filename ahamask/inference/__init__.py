"""Talking to SALMONN interactively: the REPL behind ``cli_inference.py``.

``chat(cfg)`` runs the official question loop (wav path, then a prompt when no mask is applied);
``ChatSession`` answers one audio file at a time and switches masks.
"""

from __future__ import annotations

from .chat import ChatSession, chat

__all__ = ["ChatSession", "chat"]
