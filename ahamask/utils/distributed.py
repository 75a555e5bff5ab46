"""Process-group set-up and small collective helpers for DDP training and sharded evaluation.

Launch modes, checked in this order:

* torchrun: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (plus ``MASTER_ADDR``/``MASTER_PORT``, set by torchrun);
* SLURM ``srun``: ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``, with ``MASTER_ADDR`` and
  ``MASTER_PORT`` exported by the job script (a single-task allocation runs as one process);
* otherwise a single process without a process group.

Every helper works without a process group, returning the single-process answer, so library code can
call them unconditionally.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ahamask.utils.device import dist_backend_for, npu_module, resolve_device

logger = logging.getLogger(__name__)

__all__ = [
    "DistInfo",
    "all_gather_object",
    "barrier",
    "cleanup",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_dist_initialized",
    "merge_shards",
    "setup_processes",
    "shard_indices",
]

T = TypeVar("T")

# Long enough for rank 0 to load a 13B checkpoint from a slow disk while the others wait at the first
# collective; the official uses 365 days, which hides real deadlocks for a year.
DEFAULT_TIMEOUT = datetime.timedelta(minutes=60)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: Global rank, 0 .. world_size - 1.
        world_size: Number of processes.
        local_rank: Rank on this node; the accelerator index when one process drives one device.
        device: The device this process computes on.
        is_main: True on rank 0, the only rank that writes files and logs progress.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_main: bool


def _env_int(env: Mapping[str, str], name: str) -> int:
    """Reads an integer environment variable, naming it in the error."""
    if name not in env:
        raise ValueError(f"distributed launch: environment variable {name} is not set")
    try:
        return int(env[name])
    except ValueError:
        raise ValueError(f"distributed launch: {name}={env[name]!r} is not an integer") from None


def _launch_from_env(env: Mapping[str, str]) -> tuple[int, int, int] | None:
    """Returns (rank, world_size, local_rank) from the launcher's environment, or None if not launched."""
    if "RANK" in env and "WORLD_SIZE" in env:
        return _env_int(env, "RANK"), _env_int(env, "WORLD_SIZE"), _env_int(env, "LOCAL_RANK")
    if "SLURM_PROCID" in env:
        world_size = _env_int(env, "SLURM_NTASKS")
        if world_size <= 1:
            # An interactive single-task allocation (salloc + python) is not a distributed launch.
            return None
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not env.get(name)]
        if missing:
            raise ValueError(
                f"distributed launch under SLURM: {', '.join(missing)} not set; export them in the job script"
            )
        return _env_int(env, "SLURM_PROCID"), world_size, _env_int(env, "SLURM_LOCALID")
    return None


def is_dist_initialized() -> bool:
    """True when ``torch.distributed`` is available and a process group exists."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Global rank, or 0 without a process group."""
    return dist.get_rank() if is_dist_initialized() else 0


def get_world_size() -> int:
    """Number of processes, or 1 without a process group."""
    return dist.get_world_size() if is_dist_initialized() else 1


def init_distributed(device_spec: str = "auto", timeout: datetime.timedelta = DEFAULT_TIMEOUT) -> DistInfo:
    """Initialises the process group from the launcher's environment, or falls back to one process.

    The backend follows the device: NCCL for CUDA, HCCL for Ascend NPU, Gloo for CPU. For an
    accelerator given without an index, the device index is ``LOCAL_RANK`` (``SLURM_LOCALID``). If a
    process group already exists it is reused.

    Args:
        device_spec: Config device string, see :func:`ahamask.utils.device.resolve_device`.
        timeout: Collective timeout of the process group.

    Returns:
        A :class:`DistInfo` describing this process.

    Raises:
        ValueError: If a launcher variable is malformed or missing (named), or the device is unavailable.

    Example:
        >>> info = init_distributed("cpu")  # plain `python train.py`
        >>> (info.rank, info.world_size, info.is_main)
        (0, 1, True)
    """
    if is_dist_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0)))
        device = resolve_device(device_spec, local_rank)
        return DistInfo(rank, world_size, local_rank, device, rank == 0)

    launch = _launch_from_env(os.environ)
    if launch is None:
        device = resolve_device(device_spec)
        logger.info("single-process run on %s", device)
        return DistInfo(0, 1, 0, device, True)

    rank, world_size, local_rank = launch
    if not 0 <= rank < world_size:
        raise ValueError(f"distributed launch: rank {rank} outside world size {world_size}")
    device = resolve_device(device_spec, local_rank)
    _start_process_group(rank, world_size, local_rank, device, timeout)
    return DistInfo(rank, world_size, local_rank, device, rank == 0)


def _start_process_group(
    rank: int, world_size: int, local_rank: int, device: torch.device, timeout: datetime.timedelta
) -> None:
    """Binds the current device, creates the ``env://`` process group with the device's backend and waits
    for every rank (kept apart from :func:`init_distributed` so that one reads as the launch decision)."""
    # NCCL/HCCL pick their device from the current one, so it must be set before the group exists.
    if device.type == "cuda":
        torch.cuda.set_device(device)
    elif device.type == "npu":
        npu_module().set_device(device)
    backend = dist_backend_for(device)
    logger.info(
        "distributed init: rank %d/%d, local rank %d, %s, backend %s",
        rank,
        world_size,
        local_rank,
        device,
        backend,
    )
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        world_size=world_size,
        rank=rank,
        timeout=timeout,
        # Binding the CUDA device lets NCCL barriers know their device (no "device id" warning).
        device_id=device if device.type == "cuda" else None,
    )
    barrier()


def setup_processes(
    use_distributed: bool, device_spec: str = "auto", key: str | None = "run.use_distributed"
) -> DistInfo:
    """The one place that decides "single process or distributed", for training, evaluation and sweeps.

    Launched as several processes (torchrun's ``WORLD_SIZE`` or SLURM's ``SLURM_NTASKS`` above 1) with
    ``use_distributed`` false, the job would run N independent copies into one output folder; that is refused
    with one line naming the key. A single process, or a launch of one, runs without a process group.

    Args:
        use_distributed: the config's choice (evaluation passes True: it shards whenever launched with N).
        device_spec: config device string.
        key: the config key named in the error; ``None`` for commands that only run as one process.

    Returns:
        This process's :class:`DistInfo`.

    Raises:
        ValueError: several processes were launched but ``use_distributed`` is false.
    """
    launch = _launch_from_env(os.environ)
    if launch is not None and launch[1] > 1 and not use_distributed and key is None:
        raise ValueError(
            f"this command runs in one process, but it was launched as rank {launch[0]} of {launch[1]} processes "
            "(torchrun / srun); start it as a single process"
        )
    if launch is not None and launch[1] > 1 and not use_distributed:
        raise ValueError(
            f"{key}: false, but this process is rank {launch[0]} of {launch[1]} launched processes; set "
            f"{key}=true to use all {launch[1]}, or start a single process"
        )
    if launch is None or not use_distributed:
        device = resolve_device(device_spec)
        return DistInfo(0, 1, 0, device, True)
    return init_distributed(device_spec)


def barrier() -> None:
    """Waits for every rank; a no-op in a single process."""
    if is_dist_initialized():
        dist.barrier()


def all_gather_object(obj: T) -> list[T]:
    """Gathers one picklable object from every rank, in rank order, on every rank.

    Args:
        obj: Any picklable object (e.g. this rank's decoded results).

    Returns:
        ``[obj_rank0, obj_rank1, ...]``; ``[obj]`` in a single process.
    """
    if not is_dist_initialized():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """Indices of ``n`` manifest entries that a rank processes: strided, ``rank, rank + world_size, ...``.

    Strided like ``DistributedSampler(shuffle=False)`` but without its padding, so no entry is
    processed twice and shard sizes differ by at most one. :func:`merge_shards` puts the per-rank results
    back into manifest order.

    Args:
        n: Number of entries.
        rank: This rank, 0 .. world_size - 1.
        world_size: Number of ranks, >= 1.

    Returns:
        The sorted indices of this rank's shard.

    Raises:
        ValueError: If the arguments are out of range.

    Example:
        >>> shard_indices(7, rank=1, world_size=3)
        [1, 4]
    """
    if n < 0 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"shard_indices: rank {rank} of world_size {world_size} over n={n} entries; "
            "need n >= 0, world_size >= 1 and 0 <= rank < world_size"
        )
    return list(range(rank, n, world_size))


def merge_shards(per_rank: Sequence[Sequence[T]]) -> list[T]:
    """Inverts :func:`shard_indices`: interleaves per-rank results back into manifest order.

    Args:
        per_rank: ``per_rank[r]`` holds rank ``r``'s results in the order of its shard (as returned by
            :func:`all_gather_object`).

    Returns:
        All results, ordered by manifest index.

    Raises:
        ValueError: If the shard sizes cannot come from :func:`shard_indices`.

    Example:
        >>> merge_shards([["a", "c"], ["b"]])
        ['a', 'b', 'c']
    """
    world_size = len(per_rank)
    n = sum(len(shard) for shard in per_rank)
    for rank, shard in enumerate(per_rank):
        expected = len(range(rank, n, world_size))
        if len(shard) != expected:
            raise ValueError(
                f"merge_shards: rank {rank} holds {len(shard)} results, expected {expected} of {n}"
            )
    merged: list[T] = [None] * n  # type: ignore[list-item]
    for rank, shard in enumerate(per_rank):
        merged[rank::world_size] = list(shard)
    return merged


def cleanup() -> None:
    """Destroys the process group if one exists; safe to call more than once."""
    if is_dist_initialized():
        dist.destroy_process_group()
