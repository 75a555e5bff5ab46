"""One value for a head mask: its numbers, what they are (logits or gates), its geometry and its source.

Before this type a mask travelled as a bare tensor and every API guessed or was told what it held
(``weight_tensor=`` vs ``head_weights=``, ``head_mask(logits=None)`` guessing from the values, so all-zero
logits read as "every head off"). A :class:`Mask` says it once: :func:`ahamask.masking.checkpoint.load_mask`
returns logits; :meth:`Mask.gates` binarises them with the official rule; hooks, folding and pruning take
gates.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch

from .geometry import MaskGeometry
from .mask import MaskShapeError, MaskStats, binarize, check_mask_length, mask_stats, shuffle_mask

__all__ = ["Mask", "MaskKind", "gate_values"]

MaskKind = Literal["logits", "gates"]


@dataclass(frozen=True, eq=False)
class Mask:
    """A head mask in the released layout: ``[L*(H+1)]`` (one mask) or ``[rows, L*(H+1)]`` (per sample).

    Attributes:
        values: float tensor; entry ``l*(H+1)+h`` is head ``h`` of layer ``l``, ``l*(H+1)+H`` its FFN entry.
        kind: ``"logits"`` (trained or released: binarised with ``sigmoid >= threshold``) or ``"gates"``
            (multipliers used as they are: 0/1 after binarising, soft during training).
        n_layers, n_heads: the geometry, when known (a released ``.pth`` states none until :meth:`fit`).
        source: where it came from (a file path, "trained", "shuffled from ..."), for messages.
    """

    values: torch.Tensor
    kind: MaskKind
    n_layers: int | None = None
    n_heads: int | None = None
    source: str = "mask"

    def __post_init__(self) -> None:
        if self.kind not in ("logits", "gates"):
            raise ValueError(f"mask kind {self.kind!r} is not 'logits' or 'gates'")
        if self.n_layers is not None and self.n_heads is not None:
            check_mask_length(self.values, self.n_layers, self.n_heads, source=self.source)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_logits(
        cls, values: torch.Tensor, geometry: MaskGeometry | None = None, source: str = "mask"
    ) -> Mask:
        n_layers, n_heads = (geometry.n_layers, geometry.n_heads) if geometry is not None else (None, None)
        return cls(values, "logits", n_layers, n_heads, source)

    @classmethod
    def from_gates(
        cls, values: torch.Tensor, geometry: MaskGeometry | None = None, source: str = "mask"
    ) -> Mask:
        n_layers, n_heads = (geometry.n_layers, geometry.n_heads) if geometry is not None else (None, None)
        return cls(values, "gates", n_layers, n_heads, source)

    # ------------------------------------------------------------------ geometry
    @property
    def logits(self) -> torch.Tensor:
        """The values, which must be logits (a gate mask has none: raises)."""
        if self.kind != "logits":
            raise ValueError(f"{self.source}: holds gates, not logits")
        return self.values

    def fit(self, n_layers: int, n_heads: int) -> Mask:
        """This mask, checked against a model's geometry (and carrying it).

        Raises:
            MaskShapeError: the mask was made for another geometry; the dimension that differs is named.
        """
        if (
            self.n_layers is not None
            and self.n_heads is not None
            and (self.n_layers, self.n_heads)
            != (
                n_layers,
                n_heads,
            )
        ):
            dim, made, model = (
                ("n_layers", self.n_layers, n_layers)
                if self.n_layers != n_layers
                else ("n_heads", self.n_heads, n_heads)
            )
            raise MaskShapeError(
                f"{self.source}: {dim} differs: the mask was made for {made}, the model has {model} "
                f"(mask {self.n_layers} x {self.n_heads}, model {n_layers} x {n_heads})"
            )
        return replace(self, n_layers=n_layers, n_heads=n_heads)

    def _geometry(self) -> tuple[int, int]:
        if self.n_layers is None or self.n_heads is None:
            raise MaskShapeError(f"{self.source}: geometry unknown; call .fit(n_layers, n_heads) first")
        return self.n_layers, self.n_heads

    # ------------------------------------------------------------------ conversions
    def gates(self, prob_threshold: float = 0.5) -> Mask:
        """0/1 gates by the official rule ``sigmoid(logit) >= prob_threshold`` (gates come back unchanged)."""
        if self.kind == "gates":
            return self
        return replace(self, values=binarize(self.values, prob_threshold), kind="gates")

    def shuffled(self, mode: str = "global", seed: int = 0, prob_threshold: float = 0.5) -> Mask:
        """Random-mask ablation: the same number of kept heads placed at random (see ``shuffle_mask``)."""
        n_layers, n_heads = self._geometry()
        binary = self.gates(prob_threshold).values
        values = shuffle_mask(binary, n_layers, n_heads, mode=mode, seed=seed)
        return replace(
            self, values=values, kind="gates", source=f"{self.source} (shuffled, {mode}, seed {seed})"
        )

    def to(self, device: torch.device | str) -> Mask:
        return replace(self, values=self.values.to(device))

    # ------------------------------------------------------------------ properties
    def head_gates(self) -> torch.Tensor:
        """``[..., L, H]`` gates of the heads (FFN entries dropped); logits are binarised at 0.5 first."""
        n_layers, n_heads = self._geometry()
        values = self.gates().values
        return values.reshape(*values.shape[:-1], n_layers, n_heads + 1)[..., :n_heads]

    @property
    def is_binary(self) -> bool:
        return self.kind == "gates" and bool(((self.values == 0) | (self.values == 1)).all())

    @property
    def is_batch_uniform(self) -> bool:
        """One mask for the whole batch (1-D, or every row equal): what folding and pruning need."""
        return self.values.dim() == 1 or bool((self.values == self.values[:1]).all())

    def stats(self, prob_threshold: float = 0.5) -> MaskStats:
        """Kept heads and entries after thresholding (gates are counted as they are)."""
        n_layers, n_heads = self._geometry()
        if self.kind == "gates":
            # A 0/1 gate is kept iff it is 1; thresholding a logit of +-inf reproduces that exactly.
            logits = torch.where(self.values > 0.5, torch.inf, -torch.inf)
            return mask_stats(logits.reshape(-1, self.values.shape[-1])[0], n_layers, n_heads)
        return mask_stats(self.values, n_layers, n_heads, prob_threshold)


def gate_values(mask: Mask | torch.Tensor | None, prob_threshold: float = 0.5) -> torch.Tensor | None:
    """The gate tensor of a :class:`Mask` (logits binarised), or a tensor taken as gates; None stays None."""
    if isinstance(mask, Mask):
        return mask.gates(prob_threshold).values
    return mask
