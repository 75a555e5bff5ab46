"""The speech front end on the model's device: Whisper log-mel features for a whole batch in one call.

The dataset's per-clip path (:func:`ahamask.data.audio.whisper_features`) runs transformers'
``WhisperFeatureExtractor`` clip by clip on the CPU, in the DataLoader. When the dataset is built with
``features="device"`` it hands over only waveforms, and :meth:`ahamask.models.salmonn.SALMONN.encode_speech`
computes the features of the batch here, on the model's device, right before the encoder: no per-clip Python
loop and no features computed for clips whose speech embeddings are already cached. BEATs' fbank is batched
too (:func:`ahamask.models.fbank.beats_fbank`) and skips the frames that lie wholly in the batch padding.

On the CPU the batched features equal the extractor's bit for bit (tested); on an accelerator they agree to
float rounding.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["extractor_fingerprint", "whisper_features_batched"]


def whisper_features_batched(
    raw_wav: torch.Tensor, feature_extractor: Any, device: torch.device | str | None = None
) -> torch.Tensor:
    """Whisper log-mel features of a batch in one call, on ``device``.

    The computation is that of transformers' ``WhisperFeatureExtractor`` torch path (zero-pad to the chunk,
    STFT with a Hann window, drop the last frame, power -> mel -> log10, floor at the clip's maximum - 8,
    ``(x + 4) / 4``); it is written out here because that extractor pads in numpy and returns numpy on the
    CPU, which would copy every batch off the device and back. Zero padding on the right of a row does not
    change its features (the extractor pads every clip with zeros to the chunk anyway).

    Args:
        raw_wav: [batch, time] float waveforms at 16 kHz, zero-padded on the right (time <= the chunk).
        feature_extractor: the checkpoint's ``WhisperFeatureExtractor`` (mel filters, n_fft, hop, chunk).
        device: where to compute; the waveforms' device by default.

    Returns:
        [batch, n_mels, chunk_frames] float32, e.g. [batch, 80, 3000] for 30 s; equal to the per-clip
        extractor's output (bit for bit on the CPU, to float rounding elsewhere).

    Raises:
        ValueError: the extractor dithers (random; not reproducible batched) or the clips exceed the chunk.

    Example:
        >>> whisper_features_batched(torch.zeros(2, 16000), default_feature_extractor()).shape
        torch.Size([2, 80, 3000])
    """
    if getattr(feature_extractor, "dither", 0.0):
        raise ValueError(
            "whisper_features_batched: the feature extractor dithers; use the per-clip dataset path"
        )
    n_samples = int(feature_extractor.n_samples)
    if raw_wav.shape[1] > n_samples:
        raise ValueError(
            f"whisper_features_batched: {raw_wav.shape[1]} samples exceed the {n_samples}-sample chunk"
        )
    device = torch.device(device) if device is not None else raw_wav.device
    # Autocast must not touch the STFT or the mel projection: the extractor computes them in float32.
    with torch.autocast(device_type=device.type, enabled=False):
        wav = F.pad(raw_wav.to(device, torch.float32), (0, n_samples - raw_wav.shape[1]))
        n_fft, hop = int(feature_extractor.n_fft), int(feature_extractor.hop_length)
        window = torch.hann_window(n_fft, device=device)
        stft = torch.stft(wav, n_fft, hop, window=window, return_complex=True)
        power = (stft[..., :-1].abs() ** 2).contiguous()  # contiguous: the strided view makes the matmul slow
        mel_filters = torch.as_tensor(feature_extractor.mel_filters, dtype=torch.float32, device=device)
        log_spec = torch.clamp(mel_filters.T @ power, min=1e-10).log10()  # [batch, n_mels, frames]
        peak = log_spec.amax(dim=(1, 2), keepdim=True)  # per clip, as the extractor does clip by clip
        return (torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0


def extractor_fingerprint(feature_extractor: Any) -> str:
    """SHA-256 of the settings that decide a Whisper extractor's features (for cache keys).

    Args:
        feature_extractor: a ``WhisperFeatureExtractor``.

    Returns:
        64 hex characters; another chunk length, hop, FFT size, mel bank or dither gives another value.
    """
    hasher = hashlib.sha256(b"whisper-features-v1")
    for key in ("n_samples", "n_fft", "hop_length", "sampling_rate", "feature_size", "dither"):
        hasher.update(f"{key}={getattr(feature_extractor, key, None)}|".encode())
    filters = torch.as_tensor(feature_extractor.mel_filters, dtype=torch.float32).contiguous()
    hasher.update(filters.numpy().tobytes())
    return hasher.hexdigest()
