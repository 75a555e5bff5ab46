"""Faster decoding: length-bucketed batches, Whisper features computed per batch on the model's device.

:func:`ahamask.evaluation.evaluator.decode_dataset` decodes in manifest order and lets the dataset compute
Whisper features one clip at a time on the CPU. Here:

* entries are sorted by duration (read from the file headers, nothing is decoded) and cut into batches, so a
  batch holds clips of similar length: ASR answers of similar length finish together, and BEATs pads less;
* DataLoader workers only decode and resample audio; the log-mel features of a whole batch are computed in
  one call on the model's device (:func:`whisper_features_batched`);
* a binary, batch-uniform mask is folded into the weights (:func:`ahamask.masking.fold.fold_head_mask`)
  instead of running hooks;
* the records come back in manifest order, with the same schema as ``decode_dataset``.

Without BEATs every answer equals the unbucketed one (Whisper sees each clip padded to its 30 s chunk, and the
LLM input of every clip has the same length). With BEATs the answers depend on the batch's padding in the
official code too; bucketing changes which clips share a batch, so answers can differ from an unbucketed run
with the same batch size (they get closer to the batch-size-1 answers, as clips are padded less).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..data.audio import (
    EXPAND_GAP_SAMPLES,
    MIN_SAMPLES,
    SAMPLE_RATE,
    AudioError,
    max_waveform_samples,
    prepare_waveform,
)
from ..data.manifest import ManifestError, ManifestIssue, describe_audio_error
from ..masking.fold import fold_head_mask
from ..masking.mask import binarize
from ..models.frontend import whisper_features_batched  # re-exported: it moved to models/frontend.py
from .evaluator import postprocess

logger = logging.getLogger(__name__)

__all__ = [
    "entry_durations",
    "length_buckets",
    "WaveformDataset",
    "collate_waveforms",
    "whisper_features_batched",
    "decode_bucketed",
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


def _batch_uniform_binary(weights: torch.Tensor | None) -> bool:
    if weights is None:
        return False
    binary = bool(((weights == 0) | (weights == 1)).all())
    uniform = weights.dim() == 1 or bool((weights == weights[:1]).all())
    return binary and uniform


def decode_bucketed(
    model: Any,
    dataset: Any,
    *,
    generate_cfg: Any,
    instruction: str = "",
    prompts: Sequence[str] | None = None,
    mask_logits: torch.Tensor | None = None,
    head_weights: torch.Tensor | None = None,
    prob_threshold: float = 0.5,
    batch_size: int = 4,
    num_workers: int = 0,
    features: str = "device",
    fold: bool = True,
    progress: bool = True,
    indices: Sequence[int] | None = None,
    on_batch: Callable[[list[int], list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any] | None]:
    """Decode a dataset in length buckets; returns one record per entry in manifest order.

    Args:
        model: a :class:`~ahamask.models.salmonn.SALMONN` in eval mode.
        dataset: a :class:`~ahamask.data.dataset.SALMONNDataset`.
        generate_cfg: the ``generate`` keys.
        instruction: written after the speech (``""`` with a mask, as the official).
        prompts: full wrapped prompts, one per manifest entry, instead of ``instruction``.
        mask_logits: mask logits, binarised with ``prob_threshold``; or give 0/1 ``head_weights``.
        batch_size: entries per bucket.
        num_workers: DataLoader workers (they decode audio).
        features: ``"device"``: Whisper features per batch on the model's device; ``"dataset"``: the dataset's
            own per-clip features (bit-identical to ``decode_dataset``'s input).
        fold: fold a binary, batch-uniform mask into the weights instead of running hooks.
        progress: show a tqdm bar.
        indices: decode only these entries (the rest of an interrupted run); the others stay None.
        on_batch: called after each bucket with its dataset indices and records (evaluate keeps them in
            ``<output>.partial``).

    Returns:
        ``[{"id", "ground_truth", "output", "task"}]`` in dataset order, outputs post-processed as the
        official (None for entries left out by ``indices``).

    Raises:
        ValueError: an unknown ``features`` value or a ``prompts`` list of the wrong length.
        ManifestError: an entry's audio is unusable.
    """
    if features not in ("device", "dataset"):
        raise ValueError(f"features: {features!r} is not 'device' or 'dataset'")
    if prompts is not None and len(prompts) != len(dataset):
        raise ValueError(f"prompts: {len(prompts)} prompts for {len(dataset)} manifest entries")
    if mask_logits is not None:
        head_weights = binarize(mask_logits, prob_threshold)
    buckets = length_buckets(entry_durations(dataset), batch_size)
    if indices is not None:
        wanted = set(indices)
        buckets = [kept for kept in ([i for i in bucket if i in wanted] for bucket in buckets) if kept]
    if features == "device":
        loader = DataLoader(
            WaveformDataset(dataset),
            batch_sampler=buckets,
            num_workers=num_workers,
            collate_fn=collate_waveforms,
        )
    else:
        loader = DataLoader(
            dataset, batch_sampler=buckets, num_workers=num_workers, collate_fn=dataset.collater
        )
    folded = fold and _batch_uniform_binary(head_weights)
    context = (
        fold_head_mask(model, head_weights, apply_ffn=model.cfg.apply_ffn_mask)
        if folded
        else contextlib.nullcontext()
    )
    hook_weights = None if folded else head_weights
    default_prompt = model.prompt_for(instruction)
    records: list[dict[str, Any] | None] = [None] * len(dataset)
    bar = tqdm(
        total=sum(map(len, buckets)),
        desc="decoding (bucketed)",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
    )
    try:
        with context, torch.inference_mode():
            for batch_indices, samples in zip(buckets, loader, strict=True):
                if features == "device":
                    samples["spectrogram"] = whisper_features_batched(
                        samples["raw_wav"], dataset.wav_processor, model.device
                    )
                batch_prompts = (
                    [prompts[i] for i in batch_indices]
                    if prompts is not None
                    else [default_prompt] * len(batch_indices)
                )
                answers = model.generate(
                    samples, generate_cfg, prompts=batch_prompts, head_weights=hook_weights
                )
                for index, sample_id, text, task, answer in zip(
                    batch_indices, samples["id"], samples["text"], samples["task"], answers, strict=True
                ):
                    records[index] = {
                        "id": sample_id,
                        "ground_truth": text,
                        "output": postprocess(answer),
                        "task": task,
                    }
                if on_batch is not None:
                    on_batch(list(batch_indices), [records[i] for i in batch_indices])
                bar.update(len(batch_indices))
    finally:
        bar.close()
    return records  # without `indices` every slot is filled: the buckets cover each index exactly once
