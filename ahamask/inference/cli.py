"""The command line of ``cli_inference.py`` and ``ahamask-chat``, importable without torch.

``--help`` and argument errors answer at once: the model stack (torch, transformers) is imported only
after the arguments are parsed, inside :func:`entry`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["DESCRIPTION", "build_parser", "entry"]

DESCRIPTION = """Chat with SALMONN about audio files, with an AHAMask mask when model.weight_mask_path is set.

    cli_inference.py -c configs/decode_config.yaml [--device DEV] [--options key=value ...]
    cli_inference.py -c configs/decode_config.yaml --wav question.wav [--prompt TEXT]   # one answer

In a session: type a wav path (and a prompt when no mask is applied); :mask PATH, :nomask, :help, :quit.
Typed lines are kept in ~/.ahamask_history ($AHAMASK_HISTORY to move it; empty to keep none).
With --wav only the answer goes to standard output (the mask line and messages go to standard error)."""


def build_parser() -> argparse.ArgumentParser:
    """The chat command line (one definition for ``cli_inference.py`` and ``ahamask-chat``)."""
    parser = argparse.ArgumentParser(
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-c", "--cfg-path", required=True, help="decoding YAML (official keys)")
    parser.add_argument(
        "--device", default=None, help="auto | cpu | cuda[:i] | npu[:i] (default: the config's)"
    )
    parser.add_argument(
        "--options", nargs="+", default=[], help="overrides: key=value or alternating key value"
    )
    parser.add_argument("--wav", default=None, help="answer for this audio file and exit")
    parser.add_argument("--prompt", default=None, help="instruction for --wav (default: none with a mask)")
    return parser


def entry(argv: Sequence[str] | None = None) -> int:
    """The ``ahamask-chat`` console command: parse ``argv`` (default: the process arguments) and chat.

    Returns:
        The exit code of :func:`ahamask.inference.chat.main`.
    """
    args = build_parser().parse_args(argv)
    from .chat import main  # torch and the model stack load only now

    return main(args)
