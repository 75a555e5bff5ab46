"""The body of ``train.py``: check the whole input, then train; every error ends as one line.

Order matters for the user's time: the config is checked first (no torch yet, well under a second), then
every file the run reads and the folders it writes (:mod:`ahamask.preflight`), and only then are torch,
transformers and the model loaded. Errors go through :func:`ahamask.utils.errors.run_cli`.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from ..config import load_train_config
from ..utils.cli_args import entry_parser
from ..utils.errors import run_cli
from ..utils.logging import setup_logging

logger = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> int:
    """Run training from parsed ``train.py`` arguments.

    Returns:
        The exit code: 0, 2 for a config error, 1 for an unusable input or a failed run, 130 on Ctrl-C
        (each with one line on stderr; ``--debug`` or ``AHAMASK_DEBUG=1`` shows the traceback instead).
    """
    return run_cli(lambda: _train(args), debug=getattr(args, "debug", False))


def _train(args: argparse.Namespace) -> int:
    # Before the process group exists, the launcher's environment tells the rank.
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
    setup_logging(rank=rank)
    cfg = load_train_config(args.cfg_path, args.options)
    from ..preflight import check_train_inputs

    check_train_inputs(cfg)
    logger.debug("inputs checked: loading torch and the model")
    from .trainer import train  # torch and transformers load only now

    out = train(cfg, resume=args.resume, inputs_checked=True)
    if rank == 0:
        print(f"mask checkpoints written to {out}")
    return 0


DESCRIPTION = """Train an AHAMask head mask: train.py -c configs/config.yaml [--options key=value ...] [--resume CKPT].

Several processes: torchrun --nproc_per_node=N train.py -c ..."""


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``train.py`` and ``ahamask-train`` (one definition, so the two never drift)."""
    parser = entry_parser(DESCRIPTION, "training YAML (official keys)", device=False)
    parser.add_argument("--resume", default=None, help="checkpoint to continue from")
    return parser


def entry(argv: Sequence[str] | None = None) -> int:
    """The ``ahamask-train`` console command: parse ``argv`` (default: the process arguments) and train.

    Returns:
        The exit code of :func:`main`.
    """
    return main(build_parser().parse_args(argv))
