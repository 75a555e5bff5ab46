"""Kaldi-compatible log-mel filterbank, batched in torch, exactly as BEATs preprocesses audio.

The official BEATs code calls ``torchaudio.compliance.kaldi.fbank`` once per utterance. torchaudio is not a
dependency of ahamask (its builds lag behind torch releases), so the same computation is written here with
torch ops only, vectorised over the batch. Every step follows torchaudio's order of operations so the
numbers agree with it (and with Kaldi / kaldi-native-fbank) to float rounding:

1. frames of 25 ms every 10 ms that fit entirely in the signal (``snip_edges``), no dither;
2. per-frame DC offset removal, then pre-emphasis 0.97 (the first sample is its own predecessor);
3. Povey window (Hann ** 0.85), zero-padded to the next power of two (400 -> 512 samples at 16 kHz);
4. power spectrum ``|rfft| ** 2``, Kaldi triangular mel banks (20 Hz .. Nyquist, mel = 1127 ln(1 + f/700));
5. ``log(max(energy, eps))`` with eps the float32 machine epsilon, as torchaudio uses for every dtype.

The frame energy is not part of the output (``use_energy=False`` as in torchaudio's defaults), so Kaldi's
``energy_floor`` never comes into play.
"""

from __future__ import annotations

import functools
import logging
import math

import torch
import torch.nn.functional as F

__all__ = [
    "BEATS_FBANK_MEAN",
    "BEATS_FBANK_STD",
    "beats_fbank",
    "kaldi_fbank",
    "kaldi_mel_banks",
    "num_frames",
]

logger = logging.getLogger(__name__)

# Global mean / std of the BEATs training fbanks (the defaults of the official ``BEATs.preprocess``).
BEATS_FBANK_MEAN = 15.41663
BEATS_FBANK_STD = 6.55582

# torchaudio floors the mel energies at float32's epsilon even when computing in float64.
_LOG_FLOOR = torch.finfo(torch.float32).eps


def _window_sizes(sample_frequency: float, frame_length_ms: float, frame_shift_ms: float) -> tuple[int, int]:
    """Frame length and shift in samples, truncated the way torchaudio does (``int(sr * ms * 0.001)``)."""
    window_size = int(sample_frequency * frame_length_ms * 0.001)
    window_shift = int(sample_frequency * frame_shift_ms * 0.001)
    if window_size < 2 or window_shift < 1:
        raise ValueError(
            f"fbank: frame_length_ms={frame_length_ms} / frame_shift_ms={frame_shift_ms} at "
            f"{sample_frequency} Hz give a window of {window_size} and a shift of {window_shift} samples; "
            "need a window of at least 2 and a shift of at least 1"
        )
    return window_size, window_shift


def num_frames(
    num_samples: int,
    *,
    sample_frequency: float = 16000.0,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
) -> int:
    """Number of fbank frames Kaldi's ``snip_edges`` framing yields for a signal.

    Args:
        num_samples: Length of the waveform in samples.
        sample_frequency: Sampling rate in Hz.
        frame_length_ms: Frame length in milliseconds.
        frame_shift_ms: Frame shift in milliseconds.

    Returns:
        ``1 + (num_samples - window) // shift``, or 0 when the signal is shorter than one window.

    Example:
        >>> num_frames(16000)
        98
    """
    window_size, window_shift = _window_sizes(sample_frequency, frame_length_ms, frame_shift_ms)
    if num_samples < window_size:
        return 0
    return 1 + (num_samples - window_size) // window_shift


@functools.lru_cache(maxsize=8)
def _mel_banks_cpu(
    num_bins: int, padded_window_size: int, sample_frequency: float, low_freq: float, high_freq: float
) -> torch.Tensor:
    # Built in float32 on the CPU, then cast by the caller: torchaudio builds its banks in the default
    # dtype before casting to the waveform's dtype, and doing the same keeps the weights bit-identical.
    nyquist = 0.5 * sample_frequency
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < nyquist and 0.0 < high_freq <= nyquist and low_freq < high_freq):
        raise ValueError(
            f"fbank: low_freq={low_freq} / high_freq={high_freq} must satisfy 0 <= low < high <= "
            f"Nyquist ({nyquist} Hz)"
        )

    def mel(freq: float) -> float:
        return 1127.0 * math.log(1.0 + freq / 700.0)

    mel_low, mel_high = mel(low_freq), mel(high_freq)
    mel_delta = (mel_high - mel_low) / (num_bins + 1)
    index = torch.arange(num_bins, dtype=torch.float32).unsqueeze(1)  # [bins, 1]
    left = mel_low + index * mel_delta
    center = mel_low + (index + 1.0) * mel_delta
    right = mel_low + (index + 2.0) * mel_delta
    # Mel value of every FFT bin centre below Nyquist: [1, padded/2].
    bin_width = sample_frequency / padded_window_size
    fft_mel = (
        1127.0 * (1.0 + bin_width * torch.arange(padded_window_size // 2, dtype=torch.float32) / 700.0).log()
    )
    fft_mel = fft_mel.unsqueeze(0)
    up = (fft_mel - left) / (center - left)
    down = (right - fft_mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    # Kaldi's banks have no weight on the Nyquist bin; add its (zero) column so they match rfft's output.
    return F.pad(banks, (0, 1))


def kaldi_mel_banks(
    num_bins: int = 128,
    padded_window_size: int = 512,
    sample_frequency: float = 16000.0,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
) -> torch.Tensor:
    """Kaldi's triangular mel filter bank (no VTLN warping).

    Args:
        num_bins: Number of mel bins (Kaldi requires more than 3).
        padded_window_size: FFT size (even).
        sample_frequency: Sampling rate in Hz.
        low_freq: Lower edge of the first bank in Hz.
        high_freq: Upper edge of the last bank in Hz; ``<= 0`` counts back from Nyquist (Kaldi convention).

    Returns:
        Float32 weights of shape [num_bins, padded_window_size // 2 + 1]; the last (Nyquist) column is 0.

    Raises:
        ValueError: On fewer than 4 bins, an odd FFT size or band edges outside (0, Nyquist].
    """
    if num_bins <= 3:
        raise ValueError(f"fbank: num_mel_bins must be > 3 (Kaldi), got {num_bins}")
    if padded_window_size % 2:
        raise ValueError(f"fbank: the FFT size must be even, got {padded_window_size}")
    return _mel_banks_cpu(
        num_bins, padded_window_size, float(sample_frequency), float(low_freq), float(high_freq)
    ).clone()


def _checked_framing(
    waveform: torch.Tensor,
    preemphasis: float,
    sample_frequency: float,
    frame_length_ms: float,
    frame_shift_ms: float,
) -> tuple[int, int]:
    """Window size and shift in samples, after rejecting what torchaudio would reject (a waveform that is
    not 2-D float or shorter than one frame, a pre-emphasis outside [0, 1]) with a message naming it."""
    if waveform.dim() != 2 or not waveform.is_floating_point():
        raise ValueError(
            f"fbank: expected a float waveform of shape [batch, samples], got {waveform.dtype} "
            f"{tuple(waveform.shape)}"
        )
    if not 0.0 <= preemphasis <= 1.0:
        raise ValueError(f"fbank: preemphasis must be in [0, 1], got {preemphasis}")
    window_size, window_shift = _window_sizes(sample_frequency, frame_length_ms, frame_shift_ms)
    if waveform.shape[1] < window_size:
        raise ValueError(
            f"fbank: a waveform of {waveform.shape[1]} samples is shorter than one "
            f"{frame_length_ms} ms frame ({window_size} samples)"
        )
    return window_size, window_shift


def kaldi_fbank(
    waveform: torch.Tensor,
    *,
    num_mel_bins: int = 128,
    sample_frequency: float = 16000.0,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    preemphasis: float = 0.97,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    dtype: torch.dtype = torch.float64,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-mel filterbank of a batch of waveforms with Kaldi's (and torchaudio's) fbank defaults.

    Equivalent, row by row, to ``torchaudio.compliance.kaldi.fbank(row[None], num_mel_bins=...,
    sample_frequency=..., frame_length=..., frame_shift=...)`` with dither 0, a Povey window, DC offset
    removal, ``snip_edges=True``, power spectrum, FFT size rounded up to a power of two and no energy
    column. The input is not rescaled: Kaldi expects samples in the int16 range.

    Args:
        waveform: [batch, samples] float waveform, on any device. Rows are independent; a padded batch
            gives each row the frames of its padded length.
        num_mel_bins: Number of mel bins.
        sample_frequency: Sampling rate in Hz.
        frame_length_ms: Frame length in milliseconds.
        frame_shift_ms: Frame shift in milliseconds.
        preemphasis: Pre-emphasis coefficient in [0, 1].
        low_freq: Lower edge of the mel banks in Hz.
        high_freq: Upper edge in Hz; ``<= 0`` means Nyquist plus this value.
        dtype: Floating dtype the whole computation runs in (float64 by default, as the official pipeline
            feeds float64 audio to torchaudio).
        lengths: [batch] number of leading samples of each row that are not padding, with the rest of the row
            zeros (a right-padded batch). Frames that lie wholly in the zeros are not computed: all-zero
            frames give exactly ``log(eps)`` in every bin, which is filled in instead. None: compute all.

    Returns:
        [batch, frames, num_mel_bins] log mel energies in ``dtype`` on the waveform's device, with
        ``frames = 1 + (samples - window) // shift``.

    Raises:
        ValueError: If the waveform is not 2-D floating point, is shorter than one frame, or an option is
            out of range.

    Example:
        >>> kaldi_fbank(torch.randn(2, 16000) * 3000).shape
        torch.Size([2, 98, 128])

    It stays over 60 lines on purpose: the steps run in one block in torchaudio's order (see the module
    docstring), so it can be read line by line against ``torchaudio.compliance.kaldi.fbank``.
    """
    window_size, window_shift = _checked_framing(
        waveform, preemphasis, sample_frequency, frame_length_ms, frame_shift_ms
    )
    padded_size = 1 << (window_size - 1).bit_length()
    device = waveform.device

    # Autocast would otherwise be free to run the mel projection in half precision.
    with torch.autocast(device_type=device.type, enabled=False):
        wav = waveform.to(dtype)
        # [batch, frames, window]: a strided view, no copy until the first arithmetic op.
        frames = wav.unfold(1, window_size, window_shift)
        out_shape = (*frames.shape[:2], num_mel_bins)
        valid = None
        if lengths is not None:
            # Frames starting at or after a row's length read only its zero padding: skip them (the BEATs
            # batch of a long and a short clip is mostly padding for the short one).
            starts = torch.arange(frames.shape[1], device=device) * window_shift
            valid = starts.unsqueeze(0) < lengths.to(device).unsqueeze(1)  # [batch, frames]
            frames = frames[valid]  # [valid frames, window]
        frames = frames - frames.mean(dim=-1, keepdim=True)
        if preemphasis != 0.0:
            previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
            frames = frames - preemphasis * previous
        window = torch.hann_window(window_size, periodic=False, dtype=dtype, device=device).pow(0.85)
        frames = frames * window
        # rfft's ``n`` zero-pads on the right, as torchaudio's explicit pad does.
        spectrum = torch.fft.rfft(frames, n=padded_size).abs().pow(2.0)
        banks = kaldi_mel_banks(num_mel_bins, padded_size, sample_frequency, low_freq, high_freq)
        mel_energies = spectrum @ banks.to(device=device, dtype=dtype).T
        log_mel = mel_energies.clamp_min(_LOG_FLOOR).log()
        if valid is None:
            return log_mel
        # An all-zero frame has zero energy in every bin: log of the floor, computed the same way.
        floor = torch.zeros((), dtype=dtype, device=device).clamp_min(_LOG_FLOOR).log()
        out = floor.expand(out_shape).clone()
        out[valid] = log_mel
        return out


def beats_fbank(
    source: torch.Tensor,
    fbank_mean: float = BEATS_FBANK_MEAN,
    fbank_std: float = BEATS_FBANK_STD,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """BEATs' input features: normalised 128-bin Kaldi fbank of ``source * 2**15``.

    Matches the official ``BEATs.preprocess`` followed by the ``.to(torch.float32)`` in
    ``extract_features``: the fbank and the normalisation ``(fbank - mean) / (2 * std)`` run in float64 and
    the result is cast to float32 at the end. A float32 waveform read from 16-bit audio holds the same
    values as the float64 one the official data loader produces, so the result does not depend on the
    input dtype.

    Args:
        source: [batch, samples] waveform in [-1, 1] at 16 kHz (batch-padded rows are fine).
        fbank_mean: Mean subtracted from the log-mel energies.
        fbank_std: Half the divisor of the normalisation (the official divides by ``2 * std``).
        lengths: [batch] unpadded length of each right-zero-padded row: frames wholly in the padding are
            filled in instead of computed (see :func:`kaldi_fbank`); None computes every frame.

    Returns:
        [batch, frames, 128] float32 on the source's device.

    Raises:
        ValueError: As :func:`kaldi_fbank`.

    Example:
        >>> beats_fbank(torch.zeros(1, 32000)).shape
        torch.Size([1, 198, 128])
    """
    if not isinstance(source, torch.Tensor) or not source.is_floating_point():
        raise ValueError(
            f"beats_fbank: expected a float tensor [batch, samples], got {type(source).__name__}"
        )
    fbank = kaldi_fbank(
        source.to(torch.float64) * 2**15,
        num_mel_bins=128,
        sample_frequency=16000.0,
        frame_length_ms=25.0,
        frame_shift_ms=10.0,
        dtype=torch.float64,
        lengths=lengths,
    )
    return ((fbank - fbank_mean) / (2 * fbank_std)).to(torch.float32)
