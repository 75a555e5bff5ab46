"""Command-line tools installed as ``ahamask-*`` console commands (``scripts/*.py`` are thin callers).

Each module has ``main(argv=None) -> int`` and parses its arguments before importing torch, so ``--help``
answers at once.
"""
