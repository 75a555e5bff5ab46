"""Audio front end: reading, resampling, channel choice, expand_wav, padding, truncation, features."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from transformers import WhisperFeatureExtractor

from ahamask.data.audio import (
    AudioError,
    assemble_waveform,
    default_feature_extractor,
    load_audio,
    load_feature_extractor,
    max_waveform_samples,
    prepare_audio,
    prepare_waveform,
    read_audio,
    resample,
    whisper_features,
)


def tone(seconds: float, sr: int = 16000, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path: Path, data: np.ndarray, sr: int = 16000, subtype: str | None = None) -> Path:
    sf.write(path, data, sr, subtype=subtype)
    return path


def peak_hz(wav: np.ndarray, sr: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(wav))
    return float(np.fft.rfftfreq(len(wav), 1 / sr)[np.argmax(spectrum)])


@pytest.mark.parametrize("sr", [8000, 44100])
def test_resampling_gives_16k_length_and_keeps_pitch(tmp_path, sr):
    path = write(tmp_path / f"tone_{sr}.wav", tone(1.5, sr=sr), sr=sr)
    wav = load_audio(path)
    assert wav.dtype == np.float32
    assert len(wav) == 24000
    # 1.5 s at 16 kHz gives 2/3 Hz frequency bins: the 440 Hz tone must stay within one bin.
    assert abs(peak_hz(wav) - 440.0) < 0.7
    assert 0.25 < np.abs(wav[2000:-2000]).max() < 0.35


@pytest.mark.parametrize(
    ("sr", "n", "expected"), [(24000, 15908, 10606), (44100, 44101, 16001), (8000, 1, 2)]
)
def test_resampled_length_is_ceil_like_librosa_and_torchaudio(sr, n, expected):
    # soxr alone returns one sample fewer for these lengths; the official torchaudio path rounds up.
    out = resample(np.random.default_rng(0).standard_normal(n), sr)
    assert len(out) == expected


def test_16k_input_is_read_unchanged(tmp_path):
    data = tone(1.0)
    path = write(tmp_path / "a.wav", data, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path), data)


def test_stereo_keeps_first_channel(tmp_path):
    left, right = tone(1.0, freq=440.0), tone(1.0, freq=1000.0, amp=0.5)
    path = write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), subtype="FLOAT")
    wav = load_audio(path)
    assert wav.shape == (16000,)
    np.testing.assert_array_equal(wav, left)


def test_expand_wav_appended_after_gap(tmp_path):
    a, b = tone(1.2), tone(0.7, freq=880.0)
    pa = write(tmp_path / "a.wav", a, subtype="FLOAT")
    pb = write(tmp_path / "b.wav", b, subtype="FLOAT")
    wav = prepare_waveform(pa, [pb])
    assert len(wav) == 19200 + 1600 + 11200
    np.testing.assert_array_equal(wav[:19200], a)
    assert not wav[19200:20800].any()
    np.testing.assert_array_equal(wav[20800:], b)


def test_expand_wav_at_other_rate_is_resampled(tmp_path):
    pa = write(tmp_path / "a.wav", tone(1.0))
    pb = write(tmp_path / "b8k.wav", tone(0.5, sr=8000), sr=8000)
    assert len(prepare_waveform(pa, [pb, pb])) == 16000 + 2 * (1600 + 8000)


def test_short_audio_padded_to_one_second(tmp_path):
    data = tone(0.5)
    wav = prepare_waveform(write(tmp_path / "short.wav", data, subtype="FLOAT"))
    assert len(wav) == 16000
    np.testing.assert_array_equal(wav[:8000], data)
    assert not wav[8000:].any()


def test_long_audio_truncated_to_30_seconds(tmp_path):
    data = np.random.default_rng(0).uniform(-0.5, 0.5, 31 * 16000).astype(np.float32)
    wav = prepare_waveform(write(tmp_path / "long.wav", data, subtype="FLOAT"))
    assert len(wav) == 480000
    np.testing.assert_array_equal(wav, data[:480000])


def test_truncation_follows_short_extractor_chunk(tmp_path):
    path = write(tmp_path / "a.wav", tone(3.0))
    short = WhisperFeatureExtractor(feature_size=80, chunk_length=2)
    assert max_waveform_samples(short) == 32000
    assert len(prepare_waveform(path, feature_extractor=short)) == 32000
    assert len(prepare_waveform(path, feature_extractor=default_feature_extractor())) == 48000


def test_assemble_waveform_orders_expand_pad_truncate():
    out = assemble_waveform(np.ones(4000), [np.ones(3000)], max_samples=16000)
    assert len(out) == 16000
    assert out[:4000].all() and not out[4000:5600].any() and out[5600:8600].all() and not out[8600:].any()
    assert len(assemble_waveform(np.ones(20000), [np.ones(20000)], max_samples=30000)) == 30000


def test_features_of_30s_chunk_are_80_by_3000(tmp_path):
    fe = WhisperFeatureExtractor(feature_size=80, chunk_length=30)
    spectrogram, raw_wav = prepare_audio(write(tmp_path / "a.wav", tone(2.0)), fe)
    assert spectrogram.shape == (80, 3000) and spectrogram.dtype.is_floating_point
    assert raw_wav.shape == (32000,) and raw_wav.dtype == np.float32
    # Whisper's log-mel is clamped to (max - 8) and rescaled by (x + 4) / 4.
    assert float(spectrogram.max() - spectrogram.min()) == pytest.approx(2.0, abs=1e-5)


def test_feature_extractor_loaded_from_checkpoint_folder_sets_mels_and_chunk(tmp_path):
    WhisperFeatureExtractor(feature_size=128, chunk_length=2).save_pretrained(tmp_path / "whisper")
    fe = load_feature_extractor(tmp_path / "whisper")
    assert whisper_features(tone(1.0), fe).shape == (128, 200)


def test_feature_extractor_folder_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        load_feature_extractor(tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        load_audio(tmp_path / "nope.wav")


def test_empty_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty \(0 bytes\).*empty\.wav"):
        load_audio(tmp_path / "empty.wav")


def test_unreadable_file(tmp_path):
    (tmp_path / "junk.wav").write_text("this is not audio at all")
    with pytest.raises(AudioError, match=r"cannot decode audio file .*junk\.wav"):
        load_audio(tmp_path / "junk.wav")


@pytest.mark.parametrize("suffix", ["wav", "flac"])
def test_truncated_file(tmp_path, suffix):
    full = write(
        tmp_path / f"full.{suffix}", tone(1.0) + 0.01 * np.random.default_rng(0).standard_normal(16000)
    )
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(AudioError, match=rf"cut\.{suffix}") as info:
        read_audio(cut)
    assert "truncated" in str(info.value) or "lost sync" in str(info.value)
    assert "\n" not in str(info.value)


def test_truncated_wav_reports_missing_bytes(tmp_path):
    full = write(tmp_path / "full.wav", tone(1.0))  # 44-byte header + 32000 data bytes
    (tmp_path / "cut.wav").write_bytes(full.read_bytes()[:20044])
    with pytest.raises(
        AudioError, match=r"truncated audio file .*cut\.wav: its data chunk lacks 12000 bytes"
    ):
        read_audio(tmp_path / "cut.wav")


def test_non_finite_samples(tmp_path):
    data = tone(1.0)
    data[100] = np.nan
    data[200] = np.inf
    path = write(tmp_path / "nan.wav", data, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav has 2 non-finite samples \(first at sample 100\)"):
        load_audio(path)


def test_header_only_file_has_no_samples(tmp_path):
    path = write(tmp_path / "zero.wav", np.zeros(0, dtype=np.float32))
    with pytest.raises(AudioError, match=r"no samples: .*zero\.wav"):
        load_audio(path)
