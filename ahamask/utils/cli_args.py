"""The arguments every entry point shares (train.py, evaluate.py, cli_inference.py and their console commands).

One definition, so ``-c``, ``--options``, ``--device`` and ``--debug`` mean the same everywhere. Importable
without torch: parsing (and ``--help``) must answer at once.
"""

from __future__ import annotations

import argparse

__all__ = ["entry_parser"]


def entry_parser(description: str, cfg_help: str, device: bool = True) -> argparse.ArgumentParser:
    """A parser with the shared arguments; callers add their own (``--resume``, ``--wav``, ...).

    Args:
        description: the command's help text (kept as written).
        cfg_help: help of ``-c/--cfg-path``.
        device: add ``--device`` (decoding commands; training takes ``run.device`` from the config).
    """
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-c", "--cfg-path", required=True, help=cfg_help)
    if device:
        parser.add_argument(
            "--device", default=None, help="auto | cpu | cuda[:i] | npu[:i] (default: the config's)"
        )
    parser.add_argument(
        "--options", nargs="+", default=[], help="overrides: key=value or alternating key value"
    )
    parser.add_argument(
        "--debug", action="store_true", help="on an error, show the full traceback (or set AHAMASK_DEBUG=1)"
    )
    return parser
