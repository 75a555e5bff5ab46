"""The torch copy of torchaudio's default resampler, checked against a direct evaluation of its formula.

torchaudio cannot be installed here, so the reference is the formula itself, evaluated in float64 numpy one
output sample at a time: ``y[n] = sum_i x[i] * h((i / orig - n / new) * base)`` with
``h(t) = sinc(t) * cos(pi t / (2 * 6)) ** 2 * base / orig`` for ``|t| <= 6`` and 0 beyond, ``orig`` and ``new``
the rates divided by their gcd and ``base = 0.99 * min(orig, new)``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from ahamask.data.audio import (
    RESAMPLE_QUALITY,
    default_feature_extractor,
    load_audio,
    resample,
    whisper_features,
)
from ahamask.data.sinc_resample import resample_sinc, sinc_resample_kernel

DEMO_WAVS = Path(__file__).resolve().parents[3] / ".." / "shared" / "reference" / "demo_wavs"
RATES = [(44100, 16000), (22050, 16000), (48000, 16000), (8000, 16000), (11025, 16000)]


def direct_sinc(x: np.ndarray, orig_sr: int, new_sr: int, outputs: list[int]) -> np.ndarray:
    """The windowed-sinc sum of torchaudio's documented kernel, evaluated directly (float64)."""
    gcd = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // gcd, new_sr // gcd
    base, lpw = 0.99 * min(orig, new), 6
    i = np.arange(len(x), dtype=np.float64)
    values = []
    for n in outputs:
        t = (i / orig - n / new) * base
        inside = np.abs(t) <= lpw
        taps = np.sinc(t[inside]) * np.cos(np.pi * t[inside] / lpw / 2) ** 2 * base / orig
        values.append(float(np.dot(x[inside].astype(np.float64), taps)))
    return np.array(values)


@pytest.mark.parametrize(("orig_sr", "new_sr"), RATES)
def test_resampled_samples_equal_the_formula(orig_sr, new_sr):
    x = np.random.default_rng(orig_sr).uniform(-0.5, 0.5, orig_sr // 4).astype(np.float32)
    y = resample_sinc(x, orig_sr, new_sr)
    assert y.dtype == np.float32 and len(y) == math.ceil(len(x) * new_sr / orig_sr)
    # Both edges (zero padding enters), the middle, and every phase of the kernel near the start.
    picks = sorted({0, 1, 2, 3, 5, 7, 11, len(y) // 2, len(y) // 2 + 1, len(y) - 2, len(y) - 1})
    np.testing.assert_allclose(y[picks], direct_sinc(x, orig_sr, new_sr, picks), atol=2e-6, rtol=0)


def test_kernel_shape_width_and_dc_gain():
    kernel, width = sinc_resample_kernel(44100, 16000)
    assert tuple(kernel.shape) == (160, 1, 475) and width == 17  # 441 -> 160 after the gcd of 100
    kernel, width = sinc_resample_kernel(22050, 16000)
    assert tuple(kernel.shape) == (320, 1, 459) and width == 9
    # Each phase sums to about 1 (a constant stays constant), a little below for the 0.99 roll-off.
    up, _ = sinc_resample_kernel(8000, 16000)
    gains = up.sum(dim=-1).flatten().double()
    assert ((gains > 0.98) & (gains < 1.02)).all(), gains


def test_length_rounds_like_torchaudio_in_float32():
    # 160 * 1000064 / 441 = 362835.01...: float32 rounds it to 362835.0, so torchaudio keeps one sample fewer
    # than the exact ceiling; a length whose quotient is further from an integer gets the ceiling.
    assert len(resample_sinc(np.zeros(1000064, np.float32), 44100, 16000)) == 362835
    assert len(resample_sinc(np.zeros(1000000, np.float32), 44100, 16000)) == math.ceil(1000000 * 160 / 441)


def test_default_resampler_is_the_official_one_and_soxr_stays_reachable(tmp_path):
    x = np.random.default_rng(1).uniform(-0.5, 0.5, 22050).astype(np.float32)
    np.testing.assert_array_equal(resample(x, 22050), resample_sinc(x, 22050, 16000))
    expected_soxr = soxr.resample(x, 22050, 16000, quality=RESAMPLE_QUALITY)
    np.testing.assert_array_equal(resample(x, 22050, method="soxr")[: len(expected_soxr)], expected_soxr)
    path = tmp_path / "a.wav"
    sf.write(path, x, 22050, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path), resample_sinc(x, 22050, 16000))
    np.testing.assert_array_equal(load_audio(path, resampler="soxr"), resample(x, 22050, method="soxr"))
    with pytest.raises(ValueError, match=r"resampler: 'sox' is not one of torchaudio_sinc, soxr"):
        resample(x, 22050, method="sox")


@pytest.mark.slow
def test_difference_from_soxr_on_librispeech_at_22k(record_property):
    """Measured: the ten demo wavs taken to 22.05 kHz (soxr) and back with each resampler."""
    wavs = sorted(DEMO_WAVS.glob("*.flac"))
    if not wavs:
        pytest.skip(f"reference wavs not found in {DEMO_WAVS} (../shared/reference sits beside the repo)")
    extractor = default_feature_extractor()
    snrs, mel_diffs = [], []
    for path in wavs:
        x, sr = sf.read(path, dtype="float32")
        up = soxr.resample(x, sr, 22050, quality=RESAMPLE_QUALITY).astype(np.float32)
        a, b = resample(up, 22050, method="torchaudio_sinc"), resample(up, 22050, method="soxr")
        snrs.append(
            10 * np.log10(np.sum(b.astype(np.float64) ** 2) / np.sum((a - b).astype(np.float64) ** 2))
        )
        mel_a, mel_b = whisper_features(a, extractor), whisper_features(b, extractor)
        mel_diffs.append(float((mel_a - mel_b).abs().max()))
    record_property("snr_db_min", min(snrs))
    record_property("logmel_max_abs_diff", max(mel_diffs))
    # The two agree to better than 40 dB on speech; Whisper's log-mel features move by under 0.1.
    assert min(snrs) > 40.0, snrs
    assert 0.0 < max(mel_diffs) < 0.1, mel_diffs


@pytest.mark.parametrize("resampler", ["torchaudio_sinc", "soxr"])
def test_dataset_resamples_with_the_chosen_resampler(tmp_path, resampler):
    import json

    from ahamask.data.dataset import SALMONNDataset

    x = np.random.default_rng(2).uniform(-0.5, 0.5, 33075).astype(np.float32)  # 1.5 s at 22.05 kHz
    sf.write(tmp_path / "a.wav", x, 22050, subtype="FLOAT")
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"annotation": [{"path": "a.wav", "text": "Male", "task": "gr"}]}))
    item = SALMONNDataset(manifest, resampler=resampler)[0]
    np.testing.assert_array_equal(item["raw_wav"], resample(x, 22050, method=resampler).astype(np.float32))
    with pytest.raises(ValueError, match=r"datasets.resampler: 'sox' is not one of torchaudio_sinc, soxr"):
        SALMONNDataset(manifest, resampler="sox")
