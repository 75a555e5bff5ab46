"""Show a mask's geometry and kept heads, draw it (--png), or tabulate a folder of masks (--all DIR).

Usage:
    python scripts/inspect_mask.py MASK [--png OUT.png] [--n-layers L --n-heads H]
    python scripts/inspect_mask.py --all legacy_checkpoints/

The same command is installed as ``ahamask-inspect`` (ahamask/tools/inspect_mask.py).
"""

import sys

from ahamask.tools.inspect_mask import main

if __name__ == "__main__":
    sys.exit(main())
