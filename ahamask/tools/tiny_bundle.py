"""``ahamask-tiny-bundle`` / ``scripts/make_tiny_bundle.py``: write a tiny random SALMONN bundle.

The bundle has the real file formats at toy sizes (a 2-layer LLaMA with 4 heads, a tiny Whisper encoder, a
Q-Former, ``salmonn.pth``), ten synthetic clips with train/valid/test manifests, and its own
``config.yaml`` / ``decode_config.yaml`` with absolute paths, so every command runs on it in seconds::

    ahamask-tiny-bundle OUT [--n-layers 2] [--n-heads 4] [--hidden-size 64] [--chunk-seconds 4]
        [--with-beats] [--seed 0]
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

__all__ = ["build_parser", "main"]

_SIZES = ("n_layers", "n_heads", "n_kv_heads", "hidden_size", "intermediate_size", "chunk_seconds", "seed")


def build_parser() -> argparse.ArgumentParser:
    """The bundle writer's command line (sizes default to :class:`ahamask.models.tiny.TinySpec`)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", help="destination folder (created; existing files are overwritten)")
    for name in _SIZES:
        parser.add_argument("--" + name.replace("_", "-"), type=int, dest=name)
    parser.add_argument("--with-beats", action="store_true", default=None, help="add a tiny BEATs encoder")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Write the bundle and print where its configs are.

    Args:
        argv: the arguments (default: the process arguments).

    Returns:
        0.
    """
    args = vars(build_parser().parse_args(argv))
    from ..models.tiny import make_tiny_bundle  # torch loads here, after --help could answer
    from ..utils.logging import setup_logging

    setup_logging(logging.WARNING, rank=0)  # the line below says what was written
    out = make_tiny_bundle(args.pop("out"), **{k: v for k, v in args.items() if v is not None})
    print(f"tiny bundle written to {out} (configs: {out / 'config.yaml'}, {out / 'decode_config.yaml'})")
    return 0
