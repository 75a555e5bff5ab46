"""Batched decoding of a manifest into the official prediction JSON (what ``evaluate.py`` runs).

Official behaviour kept: the prompt is ``prompt_template`` around ``"<Speech><SpeechHere></Speech> " + prompt``;
with ``model.weight_mask_path`` set the binarised mask is applied (``sigmoid >= prob_threshold``); outputs are
stripped, newlines become spaces and a trailing ``</s>`` is removed; the file is
``{"prompt": ..., "prediction": [{"id", "ground_truth", "output"}]}``. Added: the file is written atomically,
``shuffle_mask`` is seeded, every sample decodes to its own EOS, and ``torchrun`` shards the manifest over
ranks with rank 0 merging in manifest order.

Nothing is lost: every input is checked before the model loads (:mod:`ahamask.preflight`), the output is
locked for the run, each decoded batch is kept in ``<output>.partial`` that a re-run continues from, and an
output written by someone else meanwhile is not replaced (:mod:`ahamask.evaluation.output`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..config import DecodeConfig
from ..masking.apply import decoding_mask
from ..masking.names import resolve_mask_path
from ..masking.value import Mask
from ..models.backbone import AudioLLM
from ..utils import distributed as dist_utils
from ..utils.logging import log_rank_zero
from .decode import decode_dataset, prepare_config_mask
from .output import OutputGuard, decode_fingerprint

logger = logging.getLogger(__name__)

__all__ = ["DecodeInterrupted", "evaluate"]


class DecodeInterrupted(KeyboardInterrupt):
    """Ctrl-C during decoding; the message says how many entries were kept and where."""


def evaluate(
    cfg: DecodeConfig,
    device: str | None = None,
    *,
    check_inputs: bool = True,
    config_path: str | os.PathLike | None = None,
) -> Path:
    """Decode ``cfg.test_data_path`` and write the official prediction JSON to ``cfg.output_path``.

    Under ``torchrun`` each rank decodes a strided shard; rank 0 merges in manifest order and writes.
    Decoded batches are kept in ``<output>.partial``; calling it again after a failure or Ctrl-C decodes
    only the entries that are missing (same settings required; see :mod:`ahamask.evaluation.output`).

    Args:
        cfg: the decode config.
        device: overrides ``cfg.device``.
        check_inputs: run :func:`ahamask.preflight.check_decode_inputs` first (``evaluate.py`` already has).
        config_path: the YAML ``cfg`` came from, which the output must not overwrite.

    Returns:
        The output path.

    Raises:
        PreflightError: an input or the output location is unusable (before the model loads).
        OutputBusyError: another run is writing the same output (before the model loads).
        PartialMismatchError: ``<output>.partial`` comes from a run with other settings.
        OutputChangedError: someone else wrote the output meanwhile; it was not replaced.
        DecodeInterrupted: Ctrl-C while decoding (what was decoded is kept).
    """
    if check_inputs:
        from ..preflight import check_decode_inputs

        check_decode_inputs(cfg, config_path)
    spec = device or cfg.device
    # Sharded whenever launched as several processes (torchrun or srun), single otherwise.
    info = dist_utils.setup_processes(True, spec)
    guard = OutputGuard(Path(cfg.output_path), decode_fingerprint(cfg), info.rank, info.world_size)
    try:
        if info.is_main:
            guard.acquire()  # a second run on the same output stops here, before loading anything
        done = guard.load_done()
        if info.world_size > 1:
            dist_utils.barrier()  # every rank has read the old partial files before any rank appends
        output = _decode_and_write(cfg, info, guard, done)
    finally:
        guard.close()
        if info.is_main:
            guard.release()
    if info.world_size > 1:
        dist_utils.barrier()
        dist_utils.cleanup()
    return output


def _decode_and_write(cfg: DecodeConfig, info: Any, guard: OutputGuard, done: dict[int, Any]) -> Path:
    """The body of :func:`evaluate` once the output is locked: load, decode what is missing, write."""
    from ..data.dataset import SALMONNDataset

    model, mask = _load_model_and_mask(cfg, info)
    # features="device": each batch's Whisper features are computed in one call on the model's device.
    dataset = SALMONNDataset(
        cfg.test_data_path, cfg.model.front_end_path(), features="device", resampler=cfg.resampler
    )
    shard = dist_utils.shard_indices(len(dataset), info.rank, info.world_size)
    records = {i: done[i] for i in shard if i in done}
    todo = [i for i in shard if i not in records]
    if records:
        log_rank_zero(
            logger,
            "continuing from %s: %d of %d entries already decoded",
            guard.partial_path,
            len(records),
            len(shard),
        )
    guard.open()

    def keep(indices: list[int], batch: list[dict[str, Any]]) -> None:
        guard.append(indices, batch)
        records.update(zip(indices, batch, strict=True))

    try:
        if todo:
            _decode(cfg, info, model, dataset, mask, todo, keep)
    except KeyboardInterrupt:
        raise DecodeInterrupted(_kept_note(guard, len(shard))) from None
    except BaseException as exc:
        if guard.kept:
            exc.add_note(_kept_note(guard, len(shard)))
        raise
    ordered = [records[i] for i in shard]
    if info.world_size > 1:
        ordered = dist_utils.merge_shards(dist_utils.all_gather_object(ordered))
    return _write_predictions(cfg, info, guard, ordered)


def _load_model_and_mask(cfg: DecodeConfig, info: Any) -> tuple[AudioLLM, Mask | None]:
    """The backbone in eval mode on the rank's device and the config's binarised mask (None without one)."""
    from ..models.backbone import build_backbone

    mask_path = cfg.model.weight_mask_path
    if mask_path:
        # A bare released name resolves here, and a bad one fails before minutes of model loading.
        mask_path = str(resolve_mask_path(mask_path, key="model.weight_mask_path"))
    torch.manual_seed(cfg.seed)
    model = build_backbone(cfg.model, device=info.device).eval()
    mask = None
    if mask_path:
        mask = prepare_config_mask(cfg, model, mask_path)
        if cfg.prompt.strip():
            logger.warning(
                "a mask is applied together with the instruction %r: AHAMask masks are trained with "
                "no instruction",
                cfg.prompt,
            )
    else:
        log_rank_zero(logger, "no mask: the official model with the instruction %r", cfg.prompt)
    return model, mask


def _write_predictions(
    cfg: DecodeConfig, info: Any, guard: OutputGuard, ordered: list[dict[str, Any]]
) -> Path:
    """Rank 0 writes the official prediction file (through the guard); every rank returns its path."""
    output = Path(cfg.output_path)
    if info.is_main:
        result = {
            "prompt": cfg.prompt,
            "prediction": [{k: r[k] for k in ("id", "ground_truth", "output")} for r in ordered],
        }
        guard.finish(result)
        # DEBUG: evaluate.py prints the official "Successfully written file to ..." line; once is enough.
        log_rank_zero(logger, "wrote %d predictions to %s", len(ordered), output, level=logging.DEBUG)
    return output


def _kept_note(guard: OutputGuard, total: int) -> str:
    """Where the decoded entries are, for the one line a late failure or Ctrl-C ends with."""
    if not guard.kept:
        return "no entry was decoded yet"
    return (
        f"kept {guard.kept} of {total} decoded entries in {guard.partial_path}; "
        "run the same command again to continue from there"
    )


def _decode(
    cfg: DecodeConfig,
    info: Any,
    model: AudioLLM,
    dataset: Any,
    mask: Mask | None,
    todo: list[int],
    keep: Callable[[list[int], list[dict[str, Any]]], None],
) -> None:
    """Decode the entries ``todo`` (in manifest order, or length-bucketed), handing each batch to ``keep``."""
    batches = None
    if cfg.bucket_by_length and info.world_size == 1:
        from ..data.buckets import entry_durations, length_buckets

        wanted = set(todo)
        buckets = length_buckets(entry_durations(dataset), cfg.batch_size_eval)
        batches = [kept for kept in ([i for i in bucket if i in wanted] for bucket in buckets) if kept]
    elif cfg.bucket_by_length:
        log_rank_zero(logger, "bucket_by_length applies to single-process runs; decoding in manifest order")
    speech_cache = None
    if getattr(cfg, "speech_cache_dir", ""):
        from ..models.speech_cache import SpeechEmbeddingCache

        # Decoding trains nothing: freezing the front end lets its embeddings be kept for later runs.
        speech_cache = SpeechEmbeddingCache(model.requires_grad_(False), directory=cfg.speech_cache_dir)
    # evaluate owns the model and decodes nothing else with it, so pruning may change it in place.
    from ..analysis.steering import steering_from_file

    steering = steering_from_file(model, cfg.steering_path, cfg.steering_strength)
    with (
        decoding_mask(model.decoder, mask, cfg.mask_application, apply_ffn=cfg.model.apply_ffn_mask),
        steering,
    ):
        decode_dataset(
            model,
            dataset,
            generate_cfg=cfg.generate,
            instruction=cfg.prompt,
            batch_size=cfg.batch_size_eval,
            num_workers=cfg.num_workers,
            progress=info.is_main,
            on_batch=keep,
            indices=todo,
            batches=batches,
            speech_cache=speech_cache,
        )
