"""Write a tiny random SALMONN bundle (real file formats, toy sizes) for tests and demos.

Usage: python scripts/make_tiny_bundle.py OUT [--n-layers 2] [--n-heads 4] [--hidden-size 64]
       [--chunk-seconds 4] [--with-beats] [--seed 0]
"""

import argparse
import logging

from ahamask.models.tiny import make_tiny_bundle
from ahamask.utils.logging import setup_logging


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out")
    for name in (
        "n_layers",
        "n_heads",
        "n_kv_heads",
        "hidden_size",
        "intermediate_size",
        "chunk_seconds",
        "seed",
    ):
        parser.add_argument("--" + name.replace("_", "-"), type=int, dest=name)
    parser.add_argument("--with-beats", action="store_true", default=None)
    args = vars(parser.parse_args())
    setup_logging(logging.WARNING, rank=0)  # the line below says what was written; no third-party noise
    out = make_tiny_bundle(args.pop("out"), **{k: v for k, v in args.items() if v is not None})
    print(f"tiny bundle written to {out} (configs: {out / 'config.yaml'}, {out / 'decode_config.yaml'})")


if __name__ == "__main__":
    main()
