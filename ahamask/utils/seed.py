"""Seeding and random-state capture for reproducible (and resumable) runs.

Random states are stored as tensors and plain Python values only, so a checkpoint holding them loads
with ``torch.load(..., weights_only=True)``; numpy's state is a tuple with a ``uint32`` array, which
the safe unpickler refuses, hence the conversion.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

from ahamask.utils.device import npu_module

logger = logging.getLogger(__name__)

__all__ = ["capture_rng_state", "python_rng_state", "restore_rng_state", "set_python_rng_state", "set_seed"]

_STATE_KEYS = ("python", "numpy", "torch")


def set_seed(seed: int, rank: int = 0, deterministic: bool = True) -> int:
    """Seeds Python, numpy and torch (all devices) with ``seed + rank``, as the official ``setup_seeds``.

    Each rank gets a different stream (different Gumbel noise and data order per GPU) while the run
    stays reproducible for a fixed world size.

    Args:
        seed: Base seed from the config.
        rank: Global rank of this process.
        deterministic: Also set ``cudnn.benchmark = False`` and ``cudnn.deterministic = True``
            (official behaviour).

    Returns:
        The seed actually used, ``seed + rank``.

    Example:
        >>> set_seed(42, rank=1)
        43
    """
    effective = int(seed) + int(rank)
    random.seed(effective)
    np.random.seed(effective)
    # torch.manual_seed seeds the CPU generator and every CUDA device's generator.
    torch.manual_seed(effective)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    logger.debug("seeded python/numpy/torch with %d (seed %d + rank %d)", effective, seed, rank)
    return effective


def python_rng_state(rng: Any) -> dict[str, Any]:
    """A ``random.Random`` (or the ``random`` module) state as tensors and numbers (``weights_only``-loadable)."""
    version, internal, gauss_next = rng.getstate()
    # 625 words of Mersenne-Twister state, all < 2**32, so int64 holds them exactly.
    return {
        "version": int(version),
        "internal": torch.tensor(internal, dtype=torch.int64),
        "gauss_next": gauss_next,
    }


def set_python_rng_state(rng: Any, state: dict[str, Any]) -> None:
    """Inverse of :func:`python_rng_state`."""
    rng.setstate((state["version"], tuple(int(v) for v in state["internal"].tolist()), state["gauss_next"]))


def capture_rng_state() -> dict[str, Any]:
    """Snapshots every random generator this process uses.

    Returns:
        ``{"python": {...}, "numpy": {...}, "torch": ByteTensor, "cuda": [ByteTensor, ...]?, "npu": [...]?}``
        built from tensors, ints, floats, strings and None only (``weights_only``-loadable). The
        ``cuda``/``npu`` entries exist only when those devices are available.

    Example:
        >>> state = capture_rng_state()
        >>> sorted(state)[:3]
        ['numpy', 'python', 'torch']
    """
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": python_rng_state(random),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    npu = npu_module()
    if npu is not None and npu.is_available():
        state["npu"] = npu.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restores generators captured by :func:`capture_rng_state` (e.g. on resume).

    A device entry saved on a machine with a different number of devices is restored for the devices
    that exist, with a warning.

    Args:
        state: The captured state, possibly after a ``torch.save``/``torch.load`` round trip.

    Raises:
        ValueError: If a required key (``python``, ``numpy``, ``torch``) is missing, naming it.
    """
    missing = [key for key in _STATE_KEYS if key not in state]
    if missing:
        raise ValueError(f"rng state: missing keys {missing}")
    set_python_rng_state(random, state["python"])
    npy = state["numpy"]
    keys = np.asarray(npy["keys"].numpy(), dtype=np.uint32)
    np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    for kind, module in (("cuda", torch.cuda if torch.cuda.is_available() else None), ("npu", npu_module())):
        if kind not in state or module is None or not module.is_available():
            if kind in state:
                logger.warning(
                    "rng state: %s generator state saved but no %s device here; not restored", kind, kind
                )
            continue
        saved = state[kind]
        count = module.device_count()
        if len(saved) != count:
            logger.warning(
                "rng state: %d %s generator states saved, %d devices here", len(saved), kind, count
            )
        for index, device_state in enumerate(saved[:count]):
            module.set_rng_state(device_state, index)
