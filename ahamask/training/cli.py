"""The body of ``train.py``: load the config, set up logging, train, and turn known errors into one line."""

from __future__ import annotations

import argparse
import os
import sys

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
