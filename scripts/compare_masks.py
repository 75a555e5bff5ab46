"""Compare masks: IoU of their kept heads, per-layer density, heads kept by all (--png draws both).

Usage:
    python scripts/compare_masks.py M1 M2 [M3 ...] [--png OUT.png] [--threshold 0.5]

The same command is installed as ``ahamask-compare`` (ahamask/tools/compare_masks.py).
"""

import sys

from ahamask.tools.compare_masks import main

if __name__ == "__main__":
    sys.exit(main())
