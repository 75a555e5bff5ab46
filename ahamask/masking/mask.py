"""Head masks: the layer-major logit vector of the released format and what can be done with it.

A mask for a model with ``L`` layers of ``H`` heads is a vector of ``L * (H + 1)`` values; entry
``l * (H + 1) + h`` belongs to head ``h`` of layer ``l`` and entry ``l * (H + 1) + H`` is that layer's FFN
gate. The official code keeps the FFN entry for its file format and sparsity term but never applies it.
Released masks hold logits; inference binarises them with ``sigmoid(logit) >= prob_threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "MaskShapeError",
    "HeadMask",
    "MaskStats",
    "binarize",
    "check_mask_length",
    "as_grid",
    "head_weights",
    "mask_stats",
    "shuffle_mask",
]


class MaskShapeError(ValueError):
    """A mask does not fit the model it is applied to."""


def check_mask_length(mask: torch.Tensor, n_layers: int, n_heads: int, source: str = "mask") -> None:
    """Raise unless ``mask``'s last dimension is ``n_layers * (n_heads + 1)``.

    Raises:
        MaskShapeError: naming both shapes, e.g. a 13B mask (1640) applied to a 2x4 model (10).
    """
    expected = n_layers * (n_heads + 1)
    got = mask.shape[-1] if mask.dim() else 0
    if got != expected:
        hint = ""
        for heads in range(1, 129):  # name the geometry the mask was probably made for
            if got % (heads + 1) == 0 and got // (heads + 1) == heads:
                hint = f" (looks like a {heads}-layer x {heads}-head model)"
                break
        raise MaskShapeError(
            f"{source}: has {got} entries{hint} but the model has {n_layers} layers x {n_heads} heads, "
            f"which needs {n_layers} * ({n_heads} + 1) = {expected}"
        )


def binarize(logits: torch.Tensor, prob_threshold: float = 0.5) -> torch.Tensor:
    """Official inference rule: ``(sigmoid(logits) >= prob_threshold)`` as float 0/1, same shape."""
    return (torch.sigmoid(logits.float()) >= prob_threshold).float()


def as_grid(mask: torch.Tensor, n_layers: int, n_heads: int) -> torch.Tensor:
    """View a flat ``[..., L*(H+1)]`` mask as ``[..., L, H+1]`` (last column: FFN gates)."""
    check_mask_length(mask, n_layers, n_heads)
    return mask.reshape(*mask.shape[:-1], n_layers, n_heads + 1)


def head_weights(mask: torch.Tensor, n_layers: int, n_heads: int) -> torch.Tensor:
    """The per-head part of a flat mask: ``[..., L*(H+1)] -> [..., L, H]`` (FFN gates dropped)."""
    return as_grid(mask, n_layers, n_heads)[..., :n_heads]


@dataclass(frozen=True)
class MaskStats:
    """How many heads a binarised mask keeps."""

    n_layers: int
    n_heads: int
    active_heads: int
    active_entries: int

    @property
    def head_fraction(self) -> float:
        """Share of attention heads kept (the figure quoted for the released masks, e.g. 78.7%)."""
        return self.active_heads / (self.n_layers * self.n_heads)

    @property
    def entry_fraction(self) -> float:
        """Share of all ``L*(H+1)`` entries kept: what the official evaluate.py prints."""
        return self.active_entries / (self.n_layers * (self.n_heads + 1))

    def describe(self) -> str:
        return (
            f"{self.head_fraction:.1%} of attention heads active ({self.active_heads}/"
            f"{self.n_layers * self.n_heads}); {self.entry_fraction:.1%} of all "
            f"{self.n_layers * (self.n_heads + 1)} entries incl. FFN gates (the official figure)"
        )


def mask_stats(logits: torch.Tensor, n_layers: int, n_heads: int, prob_threshold: float = 0.5) -> MaskStats:
    """Count active heads and entries of a logit mask after thresholding."""
    binary = binarize(logits, prob_threshold)
    grid = as_grid(binary, n_layers, n_heads)
    return MaskStats(n_layers, n_heads, int(grid[..., :n_heads].sum()), int(binary.sum()))


def shuffle_mask(
    binary: torch.Tensor, n_layers: int, n_heads: int, mode: str = "global", seed: int = 0
) -> torch.Tensor:
    """Random-mask ablation: same number of active heads, placed at random.

    Args:
        binary: [L*(H+1)] 0/1 mask.
        mode: ``"global"`` permutes heads across the whole model; ``"per_layer"`` keeps each layer's count.
        seed: seed of the permutation (a ``torch.Generator`` is used, so global RNG state is untouched).

    Returns:
        [L*(H+1)] 0/1 mask; FFN entries are kept as they were.
    """
    gen = torch.Generator().manual_seed(seed)
    grid = as_grid(binary.detach().float().cpu(), n_layers, n_heads).clone()
    heads = grid[:, :n_heads]
    if mode == "global":
        flat = heads.reshape(-1)
        heads = flat[torch.randperm(flat.numel(), generator=gen)].reshape(n_layers, n_heads)
    elif mode == "per_layer":
        heads = torch.stack([row[torch.randperm(n_heads, generator=gen)] for row in heads])
    else:
        raise ValueError(f"shuffle mode {mode!r} is not 'global' or 'per_layer'")
    grid[:, :n_heads] = heads
    return grid.reshape(-1).to(binary.device)


class HeadMask(nn.Module):
    """The trainable mask: one logit per head plus one FFN entry per layer, as in the official trainer.

    The parameter is named ``tensor`` so ``{'model': mask.state_dict()}`` is the released file format.
    Initialised from N(init_mean, init_std): with the default mean 4 every gate starts near 1
    (sigmoid(4) = 0.982), i.e. the mask starts as the identity.
    """

    def __init__(
        self,
        n_layers: int,
        n_heads: int,
        init_mean: float = 4.0,
        init_std: float = 0.02,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.n_heads = n_heads
        # An explicit generator makes the init independent of whatever else drew from the global one.
        init = torch.empty(n_layers * (n_heads + 1)).normal_(init_mean, init_std, generator=generator)
        self.tensor = nn.Parameter(init)

    def forward(self) -> torch.Tensor:
        """[L*(H+1)] logits."""
        return self.tensor

    def grid(self) -> torch.Tensor:
        """[L, H+1] view of the logits."""
        return as_grid(self.tensor, self.n_layers, self.n_heads)

    def load_logits(self, logits: torch.Tensor) -> None:
        """Copy released-format logits in, checking the length against this mask's geometry."""
        check_mask_length(logits, self.n_layers, self.n_heads)
        with torch.no_grad():
            self.tensor.copy_(logits.reshape(-1))
