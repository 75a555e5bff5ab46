"""``make demo-real``: AHAMask on the frozen mini SALMONN (Whisper-base + SmolLM2-135M-Instruct + LoRA).

Usage: python scripts/demo_real.py [--out exp/mini/demo_real] [--checkpoint checkpoints/mini_salmonn/salmonn_mini.pth]
       [--mask-seeds 42 43 44] [--steps 80] [--n-test 60] [--jobs 2]

Needs ``make small-models`` first (pretrained/small and espeak-ng). Trains one mask per task and seed with
train.py's trainer, decodes the held-out test clips under every condition and writes ``report.md``,
``report.json`` and the mask pictures; prints the report. A rerun reuses the masks whose configs did not change.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ahamask.utils.errors import run_cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "exp" / "mini" / "demo_real"))
    parser.add_argument(
        "--checkpoint", default=str(REPO / "checkpoints" / "mini_salmonn" / "salmonn_mini.pth")
    )
    parser.add_argument("--config", default=str(REPO / "configs" / "mini_salmonn.yaml"))
    parser.add_argument("--world", default=str(REPO / "exp" / "mini" / "world"))
    parser.add_argument("--mask-seeds", type=int, nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=None, help="mask training steps")
    parser.add_argument("--n-test", type=int, default=None, help="test clips per condition")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (one thread each)")
    parser.add_argument("--debug", action="store_true", help="full tracebacks")
    args = parser.parse_args(argv)
    return run_cli(lambda: _run(args), debug=args.debug)


def _run(args: argparse.Namespace) -> int:
    from ahamask.mini.demo_real import DemoRealSettings, run_demo_real
    from ahamask.mini.report import render_markdown
    from ahamask.mini.setup import load_mini_config
    from ahamask.mini.world import build_speech_world
    from ahamask.utils.logging import setup_logging

    setup_logging()
    cfg = load_mini_config(args.config, REPO)
    settings = DemoRealSettings()
    if args.mask_seeds:
        settings.mask_seeds = tuple(args.mask_seeds)
    if args.steps:
        settings.masks.steps = args.steps
    if args.n_test:
        settings.n_test = args.n_test
    if args.jobs:
        settings.jobs = args.jobs
    world_info = build_speech_world(args.world, cfg.world_splits, seed=cfg.world_seed)  # reused when built
    report = run_demo_real(args.out, args.checkpoint, cfg, args.world, world_info, settings)
    print(render_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
