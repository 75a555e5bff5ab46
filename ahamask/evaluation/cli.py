"""The body of ``evaluate.py``: load the config, decode, and turn known errors into one line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..config import ConfigError, load_decode_config
from ..utils.logging import setup_logging


def main(args: argparse.Namespace) -> None:
    """Run decoding from parsed ``evaluate.py`` arguments; exits with a one-line message on bad input."""
    from ..data.manifest import ManifestError
    from ..masking.checkpoint import MaskFileError
    from ..masking.mask import MaskShapeError
    from .evaluator import evaluate

    setup_logging(rank=int(os.environ.get("RANK", "0")))
    try:
        cfg = load_decode_config(args.cfg_path, args.options)
        out = evaluate(cfg, device=args.device)
    except (ConfigError, ManifestError, MaskFileError, MaskShapeError, FileNotFoundError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"Successfully written file to {out}")


DESCRIPTION = """Decode a manifest: evaluate.py -c configs/decode_config.yaml [--device DEV] [--options key=value ...].

Several processes: torchrun --nproc_per_node=N evaluate.py -c ..."""


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``evaluate.py`` and ``ahamask-evaluate`` (one definition for both)."""
    parser = argparse.ArgumentParser(
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-c", "--cfg-path", required=True, help="decoding YAML (official keys)")
    parser.add_argument(
        "--device", default=None, help="auto | cpu | cuda[:i] | npu[:i] (default: the config's)"
    )
    parser.add_argument(
        "--options", nargs="+", default=[], help="overrides: key=value or alternating key value"
    )
    return parser


def entry(argv: Sequence[str] | None = None) -> int:
    """The ``ahamask-evaluate`` console command: parse ``argv`` (default: the process arguments) and decode.

    Returns:
        The exit code (0; bad input exits with a one-line message from :func:`main`).
    """
    main(build_parser().parse_args(argv))
    return 0
