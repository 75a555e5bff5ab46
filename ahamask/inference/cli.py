"""The command line of ``cli_inference.py`` and ``ahamask-chat``, importable without torch.

``--help`` and argument errors answer at once: the model stack (torch, transformers) is imported only
after the arguments are parsed, inside :func:`entry`. Before that, the config is checked (well under a
second) and the model files and the mask (:func:`ahamask.preflight.check_chat_inputs`), so a mistake is one
line on stderr before any model loads; ``--debug`` or ``AHAMASK_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..utils.cli_args import entry_parser

__all__ = ["DESCRIPTION", "build_parser", "entry"]

DESCRIPTION = """Chat with SALMONN about audio files, with an AHAMask mask when model.weight_mask_path is set.

    cli_inference.py -c configs/decode_config.yaml [--device DEV] [--options key=value ...]
    cli_inference.py -c configs/decode_config.yaml --wav question.wav [--prompt TEXT]   # one answer

In a session: type a wav path (and a prompt when no mask is applied); :mask PATH, :nomask, :help, :quit.
Typed lines are kept in ~/.ahamask_history ($AHAMASK_HISTORY to move it; empty to keep none).
With --wav only the answer goes to standard output (the mask line and messages go to standard error)."""


def build_parser() -> argparse.ArgumentParser:
    """The chat command line (one definition for ``cli_inference.py`` and ``ahamask-chat``)."""
    parser = entry_parser(DESCRIPTION, "decoding YAML (official keys)")
    parser.add_argument("--wav", default=None, help="answer for this audio file and exit")
    parser.add_argument("--prompt", default=None, help="instruction for --wav (default: none with a mask)")
    return parser


def entry(argv: Sequence[str] | None = None) -> int:
    """The ``ahamask-chat`` console command: parse ``argv`` (default: the process arguments) and chat.

    Returns:
        The exit code of :func:`ahamask.inference.chat.main`; 2 for a config error, 1 for an unusable model
        file or mask (one line on stderr), 130 on Ctrl-C.
    """
    args = build_parser().parse_args(argv)
    from ..utils.errors import run_cli

    return run_cli(lambda: _chat(args), debug=args.debug)


def _chat(args: argparse.Namespace) -> int:
    import logging

    from ..config import load_decode_config
    from ..preflight import check_chat_inputs
    from ..utils.logging import setup_logging

    setup_logging(logging.WARNING, rank=0)  # as the chat does: INFO lines would interleave with answers
    check_chat_inputs(load_decode_config(args.cfg_path, args.options))
    from .chat import main  # torch and the model stack load only now

    return main(args)
