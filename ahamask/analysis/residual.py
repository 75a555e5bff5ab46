"""Read and write the decoder's residual stream: capture a layer's output, add a vector to it (steering).

Both work through forward hooks on the stock decoder layers (found by
:func:`ahamask.masking.hf_layout.decoder_layers`), so any backbone of :class:`ahamask.models.backbone.AudioLLM`
is read and steered without a forked model, and a head mask attached to the same decoder keeps acting.

"The output of decoder layer ``l``" is the hidden state a LLaMA/Qwen2 decoder layer returns (after its
attention and feed-forward residual additions, before the next layer; for the last layer, before the final
norm). The "answer position" is the last prompt position: the prompts are left-padded
(:meth:`AudioLLM.prompt_inputs`), so it is index ``-1`` of every row, the position whose logits predict the
first answer token.

:func:`prompt_forward` runs the decoder on :class:`PromptInputs` with the position ids ``generate`` uses
(``cumsum(attention_mask) - 1``, 0 on padding), so a probe sees exactly the prefill of a decode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..masking.hf_layout import decoder_layers
from ..models.backbone import AudioLLM, PromptInputs

__all__ = ["capture_residual", "add_to_residual", "prompt_forward", "position_ids_for", "POSITIONS"]

#: Where :func:`add_to_residual` adds its vectors.
POSITIONS = ("last", "all")


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """The position ids ``generate`` gives left-padded rows: ``cumsum(mask) - 1``, 0 on padding."""
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


def prompt_forward(model: AudioLLM, inputs: PromptInputs, **kwargs: Any) -> Any:
    """One decoder forward over the prompt (the prefill of a decode), returning the transformers output.

    Args:
        model: the backbone.
        inputs: from ``model.prompt_inputs``.
        **kwargs: passed to the decoder (e.g. ``output_hidden_states=True``).
    """
    with torch.no_grad():
        return model.decoder(
            inputs_embeds=inputs.embeds,
            attention_mask=inputs.attention_mask,
            position_ids=position_ids_for(inputs.attention_mask),
            use_cache=False,
            return_dict=True,
            **kwargs,
        )


def _hidden(output: Any) -> torch.Tensor:
    # transformers 5 decoder layers return the hidden states; older ones (and some models) a tuple.
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output: Any, hidden: torch.Tensor) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def _check_layers(model: AudioLLM, layers: Sequence[int]) -> nn.ModuleList:
    stack = decoder_layers(model.decoder)
    bad = [layer for layer in layers if not 0 <= int(layer) < len(stack)]
    if bad:
        raise ValueError(f"layers: {bad} outside 0..{len(stack) - 1} (the decoder has {len(stack)} layers)")
    return stack


def capture_residual(
    model: AudioLLM,
    inputs: PromptInputs,
    layers: Sequence[int],
    position: str = "last",
    spans: Sequence[tuple[int, int]] | None = None,
) -> dict[int, torch.Tensor]:
    """The residual stream after each of ``layers`` at one position per row, from one prefill forward.

    Args:
        model: the backbone (any hooks already attached, e.g. a head mask, stay active).
        inputs: left-padded prompt inputs (``model.prompt_inputs``).
        layers: decoder layer indices (0-based; ``n_layers - 1`` is the final representation).
        position: ``"last"`` (the answer position), ``"mean_span"`` (the mean over ``spans``, default the
            audio spans of ``inputs``) or ``"all"`` (every position: [batch, length, hidden]).
        spans: per row ``(start, end)`` for ``"mean_span"``.

    Returns:
        layer -> [batch, hidden] float tensor (detached, on the model's device). Hooks run in the order they
        were attached, so inside :func:`add_to_residual` the captured states are the steered ones. (Not so
        transformers' ``output_hidden_states``, which records each layer's output before later hooks.)

    Raises:
        ValueError: an unknown position or a layer outside the decoder.
    """
    if position not in ("last", "mean_span", "all"):
        raise ValueError(f"position: {position!r} is not 'last', 'mean_span' or 'all'")
    stack = _check_layers(model, layers)
    rows = spans if spans is not None else inputs.audio_spans
    captured: dict[int, torch.Tensor] = {}

    def hook_for(layer: int):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            hidden = _hidden(output)
            if position == "last":
                captured[layer] = hidden[:, -1].detach().float()
            elif position == "all":
                captured[layer] = hidden.detach().float()
            else:
                captured[layer] = torch.stack(
                    [hidden[i, s:e].float().mean(0) for i, (s, e) in enumerate(rows)]
                ).detach()

        return hook

    handles = [stack[int(layer)].register_forward_hook(hook_for(int(layer))) for layer in layers]
    try:
        prompt_forward(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return {int(layer): captured[int(layer)] for layer in layers}


def _check_vector_widths(model: AudioLLM, vectors: Mapping[int, torch.Tensor]) -> None:
    """Rejects a steering vector that is not [hidden] or [batch, hidden] for the decoder's width."""
    hidden_size = int(model.decoder.get_input_embeddings().weight.shape[-1])
    for layer, vector in vectors.items():
        if vector.shape[-1] != hidden_size or vector.dim() not in (1, 2):
            raise ValueError(
                f"vectors[{layer}]: shape {tuple(vector.shape)} is not [hidden] or [batch, hidden] "
                f"with hidden = {hidden_size}"
            )


def _steering_hook(vector: torch.Tensor, *, scale: float, positions: str, prefill_only: bool):
    """The forward hook that adds ``scale * vector`` to a layer's output (see :func:`add_to_residual` for
    the positions), one per steered layer."""

    def hook(module: nn.Module, args: tuple, output: Any) -> Any:
        hidden = _hidden(output)
        delta = (scale * vector).to(device=hidden.device, dtype=hidden.dtype)
        if delta.dim() == 2 and delta.shape[0] != hidden.shape[0]:
            # beam search / sampling expands rows: repeat each row's vector for its beams.
            delta = delta.repeat_interleave(hidden.shape[0] // delta.shape[0], dim=0)
        if positions == "all":
            steered = hidden + (delta if delta.dim() == 1 else delta[:, None])
        else:
            if prefill_only and hidden.shape[1] == 1:
                return None
            steered = hidden.clone()
            steered[:, -1] = hidden[:, -1] + delta
        return _replace_hidden(output, steered)

    return hook


@contextlib.contextmanager
def add_to_residual(
    model: AudioLLM,
    vectors: Mapping[int, torch.Tensor],
    *,
    scale: float = 1.0,
    positions: str = "last",
    prefill_only: bool = False,
) -> Iterator[None]:
    """Add ``scale * vectors[layer]`` to the output of decoder layer ``layer`` while the context is open.

    With ``positions="last"`` the vector goes to the last position of every forward call: the answer position
    of the prefill (left-padded prompts end there) and, under ``generate`` with the KV cache, each newly
    generated token (each decoding step is a forward of one position), unless ``prefill_only``. A forward of
    more than one position is taken as the prefill, one position as a decoding step. ``positions="all"`` adds
    it everywhere (padding included: padded positions are never attended to).

    Args:
        model: the backbone.
        vectors: layer -> [hidden] (one vector for every row) or [batch, hidden] (one per row).
        scale: the factor (``beta``); 0 leaves every output bit-identical (``x + 0 * v == x``).
        positions: ``"last"`` or ``"all"``.
        prefill_only: steer the prompt only, not the generated tokens (``positions="last"`` only).

    Raises:
        ValueError: an unknown ``positions``, a layer outside the decoder or a vector of the wrong width.
    """
    if positions not in POSITIONS:
        raise ValueError(f"positions: {positions!r} is not one of {POSITIONS}")
    stack = _check_layers(model, list(vectors))
    _check_vector_widths(model, vectors)
    handles = [
        stack[int(layer)].register_forward_hook(
            _steering_hook(v.detach(), scale=scale, positions=positions, prefill_only=prefill_only)
        )
        for layer, v in vectors.items()
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
