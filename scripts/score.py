"""Score an evaluate.py prediction file: prints a table per task and optionally writes a JSON report.

Usage:
    python scripts/score.py PRED.json --manifest MANIFEST.json [--task TASK] [--labels L1 L2 ...]
        [--out report.json]

The same command is installed as ``ahamask-score`` (ahamask/tools/score.py).
"""

import sys

from ahamask.tools.score import main

if __name__ == "__main__":
    sys.exit(main())
