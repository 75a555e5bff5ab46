"""The body of ``train.py``: load the config, set up logging, train, and turn known errors into one line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..config import ConfigError, load_train_config
from ..utils.logging import setup_logging


def main(args: argparse.Namespace) -> None:
    """Run training from parsed ``train.py`` arguments; exits with a one-line message on bad input."""
    from ..data.manifest import ManifestError
    from .trainer import NonFiniteLossError, train

    # Before the process group exists, the launcher's environment tells the rank.
    setup_logging(rank=int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))))
    try:
        cfg = load_train_config(args.cfg_path, args.options)
        out = train(cfg, resume=args.resume)
    except (ConfigError, ManifestError, FileNotFoundError, NonFiniteLossError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    print(f"mask checkpoints written to {out}")


DESCRIPTION = """Train an AHAMask head mask: train.py -c configs/config.yaml [--options key=value ...] [--resume CKPT].

Several processes: torchrun --nproc_per_node=N train.py -c ..."""


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``train.py`` and ``ahamask-train`` (one definition, so the two never drift)."""
    parser = argparse.ArgumentParser(
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-c", "--cfg-path", required=True, help="training YAML (official keys)")
    parser.add_argument(
        "--options", nargs="+", default=[], help="overrides: key=value or alternating key value"
    )
    parser.add_argument("--resume", default=None, help="checkpoint to continue from")
    return parser


def entry(argv: Sequence[str] | None = None) -> int:
    """The ``ahamask-train`` console command: parse ``argv`` (default: the process arguments) and train.

    Returns:
        The exit code (0; bad input exits with a one-line message from :func:`main`).
    """
    main(build_parser().parse_args(argv))
    return 0
