"""The geometry a head mask is made for, read from a decoder.

A mask has ``n_layers * (n_heads + 1)`` entries, ``n_heads`` being the *query* heads; under grouped-query
attention (Qwen2.5, SmolLM2) several query heads share one key/value head, which matters to pruning only.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .hf_layout import attention, attention_geometry, decoder_layers, kv_heads

__all__ = ["MaskGeometry", "decoder_geometry"]


@dataclass(frozen=True)
class MaskGeometry:
    """Layers, query heads, key/value heads and head size of a decoder."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int

    @property
    def mask_size(self) -> int:
        """Entries of a released-format mask: one per head plus one FFN entry per layer."""
        return self.n_layers * (self.n_heads + 1)


def decoder_geometry(model: nn.Module) -> MaskGeometry:
    """The :class:`MaskGeometry` of a transformers causal LM (or anything containing one, e.g. peft)."""
    layers = decoder_layers(model)
    attn = attention(layers[0])
    n_heads, head_dim = attention_geometry(attn)
    return MaskGeometry(len(layers), n_heads, kv_heads(attn, n_heads), head_dim)
