"""Chat with SALMONN about audio files, with an AHAMask mask when model.weight_mask_path is set.

    python cli_inference.py -c configs/decode_config.yaml [--device DEV] [--options key=value ...]
    python cli_inference.py -c configs/decode_config.yaml --wav question.wav [--prompt TEXT]   # one answer

In a session: type a wav path (and a prompt when no mask is applied); :mask PATH, :nomask, :help, :quit.
The same command is installed as ``ahamask-chat``; the arguments are defined in ahamask/inference/cli.py.
"""

import sys

from ahamask.inference.cli import entry

if __name__ == "__main__":
    sys.exit(entry())
