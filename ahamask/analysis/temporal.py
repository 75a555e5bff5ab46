"""Temporal attention read-out: where in time the answer position listens, and the interval it points at.

From :class:`ahamask.analysis.attention.AudioAttention` (``weights [batch, layers, heads, n_audio_tokens]``)
one curve per row is made, mapped to seconds through the backbone's own token spans
(``model.audio_token_times``: SALMONN's Q-Former windows, 40 ms per token for Qwen2-Audio / AF3), smoothed,
and turned into an interval. Our reading of the paper, each a :class:`ReadoutConfig` field:

* **heads**: all heads of the read layers (default), or an explicit list of ``(layer, head)`` pairs (e.g. the
  top listening heads; :func:`top_audio_heads` ranks heads by their mean attention mass on the audio, the
  listening probe's score);
* **layers**: which decoder layers are read (default all). Under steering only layers *after* the first
  steered one can change at the answer position, which is why the experiment reads those by default;
* **normalisation** (``normalize``): ``"none"`` averages the raw probabilities (a head that gives the audio
  more mass counts more), ``"per_head"`` first rescales each head's audio weights to sum to 1 (every head
  votes equally on *where*); the curve is then rescaled to sum to 1 over the audio;
* **aggregation**: the mean over the selected (layer, head) pairs;
* **smoothing**: a box filter of ``smooth_seconds`` (converted to whole tokens, odd width, renormalised at
  the edges); 0 turns it off;
* **interval rule**: ``"window"``: the window of the expected length (the ground truth's, as for the
  same-length random baseline) holding the most attention mass, the mass spread uniformly over each token's
  time span and evaluated on a ``step``-second grid; ``"threshold"``: the tokens whose smoothed weight is at
  least ``threshold`` times the peak, taking the connected run around the peak, from its first token's start
  to its last token's end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "ReadoutConfig",
    "RULES",
    "NORMALIZATIONS",
    "select_weights",
    "aggregate",
    "top_audio_heads",
    "smooth",
    "token_index",
    "token_centres",
    "time_density",
    "best_window",
    "threshold_interval",
    "predict_interval",
    "readout",
]

RULES = ("window", "threshold")
NORMALIZATIONS = ("none", "per_head")


@dataclass
class ReadoutConfig:
    """How attention becomes an interval (see the module docstring for what each choice means).

    Attributes:
        layers: decoder layers to read (None: every layer the attention was captured for).
        heads: ``(layer, head)`` pairs to average (None: every head of the read layers).
        normalize: ``"none"`` or ``"per_head"``.
        smooth_seconds: box-filter width in seconds (0: none).
        rule: ``"window"`` or ``"threshold"``.
        threshold: share of the peak for the threshold rule.
        step: grid step in seconds of the window search.
    """

    layers: list[int] | None = None
    heads: list[tuple[int, int]] | None = None
    normalize: str = "none"
    smooth_seconds: float = 0.25
    rule: str = "window"
    threshold: float = 0.5
    step: float = 0.01

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"readout.rule: {self.rule!r} is not one of {RULES}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"readout.normalize: {self.normalize!r} is not one of {NORMALIZATIONS}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"readout.threshold: {self.threshold} must be in (0, 1]")
        if self.smooth_seconds < 0 or self.step <= 0:
            raise ValueError("readout.smooth_seconds must be >= 0 and readout.step > 0")


def _weights(attention: Any) -> tuple[torch.Tensor, list[int]]:
    """(weights [batch, layers, heads, tokens], their layer indices) of an AudioAttention or a bare tensor."""
    if isinstance(attention, torch.Tensor):
        return attention.float(), list(range(attention.shape[1]))
    return attention.weights.float(), list(attention.layers)


def select_weights(
    attention: Any, layers: Sequence[int] | None = None, heads: Sequence[tuple[int, int]] | None = None
) -> torch.Tensor:
    """[batch, n_selected, tokens]: the rows of the chosen (layer, head) pairs.

    Raises:
        ValueError: a layer or head that the attention does not hold (naming it).
    """
    weights, held = _weights(attention)
    n_heads = weights.shape[2]
    if heads is not None:
        pairs = [(int(layer), int(head)) for layer, head in heads]
    else:
        read = held if layers is None else [int(layer) for layer in layers]
        pairs = [(layer, head) for layer in read for head in range(n_heads)]
    missing = sorted({layer for layer, _ in pairs if layer not in held})
    if missing:
        raise ValueError(f"readout layers {missing} were not captured (held: {held})")
    bad = [(layer, head) for layer, head in pairs if not 0 <= head < n_heads]
    if bad or not pairs:
        raise ValueError(f"readout heads: {bad or 'none selected'} (each layer has {n_heads} heads)")
    index = {layer: i for i, layer in enumerate(held)}
    return torch.stack([weights[:, index[layer], head] for layer, head in pairs], dim=1)


def aggregate(
    attention: Any,
    layers: Sequence[int] | None = None,
    heads: Sequence[tuple[int, int]] | None = None,
    normalize: str = "none",
) -> torch.Tensor:
    """[batch, tokens] mean attention over the selected heads, rescaled to sum to 1 per row."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize: {normalize!r} is not one of {NORMALIZATIONS}")
    rows = select_weights(attention, layers, heads)
    if normalize == "per_head":
        rows = rows / rows.sum(-1, keepdim=True).clamp_min(1e-12)
    curve = rows.mean(1)
    return curve / curve.sum(-1, keepdim=True).clamp_min(1e-12)


def top_audio_heads(attention: Any, k: int, layers: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """The ``k`` (layer, head) pairs with the highest mean attention mass on the audio over the batch."""
    weights, held = _weights(attention)
    mass = weights.sum(-1).mean(0)  # [layers, heads]
    keep = [i for i, layer in enumerate(held) if layers is None or layer in set(layers)]
    scored = [(float(mass[i, h]), held[i], h) for i in keep for h in range(mass.shape[1])]
    scored.sort(key=lambda x: (-x[0], x[1], x[2]))
    return [(layer, head) for _, layer, head in scored[: max(int(k), 1)]]


def smooth(curve: torch.Tensor, width_tokens: int) -> torch.Tensor:
    """Box filter over the last axis (``width_tokens`` made odd; renormalised where it overhangs an edge)."""
    width = int(width_tokens)
    if width <= 1:
        return curve
    width += 1 - width % 2
    flat = curve.reshape(-1, 1, curve.shape[-1]).float()
    kernel = torch.ones(1, 1, width, dtype=flat.dtype)
    summed = torch.nn.functional.conv1d(flat, kernel, padding=width // 2)
    count = torch.nn.functional.conv1d(torch.ones_like(flat[:1]), kernel, padding=width // 2)
    return (summed / count).reshape(curve.shape)


def token_centres(times: torch.Tensor) -> torch.Tensor:
    """[n_tokens] midpoint in seconds of each token's span."""
    return times.float().mean(-1)


def token_index(times: torch.Tensor, seconds: float) -> int:
    """The token whose span ``[start, end)`` holds ``seconds`` (the last token for a time at or past its end).

    With the spans of ``model.audio_token_times``, ``token_index(times, token_centres(times)[i]) == i`` for
    every token of non-overlapping windows: the token <-> seconds round trip.

    Raises:
        ValueError: a time before the first token.
    """
    starts = times[:, 0].float().contiguous()
    if seconds < float(starts[0]):
        raise ValueError(f"{seconds} s is before the first audio token ({float(starts[0])} s)")
    return int(torch.searchsorted(starts, torch.tensor(float(seconds)), right=True)) - 1


def time_density(
    curve: torch.Tensor, times: torch.Tensor, step: float = 0.01, clip_seconds: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(grid start times [M], mass per grid cell [M]) with each token's weight spread over its span."""
    times = times.float().numpy()
    weights = curve.float().numpy()
    end = float(times[:, 1].max()) if clip_seconds is None else float(clip_seconds)
    grid = np.arange(0.0, end - 1e-9, step)
    mass = np.zeros(len(grid))
    for w, (start, stop) in zip(weights, times, strict=True):
        lo = np.clip(grid, start, stop)
        hi = np.clip(grid + step, start, stop)
        mass += w * (hi - lo) / max(stop - start, 1e-12)
    return grid, mass


def best_window(
    curve: torch.Tensor,
    times: torch.Tensor,
    length: float,
    clip_seconds: float | None = None,
    step: float = 0.01,
) -> tuple[float, float]:
    """The interval of ``length`` seconds inside ``[0, clip]`` holding the most mass (earliest on ties)."""
    grid, mass = time_density(curve, times, step, clip_seconds)
    total = len(grid) * step
    n = int(round(min(length, total) / step))
    if n <= 0:
        peak = int(np.argmax(mass))
        return float(grid[peak]), float(grid[peak])
    sums = np.convolve(mass, np.ones(n), mode="valid")
    start = float(grid[int(np.argmax(sums))])
    return start, min(start + n * step, total)


def threshold_interval(
    curve: torch.Tensor, times: torch.Tensor, fraction: float = 0.5
) -> tuple[float, float]:
    """The connected run of tokens around the peak with weight >= ``fraction * peak``, as seconds."""
    weights = curve.float()
    peak = int(torch.argmax(weights))
    keep = weights >= fraction * weights[peak]
    lo = hi = peak
    while lo > 0 and keep[lo - 1]:
        lo -= 1
    while hi + 1 < len(weights) and keep[hi + 1]:
        hi += 1
    return float(times[lo, 0]), float(times[hi, 1])


def predict_interval(
    curve: torch.Tensor,
    times: torch.Tensor,
    cfg: ReadoutConfig,
    length: float | None = None,
    clip_seconds: float | None = None,
) -> tuple[float, float]:
    """One row's interval by ``cfg.rule`` (``length``: the expected event length, needed by ``"window"``)."""
    if cfg.rule == "window":
        if length is None:
            raise ValueError("readout.rule 'window' needs the expected event length")
        return best_window(curve, times, length, clip_seconds, cfg.step)
    return threshold_interval(curve, times, cfg.threshold)


def _smooth_tokens(times: torch.Tensor, seconds: float) -> int:
    if seconds <= 0 or len(times) < 2:
        return 1
    stride = float(times[1, 0] - times[0, 0]) or float(times[0, 1] - times[0, 0])
    return max(int(round(seconds / stride)), 1)


def readout(
    attention: Any,
    times: torch.Tensor,
    cfg: ReadoutConfig,
    lengths: Sequence[float] | None = None,
    clip_seconds: float | None = None,
) -> tuple[torch.Tensor, list[tuple[float, float]]]:
    """Curves [batch, tokens] (aggregated and smoothed) and one predicted interval per row.

    Args:
        attention: an ``AudioAttention`` (or its ``weights`` tensor).
        times: [tokens, 2] from ``model.audio_token_times(n_tokens)``.
        cfg: the read-out choices.
        lengths: per row expected event length in seconds (the window rule).
        clip_seconds: the clip length (windows stay inside it).
    """
    weights, _ = _weights(attention)
    if weights.shape[-1] != len(times):
        raise ValueError(f"times: {len(times)} token spans for {weights.shape[-1]} audio tokens")
    curves = smooth(
        aggregate(attention, cfg.layers, cfg.heads, cfg.normalize), _smooth_tokens(times, cfg.smooth_seconds)
    )
    intervals = [
        predict_interval(curves[i], times, cfg, None if lengths is None else float(lengths[i]), clip_seconds)
        for i in range(curves.shape[0])
    ]
    return curves, intervals
