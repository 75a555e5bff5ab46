"""``ahamask-sweep`` / ``scripts/instruction_sweep.py``: instruction sensitivity of a task.

Decodes a manifest under each instruction variant (no mask) and under each mask (no instruction), then
prints a table (each variant, mean/std/min/max over the variants, each mask's figure)::

    ahamask-sweep -c DECODE_CONFIG --instructions prompts/instructions/asr.json
        [--masks M1 M2 ...] [--task asr] [--out report.json] [--device DEV] [--options key=value ...]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The sweep's command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-c", "--cfg-path", required=True, help="decoding YAML (test_data_path, model, generate)"
    )
    parser.add_argument("--instructions", required=True, help="JSON list of instruction variants")
    parser.add_argument("--masks", nargs="+", default=[], help="mask files, each decoded with no instruction")
    parser.add_argument("--task", default=None, help="task of every entry (default: the manifest's)")
    parser.add_argument("--out", default=None, help="write the JSON report here")
    parser.add_argument(
        "--device", default=None, help="auto | cpu | cuda[:i] | npu[:i] (default: the config's)"
    )
    parser.add_argument("--options", nargs="+", default=[], help="config overrides: key=value")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep and print its table.

    Args:
        argv: the arguments (default: the process arguments).

    Returns:
        0, or 2 on a bad config, file or mask (a one-line ``error:`` on standard error).
    """
    args = build_parser().parse_args(argv)
    from ..config import ConfigError, load_decode_config
    from ..utils.logging import setup_logging

    setup_logging(logging.INFO, rank=0)
    try:
        cfg = load_decode_config(args.cfg_path, args.options)
        from ..evaluation.sweep import format_sweep, instruction_sweep  # torch loads here

        report = instruction_sweep(cfg, args.instructions, args.masks, args.task, args.out, args.device)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"sweep: error: {exc}", file=sys.stderr)
        return 2
    print(format_sweep(report))
    return 0
