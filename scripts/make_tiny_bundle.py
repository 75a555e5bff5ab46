"""Write a tiny random SALMONN bundle (real file formats, toy sizes) for tests and demos.

Usage: python scripts/make_tiny_bundle.py OUT [--n-layers 2] [--n-heads 4] [--hidden-size 64]
       [--chunk-seconds 4] [--with-beats] [--seed 0]

The same command is installed as ``ahamask-tiny-bundle`` (ahamask/tools/tiny_bundle.py).
"""

import sys

from ahamask.tools.tiny_bundle import main

if __name__ == "__main__":
    sys.exit(main())
