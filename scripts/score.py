"""Score an evaluate.py prediction file: prints a table per task and optionally writes a JSON report.

Usage:
    python scripts/score.py PRED.json --manifest MANIFEST.json [--task TASK] [--labels L1 L2 ...]
        [--out report.json]
"""

from __future__ import annotations

import argparse
import logging
import sys

from ahamask.evaluation.scoring import format_table, save_report, score_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = score_file(args.predictions, args.manifest, task=args.task, labels=args.labels)
    except (ValueError, FileNotFoundError) as err:
        print(f"score.py: error: {err}", file=sys.stderr)
        return 2
    print(format_table(report))
    if args.out:
        save_report(report, args.out)
        logging.getLogger("score").info("report written to %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
