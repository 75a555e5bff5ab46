"""Masks at zero cost: fold a binary, batch-uniform head mask into the ``o_proj`` weights.

The hooks of :mod:`ahamask.masking.hooks` multiply each head's slice of the ``o_proj`` input by its weight,
which costs an extra elementwise pass per layer and per decoding step. When the mask is 0/1 and the same for
every sample (the released masks at inference), the same result comes from zeroing the ``o_proj`` input
columns of the masked heads: head ``h`` owns columns ``h*head_dim:(h+1)*head_dim`` of ``o_proj.weight``
(``[hidden, heads * head_dim]``), and ``W[:, cols] @ x[cols]`` with zero columns adds exactly nothing. The
model then runs at the unmasked speed. The columns are saved before and copied back in ``finally``, so the
weights are restored bit for bit, also after an exception.

Under peft, ``o_proj`` is a plain ``nn.Linear`` (SALMONN's LoRA targets ``q_proj``/``v_proj``); should a LoRA
wrap it, the same columns of every ``lora_A`` are zeroed too, because the adapter sees the same input.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .hf_layout import (
    base_linear,
    decoder_layers,
    feed_forward_output,
    is_merged,
    lora_input_linears,
    output_projection,
)
from .hooks import model_geometry
from .mask import MaskShapeError
from .value import Mask, gate_values

logger = logging.getLogger(__name__)

__all__ = ["FoldError", "resolve_llm", "head_keep_grid", "ffn_keep_vector", "fold_head_mask", "head_columns"]


class FoldError(ValueError):
    """A mask cannot be folded into the weights (soft values, per-sample rows, or an unknown o_proj type)."""


def resolve_llm(model: nn.Module) -> nn.Module:
    """The LLM of a SALMONN (``model.llama_model``), or ``model`` itself when it is already an LLM."""
    return getattr(model, "llama_model", model)


def _as_rows(mask: torch.Tensor, n_layers: int, n_heads: int) -> torch.Tensor:
    """Any accepted mask layout -> ``[L, H+1]`` (FFN column filled with 1 when the input has none)."""
    mask = mask.detach()
    flat = n_layers * (n_heads + 1)
    if mask.dim() == 2 and tuple(mask.shape) == (n_layers, n_heads):
        return torch.cat([mask.float(), torch.ones(n_layers, 1, device=mask.device)], dim=1)
    if mask.dim() == 2 and tuple(mask.shape) == (n_layers, n_heads + 1):
        return mask.float()
    if mask.dim() == 1 and mask.numel() == flat:
        return mask.float().reshape(n_layers, n_heads + 1)
    if mask.dim() == 2 and mask.shape[-1] == flat:
        # A [batch, L*(H+1)] mask folds only when every row is the same (the weights are shared by the batch).
        if not bool((mask == mask[:1]).all()):
            rows = [i for i in range(mask.shape[0]) if not torch.equal(mask[i], mask[0])]
            raise FoldError(
                f"fold_head_mask: rows {rows[:5]} of the [{mask.shape[0]}, {flat}] mask differ from row 0; a "
                "per-sample mask cannot be folded into shared weights (use ahamask.masking.hooks.head_mask)"
            )
        return mask[0].float().reshape(n_layers, n_heads + 1)
    raise MaskShapeError(
        f"mask of shape {tuple(mask.shape)} fits neither [{flat}], [batch, {flat}], [{n_layers}, {n_heads}] "
        f"nor [{n_layers}, {n_heads + 1}] for a model with {n_layers} layers x {n_heads} heads"
    )


def _check_binary(rows: torch.Tensor, source: str) -> None:
    bad = ~((rows == 0) | (rows == 1))
    if bool(bad.any()):
        layer, col = (int(v) for v in bad.nonzero()[0])
        raise FoldError(
            f"{source}: entry (layer {layer}, column {col}) is {rows[layer, col].item():g}; only 0/1 masks "
            "can be folded or pruned (binarise logits first with ahamask.masking.mask.binarize)"
        )


def head_keep_grid(mask: torch.Tensor, n_layers: int, n_heads: int, source: str = "mask") -> torch.Tensor:
    """Which heads a binary, batch-uniform mask keeps.

    Args:
        mask: 0/1 (or bool) mask as ``[L*(H+1)]`` (released layout), ``[batch, L*(H+1)]`` with identical rows,
            ``[L, H+1]`` or ``[L, H]``.
        n_layers: the model's decoder layers.
        n_heads: attention heads per layer.
        source: named in error messages.

    Returns:
        bool tensor ``[L, H]`` (True = head kept), on the CPU.

    Raises:
        MaskShapeError: the shape fits no layout for this geometry.
        FoldError: soft values, or rows that differ between samples.

    Example:
        >>> head_keep_grid(torch.tensor([1., 0., 1., 1., 1., 1.]), 2, 2)
        tensor([[ True, False],
                [ True,  True]])
    """
    rows = _as_rows(mask, n_layers, n_heads)
    _check_binary(rows, source)
    return rows[:, :n_heads].bool().cpu()


def ffn_keep_vector(mask: torch.Tensor, n_layers: int, n_heads: int, source: str = "mask") -> torch.Tensor:
    """The FFN gates of a binary mask as bool ``[L]`` (all True for an ``[L, H]`` mask, which has none)."""
    rows = _as_rows(mask, n_layers, n_heads)
    _check_binary(rows, source)
    return rows[:, n_heads].bool().cpu()


def head_columns(
    heads: torch.Tensor | list[int], head_dim: int, device: torch.device | None = None
) -> torch.Tensor:
    """Column (or row) indices of the given heads in a ``[*, heads * head_dim]`` projection.

    Args:
        heads: head indices, e.g. ``[1, 3]``.
        head_dim: width of one head.

    Returns:
        long tensor ``[len(heads) * head_dim]``, heads in the given order.

    Example:
        >>> head_columns([1, 3], 2)
        tensor([2, 3, 6, 7])
    """
    heads = torch.as_tensor(heads, dtype=torch.long, device=device).reshape(-1)
    return (heads[:, None] * head_dim + torch.arange(head_dim, device=device)).reshape(-1)


@dataclass
class _Saved:
    """One weight matrix whose columns (dim 1) or whole value were overwritten, and what they held."""

    weight: torch.Tensor
    index: torch.Tensor | None  # None: the whole tensor was saved
    values: torch.Tensor


def _o_proj_weights(o_proj: nn.Module, where: str) -> list[torch.Tensor]:
    """The matrices whose input columns carry the heads: the base weight and any LoRA ``A`` matrices."""
    base = base_linear(o_proj)
    if not isinstance(base, nn.Linear):
        raise FoldError(f"{where}: o_proj is a {type(base).__name__}, not an nn.Linear; cannot fold the mask")
    if is_merged(o_proj):
        # A merged adapter already lives in base.weight; its A matrices are not used in forward.
        return [base.weight]
    return [base.weight] + [module.weight for module in lora_input_linears(o_proj)]


@contextlib.contextmanager
def fold_head_mask(
    model: nn.Module, mask: Mask | torch.Tensor | None, *, apply_ffn: bool = False
) -> Iterator[int]:
    """Apply a binary mask by zeroing ``o_proj`` input columns for the duration of a block.

    Gives the same outputs as :func:`ahamask.masking.hooks.head_mask` with the same 0/1 mask (to float
    rounding: the hook multiplies activations by 0, here the weights are 0) at no run-time cost. The weights
    are shared by the whole batch, so the mask must be the same for every sample; for per-sample or soft
    masks (training) use the hooks. Nesting is allowed; each block restores what it changed.

    Args:
        model: a SALMONN (its ``llama_model`` is used) or a LLaMA-style LLM, peft-wrapped or not.
        mask: a :class:`~ahamask.masking.value.Mask` (logits binarised at 0.5) or a 0/1 tensor (see
            :func:`head_keep_grid` for the layouts); ``None`` folds nothing.
        apply_ffn: also zero ``mlp.down_proj`` of layers whose FFN gate is 0 (the official never applies it).

    Yields:
        The number of heads masked.

    Raises:
        FoldError: soft values, rows that differ, or an ``o_proj`` that is not a Linear.
        MaskShapeError: a mask made for another geometry.

    Example:
        >>> with fold_head_mask(model, binarize(load_mask("gender.pth"))):
        ...     answers = model.generate(batch, cfg, prompts=prompts)
    """
    mask = gate_values(mask)
    if mask is None:
        yield 0
        return
    llm = resolve_llm(model)
    n_layers, n_heads, head_dim = model_geometry(llm)
    keep = head_keep_grid(mask, n_layers, n_heads, source="fold_head_mask")
    ffn_keep = (
        ffn_keep_vector(mask, n_layers, n_heads) if apply_ffn else torch.ones(n_layers, dtype=torch.bool)
    )
    saved: list[_Saved] = []
    try:
        _zero_masked_weights(llm, keep, ffn_keep, head_dim, saved)
        masked = int((~keep).sum())
        logger.debug("folded a mask into o_proj: %d of %d heads zeroed", masked, keep.numel())
        yield masked
    finally:
        _restore_weights(saved)


def _zero_masked_weights(
    llm: nn.Module, keep: torch.Tensor, ffn_keep: torch.Tensor, head_dim: int, saved: list[_Saved]
) -> None:
    """Zero the ``o_proj`` input columns of dropped heads (and ``down_proj`` of dropped FFNs), appending
    each tensor's old values to ``saved`` before writing it, so a failure half-way still restores what
    was changed."""
    with torch.no_grad():
        for index, layer in enumerate(decoder_layers(llm)):
            dropped = (~keep[index]).nonzero().reshape(-1)
            if dropped.numel():
                for weight in _o_proj_weights(output_projection(layer), f"layer {index}"):
                    cols = head_columns(dropped, head_dim, weight.device)
                    saved.append(_Saved(weight, cols, weight.index_select(1, cols).clone()))
                    weight.index_fill_(1, cols, 0.0)
            if not ffn_keep[index]:
                down = feed_forward_output(layer)
                for tensor in (down.weight, down.bias):
                    if tensor is not None:
                        saved.append(_Saved(tensor, None, tensor.clone()))
                        tensor.zero_()


def _restore_weights(saved: list[_Saved]) -> None:
    """Write back what :func:`_zero_masked_weights` saved, newest first: if a tensor was saved twice,
    the oldest values are written last."""
    with torch.no_grad():
        for item in reversed(saved):
            if item.index is None:
                item.weight.copy_(item.values)
            else:
                item.weight.index_copy_(1, item.index, item.values)
