"""Instruction sensitivity: decode a manifest under each instruction variant (no mask) and each mask.

Usage:
    python scripts/instruction_sweep.py -c DECODE_CONFIG --instructions prompts/instructions/asr.json
        [--masks M1 M2 ...] [--task asr] [--out report.json] [--device DEV] [--options key=value ...]

The same command is installed as ``ahamask-sweep`` (ahamask/tools/sweep.py).
"""

import sys

from ahamask.tools.sweep import main

if __name__ == "__main__":
    sys.exit(main())
