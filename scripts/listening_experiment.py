#!/usr/bin/env python
"""The listening experiment on the MCQ world over several seeds (ahamask.analysis.listening_experiment).

Usage: python scripts/listening_experiment.py OUT_DIR [--seeds 0 1 2] [--steps N] [--speech-steps N]
Writes OUT_DIR/summary.json (mean +- std over seeds and every seed's result) and per-seed heatmaps.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ahamask.analysis.listening_experiment import ExperimentSettings, run_experiment  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="joint training steps of the base model")
    parser.add_argument("--speech-steps", type=int, default=None, help="speech-side pretraining steps")
    parser.add_argument("--k", type=int, default=None, help="number of audio-specialist heads")
    parser.add_argument("--betas", type=float, nargs="+", default=None, help="the steering sweep")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = ExperimentSettings(seeds=tuple(args.seeds))
    base = settings.base
    if args.steps is not None:
        base = replace(base, steps=args.steps)
    if args.speech_steps is not None:
        base = replace(base, speech_steps=args.speech_steps)
    settings = replace(settings, base=base, k=args.k or settings.k, betas=tuple(args.betas or settings.betas))
    summary = run_experiment(args.out, settings)
    print(json.dumps(summary["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
