"""Train an AHAMask head mask: python train.py -c configs/config.yaml [--options key=value ...] [--resume CKPT].

Several processes: torchrun --nproc_per_node=N train.py -c ...
"""

import argparse

from ahamask.training.cli import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-c", "--cfg-path", required=True, help="training YAML (official keys)")
    parser.add_argument(
        "--options", nargs="+", default=[], help="overrides: key=value or alternating key value"
    )
    parser.add_argument("--resume", default=None, help="checkpoint to continue from")
    main(parser.parse_args())
