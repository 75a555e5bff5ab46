"""Temporal read-out: head selection, aggregation, smoothing, interval rules, token <-> seconds mapping."""

from __future__ import annotations

import pytest
import torch

from ahamask.analysis.temporal import (
    ReadoutConfig,
    aggregate,
    best_window,
    readout,
    select_weights,
    smooth,
    threshold_interval,
    token_centres,
    token_index,
    top_audio_heads,
)


def _times(n: int, stride: float) -> torch.Tensor:
    start = torch.arange(n) * stride
    return torch.stack([start, start + stride], dim=-1)


def _weights() -> torch.Tensor:
    # batch 1, 2 layers, 2 heads, 6 tokens: layer 1 head 0 looks at tokens 2-3, the rest is flat.
    w = torch.full((1, 2, 2, 6), 0.05)
    w[0, 1, 0] = torch.tensor([0.0, 0.0, 0.3, 0.3, 0.0, 0.0])
    return w


def test_selection_aggregation_and_normalisation():
    w = _weights()
    assert select_weights(w, heads=[(1, 0)]).shape == (1, 1, 6)
    assert select_weights(w, layers=[1]).shape == (1, 2, 6)
    curve = aggregate(w, heads=[(1, 0)])
    torch.testing.assert_close(curve[0], torch.tensor([0.0, 0.0, 0.5, 0.5, 0.0, 0.0]))
    # Raw mean over all four heads: 0.6 on the focused head plus 3 x 6 x 0.05 = 0.9 on the flat ones.
    raw = aggregate(w)
    assert float(raw[0, 2]) == pytest.approx((0.3 + 3 * 0.05) / 1.5)
    # Per-head normalisation gives each head an equal vote: (0.5 + 3 / 6) / 4 per focused token.
    per_head = aggregate(w, normalize="per_head")
    assert float(per_head[0, 2]) == pytest.approx((0.5 + 3 / 6) / 4)
    assert top_audio_heads(w, 1) == [(1, 0)]
    with pytest.raises(ValueError, match="not captured"):
        select_weights(w, layers=[5])
    with pytest.raises(ValueError, match="heads"):
        select_weights(w, heads=[(0, 9)])


def test_smoothing_keeps_flat_curves_and_spreads_peaks():
    flat = torch.full((1, 7), 1 / 7)
    torch.testing.assert_close(smooth(flat, 3), flat)
    peak = torch.zeros(1, 7)
    peak[0, 3] = 1.0
    torch.testing.assert_close(smooth(peak, 3)[0], torch.tensor([0, 0, 1 / 3, 1 / 3, 1 / 3, 0, 0]))
    torch.testing.assert_close(smooth(peak, 1), peak)


def test_window_and_threshold_rules_on_a_hand_made_curve():
    times = _times(6, 0.5)  # 3 s
    curve = torch.tensor([0.0, 0.1, 0.4, 0.4, 0.1, 0.0])
    assert best_window(curve, times, 1.0, clip_seconds=3.0) == pytest.approx((1.0, 2.0))
    # A window longer than the hot tokens stays centred on them (earliest of the equal maxima).
    s, e = best_window(curve, times, 2.0, clip_seconds=3.0)
    assert e - s == pytest.approx(2.0) and 0.5 <= s <= 1.0 + 1e-9
    assert threshold_interval(curve, times, 0.5) == pytest.approx((1.0, 2.0))
    assert threshold_interval(curve, times, 0.2) == pytest.approx((0.5, 2.5))
    cfg = ReadoutConfig(heads=[(1, 0)], smooth_seconds=0.0)
    curves, intervals = readout(_weights(), times, cfg, lengths=[1.0], clip_seconds=3.0)
    assert intervals[0] == pytest.approx((1.0, 2.0))
    with pytest.raises(ValueError, match="rule"):
        ReadoutConfig(rule="peak")


def test_token_seconds_round_trip_on_hand_made_spans():
    times = _times(25, 0.12)
    centres = token_centres(times)
    assert [token_index(times, float(c)) for c in centres] == list(range(25))
    assert token_index(times, 0.12) == 1  # a boundary belongs to the later token
    assert token_index(times, 99.0) == 24
    # Qwen2-Audio / Audio Flamingo 3: 40 ms per token (backbone added by another issue).
    qwen = _times(750, 0.04)
    assert token_index(qwen, 12.345) == 308
    with pytest.raises(ValueError, match="before"):
        token_index(times, -0.1)


def test_salmonn_token_times_round_trip(shared_tiny_model):
    model = shared_tiny_model
    wav = torch.zeros(1, 16000 * 4)
    speech = model.encode_audio({"raw_wav": wav, "spectrogram": None, "padding_mask": None})
    n = speech.shape[1]
    times = model.audio_token_times(n)
    assert times.shape == (n, 2)
    queries = model.cfg.num_speech_query_token
    # Each Q-Former window gives num_speech_query_token tokens sharing one span; windows advance by the stride.
    window_of = [token_index(times, float(c)) // queries for c in token_centres(times)[::queries]]
    assert window_of == list(range(n // queries))
    assert float(times[-1, 1]) <= 4.0 + 1e-6


def test_salmonn_token_times_match_the_encoder_windows(shared_tiny_model):
    model = shared_tiny_model
    times = model.audio_token_times(4)
    frames_per_second = 50.0  # Whisper encoder states: 1500 per 30 s
    expected = torch.arange(4) * model.stride / frames_per_second
    torch.testing.assert_close(times[:, 0], expected.float())
