"""The one place that knows how transformers and peft lay out a decoder (the adapter of the masking package).

Head masks need four things no public transformers/peft API offers: where the decoder layers and their
attention output projections are, a projection's base ``nn.Linear`` under a peft LoRA wrapper, the LoRA
matrices that read or write head columns, and the per-layer query/KV ratio the stock attention reads (set
by pruning). Each is an attribute of modules that transformers or peft could rename in any release, so they
are read here and nowhere else, and ``tests/unit/masking/test_hf_layout.py`` checks every assumption against the
installed versions, failing with the name of the attribute that moved.

Assumptions (LLaMA / Qwen2 style decoders in transformers 5, peft >= 0.18):

* decoder layers: an ``nn.ModuleList`` whose items have ``self_attn.o_proj`` (``model.model.layers``) and
  ``mlp.down_proj``;
* the input of ``self_attn.o_proj`` is the per-head attention output, heads concatenated on the last axis;
* attention modules expose ``head_dim``, ``config.num_attention_heads`` / ``num_key_value_heads`` and read
  their own ``num_key_value_groups`` when repeating KV heads (eager) or enabling GQA (sdpa);
* a peft LoRA layer keeps its Linear as ``base_layer``, its adapters in ``lora_A`` / ``lora_B``
  (``ModuleDict`` of Linear) and ``merged`` is true once adapters were merged into the base weight.
"""

from __future__ import annotations

from torch import nn

__all__ = [
    "decoder_layers",
    "attention",
    "feed_forward",
    "feed_forward_output",
    "output_projection",
    "attention_geometry",
    "base_linear",
    "lora_input_linears",
    "lora_output_linears",
    "has_dora",
    "is_merged",
    "kv_heads",
    "set_query_groups",
]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """Find the decoder layers (each with ``self_attn.o_proj``) of a LLaMA-style model, peft-wrapped or not.

    Raises:
        ValueError: no such list of layers in ``model``.
    """
    for module in model.modules():
        if (
            isinstance(module, nn.ModuleList)
            and len(module)
            and all(hasattr(layer, "self_attn") and hasattr(layer.self_attn, "o_proj") for layer in module)
        ):
            return module
    raise ValueError(f"{type(model).__name__}: no decoder layers with self_attn.o_proj found")


def attention(layer: nn.Module) -> nn.Module:
    """A decoder layer's self-attention module."""
    return layer.self_attn


def feed_forward(layer: nn.Module) -> nn.Module:
    """A decoder layer's feed-forward block (its output is what the FFN mask entry gates)."""
    return layer.mlp


def feed_forward_output(layer: nn.Module) -> nn.Linear:
    """The last Linear of the feed-forward block (zeroing it folds an FFN gate of 0)."""
    return layer.mlp.down_proj


def output_projection(layer: nn.Module) -> nn.Module:
    """The module whose input is a layer's concatenated per-head attention output (``self_attn.o_proj``)."""
    return layer.self_attn.o_proj


def base_linear(module: nn.Module) -> nn.Module:
    """The ``nn.Linear`` of a projection: itself, or peft's ``base_layer`` under a LoRA wrapper."""
    return getattr(module, "base_layer", module)


def lora_input_linears(module: nn.Module) -> list[nn.Linear]:
    """The LoRA ``A`` matrices (they read the projection's input columns); empty without LoRA."""
    return list(getattr(module, "lora_A", {}).values())


def lora_output_linears(module: nn.Module) -> list[nn.Linear]:
    """The LoRA ``B`` matrices (they write the projection's output rows); empty without LoRA."""
    return list(getattr(module, "lora_B", {}).values())


def has_dora(module: nn.Module) -> bool:
    """True when a peft layer carries DoRA magnitude vectors (its columns cannot be sliced independently)."""
    return bool(len(getattr(module, "lora_magnitude_vector", {}) or {}))


def is_merged(module: nn.Module) -> bool:
    """True when peft merged the adapters into the base weight (the ``A``/``B`` matrices are then unused)."""
    return bool(getattr(module, "merged", False))


def attention_geometry(attn: nn.Module) -> tuple[int, int]:
    """``(n_query_heads, head_dim)`` of an attention module."""
    config = getattr(attn, "config", None)
    n_heads = getattr(config, "num_attention_heads", None) if config is not None else None
    if n_heads is None:
        n_heads = attn.num_heads
    head_dim = getattr(attn, "head_dim", None)
    if head_dim is None:
        head_dim = int(base_linear(attn.o_proj).in_features) // int(n_heads)
    return int(n_heads), int(head_dim)


def kv_heads(attn: nn.Module, n_heads: int) -> int:
    """Key/value heads of an attention module (``n_heads`` without grouped-query attention)."""
    config = getattr(attn, "config", None)
    return int(getattr(config, "num_key_value_heads", None) or n_heads)


def set_query_groups(attn: nn.Module, groups: int) -> None:
    """Tell a (pruned) attention module how many query heads share each kept KV head."""
    attn.num_key_value_groups = groups
