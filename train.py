"""Train an AHAMask head mask: python train.py -c configs/config.yaml [--options key=value ...] [--resume CKPT].

Several processes: torchrun --nproc_per_node=N train.py -c ...
The same command is installed as ``ahamask-train``; the arguments are defined in ahamask/training/cli.py.
"""

import sys

from ahamask.training.cli import build_parser, main

if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
