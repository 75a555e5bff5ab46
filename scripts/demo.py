"""The laptop-scale AHAMask experiment (make demo).

Usage: python scripts/demo.py [--out exp/demo] [--preset full|quick] [--seeds N] [--defaults asr gender]
                              [--jobs N] [--force] [--threads N] [--bf16]

For each of N seeds (default 3): builds a synthetic world, trains a tiny instruction-following SALMONN whose
empty-prompt behaviour is a declared default task, trains one head mask per task with no instruction, and
evaluates on held-out clips. Writes OUT/<default>/seed_<s>/ (a complete single-seed report each) and OUT/report.md /
report.json: every cell as mean +- std over seeds, strict and lenient scoring, verdicts with seed counts and
the reachability table. Stages whose outputs exist are reused unless --force.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import torch

from ahamask.demo import preset
from ahamask.demo.seeds import render_seeds_text, run_seeds
from ahamask.utils.logging import setup_logging


def main(argv: list[str] | None = None) -> None:
    """Parses the command line, runs the demo over seeds and prints the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="exp/demo", help="demo folder (default exp/demo)")
    parser.add_argument(
        "--preset", default="full", choices=["full", "quick"], help="full: make demo; quick: tests"
    )
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..N-1 (default 3)")
    parser.add_argument("--first-seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument(
        "--defaults",
        nargs="+",
        default=None,
        help="base-model no-instruction tasks to compare (default: asr)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="seeds run at once, one single-threaded process each (default: one per CPU core; same results)",
    )
    parser.add_argument("--force", action="store_true", help="redo every stage even if its outputs exist")
    # One thread: on a busy 2-core machine torch with 2 threads can be 5-10x slower (spinning threads).
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    # float32 unless asked: the precision is a setting, never picked by timing (numbers differ in bf16).
    parser.add_argument(
        "--bf16", action="store_true", help="bf16 autocast for the base model (default float32)"
    )
    args = parser.parse_args(argv)
    setup_logging()
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    try:
        settings = preset(args.preset)
        if args.bf16:
            settings.base = dataclasses.replace(settings.base, bf16="on")
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        runs = len(seeds) * len(args.defaults or [None])
        jobs = args.jobs or max(1, min(runs, os.cpu_count() or 1))
        result = run_seeds(args.out, settings, seeds, defaults=args.defaults, force=args.force, jobs=jobs)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        sys.exit(f"error: {exc}")
    print()
    print(render_seeds_text(result.report))
    print(f"\nthis run took {time.perf_counter() - started:.0f} s; report: {result.out_dir / 'report.md'}")


if __name__ == "__main__":
    main()
