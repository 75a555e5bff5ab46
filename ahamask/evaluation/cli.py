"""The body of ``evaluate.py``: load the config, decode, and turn known errors into one line."""

from __future__ import annotations

import argparse
import os
import sys

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
