"""Per-head attention from the answer position to the audio tokens: the read-out of the listening probe.

Attention probabilities exist only under eager attention (sdpa and flash kernels never materialise them and
return ``None`` for ``output_attentions``). :func:`audio_attention` therefore switches the decoder's
transformers model to eager for the one prefill forward it runs, through the public
``PreTrainedModel.set_attn_implementation``, and restores the implementation it found afterwards (also on
error). Eager and sdpa compute the same function, so the probabilities describe the model as it decodes; a
model built with eager attention gives the same numbers bit for bit (tested). While the probe runs, the
model must not be used by another thread.

Only the query row of the answer position is kept per layer (a forward hook on each layer's self-attention
slices it out of the ``[batch, heads, query, key]`` probabilities as soon as they are computed), so memory
stays ``O(layers * heads * length)`` rather than the ``O(length^2)`` of ``output_attentions``.

The prompts are left-padded (:meth:`AudioLLM.prompt_inputs`) with the position ids ``generate`` uses
(:func:`ahamask.analysis.residual.prompt_forward`); padded keys get probability 0, so every row's
probabilities over all positions sum to 1 (``total_mass``) whatever its padding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..masking.hf_layout import attention, decoder_layers
from ..models.backbone import AudioLLM, PromptInputs
from .residual import prompt_forward

__all__ = ["AudioAttention", "audio_attention", "eager_attention", "transformers_model"]


@dataclass
class AudioAttention:
    """Attention of the answer position, per layer and head.

    Attributes:
        weights: [batch, n_layers_selected, n_heads, n_audio_tokens] probability from the query position to
            each audio token of the row's own span (``audio_spans``); a row with fewer audio tokens than the
            batch's padded width (a shorter clip on Qwen2-Audio / AF3) is 0 past its count.
        layers: the decoder layers of axis 1.
        audio_spans: per row ``(start, end)`` of the audio tokens in the padded prompt.
        total_mass: [batch, n_layers_selected, n_heads] probability summed over every key position (1 up to
            rounding: the check that the row is a distribution).
        rows: [batch, n_layers_selected, n_heads, length] the full query rows when asked for
            (``keep_rows=True``), else None.
    """

    weights: torch.Tensor
    layers: list[int]
    audio_spans: list[tuple[int, int]]
    total_mass: torch.Tensor
    rows: torch.Tensor | None = None

    @property
    def audio_mass(self) -> torch.Tensor:
        """[batch, n_layers_selected, n_heads] attention mass on the whole audio span."""
        return self.weights.sum(-1)


def transformers_model(decoder: nn.Module) -> Any:
    """The outermost transformers ``PreTrainedModel`` inside ``decoder`` (under a peft wrapper, if any)."""
    from transformers import PreTrainedModel

    for module in decoder.modules():
        if isinstance(module, PreTrainedModel):
            return module
    raise ValueError(f"{type(decoder).__name__}: no transformers PreTrainedModel inside the decoder")


@contextlib.contextmanager
def eager_attention(decoder: nn.Module) -> Iterator[None]:
    """Run ``decoder`` with eager attention inside the context, restoring its implementation afterwards."""
    model = transformers_model(decoder)
    before = model.config._attn_implementation
    if before == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def _chosen_layers(n_layers: int, layers: Sequence[int] | None) -> list[int]:
    """The decoder layers to read (default: all), checked to exist."""
    chosen = list(range(n_layers)) if layers is None else [int(layer) for layer in layers]
    bad = [layer for layer in chosen if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"layers: {bad} outside 0..{n_layers - 1}")
    return chosen


def _capture_last_rows(
    model: AudioLLM, inputs: PromptInputs, stack: Sequence[nn.Module], chosen: list[int]
) -> dict[int, torch.Tensor]:
    """One eager prompt forward with a hook on each chosen layer's attention; returns each layer's
    probabilities from the last prompt position, [batch, heads, keys] (the hooks are always removed)."""
    captured: dict[int, torch.Tensor] = {}

    def hook_for(layer: int):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            probs = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if probs is None:
                raise RuntimeError(
                    f"layer {layer}: the attention module returned no probabilities under eager attention"
                )
            captured[layer] = probs[:, :, -1].detach().float()  # [batch, heads, keys]

        return hook

    handles = [attention(stack[layer]).register_forward_hook(hook_for(layer)) for layer in chosen]
    try:
        with eager_attention(model.decoder):
            prompt_forward(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def audio_attention(
    model: AudioLLM,
    speech_embeds: torch.Tensor,
    prompts: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    query: str = "last",
    keep_rows: bool = False,
) -> AudioAttention:
    """The attention probabilities from the answer position to each audio token, per layer and head.

    Args:
        model: the backbone (hooks already on its decoder, e.g. a head mask, stay active).
        speech_embeds: [batch, n_audio_tokens, hidden] from ``model.encode_audio``.
        prompts: one full prompt per row (``model.prompt_for(...)``).
        layers: decoder layers to read (default: all).
        query: ``"last"``: the last prompt position, where the first answer token is predicted.
        keep_rows: also return the full query rows.

    Returns:
        The :class:`AudioAttention` (float32, on the model's device).

    Raises:
        ValueError: an unknown ``query`` or a layer outside the decoder.
    """
    if query != "last":
        raise ValueError(f"query: {query!r} is not supported (only 'last', the answer position)")
    stack = decoder_layers(model.decoder)
    chosen = _chosen_layers(len(stack), layers)
    inputs = model.prompt_inputs(speech_embeds, prompts)
    captured = _capture_last_rows(model, inputs, stack, chosen)
    rows = torch.stack([captured[layer] for layer in chosen], dim=1)  # [batch, L, H, length]
    # A row's own span: Qwen2-Audio / AF3 rows of a shorter clip have fewer audio tokens than the batch's
    # padded width (its span ends early); their weights past their count are 0, not the text after the audio.
    weights = rows.new_zeros(*rows.shape[:3], speech_embeds.shape[1])
    for i, (start, end) in enumerate(inputs.audio_spans):
        weights[i, :, :, : end - start] = rows[i, :, :, start:end]
    return AudioAttention(
        weights=weights,
        layers=chosen,
        audio_spans=list(inputs.audio_spans),
        total_mass=rows.sum(-1),
        rows=rows if keep_rows else None,
    )
