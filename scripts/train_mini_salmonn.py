"""Train the mini SALMONN of issue #18 (connector + LoRA on Whisper-base and SmolLM2-135M-Instruct).

Usage: python scripts/train_mini_salmonn.py [--config configs/mini_salmonn.yaml] [--run exp/mini/train]
       [--steps N] [--threads N] [--export checkpoints/mini_salmonn]

Needs ``pretrained/small`` (``python scripts/prepare_small_models.py``) and espeak-ng (Debian package).
Re-running the same command resumes from ``<run>/last.pt``; Ctrl-C saves it first. ``--export`` copies the
result (``salmonn_mini.pth``, ``training.json``, the config, the command and the package versions) to a
folder meant to be committed.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ahamask.utils.errors import run_cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "mini_salmonn.yaml"))
    parser.add_argument("--run", default=str(REPO / "exp" / "mini" / "train"))
    parser.add_argument("--world", default=str(REPO / "exp" / "mini" / "world"))
    parser.add_argument("--steps", type=int, default=None, help="override train.steps")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--export", default=None, help="folder to copy the trained checkpoint into")
    parser.add_argument("--debug", action="store_true", help="full tracebacks")
    args = parser.parse_args(argv)
    return run_cli(lambda: _run(args, argv if argv is not None else sys.argv[1:]), debug=args.debug)


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    from ahamask.mini.setup import build_mini_model, export_run, load_mini_config
    from ahamask.mini.training import train_connector
    from ahamask.mini.world import build_speech_world
    from ahamask.utils.logging import setup_logging

    setup_logging()
    cfg = load_mini_config(args.config, REPO)
    if args.steps is not None:
        cfg.train.steps = args.steps
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    world = Path(args.world)
    info = build_speech_world(world, cfg.world_splits, seed=cfg.world_seed)
    model = build_mini_model(cfg.model, seed=cfg.train.seed)
    summary = train_connector(model, cfg.model, cfg.train, world, info, Path(args.run))
    print(f"final validation: {summary['final_valid']}")
    if args.export:
        command = "python scripts/train_mini_salmonn.py " + " ".join(shlex.quote(a) for a in argv)
        out = export_run(Path(args.run), Path(args.export), Path(args.config), command, info)
        print(f"exported to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
