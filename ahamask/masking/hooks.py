"""Apply head masks to a LLaMA-style decoder through hooks, without a forked modeling file.

The official code edits ``modeling_llama.py`` so each layer multiplies the per-head attention output
(after softmax(QK)V, before ``o_proj``) by its head weights. The same tensor is the input of
``self_attn.o_proj`` (heads concatenated on the last axis), so a forward pre-hook there does the same job for
every attention implementation (eager, sdpa), for prefill and cached decoding, and with peft wrapping.
A hook on ``self_attn`` itself would see no positional arguments in transformers 5 (hidden states are passed
by keyword), hence ``o_proj``.

Masks are given per batch (``[L*(H+1)]``) or per sample (``[batch, L*(H+1)]``). When the model runs a larger
batch than the mask has rows (beam search expands each sample into ``num_beams`` rows with
``repeat_interleave``), the rows are expanded the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from .hf_layout import attention, attention_geometry, decoder_layers, feed_forward, output_projection
from .mask import MaskShapeError, as_grid, binarize, check_mask_length
from .value import Mask, gate_values

__all__ = [
    "decoder_layers",
    "model_geometry",
    "HeadMaskHooks",
    "attach_head_mask",
    "remove_head_hooks",
    "head_mask",
    "ablate_heads",
    "ahamask_hook_count",
    "current_weights",
]

_REGISTRY_ATTR = "_ahamask_head_hooks"


def model_geometry(model: nn.Module) -> tuple[int, int, int]:
    """``(n_layers, n_heads, head_dim)`` of the decoder, read from its first attention module."""
    layers = decoder_layers(model)
    n_heads, head_dim = attention_geometry(attention(layers[0]))
    return len(layers), n_heads, head_dim


def _expand_rows(weights: torch.Tensor, batch: int) -> torch.Tensor:
    """Match a [rows, ...] mask to a batch of ``batch`` rows (beam search repeats each sample in place)."""
    rows = weights.shape[0]
    if rows == batch:
        return weights
    if rows == 1:
        return weights.expand(batch, *weights.shape[1:])
    if batch % rows:
        raise MaskShapeError(f"a mask with {rows} rows cannot be applied to a batch of {batch}")
    return weights.repeat_interleave(batch // rows, dim=0)


class HeadMaskHooks:
    """Hooks that multiply each head's attention output by a weight; a handle that removes them.

    The weights can be changed between forward passes with :meth:`set_weights` (training does this every
    step); ``None`` makes every hook a no-op, so the model is bit-identical to the unhooked one.
    """

    def __init__(self, model: nn.Module, apply_ffn: bool = False) -> None:
        self.model = model
        self.n_layers, self.n_heads, self.head_dim = model_geometry(model)
        self.apply_ffn = apply_ffn
        self.weights: torch.Tensor | None = None  # the gates as given to set_weights
        self._heads: torch.Tensor | None = None  # [rows, L, H]
        self._ffn: torch.Tensor | None = None  # [rows, L]
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        for index, layer in enumerate(decoder_layers(model)):
            self._handles.append(output_projection(layer).register_forward_pre_hook(self._head_hook(index)))
            if apply_ffn:
                self._handles.append(feed_forward(layer).register_forward_hook(self._ffn_hook(index)))
        getattr(model, _REGISTRY_ATTR, None) or setattr(model, _REGISTRY_ATTR, [])
        getattr(model, _REGISTRY_ATTR).append(self)

    def set_weights(self, weights: Mask | torch.Tensor | None) -> None:
        """Set the mask weights applied from now on.

        Args:
            weights: ``None`` (no masking), ``[L*(H+1)]`` for the whole batch or ``[rows, L*(H+1)]`` per
                sample; any float values (0/1 from a binarised mask, soft or straight-through from training).
        """
        weights = gate_values(weights)
        self.weights = weights
        if weights is None:
            self._heads = self._ffn = None
            return
        check_mask_length(weights, self.n_layers, self.n_heads)
        grid = as_grid(weights if weights.dim() > 1 else weights.unsqueeze(0), self.n_layers, self.n_heads)
        self._heads = grid[..., : self.n_heads]
        self._ffn = grid[..., self.n_heads]

    def _head_hook(self, layer: int):
        def hook(module: nn.Module, args: tuple) -> tuple | None:
            if self._heads is None:
                return None
            hidden = args[0]  # [batch, pos, heads * head_dim]
            batch, length, width = hidden.shape
            weights = _expand_rows(self._heads[:, layer], batch).to(
                hidden.device, hidden.dtype
            )  # [batch, heads]
            masked = (
                hidden.view(batch, length, self.n_heads, width // self.n_heads) * weights[:, None, :, None]
            )
            return (masked.view(batch, length, width), *args[1:])

        return hook

    def _ffn_hook(self, layer: int):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if self._ffn is None:
                return None
            gate = _expand_rows(self._ffn[:, layer], output.shape[0]).to(output.device, output.dtype)
            return output * gate[:, None, None]

        return hook

    def remove(self) -> None:
        """Remove exactly the hooks this object added; safe to call twice."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        registry = getattr(self.model, _REGISTRY_ATTR, [])
        if self in registry:
            registry.remove(self)

    @property
    def active(self) -> bool:
        return bool(self._handles)


def attach_head_mask(
    model: nn.Module, weights: torch.Tensor | None = None, apply_ffn: bool = False
) -> HeadMaskHooks:
    """Attach mask hooks persistently (training); returns the handle. Remove with ``.remove()``."""
    hooks = HeadMaskHooks(model, apply_ffn=apply_ffn)
    hooks.set_weights(weights)
    return hooks


def remove_head_hooks(model: nn.Module) -> int:
    """Remove every ahamask head hook attached to ``model``; returns how many handles were removed."""
    registry = list(getattr(model, _REGISTRY_ATTR, []))
    for hooks in registry:
        hooks.remove()
    return len(registry)


def current_weights(model: nn.Module) -> torch.Tensor | None:
    """The gates the hooks attached to ``model`` apply now (the innermost block's), or None.

    For tests and debugging: what a forward pass running now is masked with, however the run set it up.
    """
    for hooks in reversed(getattr(model, _REGISTRY_ATTR, [])):
        if hooks.weights is not None:
            return hooks.weights
    return None


def ahamask_hook_count(model: nn.Module) -> int:
    """How many ahamask hook handles are attached (0 after every context manager has exited)."""
    return sum(len(h._handles) for h in getattr(model, _REGISTRY_ATTR, []))


@contextlib.contextmanager
def head_mask(
    model: nn.Module,
    mask: Mask | torch.Tensor | None,
    *,
    logits: bool = False,
    prob_threshold: float = 0.5,
    apply_ffn: bool = False,
) -> Iterator[HeadMaskHooks]:
    """Apply a mask for the duration of a ``with`` block.

    Args:
        model: the LLM (or anything containing it, e.g. a peft model).
        mask: a :class:`~ahamask.masking.value.Mask` (logits are binarised with ``sigmoid >= prob_threshold``),
            or a ``[L*(H+1)]`` / ``[batch, L*(H+1)]`` tensor; ``None`` applies nothing.
        logits: a tensor ``mask`` holds logits (binarised) rather than gates (used as given). Nothing is
            guessed from the values: all-zero logits and all-zero gates mean different things.
        prob_threshold: threshold for logits.
        apply_ffn: also gate each layer's FFN output with the mask's last entry (off in the official code).

    Example:
        >>> with head_mask(model.decoder, load_mask("gender_librispeech")):
        ...     model.generate(batch, cfg)
    """
    hooks = HeadMaskHooks(model, apply_ffn=apply_ffn)
    try:
        if isinstance(mask, torch.Tensor) and logits:
            mask = binarize(mask, prob_threshold)
        hooks.set_weights(gate_values(mask, prob_threshold))
        yield hooks
    finally:
        hooks.remove()


@contextlib.contextmanager
def ablate_heads(model: nn.Module, heads: Sequence[tuple[int, int]]) -> Iterator[HeadMaskHooks]:
    """Zero the listed ``(layer, head)`` pairs for the duration of a block.

    Raises:
        ValueError: an index out of range, naming it and the model's geometry.
    """
    n_layers, n_heads, _ = model_geometry(model)
    weights = torch.ones(n_layers, n_heads + 1)
    for layer, head in heads:
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise ValueError(
                f"head ({layer}, {head}) is out of range for {n_layers} layers x {n_heads} heads"
            )
        weights[layer, head] = 0.0
    with head_mask(model, weights.reshape(-1), logits=False) as hooks:
        yield hooks
