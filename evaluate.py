"""Decode a manifest: python evaluate.py -c configs/decode_config.yaml [--device DEV] [--options key=value ...].

Several processes: torchrun --nproc_per_node=N evaluate.py -c ...
The same command is installed as ``ahamask-evaluate``; the arguments are defined in ahamask/evaluation/cli.py.
"""

import sys

from ahamask.evaluation.cli import build_parser, main

if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
