"""Pruned heads: remove the heads a binary mask switches off, so inference does less work.

A masked head still computes its query, key, value and attention before the mask zeroes its output.
Pruning slices those heads out of each layer instead: rows of ``q_proj`` (and of ``k_proj``/``v_proj`` for the
key/value heads no kept query head reads), columns of ``o_proj``, and the same rows/columns of any LoRA
matrices (``lora_B`` on outputs, ``lora_A`` on inputs), so the pruned model gives the masked model's outputs.
transformers 5's ``LlamaAttention`` reshapes with ``(*input_shape, -1, head_dim)`` and reads the query/KV
ratio from its own ``num_key_value_groups``, so fewer heads per layer need no change to its code.

Grouped-query attention: query head ``h`` reads key/value head ``h // groups``. A KV head is dropped only
when every query head of its group is; each layer then needs the same number of query heads per kept KV head.
When the kept counts differ between groups, the smaller groups are padded with some of their own masked heads,
whose ``o_proj`` columns are zeroed (so they add nothing, as in the masked model).

A layer whose heads are all masked keeps one of them as a padding head (``o_proj`` columns zeroed), so its
output is zeros (plus the bias, if any), exactly what the masked model's attention block adds to the
residual. Keeping one real head instead of replacing the attention module means the stock transformers
attention still owns that layer's KV cache: nothing here depends on how transformers names or passes the
cache (5.24 renamed ``past_key_values=`` to ``cache=``, which broke an earlier head-less module).

Pruned models are for inference with transformers' default dynamic KV cache; heads are removed, so do not
apply head masks or hooks to them afterwards (``config.num_attention_heads`` still names the original count).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from torch import nn

from .fold import FoldError, head_columns, head_keep_grid, resolve_llm
from .hf_layout import (
    attention,
    base_linear,
    decoder_layers,
    has_dora,
    kv_heads,
    lora_input_linears,
    lora_output_linears,
    set_query_groups,
)
from .hooks import model_geometry
from .value import Mask, gate_values

logger = logging.getLogger(__name__)

__all__ = ["LayerPlan", "plan_pruning", "prune_heads", "pruned_plan"]

# Set on a pruned LLM: the list of LayerPlan it was pruned with.
_PRUNED_ATTR = "_ahamask_pruned"


@dataclass(frozen=True)
class LayerPlan:
    """What one layer keeps after pruning.

    Attributes:
        layer: layer index.
        query_heads: original indices of the query heads kept, grouped by KV head (padding included).
        kv_heads: original indices of the key/value heads kept.
        padded: masked query heads kept only to give every KV head the same group size, or (one head) to keep
            a fully masked layer's attention module and its KV cache in place.
    """

    layer: int
    query_heads: tuple[int, ...]
    kv_heads: tuple[int, ...]
    padded: tuple[int, ...]

    @property
    def groups(self) -> int:
        """Query heads per kept KV head (``num_key_value_groups`` of the pruned layer)."""
        return len(self.query_heads) // len(self.kv_heads)


def plan_pruning(keep: torch.Tensor, n_kv_heads: int | None = None) -> list[LayerPlan]:
    """Decide per layer which query and KV heads survive.

    Args:
        keep: bool ``[L, H]``, True for heads the mask keeps.
        n_kv_heads: key/value heads per layer (``None``: as many as query heads, i.e. no GQA).

    Returns:
        One :class:`LayerPlan` per layer.

    Raises:
        ValueError: ``H`` is not a multiple of ``n_kv_heads``.

    Example:
        >>> plan_pruning(torch.tensor([[True, False, True, True]]), n_kv_heads=2)[0]
        LayerPlan(layer=0, query_heads=(0, 1, 2, 3), kv_heads=(0, 1), padded=(1,))
    """
    n_layers, n_heads = keep.shape
    n_kv = n_kv_heads or n_heads
    if n_heads % n_kv:
        raise ValueError(f"{n_heads} query heads are not a multiple of {n_kv} key/value heads")
    group = n_heads // n_kv
    plans = []
    for layer in range(n_layers):
        by_kv = [[h for h in range(k * group, (k + 1) * group) if keep[layer, h]] for k in range(n_kv)]
        size = max(len(heads) for heads in by_kv)
        query: list[int] = []
        kv: list[int] = []
        padded: list[int] = []
        for k, heads in enumerate(by_kv):
            if not heads:
                continue
            # Pad with this group's own masked heads: they read the same KV head, so the layout stays valid.
            fill = [h for h in range(k * group, (k + 1) * group) if not keep[layer, h]][: size - len(heads)]
            kv.append(k)
            query += sorted(heads + fill)
            padded += fill
        if not query:  # every head masked: keep head 0 as a zero-output padding head (see module docstring)
            query, kv, padded = [0], [0], [0]
        plans.append(LayerPlan(layer, tuple(query), tuple(kv), tuple(padded)))
    return plans


def _linear_of(module: nn.Module, where: str) -> nn.Linear:
    base = base_linear(module)
    if not isinstance(base, nn.Linear):
        raise FoldError(f"{where}: a {type(base).__name__}, not an nn.Linear; cannot prune it")
    if has_dora(module):
        raise FoldError(f"{where}: DoRA adapters cannot be pruned; merge them first (peft merge_and_unload)")
    return base


def _slice_param(owner: nn.Module, name: str, dim: int, index: torch.Tensor) -> None:
    tensor = getattr(owner, name)
    if tensor is None:
        return
    kept = tensor.detach().index_select(dim, index.to(tensor.device)).clone()
    setattr(owner, name, nn.Parameter(kept, requires_grad=tensor.requires_grad))


def _keep_outputs(module: nn.Module, rows: torch.Tensor, where: str) -> None:
    """Keep only ``rows`` of a projection's output (base weight and bias, and every LoRA ``B``)."""
    base = _linear_of(module, where)
    _slice_param(base, "weight", 0, rows)
    _slice_param(base, "bias", 0, rows)
    base.out_features = len(rows)
    for lora_b in lora_output_linears(module):
        _slice_param(lora_b, "weight", 0, rows)
        _slice_param(lora_b, "bias", 0, rows)
        lora_b.out_features = len(rows)
    if hasattr(module, "out_features"):
        module.out_features = len(rows)


def _keep_inputs(module: nn.Module, cols: torch.Tensor, where: str) -> None:
    """Keep only ``cols`` of a projection's input (base weight and every LoRA ``A``)."""
    base = _linear_of(module, where)
    _slice_param(base, "weight", 1, cols)
    base.in_features = len(cols)
    for lora_a in lora_input_linears(module):
        _slice_param(lora_a, "weight", 1, cols)
        lora_a.in_features = len(cols)
    if hasattr(module, "in_features"):
        module.in_features = len(cols)


def _prune_layer(layer: nn.Module, plan: LayerPlan, head_dim: int) -> None:
    attn = attention(layer)
    where = f"layer {plan.layer}"
    q_rows = head_columns(list(plan.query_heads), head_dim)
    kv_rows = head_columns(list(plan.kv_heads), head_dim)
    _keep_outputs(attn.q_proj, q_rows, f"{where} q_proj")
    _keep_outputs(attn.k_proj, kv_rows, f"{where} k_proj")
    _keep_outputs(attn.v_proj, kv_rows, f"{where} v_proj")
    _keep_inputs(attn.o_proj, q_rows, f"{where} o_proj")
    if plan.padded:
        # Padding heads compute attention but must add nothing: zero their new o_proj input columns.
        positions = [plan.query_heads.index(h) for h in plan.padded]
        cols = head_columns(positions, head_dim)
        base = _linear_of(attn.o_proj, f"{where} o_proj")
        with torch.no_grad():
            base.weight.index_fill_(1, cols.to(base.weight.device), 0.0)
            for lora_a in lora_input_linears(attn.o_proj):
                lora_a.weight.index_fill_(1, cols.to(lora_a.weight.device), 0.0)
    # Read by transformers' eager and sdpa attention (repeat_kv / enable_gqa) for this layer only.
    set_query_groups(attn, plan.groups)
    attn.ahamask_query_heads = plan.query_heads
    attn.ahamask_kv_heads = plan.kv_heads


def _kv_heads(llm: nn.Module, n_heads: int) -> int:
    return kv_heads(attention(decoder_layers(llm)[0]), n_heads)


def prune_heads(model: nn.Module, mask: Mask | torch.Tensor, *, inplace: bool = False) -> nn.Module:
    """Physically remove the heads a binary mask switches off (inference only).

    Args:
        model: a SALMONN (its ``llama_model`` is pruned) or a LLaMA-style LLM, peft-wrapped or not.
        mask: binary, batch-uniform mask (layouts as :func:`ahamask.masking.fold.head_keep_grid`); FFN entries
            are ignored, as in the official code.
        inplace: prune ``model`` itself; otherwise a deep copy is pruned and ``model`` is left unchanged (the
            copy doubles the memory for a moment: use ``inplace=True`` for a 13B model).

    Returns:
        The pruned model (``model`` itself when ``inplace``). Its logits equal the masked model's to float
        rounding; :func:`pruned_plan` tells what each layer kept.

    Raises:
        FoldError: soft or per-sample mask, a DoRA adapter, a projection that is not a Linear.
        MaskShapeError: a mask made for another geometry.
        ValueError: the model was already pruned.

    Example:
        >>> fast = prune_heads(model, binarize(load_mask("asr.pth")))
        >>> answers = fast.generate(batch, cfg, prompts=prompts)
    """
    mask = gate_values(mask)
    llm = resolve_llm(model)
    if getattr(llm, _PRUNED_ATTR, None) is not None:
        raise ValueError("prune_heads: this model is already pruned; prune the original model instead")
    n_layers, n_heads, head_dim = model_geometry(llm)
    keep = head_keep_grid(mask, n_layers, n_heads, source="prune_heads")
    plans = plan_pruning(keep, _kv_heads(llm, n_heads))
    target = model if inplace else copy.deepcopy(model)
    llm = resolve_llm(target)
    for layer, plan in zip(decoder_layers(llm), plans, strict=True):
        _prune_layer(layer, plan, head_dim)
    setattr(llm, _PRUNED_ATTR, plans)
    kept = sum(len(p.query_heads) - len(p.padded) for p in plans)
    logger.info(
        "pruned %d of %d heads (%d zero-output padding heads kept: GQA groups and %d fully masked layers)",
        n_layers * n_heads - kept,
        n_layers * n_heads,
        sum(len(p.padded) for p in plans),
        sum(p.query_heads == p.padded for p in plans),
    )
    return target


def pruned_plan(model: nn.Module) -> list[LayerPlan] | None:
    """The per-layer plan a model was pruned with, or ``None`` for an unpruned model."""
    return getattr(resolve_llm(model), _PRUNED_ATTR, None)
