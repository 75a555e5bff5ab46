"""Chat with SALMONN about audio files, with an AHAMask mask when model.weight_mask_path is set.

    python cli_inference.py -c configs/decode_config.yaml [--device DEV] [--options key=value ...]
    python cli_inference.py -c configs/decode_config.yaml --wav question.wav [--prompt TEXT]   # one answer

In a session: type a wav path (and a prompt when no mask is applied); :mask PATH, :nomask, :help, :quit.
"""

import argparse
import sys

from ahamask.inference.chat import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-c", "--cfg-path", required=True, help="decoding YAML (official keys)")
    parser.add_argument(
        "--device", default=None, help="auto | cpu | cuda[:i] | npu[:i] (default: the config's)"
    )
    parser.add_argument(
        "--options", nargs="+", default=[], help="overrides: key=value or alternating key value"
    )
    parser.add_argument("--wav", default=None, help="answer for this audio file and exit")
    parser.add_argument("--prompt", default=None, help="instruction for --wav (default: none with a mask)")
    sys.exit(main(parser.parse_args()))
