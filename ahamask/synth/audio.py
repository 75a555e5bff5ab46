"""Synthetic "speech" for the laptop-scale demo: symbol sequences spoken by a low or high voice.

A clip is a few symbols (DTMF-like tone pairs, 0.2-0.3 s each, short silent gaps between them)
over a voiced buzz at the speaker's f0, scaled to a quiet or loud level, with optional white noise.
It gives the demo the analogues of the paper's labels: the symbol words are the transcript (ASR),
the voice register is the analogue of gender, the level the analogue of emotion, and the number of
symbols a counting task. Everything is numpy and deterministic: a clip is fully described by a
:class:`ClipSpec` drawn from a seeded generator, and :func:`render_clip` turns a spec into samples
without any further randomness of its own (the noise comes from the spec's ``noise_seed``).

Why these cues: register is carried by the buzz f0 (95-140 Hz vs 190-260 Hz, an octave apart, like
male and female voices) and by a small shift of every tone (x1.00 vs x1.12), like formants that rise
with a shorter vocal tract. Symbol identity is the *pair* of tones; the alphabet is chosen so that
the shifted tones of one symbol never land near the tones of another, so identity and register stay
separate cues (test_synth checks this from the audio).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Symbol:
    """One symbol of the alphabet: a short word name and the two tones that sound it.

    Attributes:
        word: lowercase name used in transcripts, e.g. "ba".
        tones_hz: (low-group tone, high-group tone) in Hz for the low register; the high register
            multiplies both by its timbre scale.
    """

    word: str
    tones_hz: tuple[float, float]


# 4 low-group tones x 2 high-group tones. Low-group tones are a factor ~1.42 apart, far more than the
# 1.12 register shift plus 2% jitter, so a shifted tone never sits within 20% of another symbol's tone.
ALPHABET: tuple[Symbol, ...] = (
    Symbol("ba", (420.0, 1800.0)),
    Symbol("di", (420.0, 2600.0)),
    Symbol("ko", (600.0, 1800.0)),
    Symbol("mu", (600.0, 2600.0)),
    Symbol("pe", (850.0, 1800.0)),
    Symbol("su", (850.0, 2600.0)),
    Symbol("ta", (1200.0, 1800.0)),
    Symbol("vo", (1200.0, 2600.0)),
)
SYMBOL_WORDS: tuple[str, ...] = tuple(s.word for s in ALPHABET)
_TONES = {s.word: s.tones_hz for s in ALPHABET}


@dataclass(frozen=True)
class Register:
    """A speaker register (the demo's analogue of gender).

    Attributes:
        name: label word, "low" or "high".
        f0_range_hz: range the speaker's starting f0 is drawn from.
        timbre_scale_range: range of the factor applied to every symbol tone.
    """

    name: str
    f0_range_hz: tuple[float, float]
    timbre_scale_range: tuple[float, float]


REGISTERS: dict[str, Register] = {
    "low": Register("low", (95.0, 140.0), (0.98, 1.02)),
    "high": Register("high", (190.0, 260.0), (1.10, 1.14)),
}
# RMS level of the voiced part in dBFS; 14 dB apart so that the class is clear after any gain jitter.
LOUDNESS_DBFS: dict[str, tuple[float, float]] = {"quiet": (-34.0, -28.0), "loud": (-20.0, -14.0)}

SYMBOL_SECONDS = (0.20, 0.30)
GAP_SECONDS = (0.06, 0.10)
EDGE_SECONDS = 0.05  # minimum silence before the first and after the last symbol
RAMP_SECONDS = 0.01  # raised-cosine fade at each symbol edge (no clicks, clean gaps)
F0_SLOPE_RANGE = (-0.06, 0.03)  # relative f0 change over the clip: mostly a falling declination
SYMBOL_GAIN_DB = 2.0  # per-symbol level jitter, +-
DEFAULT_SNR_DB = (15.0, 30.0)
DEFAULT_N_SYMBOLS = (2, 6)


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render one clip; its labels are read from it.

    Times are integer sample indices so that a spec re-renders bit-exactly.

    Attributes:
        symbols: symbol words in spoken order.
        onsets: first sample of each symbol.
        lengths: number of samples of each symbol.
        gains_db: level offset of each symbol.
        register: "low" or "high".
        f0_hz: buzz f0 at the start of the clip.
        f0_slope: relative f0 change from the first to the last sample.
        timbre_scale: factor applied to every symbol tone.
        loudness: "quiet" or "loud".
        level_dbfs: RMS level of the voiced samples before noise.
        snr_db: voiced-RMS to noise-RMS ratio, or None for a clean clip.
        noise_seed: seed of the noise generator.
        n_samples: clip length in samples.
        sample_rate: samples per second.
    """

    symbols: tuple[str, ...]
    onsets: tuple[int, ...]
    lengths: tuple[int, ...]
    gains_db: tuple[float, ...]
    register: str
    f0_hz: float
    f0_slope: float
    timbre_scale: float
    loudness: str
    level_dbfs: float
    snr_db: float | None
    noise_seed: int
    n_samples: int
    sample_rate: int = SAMPLE_RATE

    @property
    def count(self) -> int:
        """Number of symbols in the clip."""
        return len(self.symbols)

    def labels(self) -> dict[str, object]:
        """Returns the JSON-ready labels of the clip (what manifests store under ``labels``)."""
        sr = self.sample_rate
        return {
            "symbols": list(self.symbols),
            "count": self.count,
            "register": self.register,
            "f0_hz": self.f0_hz,
            "f0_slope": self.f0_slope,
            "timbre_scale": self.timbre_scale,
            "loudness": self.loudness,
            "level_dbfs": self.level_dbfs,
            "snr_db": self.snr_db,
            "onsets_s": [o / sr for o in self.onsets],
            "offsets_s": [(o + n) / sr for o, n in zip(self.onsets, self.lengths, strict=True)],
        }


def min_clip_seconds(max_symbols: int) -> float:
    """Shortest clip that can hold ``max_symbols`` symbols at their minimum durations.

    Args:
        max_symbols: largest number of symbols a clip may hold.

    Returns:
        Seconds: edges + symbols + gaps, each at its minimum.
    """
    return 2 * EDGE_SECONDS + max_symbols * SYMBOL_SECONDS[0] + (max_symbols - 1) * GAP_SECONDS[0]


def _rounded(x: float, digits: int = 4) -> float:
    # Labels are written to JSON; rounding the drawn value itself keeps labels and audio in agreement.
    return float(round(float(x), digits))


def _check_symbol_range(n_symbols: tuple[int, int], clip_seconds: float) -> None:
    """Rejects a symbol-count range that is empty or cannot fit in the clip (before any draw, so a bad
    call consumes nothing from the generator)."""
    lo, hi = n_symbols
    if not 1 <= lo <= hi:
        raise ValueError(f"n_symbols: expected 1 <= min <= max, got {n_symbols}")
    if clip_seconds < min_clip_seconds(hi) - 1e-9:
        raise ValueError(
            f"clip_seconds: {clip_seconds} s cannot hold {hi} symbols; need at least {min_clip_seconds(hi):.2f} s"
        )


def _place_symbols(
    rng: np.random.Generator, n: int, clip_seconds: float, sample_rate: int
) -> tuple[list[int], list[int]]:
    """Draws the gaps, the symbol durations and the sequence's offset (in that order) and returns the
    symbols' onsets and lengths in samples; kept apart so the timing rules sit in one place."""
    gaps = rng.uniform(*GAP_SECONDS, size=n - 1)
    room = clip_seconds - 2 * EDGE_SECONDS
    # Long sequences shrink the longest allowed symbol so that everything fits; never below the minimum.
    longest = min(SYMBOL_SECONDS[1], (room - gaps.sum()) / n)
    durs = rng.uniform(SYMBOL_SECONDS[0], max(longest, SYMBOL_SECONDS[0]), size=n)
    total = durs.sum() + gaps.sum()
    start = EDGE_SECONDS + rng.uniform(0.0, max(room - total, 0.0))
    onsets, lengths = [], []
    t = start
    for i in range(n):
        onsets.append(int(round(t * sample_rate)))
        lengths.append(int(round(durs[i] * sample_rate)))
        t += durs[i] + (gaps[i] if i < n - 1 else 0.0)
    return onsets, lengths


def sample_clip_spec(
    rng: np.random.Generator,
    *,
    clip_seconds: float = 2.0,
    sample_rate: int = SAMPLE_RATE,
    n_symbols: tuple[int, int] = DEFAULT_N_SYMBOLS,
    snr_db: tuple[float, float] | None = DEFAULT_SNR_DB,
) -> ClipSpec:
    """Draws a random clip description.

    Symbols are uniform over the alphabet (repeats allowed), the count uniform over ``n_symbols``,
    register and loudness are fair coin flips, durations and gaps uniform, and the whole sequence is
    placed at a uniform offset inside the clip.

    Args:
        rng: source of randomness; the same generator state gives the same spec.
        clip_seconds: clip length; must fit ``n_symbols[1]`` symbols (see :func:`min_clip_seconds`).
        sample_rate: samples per second.
        n_symbols: inclusive (min, max) number of symbols.
        snr_db: inclusive range of the signal-to-noise ratio, or None for clean clips.

    Returns:
        The spec.

    Raises:
        ValueError: if the range of symbols is empty or does not fit in the clip.
    """
    lo, hi = n_symbols
    _check_symbol_range(n_symbols, clip_seconds)
    n = int(rng.integers(lo, hi + 1))
    symbols = tuple(SYMBOL_WORDS[i] for i in rng.integers(0, len(SYMBOL_WORDS), size=n))
    onsets, lengths = _place_symbols(rng, n, clip_seconds, sample_rate)
    register = REGISTERS["low" if rng.random() < 0.5 else "high"]
    loudness = "quiet" if rng.random() < 0.5 else "loud"
    return ClipSpec(
        symbols=symbols,
        onsets=tuple(onsets),
        lengths=tuple(lengths),
        gains_db=tuple(_rounded(g, 2) for g in rng.uniform(-SYMBOL_GAIN_DB, SYMBOL_GAIN_DB, size=n)),
        register=register.name,
        f0_hz=_rounded(rng.uniform(*register.f0_range_hz), 2),
        f0_slope=_rounded(rng.uniform(*F0_SLOPE_RANGE)),
        timbre_scale=_rounded(rng.uniform(*register.timbre_scale_range)),
        loudness=loudness,
        level_dbfs=_rounded(rng.uniform(*LOUDNESS_DBFS[loudness]), 2),
        snr_db=None if snr_db is None else _rounded(rng.uniform(*snr_db), 2),
        noise_seed=int(rng.integers(0, 2**32)),
        n_samples=int(round(clip_seconds * sample_rate)),
        sample_rate=sample_rate,
    )


def _ramp_envelope(n: int, ramp: int) -> np.ndarray:
    env = np.ones(n, dtype=np.float32)
    ramp = min(ramp, n // 2)
    if ramp > 0:
        fade = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)
        env[:ramp] = fade
        env[n - ramp :] = fade[::-1]
    return env


def _sine(cycles: np.ndarray) -> np.ndarray:
    # Phase is accumulated in float64 cycles and reduced to [0, 1) before a float32 sine: numpy's
    # float32 sin is SIMD and ~50x faster than float64, and the reduced argument keeps it accurate.
    return np.sin((2.0 * np.pi) * (cycles - np.floor(cycles)).astype(np.float32))


def render_clip(spec: ClipSpec) -> np.ndarray:
    """Renders a spec to audio.

    Args:
        spec: the clip description (see :func:`sample_clip_spec`).

    Returns:
        Mono float32 samples in [-1, 1), shape [time] with time == spec.n_samples.
    """
    sr = spec.sample_rate
    n = spec.n_samples
    tones = np.zeros(n, dtype=np.float32)
    voiced = np.zeros(n, dtype=np.float32)  # envelope of the voiced regions: gates the buzz, sets the level
    ramp = int(round(RAMP_SECONDS * sr))
    for word, onset, length, gain_db in zip(
        spec.symbols, spec.onsets, spec.lengths, spec.gains_db, strict=True
    ):
        env = _ramp_envelope(length, ramp) * np.float32(10.0 ** (gain_db / 20.0))
        t = np.arange(length) / sr
        f_lo, f_hi = (f * spec.timbre_scale for f in _TONES[word])
        tones[onset : onset + length] += env * np.float32(0.5) * (_sine(f_lo * t) + _sine(f_hi * t))
        voiced[onset : onset + length] = np.maximum(voiced[onset : onset + length], env)
    # Glottal-like source: a sawtooth (all harmonics, falling 6 dB/octave) along a linearly drifting
    # f0, whose phase is the closed-form integral f0 * (t + slope * t^2 / (2 T)). A 4-tap moving
    # average tames the harmonics that would alias above Nyquist (first null at sr/4 = 4 kHz); a
    # band-limited sum of sines would cost ~20x more and the demo builds thousands of clips.
    t = np.arange(n) / sr
    span = max(n - 1, 1) / sr
    cycles = spec.f0_hz * (t + spec.f0_slope * t * t / (2.0 * span))
    saw = (2.0 * (cycles - np.floor(cycles)) - 1.0).astype(np.float32)
    buzz = np.convolve(saw, np.full(4, 0.25, dtype=np.float32), mode="same")
    clip = tones + np.float32(0.5) * buzz * voiced
    active = voiced > 0
    rms = float(np.sqrt(np.mean(np.square(clip[active], dtype=np.float64)))) if active.any() else 0.0
    target = 10.0 ** (spec.level_dbfs / 20.0)
    if rms > 0:
        clip *= np.float32(target / rms)
    if spec.snr_db is not None:
        noise = np.random.default_rng(spec.noise_seed).standard_normal(n, dtype=np.float32)
        clip += noise * np.float32(target * 10.0 ** (-spec.snr_db / 20.0))
    peak = float(np.max(np.abs(clip))) if n else 0.0
    if peak >= 1.0:
        # The level ranges keep peaks below about -3 dBFS, so this only fires for a custom level range.
        logger.warning("clip peak %.2f exceeds full scale; clipping", peak)
    return np.clip(clip, -1.0, 32767.0 / 32768.0)


def write_wav(path: str | os.PathLike[str], audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Writes mono audio as 16-bit PCM WAV, atomically (temp file + os.replace).

    The float->int16 conversion is done here (round(x * 32768), clipped) rather than by libsndfile,
    so the bytes depend only on the samples, not on the library's rounding or clipping settings.

    Args:
        path: destination .wav file; its folder must exist.
        audio: float samples in [-1, 1), shape [time].
        sample_rate: samples per second.

    Raises:
        ValueError: if ``audio`` is not one-dimensional.
    """
    if audio.ndim != 1:
        raise ValueError(f"{path}: expected mono audio of shape [time], got shape {tuple(audio.shape)}")
    # No fsync, unlike the project's atomic JSON writer: clips are cheap to regenerate and an fsync
    # per clip made a 2500-clip world several times slower; the rename still makes each file appear
    # whole, and world.json (fsynced, written last) marks a complete world.
    pcm = np.clip(np.round(audio * np.float32(32768.0)), -32768, 32767).astype(np.int16)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            sf.write(fh, pcm, sample_rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
