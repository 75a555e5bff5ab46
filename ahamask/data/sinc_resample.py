"""torchaudio's default resampler (``transforms.Resample``), written in torch: what the official dataset runs.

The official ``SALMONNDataset`` resamples non-16 kHz audio with ``torchaudio.transforms.Resample(sr, 16000)``
on the float32 waveform: windowed-sinc interpolation with a Hann window, ``lowpass_filter_width=6``,
``rolloff=0.99``. torchaudio cannot be installed here, so the same arithmetic is reproduced step by step:

* both rates are divided by their gcd (``orig``, ``new``); the cut-off is ``base = min(orig, new) * rolloff``;
* output phase ``j`` (of ``new``) uses the taps ``i = -width .. width + orig - 1`` with
  ``width = ceil(lowpass_filter_width * orig / base)`` and the time offset ``t = (i / orig - j / new) * base``,
  clamped to ``[-lowpass_filter_width, lowpass_filter_width]``;
* tap value ``sinc(pi t) * cos(pi t / lowpass_filter_width / 2) ** 2 * base / orig``;
* the kernel is computed in float64 and stored as float32, except that ``j / new`` is formed in float32
  first (torchaudio divides an integer ``arange`` by ``new``, which gives torch's default float dtype);
* the waveform is padded with ``width`` zeros on the left and ``width + orig`` on the right, convolved with
  stride ``orig`` (one output channel per phase), the phases interleaved, and cut to
  ``ceil(new * length / orig)`` samples.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["LOWPASS_FILTER_WIDTH", "ROLLOFF", "sinc_resample_kernel", "resample_sinc"]

LOWPASS_FILTER_WIDTH = 6
"""torchaudio's default: zero crossings of the sinc kept on each side."""
ROLLOFF = 0.99
"""torchaudio's default: cut-off as a fraction of the lower Nyquist frequency."""


@lru_cache(maxsize=16)
def sinc_resample_kernel(
    orig_sr: int, target_sr: int, lowpass_filter_width: int = LOWPASS_FILTER_WIDTH, rolloff: float = ROLLOFF
) -> tuple[torch.Tensor, int]:
    """The Hann-windowed sinc kernel of ``torchaudio.transforms.Resample(orig_sr, target_sr)``.

    Cached per rate pair (a DataLoader worker sees the same few rates over and over); do not modify it.

    Args:
        orig_sr: input rate in Hz.
        target_sr: output rate in Hz.
        lowpass_filter_width: zero crossings kept on each side.
        rolloff: cut-off as a fraction of the lower Nyquist frequency.

    Returns:
        ``(kernel, width)``: float32 kernel of shape [new, 1, 2 * width + orig] (rates divided by their gcd)
        and the padding ``width``.

    Example:
        >>> kernel, width = sinc_resample_kernel(44100, 16000)
        >>> kernel.shape, width
        (torch.Size([160, 1, 475]), 17)
    """
    gcd = math.gcd(orig_sr, target_sr)
    orig, new = orig_sr // gcd, target_sr // gcd
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    taps = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    # Integer arange / int is float32 in torch (torchaudio passes dtype=None here): keep that rounding.
    phases = torch.arange(0, -new, -1)[:, None, None] / new
    t = (phases + taps) * base
    t = t.clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0, dtype=t.dtype), t.sin() / t)
    kernel = kernel * (window * (base / orig))
    return kernel.to(torch.float32), width


def resample_sinc(samples: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample one waveform as the official dataset does (float32 in, torchaudio's kernel, float32 out).

    Args:
        samples: array of shape [time] at ``orig_sr`` (float64 from the reader is rounded to float32 first,
            as the official ``audio_tensor.float()``).
        orig_sr: its rate in Hz.
        target_sr: the wanted rate in Hz.

    Returns:
        float32 array of shape [ceil(time * target_sr / orig_sr)] (the quotient rounded to float32 first).

    Example:
        >>> resample_sinc(np.zeros(44100), 44100, 16000).shape
        (16000,)
    """
    if orig_sr == target_sr:
        return np.asarray(samples, dtype=np.float32)
    kernel, width = sinc_resample_kernel(orig_sr, target_sr)
    gcd = math.gcd(orig_sr, target_sr)
    orig, new = orig_sr // gcd, target_sr // gcd
    wav = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    length = wav.shape[-1]
    padded = F.pad(wav[None, None], (width, width + orig))
    with torch.no_grad():
        phases = F.conv1d(padded, kernel, stride=orig)  # [1, new, frames]: phase j of every frame
    out = phases.transpose(1, 2).reshape(-1)
    # torchaudio takes the ceiling of the float32 tensor of new * length / orig: for long inputs whose exact
    # quotient lies just above an integer this rounds down, one sample shorter than math.ceil.
    target = int(torch.ceil(torch.as_tensor(new * length / orig, dtype=torch.float32)))
    return out[:target].numpy()
