"""The batched front end: Whisper features and BEATs fbank of a whole batch, equal to the per-clip path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ahamask.data.audio import default_feature_extractor, whisper_features
from ahamask.data.dataset import SALMONNDataset
from ahamask.models.beats import _zero_padded_lengths
from ahamask.models.fbank import beats_fbank
from ahamask.models.frontend import extractor_fingerprint, whisper_features_batched

# Lengths in samples: 1 s, a frame boundary (25 ms + 10 ms steps), an odd length and the longest row.
LENGTHS = [16000, 16000 + 400 + 160 * 7, 23457, 40000]


def _padded_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    wav = torch.zeros(len(lengths), max(lengths))
    for row, length in enumerate(lengths):
        wav[row, :length] = torch.randn(length, generator=gen) * 0.1
    padding = torch.arange(wav.shape[1])[None] >= torch.tensor(lengths)[:, None]
    return wav, padding


def test_batched_whisper_features_equal_the_per_clip_extractor():
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(feature_size=80, chunk_length=4)  # the tiny bundles' 4 s chunk
    wav, _ = _padded_batch(LENGTHS)
    batched = whisper_features_batched(wav, extractor)
    assert batched.shape == (4, 80, 400)
    for row, length in enumerate(LENGTHS):
        per_clip = whisper_features(wav[row, :length].numpy(), extractor)
        # On the CPU the same torch ops run row by row: bit for bit (1e-6 is the stated device tolerance).
        assert torch.equal(batched[row], per_clip), (row, (batched[row] - per_clip).abs().max())


def test_beats_fbank_skips_padding_frames_without_changing_a_value():
    wav, padding = _padded_batch(LENGTHS, seed=1)
    lengths = _zero_padded_lengths(wav, padding)
    assert lengths.tolist() == LENGTHS
    skipped = beats_fbank(wav, lengths=lengths)
    full = beats_fbank(wav)
    assert torch.equal(skipped, full)
    # And each row equals that row's fbank computed on its own (the per-clip, official order).
    for row in range(len(LENGTHS)):
        assert torch.equal(skipped[row], beats_fbank(wav[row : row + 1])[0])


def test_padding_that_is_not_right_zero_padding_computes_every_frame():
    wav, padding = _padded_batch([16000, 20000])
    assert _zero_padded_lengths(wav, None) is None
    assert _zero_padded_lengths(wav, torch.zeros_like(padding)) is None  # nothing padded
    noisy = wav.clone()
    noisy[0, -1] = 0.5  # a non-zero "padding" sample: its frames are real input, as in the official
    assert _zero_padded_lengths(noisy, padding) is None
    inner = padding.clone()
    inner[1, 100] = True  # padding inside the clip is not a right-padded row
    assert _zero_padded_lengths(wav, inner) is None


def test_device_features_dataset_encodes_like_the_per_clip_dataset(tiny_decode_cfg, shared_tiny_model):
    args = (tiny_decode_cfg.test_data_path, tiny_decode_cfg.model.whisper_path)
    per_clip = next(iter(DataLoader(SALMONNDataset(*args), batch_size=4, collate_fn=SALMONNDataset.collater)))
    device = SALMONNDataset(*args, features="device")
    batch = next(iter(DataLoader(device, batch_size=4, collate_fn=device.collater)))
    assert batch["spectrogram"] is None and torch.equal(batch["raw_wav"], per_clip["raw_wav"])
    model = shared_tiny_model
    with torch.no_grad():
        expected = model.encode_speech(per_clip["spectrogram"], per_clip["raw_wav"], per_clip["padding_mask"])
        got = model.encode_speech(None, batch["raw_wav"], batch["padding_mask"])
    assert torch.equal(got, expected)
    with pytest.raises(ValueError, match="features='gpu', expected 'clip' or 'device'"):
        SALMONNDataset(*args, features="gpu")


def test_extractor_fingerprint_follows_the_settings():
    base = default_feature_extractor()
    other = default_feature_extractor()
    assert extractor_fingerprint(base) == extractor_fingerprint(other)
    other.mel_filters = np.asarray(other.mel_filters) * 1.001
    assert extractor_fingerprint(base) != extractor_fingerprint(other)
