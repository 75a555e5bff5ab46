"""Instruction sensitivity: decode a manifest under each instruction variant (no mask) and each mask.

Usage:
    python scripts/instruction_sweep.py -c DECODE_CONFIG --instructions prompts/instructions/asr.json
        [--masks M1 M2 ...] [--task asr] [--out report.json] [--device DEV] [--options key=value ...]

Prints a table (per variant, mean/std/min/max over variants, each mask's figure); --out writes the JSON report.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ahamask.config import ConfigError, load_decode_config
from ahamask.evaluation.sweep import format_sweep, instruction_sweep
from ahamask.utils.logging import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    args = parser.parse_args(argv)
    setup_logging(logging.INFO, rank=0)
    try:
        cfg = load_decode_config(args.cfg_path, args.options)
        report = instruction_sweep(cfg, args.instructions, args.masks, args.task, args.out, args.device)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"instruction_sweep.py: error: {exc}", file=sys.stderr)
        return 2
    print(format_sweep(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
