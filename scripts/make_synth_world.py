"""Build the synthetic world of ``make demo``: audio clips, manifests, prompt files, world.json.

Usage: python scripts/make_synth_world.py OUT [--seed N] [--n-train N] [--n-valid N] [--n-test N]
       [--clip-seconds S] [--tasks asr gender ...] [--clean] [--mixed-tasks-per-clip K] [--overwrite]
"""

from __future__ import annotations

import argparse
import logging

from ahamask.synth import DEFAULT_TASKS, TASKS, build_world


def main(argv: list[str] | None = None) -> None:
    """Parses the command line and builds the world."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="world folder (created; must be empty unless it holds a world)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-valid", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--clip-seconds", type=float, default=2.0)
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), choices=list(TASKS))
    parser.add_argument("--clean", action="store_true", help="no background noise")
    parser.add_argument("--mixed-tasks-per-clip", type=int, default=None)
    parser.add_argument("--overwrite", action="store_true", help="rebuild a world already in OUT")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    build_world(
        args.out,
        seed=args.seed,
        n_train=args.n_train,
        n_valid=args.n_valid,
        n_test=args.n_test,
        clip_seconds=args.clip_seconds,
        tasks=args.tasks,
        snr_db=None if args.clean else (15.0, 30.0),
        mixed_tasks_per_clip=args.mixed_tasks_per_clip,
        overwrite=args.overwrite,
    )


if __name__ == "__main__":
    main()
