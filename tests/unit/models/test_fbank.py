"""The torch Kaldi fbank against kaldi-native-fbank (Kaldi's C++ port) on real speech, and its BEATs wrapper."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ahamask.models.fbank import (
    BEATS_FBANK_MEAN,
    BEATS_FBANK_STD,
    beats_fbank,
    kaldi_fbank,
    kaldi_mel_banks,
    num_frames,
)

knf = pytest.importorskip(
    "kaldi_native_fbank", reason="kaldi-native-fbank (test dependency) is not installed"
)
sf = pytest.importorskip("soundfile")

DEMO_WAVS = Path(__file__).resolve().parents[3] / ".." / "shared" / "reference" / "demo_wavs"
FLOAT32_EPS = float(np.finfo(np.float32).eps)


def _demo(index: int, seconds: float = 3.0) -> np.ndarray:
    """The first ``seconds`` of a LibriSpeech demo utterance as float32 in [-1, 1]."""
    files = sorted(DEMO_WAVS.glob("*.flac"))
    if len(files) <= index:
        pytest.skip(f"demo audio not found under {DEMO_WAVS} (shared reference data is absent)")
    audio, rate = sf.read(files[index], dtype="float32")
    assert rate == 16000
    return audio[: int(seconds * rate)]


def _frame_options(round_to_power_of_two: bool = True):
    opts = knf.FrameExtractionOptions()
    opts.samp_freq = 16000
    opts.frame_length_ms = 25
    opts.frame_shift_ms = 10
    opts.dither = 0.0
    opts.preemph_coeff = 0.97
    opts.remove_dc_offset = True
    opts.window_type = "povey"
    opts.snip_edges = True
    opts.round_to_power_of_two = round_to_power_of_two
    return opts


def _knf_banks_128() -> np.ndarray:
    """Kaldi's 128-bin banks for a 512-point FFT, [128, 257].

    Kaldi refuses 128 bins at 512 points (bin 3 catches no FFT bin; torchaudio, which BEATs uses, allows
    it). Kaldi's weight of an FFT bin is the triangle evaluated at the bin's centre frequency, so the
    1024-point bank taken at every other bin (centres k * 31.25 Hz) is exactly the 512-point bank.
    """
    opts = _frame_options()
    opts.frame_length_ms = 1000 * 600 / 16000  # 600 samples -> a 1024-point FFT
    return knf.MelBanks(knf.MelBanksOptions(num_bins=128), opts).get_matrix()[:, ::2]


def _knf_log_mel_128(scaled: np.ndarray) -> np.ndarray:
    """Kaldi's frames (DC removal, pre-emphasis, Povey window) and FFT, then the 128 banks and log floor."""
    frame_opts = _frame_options(round_to_power_of_two=False)  # knf's raw framer crashes when it pads
    raw_opts = knf.RawAudioSamplesOptions(frame_opts)
    framer = knf.OnlineRawAudioSamples(raw_opts)
    framer.accept_waveform(16000, scaled.tolist())
    framer.input_finished()
    rfft = knf.Rfft(512)
    power = []
    for i in range(framer.num_frames_ready):
        padded = np.zeros(512, dtype=np.float32)
        padded[:400] = framer.get_frame(i)
        packed = np.asarray(rfft.compute(padded.tolist()), dtype=np.float64)
        # Packed layout: [R0, R256, R1, I1, ..., R255, I255].
        spectrum = np.empty(257)
        spectrum[0], spectrum[256] = packed[0] ** 2, packed[1] ** 2
        spectrum[1:256] = packed[2::2] ** 2 + packed[3::2] ** 2
        power.append(spectrum)
    return np.log(np.maximum(np.stack(power) @ _knf_banks_128().T.astype(np.float64), FLOAT32_EPS))


@pytest.mark.parametrize("index", [0, 1, 2])
def test_full_pipeline_matches_kaldi_native_fbank(index: int) -> None:
    # With a bin count Kaldi accepts, the whole knf OnlineFbank pipeline is the reference.
    audio = _demo(index) * 32768
    opts = knf.FbankOptions()
    opts.frame_opts = _frame_options()
    opts.mel_opts.num_bins = 80
    opts.use_energy = False
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(16000, audio.tolist())
    fbank.input_finished()
    expected = np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])

    ours = kaldi_fbank(torch.from_numpy(audio).unsqueeze(0), num_mel_bins=80)[0].numpy()
    assert ours.shape == expected.shape == (298, 80)
    assert np.abs(ours - expected).max() < 1e-3


@pytest.mark.parametrize("index", [0, 4])
def test_beats_128_bin_fbank_matches_kaldi_native_fbank(index: int) -> None:
    audio = _demo(index)
    expected = _knf_log_mel_128(audio * 32768)
    ours = kaldi_fbank(torch.from_numpy(audio).double().unsqueeze(0) * 2**15)[0].numpy()
    assert ours.shape == expected.shape == (298, 128)
    assert np.abs(ours - expected).max() < 1e-3

    normalised = beats_fbank(torch.from_numpy(audio).unsqueeze(0))[0].numpy()
    expected_normalised = (expected - BEATS_FBANK_MEAN) / (2 * BEATS_FBANK_STD)
    assert np.abs(normalised - expected_normalised).max() < 1e-3 / (2 * BEATS_FBANK_STD) + 1e-6


@pytest.mark.parametrize("bins", [23, 80, 120])
def test_mel_banks_match_kaldi(bins: int) -> None:
    expected = knf.MelBanks(knf.MelBanksOptions(num_bins=bins), _frame_options()).get_matrix()
    ours = kaldi_mel_banks(bins).numpy()
    assert ours.shape == expected.shape == (bins, 257)
    assert np.abs(ours - expected).max() < 1e-4


def test_128_banks_match_kaldi_and_bin_3_is_empty() -> None:
    ours = kaldi_mel_banks(128).numpy()
    assert np.abs(ours - _knf_banks_128()).max() < 1e-4
    empty = np.flatnonzero(ours.sum(axis=1) == 0)
    assert empty.tolist() == [3]
    assert ours[:, 256].max() == 0.0  # no weight on the Nyquist bin


def test_empty_bin_sits_at_the_log_floor() -> None:
    # Bin 3 has no weights, so BEATs always sees (log(float32 eps) - mean) / (2 * std) there.
    features = beats_fbank(torch.from_numpy(_demo(1, 1.0)).unsqueeze(0))
    assert features.dtype == torch.float32
    expected = (math.log(FLOAT32_EPS) - BEATS_FBANK_MEAN) / (2 * BEATS_FBANK_STD)
    assert expected == pytest.approx(-2.391693, abs=1e-6)
    assert torch.allclose(features[0, :, 3], torch.full((98,), expected), atol=1e-6)


def test_sine_at_a_bin_centre_peaks_in_that_bin() -> None:
    # Centre of bin 43: 44 mel steps above mel(20 Hz), steps of (mel(8000) - mel(20)) / 129.
    mel_low, mel_high = 1127 * math.log(1 + 20 / 700), 1127 * math.log(1 + 8000 / 700)
    centre_hz = 700 * (math.exp((mel_low + 44 * (mel_high - mel_low) / 129) / 1127) - 1)
    assert centre_hz == pytest.approx(984.42, abs=0.01)
    t = torch.arange(32000, dtype=torch.float64) / 16000
    wave = 0.5 * torch.sin(2 * math.pi * centre_hz * t) * 32768
    mean_energy = kaldi_fbank(wave.unsqueeze(0))[0].mean(dim=0)
    assert int(mean_energy.argmax()) == 43
    # The triangle is symmetric in mel, so both neighbours get about the same energy.
    assert float(mean_energy[42]) == pytest.approx(float(mean_energy[44]), abs=0.01)
    assert float(mean_energy[43] - mean_energy[42]) > 0.5


def test_batched_equals_per_row() -> None:
    clips = [_demo(0, 2.0), _demo(1, 1.3), _demo(2, 0.7)]
    length = max(len(c) for c in clips)
    batch = torch.zeros(len(clips), length, dtype=torch.float64)
    for i, clip in enumerate(clips):
        batch[i, : len(clip)] = torch.from_numpy(clip)
    batched = kaldi_fbank(batch * 32768)
    assert batched.shape == (3, 198, 128)
    for i, clip in enumerate(clips):
        # Same padded row alone: same numbers.
        alone = kaldi_fbank(batch[i : i + 1] * 32768)[0]
        assert (batched[i] - alone).abs().max() < 1e-9
        # Unpadded clip: its frames are the padded row's first frames (they never reach the padding).
        own = kaldi_fbank(torch.from_numpy(clip).double().unsqueeze(0) * 32768)[0]
        assert own.shape[0] == num_frames(len(clip))
        assert (batched[i, : own.shape[0]] - own).abs().max() < 1e-9


def test_float32_and_float64_waveforms_give_identical_features() -> None:
    # 16-bit audio is exact in float32, and the fbank always runs in float64, as the official loader feeds it.
    audio = torch.from_numpy(_demo(4, 1.5)).unsqueeze(0)
    assert torch.equal(beats_fbank(audio), beats_fbank(audio.double()))


def test_frame_counts() -> None:
    assert num_frames(399) == 0
    assert num_frames(400) == 1
    assert num_frames(16000) == 98
    assert num_frames(32000) == 198
    assert kaldi_fbank(torch.randn(2, 16000)).shape == (2, 98, 128)
    assert beats_fbank(torch.zeros(1, 32000)).shape == (1, 198, 128)


def test_bad_input_raises_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"shape \[batch, samples\], got torch.float32 \(16000,\)"):
        kaldi_fbank(torch.zeros(16000))
    with pytest.raises(ValueError, match="300 samples is shorter than one 25.0 ms frame"):
        kaldi_fbank(torch.zeros(1, 300))
    with pytest.raises(ValueError, match="got torch.int16"):
        kaldi_fbank(torch.zeros(1, 1000, dtype=torch.int16))
    with pytest.raises(ValueError, match="num_mel_bins must be > 3"):
        kaldi_fbank(torch.zeros(1, 1000), num_mel_bins=3)
