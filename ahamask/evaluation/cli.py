"""The body of ``evaluate.py``: check the whole input, then decode; every error ends as one line.

The config is checked first (no torch yet, well under a second), then the manifest and its audio, the
model files, the mask and the output location (:mod:`ahamask.preflight`); only then are torch and the model
loaded. Errors go through :func:`ahamask.utils.errors.run_cli`; Ctrl-C keeps the decoded entries in
``<output>.partial`` and exits with 130.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from ..config import ConfigError, device_problem, load_decode_config
from ..utils.cli_args import entry_parser
from ..utils.errors import run_cli
from ..utils.logging import setup_logging

logger = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> int:
    """Run decoding from parsed ``evaluate.py`` arguments.

    Returns:
        The exit code: 0, 2 for a config error, 1 for an unusable input or a failed run, 130 on Ctrl-C
        (each with one line on stderr; ``--debug`` or ``AHAMASK_DEBUG=1`` shows the traceback instead).
    """
    return run_cli(lambda: _evaluate(args), debug=getattr(args, "debug", False))


def _evaluate(args: argparse.Namespace) -> int:
    rank = int(os.environ.get("RANK", "0"))
    setup_logging(rank=rank)
    cfg = load_decode_config(args.cfg_path, args.options)
    if args.device and device_problem("--device", args.device):
        raise ConfigError(device_problem("--device", args.device)[0])
    from ..preflight import check_decode_inputs

    check_decode_inputs(cfg, config_path=args.cfg_path)
    logger.debug("inputs checked: loading torch and the model")
    from .evaluator import evaluate  # torch and transformers load only now

    out = evaluate(cfg, device=args.device, check_inputs=False, config_path=args.cfg_path)
    if rank == 0:
        print(f"Successfully written file to {out}")
    return 0


DESCRIPTION = """Decode a manifest: evaluate.py -c configs/decode_config.yaml [--device DEV] [--options key=value ...].

Several processes: torchrun --nproc_per_node=N evaluate.py -c ..."""


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``evaluate.py`` and ``ahamask-evaluate`` (one definition for both)."""
    return entry_parser(DESCRIPTION, "decoding YAML (official keys)")


def entry(argv: Sequence[str] | None = None) -> int:
    """The ``ahamask-evaluate`` console command: parse ``argv`` (default: the process arguments) and decode.

    Returns:
        The exit code of :func:`main`.
    """
    return main(build_parser().parse_args(argv))
