"""What an experiment ran with: package versions, threads, precision (recorded in every report).

A result is only reproducible together with the versions that produced it (a transformers release changed
the demo's base model once), so reports carry this record next to their numbers.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

__all__ = ["environment_record"]

_PACKAGES = ("torch", "transformers", "peft", "numpy", "ahamask")


def environment_record(precision: str) -> dict[str, Any]:
    """Versions and numeric settings of this process, as plain JSON values.

    Args:
        precision: the arithmetic the experiment used (e.g. ``"float32"`` or ``"bf16 autocast"``).

    Returns:
        ``{"python", "packages": {name: version}, "torch_threads", "cpu_cores", "precision"}``.
    """
    import torch

    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "python": platform.python_version(),
        "packages": packages,
        "torch_threads": torch.get_num_threads(),
        "cpu_cores": os.cpu_count(),
        "precision": precision,
    }
