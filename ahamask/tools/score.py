"""``ahamask-score`` / ``scripts/score.py``: score an evaluate.py prediction file, task by task.

Prints a table per task and optionally writes the JSON report::

    ahamask-score PRED.json --manifest MANIFEST.json [--task TASK] [--labels L1 L2 ...] [--out report.json]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The scorer's command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("predictions", help="prediction JSON written by evaluate.py")
    parser.add_argument(
        "--manifest", help="test manifest giving each entry's task (matched on 'path' == 'id')"
    )
    parser.add_argument("--task", help="one task for every entry (overrides the manifest)")
    parser.add_argument(
        "--labels",
        nargs="+",
        help="label set that makes tasks without a registered metric (e.g. count) classification",
    )
    parser.add_argument("--out", help="write the report here as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Score a prediction file and print the table.

    Args:
        argv: the arguments (default: the process arguments).

    Returns:
        0, or 2 when the files cannot be scored (a one-line ``error:`` on standard error).
    """
    args = build_parser().parse_args(argv)
    from ..evaluation.scoring import format_table, save_report, score_file
    from ..utils.logging import setup_logging

    setup_logging(logging.INFO, rank=0)
    try:
        report = score_file(args.predictions, args.manifest, task=args.task, labels=args.labels)
    except (ValueError, FileNotFoundError) as err:
        print(f"score: error: {err}", file=sys.stderr)
        return 2
    print(format_table(report))
    if args.out:
        save_report(report, args.out)
        logger.info("report written to %s", args.out)
    return 0
