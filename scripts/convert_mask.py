"""Convert a mask between the released .pth file and the shareable folder (mask.safetensors + mask_config.json).

Usage:
    python scripts/convert_mask.py SRC DST            # DST.pth: released format; DST (a new folder): folder form

The same command is installed as ``ahamask-convert`` (ahamask/tools/convert_mask.py).
"""

import sys

from ahamask.tools.convert_mask import main

if __name__ == "__main__":
    sys.exit(main())
