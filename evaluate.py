"""Decode a manifest: python evaluate.py -c configs/decode_config.yaml [--device DEV] [--options key=value ...].

Several processes: torchrun --nproc_per_node=N evaluate.py -c ...
"""

import argparse

from ahamask.evaluation.cli import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-c", "--cfg-path", required=True, help="decoding YAML (official keys)")
    parser.add_argument(
        "--device", default=None, help="auto | cpu | cuda[:i] | npu[:i] (default: the config's)"
    )
    parser.add_argument(
        "--options", nargs="+", default=[], help="overrides: key=value or alternating key value"
    )
    main(parser.parse_args())
