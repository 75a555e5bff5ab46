"""The one decode loop: batches of manifest entries -> answers, used by evaluate, the sweep, the chat and the demo.

Batches come from a sampler: consecutive entries in manifest order (the official loader's batches) or
length buckets (:func:`ahamask.data.buckets.length_buckets`); the records always come back in manifest
order. The loop knows nothing of masks: callers decode under
:func:`ahamask.masking.apply.decoding_mask`, so fold / hooks / prune is chosen once per run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..config import DecodeConfig
from ..masking.apply import prepare_mask
from ..masking.settings import MaskConfig
from ..masking.value import Mask
from ..models.backbone import AudioLLM

__all__ = ["postprocess", "prepare_config_mask", "decode_dataset", "manifest_batches"]


def postprocess(answer: str) -> str:
    """The official clean-up of a decoded answer: strip, newlines to spaces, drop a trailing ``</s>``."""
    answer = answer.strip().replace("\n", " ")
    return answer[: -len("</s>")] if answer.endswith("</s>") else answer


def prepare_config_mask(cfg: DecodeConfig, model: AudioLLM, path: str) -> Mask:
    """:func:`~ahamask.masking.apply.prepare_mask` with the decode config's threshold and shuffle settings
    (evaluate, sweep, chat)."""
    settings = MaskConfig.from_decode_config(cfg)
    return prepare_mask(
        str(path),
        model.geometry,
        settings.prob_threshold,
        settings.shuffle,
        settings.shuffle_mode,
        settings.shuffle_seed,
    )


def manifest_batches(order: Sequence[int], batch_size: int) -> list[list[int]]:
    """Consecutive chunks of ``order`` (the official DataLoader's batches, without shuffling)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: {batch_size} must be >= 1")
    return [list(order[start : start + batch_size]) for start in range(0, len(order), batch_size)]


def _batch_plan(
    n_entries: int,
    indices: Sequence[int] | None,
    batches: Sequence[Sequence[int]] | None,
    batch_size: int,
) -> tuple[list[list[int]], dict[int, int]]:
    """The batches to decode and each entry's row in ``speech_embeds`` (which is aligned with ``indices``
    as given, not sorted), checked so that no entry is decoded twice."""
    order = sorted(indices) if indices is not None else list(range(n_entries))
    plan = [list(b) for b in batches] if batches is not None else manifest_batches(order, batch_size)
    flat = [i for batch in plan for i in batch]
    if len(set(flat)) != len(flat):
        raise ValueError("batches: an entry appears in more than one batch")
    row_of = {index: row for row, index in enumerate(indices if indices is not None else order)}
    return plan, row_of


def _batch_embeds(
    batch_indices: Sequence[int],
    samples: dict[str, Any],
    row_of: dict[int, int],
    speech_embeds: torch.Tensor | None,
    speech_cache: Any | None,
) -> torch.Tensor | None:
    """A batch's precomputed speech embeddings (given rows, else the shared cache), or ``None`` for the
    model to encode the audio itself."""
    if speech_embeds is not None:
        return speech_embeds[[row_of[i] for i in batch_indices]]
    if speech_cache is not None:
        return speech_cache.get_or_compute(samples)
    return None


def _batch_records(samples: dict[str, Any], answers: Sequence[str]) -> list[dict[str, Any]]:
    """One output record per sample of a batch, the answer post-processed as the official."""
    return [
        {"id": sample_id, "ground_truth": text, "output": postprocess(answer), "task": task}
        for sample_id, text, task, answer in zip(
            samples["id"], samples["text"], samples["task"], answers, strict=True
        )
    ]


def decode_dataset(
    model: AudioLLM,
    dataset: Dataset,
    *,
    generate_cfg: Any,
    instruction: str = "",
    prompts: Sequence[str] | None = None,
    batch_size: int = 4,
    num_workers: int = 0,
    indices: Sequence[int] | None = None,
    batches: Sequence[Sequence[int]] | None = None,
    progress: bool = True,
    speech_embeds: torch.Tensor | None = None,
    on_batch: Callable[[list[int], list[dict[str, Any]]], None] | None = None,
    speech_cache: Any | None = None,
    collate_fn: Callable | None = None,
) -> list[dict[str, Any]]:
    """Decode (a subset of) a dataset; returns one record per decoded entry, in manifest order.

    Over 60 lines only for its signature and the documentation of its 13 keyword arguments; the body is
    the batch loop, with planning, embeddings and records in helpers.

    Args:
        model: a backbone (:class:`~ahamask.models.backbone.AudioLLM`) in eval mode.
        dataset: a :class:`~ahamask.data.dataset.SALMONNDataset` (or anything with ``collater``).
        generate_cfg: the ``generate`` keys.
        instruction: the instruction written after the speech (``""`` with a mask, as the official).
        prompts: full wrapped prompts, one per manifest entry, instead of ``instruction``.
        batch_size, num_workers: DataLoader settings (``batch_size`` cuts ``indices`` when ``batches`` is not
            given).
        indices: the entries to decode (a rank's shard, the rest of an interrupted run); all by default.
        batches: the sampler: lists of entry indices decoded together (length buckets); by default
            consecutive chunks of ``indices``.
        progress: show a tqdm bar.
        speech_embeds: ``[len(indices or dataset), N, D]`` precomputed speech embeddings, aligned with
            ``indices`` (the sweep reuses them: they do not depend on the prompt).
        on_batch: called after each batch with its dataset indices and records (evaluate keeps them in
            ``<output>.partial``).
        speech_cache: a :class:`~ahamask.models.speech_cache.SpeechEmbeddingCache`: each batch's embeddings
            come from it (computed once per clip over every call that shares it: masks, instructions).
        collate_fn: the batch collator (default ``dataset.collater``).

    Returns:
        ``[{"id", "ground_truth", "output", "task"}]`` for the decoded entries, in manifest order; outputs
        post-processed as the official.

    Raises:
        ValueError: a ``prompts`` list that does not match the dataset, or ``batches`` naming an entry twice.
    """
    if prompts is not None and len(prompts) != len(dataset):
        raise ValueError(f"prompts: {len(prompts)} prompts for {len(dataset)} manifest entries")
    plan, row_of = _batch_plan(len(dataset), indices, batches, batch_size)
    loader = DataLoader(
        dataset, batch_sampler=plan, num_workers=num_workers, collate_fn=collate_fn or dataset.collater
    )
    default_prompt = model.prompt_for(instruction)
    records: dict[int, dict[str, Any]] = {}
    bar = tqdm(
        total=sum(map(len, plan)), desc="decoding", disable=not progress, leave=False, dynamic_ncols=True
    )
    try:
        for batch_indices, samples in zip(plan, loader, strict=True):
            batch_prompts = [prompts[i] if prompts is not None else default_prompt for i in batch_indices]
            embeds = _batch_embeds(batch_indices, samples, row_of, speech_embeds, speech_cache)
            answers = model.generate(samples, generate_cfg, prompts=batch_prompts, speech_embeds=embeds)
            batch_records = _batch_records(samples, answers)
            records.update(zip(batch_indices, batch_records, strict=True))
            if on_batch is not None:
                on_batch(list(batch_indices), batch_records)
            bar.update(len(batch_indices))
    finally:
        bar.close()  # also on an error, so the error line is not drawn over the bar
    return [records[i] for i in sorted(records)]
