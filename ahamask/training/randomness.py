"""The random streams of a mask-training run, owned by the trainer and saved in its checkpoints.

Why not the global generators: torch's DataLoader draws its base seed from the global torch generator each
time an iterator is created (every pass over the data, every validation), and a resumed run creates its
iterators at other points than the uninterrupted one. When the Gumbel noise also came from the global
generator, a resumed run drew different noise and ended with a different mask. Here every stream a result
depends on has its own generator, seeded from ``run.seed`` (plus the rank, as the official ``setup_seeds``),
and its state travels in each checkpoint:

* ``noise``: the Gumbel noise of every training step (on the training device);
* ``prompts``: the instruction template drawn per batch when a ``prompt_path`` is configured;
* ``mask_init``: the mask's N(mean, std) initialisation (used once, at setup);
* data order and DataLoader worker seeds come from ``seed + pass`` (see :mod:`ahamask.training.loader`).
"""

from __future__ import annotations

import random
from typing import Any

import torch

from ..utils.seed import python_rng_state, set_python_rng_state

__all__ = ["RunRandomness"]


class RunRandomness:
    """Explicit generators for one rank of a training run.

    Args:
        seed: ``run.seed``.
        rank: this process's global rank (each rank draws its own noise, as the official).
        device: the training device; the noise generator lives there.
    """

    def __init__(self, seed: int, rank: int, device: torch.device) -> None:
        self.noise = torch.Generator(device=device).manual_seed(int(seed) + int(rank))
        self.prompts = random.Random(int(seed) + int(rank))

    @staticmethod
    def mask_init(seed: int) -> torch.Generator:
        """The generator of the mask's initial logits (every rank starts from rank 0's draw)."""
        return torch.Generator().manual_seed(int(seed))

    def state_dict(self) -> dict[str, Any]:
        """Tensors and numbers only, so checkpoints stay loadable with ``weights_only=True``."""
        return {"noise": self.noise.get_state(), "prompts": python_rng_state(self.prompts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.noise.set_state(state["noise"])
        set_python_rng_state(self.prompts, state["prompts"])
