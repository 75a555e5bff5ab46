"""Launcher parsing, sharding, and a real 2-process Gloo run on CPU."""

import json
import socket
import sys

import pytest
import torch
import torch.multiprocessing as mp

from ahamask.utils import distributed as dist_utils
from ahamask.utils.distributed import (
    DistInfo,
    all_gather_object,
    barrier,
    cleanup,
    get_rank,
    get_world_size,
    init_distributed,
    merge_shards,
    shard_indices,
)
from ahamask.utils.io import atomic_write_json

_LAUNCH_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_LOCALID",
    "MASTER_ADDR",
    "MASTER_PORT",
)


@pytest.fixture
def clean_env(monkeypatch):
    for name in _LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_single_process_fallback(clean_env):
    info = init_distributed("cpu")
    assert info == DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), is_main=True)
    assert (get_rank(), get_world_size()) == (0, 1)
    assert all_gather_object({"x": 1}) == [{"x": 1}]
    barrier()
    cleanup()  # no process group: nothing to do, no error


def test_single_task_slurm_allocation_is_not_distributed(clean_env):
    clean_env.setenv("SLURM_PROCID", "0")
    clean_env.setenv("SLURM_NTASKS", "1")
    clean_env.setenv("SLURM_LOCALID", "0")
    assert init_distributed("cpu").world_size == 1


def test_launcher_variables_are_parsed_and_checked(clean_env):
    env = {
        "SLURM_PROCID": "3",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "1",
        "MASTER_ADDR": "n1",
        "MASTER_PORT": "29500",
    }
    assert dist_utils._launch_from_env(env) == (3, 8, 1)
    assert dist_utils._launch_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", **env}) == (
        1,
        2,
        1,
    )
    assert dist_utils._launch_from_env({}) is None
    with pytest.raises(ValueError, match="MASTER_ADDR, MASTER_PORT not set"):
        dist_utils._launch_from_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0"})
    with pytest.raises(ValueError, match="LOCAL_RANK is not set"):
        dist_utils._launch_from_env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not an integer"):
        dist_utils._launch_from_env({"RANK": "0", "WORLD_SIZE": "two", "LOCAL_RANK": "0"})
    clean_env.setenv("RANK", "2")
    clean_env.setenv("WORLD_SIZE", "2")
    clean_env.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match="rank 2 outside world size 2"):
        init_distributed("cpu")


def test_shards_are_strided_and_merge_back_in_order():
    shards = [shard_indices(10, rank, 3) for rank in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert merge_shards([[f"utt{i}" for i in shard] for shard in shards]) == [f"utt{i}" for i in range(10)]
    # More ranks than entries: the last ranks get nothing, nothing is duplicated.
    assert [shard_indices(2, r, 4) for r in range(4)] == [[0], [1], [], []]
    assert merge_shards([[0], [1], [], []]) == [0, 1]
    with pytest.raises(ValueError, match="rank 3"):
        shard_indices(5, 3, 3)
    with pytest.raises(ValueError, match="rank 0 holds 1 results, expected 2 of 3"):
        merge_shards([["a"], ["b", "c"]])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """Body of one spawned rank: the torchrun environment, then the helpers under test."""
    import os

    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    for name in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
        os.environ.pop(name, None)
    info = init_distributed("cpu")
    try:
        gathered = all_gather_object({"rank": get_rank(), "square": rank * rank})
        names = [f"utt{i}" for i in range(5)]
        mine = [names[i] for i in shard_indices(len(names), info.rank, info.world_size)]
        merged = merge_shards(all_gather_object(mine))
        barrier()
        record = {
            "info": [info.rank, info.world_size, info.local_rank, str(info.device), info.is_main],
            "gathered": gathered,
            "merged": merged,
            "main": get_rank() == 0,
        }
        atomic_write_json(record, os.path.join(out_dir, f"rank{rank}.json"))
    finally:
        cleanup()


def test_two_process_gloo_run(tmp_path):
    # fork shares the parent's already-imported torch: about 1 s instead of about 10 s for spawn, which
    # re-imports torch in each child. Gloo on CPU is fork-safe (torch's own distributed tests fork too).
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    mp.start_processes(
        _worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method=method
    )
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    expected_gather = [{"rank": 0, "square": 0}, {"rank": 1, "square": 1}]
    for rank, record in enumerate(records):
        assert record["info"] == [rank, 2, rank, "cpu", rank == 0]
        assert record["main"] is (rank == 0)
        assert record["gathered"] == expected_gather
        assert record["merged"] == ["utt0", "utt1", "utt2", "utt3", "utt4"]
