"""Audio front end shared by the datasets and the interactive CLI.

SALMONN hears 16 kHz mono audio between 1 s and 30 s long: Whisper gets log-mel features padded to its
chunk (3000 frames for 30 s) and BEATs gets the raw waveform. Everything that turns a file into those two
inputs lives here so that training, evaluation and chat cannot drift apart.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import soxr

if TYPE_CHECKING:
    import torch
    from transformers import WhisperFeatureExtractor

SAMPLE_RATE = 16000
"""Sampling rate (Hz) of every waveform the model sees."""
MIN_SAMPLES = SAMPLE_RATE
"""Shorter waveforms are zero-padded to 1 s, as the official dataset does."""
MAX_SECONDS = 30
"""Longer waveforms are truncated to 30 s (Whisper's receptive field)."""
EXPAND_GAP_SAMPLES = 1600
"""Silence (0.1 s) inserted before each `expand_wav` file appended to an entry's audio."""
RESAMPLE_QUALITY = "HQ"
"""soxr quality; "HQ" is what librosa's default resampler (res_type="soxr_hq") runs."""
RESAMPLERS = ("torchaudio_sinc", "soxr")
"""How non-16 kHz audio is resampled: the official torchaudio kernel (`sinc_resample`) or soxr HQ."""
DEFAULT_RESAMPLER = "torchaudio_sinc"
"""The official dataset's `torchaudio.transforms.Resample` defaults, reproduced exactly in torch."""


class AudioError(ValueError):
    """An audio file exists but cannot give a usable waveform (empty, undecodable, truncated, NaN)."""


def _wav_missing_bytes(path: Path) -> int:
    """Count the bytes a RIFF/WAVE file's `data` chunk declares but the file does not hold.

    Written by hand because libsndfile silently shortens such a file to the bytes present (it only
    notes "should be ..." in its verbose log), so a cut-off download would otherwise pass as a short clip.

    Args:
        path: A file that libsndfile reports as WAV.

    Returns:
        0 when the data chunk is complete, its size is unknown (streaming writers leave 0 or 0xFFFFFFFF)
        or the file is not plain little-endian RIFF (RF64, RIFX: left to libsndfile).
    """
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0
        file_size = os.fstat(fh.fileno()).st_size
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                return 0
            chunk_id, chunk_size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"data":
                if chunk_size in (0, 0xFFFFFFFF):
                    return 0
                return max(0, fh.tell() + chunk_size - file_size)
            # RIFF chunks are word aligned: an odd-sized chunk is followed by one pad byte.
            fh.seek(chunk_size + (chunk_size & 1), os.SEEK_CUR)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode an audio file completely and keep its first channel, refusing anything unusable.

    Every check that needs the decoded samples happens here, so that manifest validation and loading
    reject exactly the same files.

    Args:
        path: Any format libsndfile reads (wav, flac, ogg, ...).

    Returns:
        (samples, sample_rate): samples is a float64 array of shape [time] (channel 0 of multi-channel
        audio, as the official dataset keeps), at the file's own sampling rate.

    Raises:
        FileNotFoundError: The path is not a file.
        AudioError: The file is empty, undecodable, truncated, has no samples or non-finite samples.
            Every message names the file.

    Example:
        >>> samples, sr = read_audio("clip.flac")
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such audio file: {path}")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file is empty (0 bytes): {path}")
    try:
        with sf.SoundFile(path) as fh:
            declared_frames, sample_rate, file_format = fh.frames, fh.samplerate, fh.format
            data = fh.read(dtype="float64", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as err:
        # libsndfile messages can span lines; keep the error to one line.
        reason = " ".join(str(err).split())
        raise AudioError(f"cannot decode audio file {path}: {reason}") from err
    if len(data) < declared_frames:
        raise AudioError(f"truncated audio file {path}: decoded {len(data)} of {declared_frames} frames")
    if file_format in ("WAV", "WAVEX"):
        missing = _wav_missing_bytes(path)
        if missing:
            raise AudioError(f"truncated audio file {path}: its data chunk lacks {missing} bytes")
    if data.shape[0] == 0:
        raise AudioError(f"audio file has no samples: {path}")
    samples = data[:, 0]
    finite = np.isfinite(samples)
    if not finite.all():
        first = int(np.argmin(finite))
        raise AudioError(
            f"audio file {path} has {int((~finite).sum())} non-finite samples (first at sample {first})"
        )
    return samples, sample_rate


def probe_audio(path: str | os.PathLike) -> None:
    """Check that an audio file opens, from its header only: the fast check before a run.

    It finds what users actually get wrong (a missing, empty, non-audio or cut-off WAV file, a folder) in
    well under a millisecond a file, so a whole training manifest is checked before the model loads.
    Damage that only decoding reveals (a corrupt FLAC frame, NaN samples) is left to `read_audio`, which
    `scripts/check_manifest.py` runs on every file.

    Args:
        path: Any format libsndfile reads.

    Raises:
        FileNotFoundError: The path is not a file.
        AudioError: Empty, unreadable, not audio, no frames, or a WAV whose data chunk is cut short.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such audio file: {path}")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file is empty (0 bytes): {path}")
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, OSError) as err:
        reason = " ".join(str(err).split())
        raise AudioError(f"cannot decode audio file {path}: {reason}") from err
    if info.frames == 0:
        raise AudioError(f"audio file has no samples: {path}")
    if info.format in ("WAV", "WAVEX"):
        missing = _wav_missing_bytes(path)
        if missing:
            raise AudioError(f"truncated audio file {path}: its data chunk lacks {missing} bytes")


def resample(
    samples: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE, method: str = DEFAULT_RESAMPLER
) -> np.ndarray:
    """Resample with the official torchaudio kernel (default) or with soxr.

    "torchaudio_sinc" gives the samples of the official `torchaudio.transforms.Resample` (float32; see
    `ahamask.data.sinc_resample`). "soxr" gives those of `librosa.resample(..., res_type="soxr_hq")`: soxr is
    called directly because librosa only wraps it here, while importing librosa's core costs 2 s per process.
    Both give ceil(len * target_sr / orig_sr) samples (soxr alone can give one fewer; torchaudio rounds the
    quotient to float32 first, which for inputs over about 20 s can give one fewer).

    Args:
        samples: float array of shape [time] at `orig_sr`.
        orig_sr: Its sampling rate in Hz.
        target_sr: The wanted sampling rate in Hz.
        method: One of `RESAMPLERS`.

    Returns:
        Array of shape [ceil(time * target_sr / orig_sr)]; float32 for "torchaudio_sinc", the input dtype
        for "soxr".

    Raises:
        ValueError: An unknown method.

    Example:
        >>> resample(np.zeros(8000), 8000).shape
        (16000,)
    """
    if method not in RESAMPLERS:
        raise ValueError(f"resampler: {method!r} is not one of {', '.join(RESAMPLERS)}")
    if orig_sr == target_sr:
        return samples
    if method == "torchaudio_sinc":
        from .sinc_resample import resample_sinc  # torch is imported on use: manifest checks never need it

        return resample_sinc(samples, orig_sr, target_sr)
    length = -(-len(samples) * target_sr // orig_sr)
    out = soxr.resample(samples, orig_sr, target_sr, quality=RESAMPLE_QUALITY)[:length]
    return np.pad(out, (0, length - len(out)))


def load_audio(
    path: str | os.PathLike, target_sr: int = SAMPLE_RATE, resampler: str = DEFAULT_RESAMPLER
) -> np.ndarray:
    """Read a file as mono float32 at `target_sr`, resampling when needed.

    Args:
        path: Audio file (see `read_audio` for the checks applied).
        target_sr: Output sampling rate in Hz.
        resampler: One of `RESAMPLERS` (see `resample`).

    Returns:
        float32 array of shape [time] at `target_sr`.

    Raises:
        FileNotFoundError: The path is not a file.
        AudioError: The file cannot give a usable waveform (the message names it).

    Example:
        >>> wav = load_audio("clip_44k.wav")  # 1 s at 44.1 kHz -> 16000 samples
    """
    samples, sample_rate = read_audio(path)
    return resample(samples, sample_rate, target_sr, resampler).astype(np.float32)


def max_waveform_samples(feature_extractor: WhisperFeatureExtractor | None = None) -> int:
    """Longest waveform kept: 30 s, or the extractor's chunk when shorter (tiny test models).

    Args:
        feature_extractor: The Whisper front end in use, or None for the 30 s limit alone.

    Returns:
        The maximum number of samples at 16 kHz.
    """
    limit = MAX_SECONDS * SAMPLE_RATE
    if feature_extractor is not None:
        limit = min(limit, int(feature_extractor.n_samples))
    return limit


def assemble_waveform(
    audio: np.ndarray,
    expand: Sequence[np.ndarray] = (),
    max_samples: int = MAX_SECONDS * SAMPLE_RATE,
) -> np.ndarray:
    """Append extra clips, pad to 1 s and truncate, in the official order.

    Args:
        audio: Main waveform, shape [time], 16 kHz.
        expand: Further waveforms (16 kHz), each appended after `EXPAND_GAP_SAMPLES` of silence.
        max_samples: Truncation length, applied after padding.

    Returns:
        float32 array of shape [time], at least MIN_SAMPLES long (when max_samples allows) and at
        most max_samples.

    Example:
        >>> assemble_waveform(np.zeros(8000), [np.zeros(4000)]).shape  # 8000 + 1600 + 4000, padded
        (16000,)
    """
    parts = [np.asarray(audio, dtype=np.float32)]
    for extra in expand:
        parts.append(np.zeros(EXPAND_GAP_SAMPLES, dtype=np.float32))
        parts.append(np.asarray(extra, dtype=np.float32))
    waveform = np.concatenate(parts)
    if len(waveform) < MIN_SAMPLES:
        waveform = np.pad(waveform, (0, MIN_SAMPLES - len(waveform)))
    return waveform[:max_samples]


def prepare_waveform(
    path: str | os.PathLike,
    expand_wav: Sequence[str | os.PathLike] = (),
    feature_extractor: WhisperFeatureExtractor | None = None,
    resampler: str = DEFAULT_RESAMPLER,
) -> np.ndarray:
    """Load one example's waveform exactly as the model receives it (dataset and CLI share this).

    Args:
        path: The main audio file.
        expand_wav: Files appended after 0.1 s of silence each. Unlike the official code, which reads
            them at whatever rate they were stored, they are resampled to 16 kHz too.
        feature_extractor: Whisper front end whose chunk bounds the length, or None for 30 s.
        resampler: One of `RESAMPLERS`, for files not at 16 kHz (see `resample`).

    Returns:
        float32 array of shape [time], 16 kHz, between 1 s and the length limit.

    Raises:
        FileNotFoundError: A file is missing.
        AudioError: A file cannot give a usable waveform (the message names it).

    Example:
        >>> wav = prepare_waveform("question.wav", feature_extractor=fe)
    """
    audio = load_audio(path, resampler=resampler)
    expand = [load_audio(extra, resampler=resampler) for extra in expand_wav]
    return assemble_waveform(audio, expand, max_waveform_samples(feature_extractor))


def default_feature_extractor() -> WhisperFeatureExtractor:
    """Whisper-large-v2's front end (80 mel bins, 30 s chunk), built without touching the hub.

    Returns:
        A WhisperFeatureExtractor equal to the one SALMONN's Whisper checkpoint ships.
    """
    # transformers is imported on use: manifest checks load this module and never need it.
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(
        feature_size=80, sampling_rate=SAMPLE_RATE, hop_length=160, chunk_length=MAX_SECONDS, n_fft=400
    )


def load_feature_extractor(whisper_path: str | os.PathLike) -> WhisperFeatureExtractor:
    """Load the Whisper feature extractor of a checkpoint (its n_mels and chunk length apply).

    Args:
        whisper_path: Folder holding `preprocessor_config.json`, or a hub id (needs network access).

    Returns:
        The checkpoint's WhisperFeatureExtractor.

    Raises:
        FileNotFoundError: `whisper_path` is a folder without `preprocessor_config.json`.
        ValueError: The extractor does not work at 16 kHz.

    Example:
        >>> fe = load_feature_extractor("ckpt/whisper-large-v2")
    """
    from transformers import WhisperFeatureExtractor

    folder = Path(whisper_path)
    if folder.exists() and not (folder / "preprocessor_config.json").is_file():
        raise FileNotFoundError(f"whisper_path: no preprocessor_config.json in {folder}")
    extractor = WhisperFeatureExtractor.from_pretrained(str(whisper_path))
    if extractor.sampling_rate != SAMPLE_RATE:
        raise ValueError(
            f"whisper_path: {whisper_path} expects {extractor.sampling_rate} Hz audio, expected {SAMPLE_RATE}"
        )
    return extractor


def whisper_features(waveform: np.ndarray, feature_extractor: WhisperFeatureExtractor) -> torch.Tensor:
    """Log-mel features of one waveform, padded (or cut) to the extractor's chunk.

    Args:
        waveform: float array of shape [time] at 16 kHz.
        feature_extractor: The Whisper front end.

    Returns:
        float32 tensor of shape [n_mels, frames], e.g. [80, 3000] for a 30 s chunk.

    Example:
        >>> whisper_features(np.zeros(16000, np.float32), default_feature_extractor()).shape
        torch.Size([80, 3000])
    """
    # return_tensors="pt" makes transformers import torch here, so this module loads without it.
    features = feature_extractor(waveform, sampling_rate=SAMPLE_RATE, return_tensors="pt")["input_features"]
    return features[0].float()


def prepare_audio(
    path: str | os.PathLike,
    feature_extractor: WhisperFeatureExtractor,
    expand_wav: Sequence[str | os.PathLike] = (),
    resampler: str = DEFAULT_RESAMPLER,
) -> tuple[torch.Tensor, np.ndarray]:
    """Both model inputs for one example: Whisper features and the raw waveform for BEATs.

    Args:
        path: The main audio file.
        feature_extractor: The Whisper front end.
        expand_wav: Files appended after 0.1 s of silence each.
        resampler: One of `RESAMPLERS`, for files not at 16 kHz (see `resample`).

    Returns:
        (spectrogram, raw_wav): float32 tensor [n_mels, frames] and float32 array [time].

    Raises:
        FileNotFoundError: A file is missing.
        AudioError: A file cannot give a usable waveform (the message names it).

    Example:
        >>> spectrogram, raw_wav = prepare_audio("question.wav", fe)
    """
    raw_wav = prepare_waveform(path, expand_wav, feature_extractor, resampler)
    return whisper_features(raw_wav, feature_extractor), raw_wav
