"""The laptop-scale AHAMask experiment (make demo).

Usage: python scripts/demo.py [--out exp/demo] [--preset full|quick] [--seed N] [--force] [--threads N]

Trains a tiny instruction-following SALMONN on the synthetic world, one head mask per task with no
instruction, evaluates both on held-out clips and writes OUT/report.md, report.json and PNGs of the masks.
Stages whose outputs exist are reused unless --force.
"""

from __future__ import annotations

import argparse
import sys

import torch

from ahamask.demo import preset, run_demo
from ahamask.utils.logging import setup_logging


def main(argv: list[str] | None = None) -> None:
    """Parses the command line, runs the demo and prints the results table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="exp/demo", help="demo folder (default exp/demo)")
    parser.add_argument(
        "--preset", default="full", choices=["full", "quick"], help="full: make demo; quick: tests"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the world and the base model")
    parser.add_argument("--force", action="store_true", help="redo every stage even if its outputs exist")
    # One thread: on a busy 2-core machine torch with 2 threads can be 5-10x slower (spinning threads).
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    setup_logging()
    torch.set_num_threads(args.threads)
    try:
        result = run_demo(args.out, preset(args.preset, seed=args.seed), force=args.force)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        sys.exit(f"error: {exc}")
    print()
    print(result.table)
    print()
    for verdict in result.report["verdicts"].values():
        print(verdict["sentence"])
    total = sum(result.stage_seconds.values())
    print(f"\nthis run took {total:.0f} s; report: {result.out_dir / 'report.md'}")


if __name__ == "__main__":
    main()
