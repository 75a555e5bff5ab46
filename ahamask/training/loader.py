"""An endlessly cycling, shardable, resumable training loader.

The official runner wraps a DataLoader in an ``IterLoader`` that restarts it when exhausted, with a
``DistributedSampler`` per rank. To resume a killed run at the exact batch, the batch order has to be a
function of (seed, pass number, position) only. Here each pass over the data draws its permutation from
``seed + pass`` (like ``DistributedSampler.set_epoch``), shards it strided per rank, cuts it into batches
(dropping the last incomplete one, as the official ``drop_last=True``), and a DataLoader with an explicit
batch list loads them; resuming skips the consumed batches without loading their audio.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["CyclingLoader"]


class CyclingLoader:
    """Infinite iterator of collated batches with a resumable position.

    Args:
        dataset: map-style dataset with a ``collater``.
        batch_size: samples per batch (per rank).
        seed: base seed of the shuffling.
        rank, world_size: this process's shard.
        num_workers: DataLoader workers.
        shuffle: shuffle each pass (training); False keeps manifest order.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        shuffle: bool = True,
    ) -> None:
        per_rank = len(dataset) // world_size
        if per_rank < batch_size:
            raise ValueError(
                f"{getattr(dataset, 'ann_path', 'dataset')}: {len(dataset)} entries give {per_rank} per rank "
                f"for {world_size} ranks, fewer than one batch of {batch_size}"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.pass_index = 0  # how many full passes were completed
        self.consumed = 0  # batches consumed in the current pass
        self._iterator: Iterator[Any] | None = None

    def batches_for_pass(self, pass_index: int) -> list[list[int]]:
        """The index batches of one pass for this rank."""
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(n, generator=self.pass_generator(pass_index)).tolist()
        else:
            order = list(range(n))
        usable = (n // self.world_size) * self.world_size  # equal shards, as DistributedSampler(drop_last)
        shard = order[:usable][self.rank :: self.world_size]
        count = len(shard) // self.batch_size
        return [shard[i * self.batch_size : (i + 1) * self.batch_size] for i in range(count)]

    def pass_generator(self, pass_index: int) -> torch.Generator:
        """The generator of one pass (permutation and DataLoader worker seeds): a function of seed and pass."""
        return torch.Generator().manual_seed(self.seed + pass_index)

    def __len__(self) -> int:
        return len(self.batches_for_pass(0))

    def _start_pass(self) -> None:
        remaining = self.batches_for_pass(self.pass_index)[self.consumed :]
        loader = DataLoader(
            self.dataset,
            batch_sampler=remaining,
            num_workers=self.num_workers,
            collate_fn=self.dataset.collater,
            # Without a generator, creating the iterator draws the worker base seed from the global torch
            # generator, so where a run (re)starts would shift every later global draw.
            generator=self.pass_generator(self.pass_index),
        )
        self._iterator = iter(loader)

    def __iter__(self) -> CyclingLoader:
        return self

    def __next__(self) -> Any:
        if self._iterator is None:
            self._start_pass()
        try:
            batch = next(self._iterator)
        except StopIteration:
            self.pass_index += 1
            self.consumed = 0
            self._start_pass()
            batch = next(self._iterator)
        self.consumed += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"pass_index": self.pass_index, "consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.pass_index = int(state["pass_index"])
        self.consumed = int(state["consumed"])
        self._iterator = None
