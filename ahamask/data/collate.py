"""Batching of SALMONN samples into the official batch dictionary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SAMPLE_KEYS = ("spectrogram", "raw_wav", "text", "task", "Q", "id")


def collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch with the official keys; waveforms are zero-padded on the right.

    BEATs needs to know which waveform samples are padding, so a boolean mask comes with the batch.
    Whisper features need no mask: every sample is already padded to the extractor's chunk.

    Args:
        samples: Items of SALMONNDataset: spectrogram [n_mels, frames] tensor, raw_wav [time] array,
            text, task, Q and id strings.

    Returns:
        dict with spectrogram [batch, n_mels, frames] float32 (None when the samples carry none), raw_wav
        [batch, max_time] float32, padding_mask [batch, max_time] bool (True where padded), and lists text,
        task, Q, id.

    Raises:
        ValueError: No samples, a sample lacks a key, or the spectrogram shapes differ.

    Example:
        >>> batch = collate([dataset[0], dataset[1]])
        >>> batch["raw_wav"].shape, batch["padding_mask"].dtype
        (torch.Size([2, 52400]), torch.bool)
    """
    # torch is imported here, not at module level: ahamask.data imports this function eagerly (its
    # name equals the module's, which a lazy export would let the submodule shadow) and must stay
    # importable without torch for manifest checks.
    import torch
    from torch.nn.utils.rnn import pad_sequence

    if not samples:
        raise ValueError("collate: got an empty list of samples")
    for position, sample in enumerate(samples):
        missing = [key for key in SAMPLE_KEYS if key not in sample]
        if missing:
            raise ValueError(f"collate: sample {position} lacks keys {missing}")
    # A dataset with features="device" leaves the spectrogram out (None): the model computes the features
    # of the whole batch on its device (SALMONN.encode_speech), so the batch carries None too.
    absent = [sample["spectrogram"] is None for sample in samples]
    if any(absent) and not all(absent):
        raise ValueError("collate: some samples have a spectrogram and some do not; use one dataset")
    spectrogram = None
    if not any(absent):
        shapes = {tuple(sample["spectrogram"].shape) for sample in samples}
        if len(shapes) > 1:
            detail = ", ".join(f"{s['id']}: {tuple(s['spectrogram'].shape)}" for s in samples)
            raise ValueError(f"collate: spectrograms differ in shape ({detail}); use one feature extractor")
        spectrogram = torch.stack([torch.as_tensor(s["spectrogram"], dtype=torch.float32) for s in samples])
    waves = [torch.from_numpy(np.asarray(s["raw_wav"], dtype=np.float32)) for s in samples]
    lengths = torch.tensor([len(w) for w in waves])
    raw_wav = pad_sequence(waves, batch_first=True, padding_value=0.0)
    padding_mask = torch.arange(raw_wav.shape[1]).unsqueeze(0) >= lengths.unsqueeze(1)
    return {
        "spectrogram": spectrogram,
        "raw_wav": raw_wav,
        "padding_mask": padding_mask,
        "text": [s["text"] for s in samples],
        "task": [s["task"] for s in samples],
        "Q": [s["Q"] for s in samples],
        "id": [s["id"] for s in samples],
    }
