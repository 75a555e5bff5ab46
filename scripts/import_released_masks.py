"""Copy the ten released AHAMask masks into legacy_checkpoints/, verifying each file's SHA-256.

Usage:
    python scripts/import_released_masks.py SRC [--dest legacy_checkpoints]

SRC is a local copy of the release laid out as <name>/checkpoint.pth. The same command is installed as
``ahamask-import-masks`` (ahamask/tools/import_masks.py).
"""

import sys

from ahamask.tools.import_masks import main

if __name__ == "__main__":
    sys.exit(main())
