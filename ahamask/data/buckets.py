"""Length-bucketed batches and waveform-only items: the samplers and views the decode loop can take.

* :func:`length_buckets` sorts entries by duration (read from the file headers, nothing is decoded) and cuts
  them into batches, so a batch holds clips of similar length: ASR answers of similar length finish
  together, and BEATs pads less. :func:`ahamask.evaluation.decode.decode_dataset` takes them as ``batches``
  and still returns records in manifest order.
* :class:`WaveformDataset` / :func:`collate_waveforms`: DataLoader workers only decode and resample audio;
  the log-mel features of a whole batch are computed in one call on the model's device.

Without BEATs every answer equals the unbucketed one (Whisper sees each clip padded to its 30 s chunk, and the
LLM input of every clip has the same length). With BEATs the answers depend on the batch's padding in the
official code too; bucketing changes which clips share a batch, so answers can differ from an unbucketed run
with the same batch size (they get closer to the batch-size-1 answers, as clips are padded less).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from .audio import (
    EXPAND_GAP_SAMPLES,
    MIN_SAMPLES,
    SAMPLE_RATE,
    AudioError,
    max_waveform_samples,
    prepare_waveform,
)
from .manifest import ManifestError, ManifestIssue, describe_audio_error

logger = logging.getLogger(__name__)

__all__ = [
    "entry_durations",
    "length_buckets",
    "WaveformDataset",
    "collate_waveforms",
]


def entry_durations(dataset: Any) -> list[float]:
    """Duration in seconds of every entry as the model will hear it, from the audio file headers.

    Args:
        dataset: a :class:`~ahamask.data.dataset.SALMONNDataset` (its ``annotation`` and ``wav_processor``).

    Returns:
        One duration per entry: main clip plus ``expand_wav`` clips and their 0.1 s gaps, at least 1 s and at
        most the Whisper chunk (the lengths :func:`~ahamask.data.audio.prepare_waveform` gives).

    Raises:
        ManifestError: a file header cannot be read (names the manifest, the entry index and the file).
    """
    limit = max_waveform_samples(getattr(dataset, "wav_processor", None))
    durations = []
    for index, entry in enumerate(dataset.annotation):
        samples = 0
        try:
            for number, path in enumerate([entry["path"], *entry["expand_wav"]]):
                info = sf.info(str(path))
                samples += round(info.frames * SAMPLE_RATE / info.samplerate) + (
                    EXPAND_GAP_SAMPLES if number else 0
                )
        except (RuntimeError, sf.LibsndfileError, OSError) as err:
            issue = ManifestIssue(
                getattr(dataset, "ann_path", "manifest"), index, entry["id"], f"cannot read header: {err}"
            )
            raise ManifestError(str(issue), [issue]) from err
        durations.append(min(max(samples, MIN_SAMPLES), limit) / SAMPLE_RATE)
    return durations


def length_buckets(
    durations: Sequence[float], batch_size: int, *, descending: bool = True
) -> list[list[int]]:
    """Batches of entry indices with similar durations.

    Args:
        durations: seconds per entry.
        batch_size: entries per batch (the last batch may be smaller).
        descending: longest batch first, so an out-of-memory error shows up at once rather than at the end.

    Returns:
        Lists of indices; every index appears once. Ties keep manifest order (stable sort).

    Example:
        >>> length_buckets([3.0, 1.0, 2.0, 5.0], 2)
        [[3, 0], [2, 1]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: {batch_size} must be >= 1")
    order = sorted(range(len(durations)), key=lambda i: -durations[i] if descending else durations[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


class WaveformDataset(Dataset):
    """The waveforms of a SALMONN dataset's entries, without Whisper features (those are computed per batch).

    Args:
        dataset: a :class:`~ahamask.data.dataset.SALMONNDataset`.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """{"raw_wav": float32 array [time], "text", "task", "Q", "id", "index"}.

        Raises:
            ManifestError: the entry's audio is missing or unusable (names the manifest, entry and file).
        """
        entry = self.dataset.annotation[index]
        try:
            wav = prepare_waveform(entry["path"], entry["expand_wav"], self.dataset.wav_processor)
        except (FileNotFoundError, AudioError) as err:
            issue = ManifestIssue(self.dataset.ann_path, index, entry["id"], describe_audio_error(entry, err))
            raise ManifestError(str(issue), [issue]) from err
        return {
            "raw_wav": wav,
            "text": entry["text"],
            "task": entry["task"],
            "Q": entry["Q"],
            "id": entry["id"],
            "index": index,
        }


def collate_waveforms(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pad waveforms into a batch (the keys of :func:`ahamask.data.collate.collate`, minus the spectrogram).

    Returns:
        raw_wav [batch, max_time] float32 (zero-padded on the right), padding_mask [batch, max_time] bool
        (True on padding), lengths [batch] long, and lists text, task, Q, id, index.
    """
    lengths = torch.tensor([len(s["raw_wav"]) for s in samples], dtype=torch.long)
    raw_wav = torch.zeros(len(samples), int(lengths.max()), dtype=torch.float32)
    for row, sample in enumerate(samples):
        raw_wav[row, : lengths[row]] = torch.from_numpy(np.asarray(sample["raw_wav"], dtype=np.float32))
    batch = {key: [s[key] for s in samples] for key in ("text", "task", "Q", "id", "index")}
    batch.update(
        raw_wav=raw_wav,
        padding_mask=torch.arange(raw_wav.shape[1])[None, :] >= lengths[:, None],
        lengths=lengths,
    )
    return batch
