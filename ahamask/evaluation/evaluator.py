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
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from ..config import DecodeConfig
from ..masking.checkpoint import load_mask, resolve_mask_path
from ..masking.fold import fold_head_mask
from ..masking.mask import binarize, mask_stats, shuffle_mask
from ..utils import distributed as dist_utils
from ..utils.logging import log_rank_zero
from .output import OutputGuard, decode_fingerprint

logger = logging.getLogger(__name__)

__all__ = [
    "DecodeInterrupted",
    "postprocess",
    "decode_dataset",
    "prepare_mask",
    "prepare_config_mask",
    "evaluate",
    "choose_mask_application",
    "PRUNE_MAX_DENSITY",
]


class DecodeInterrupted(KeyboardInterrupt):
    """Ctrl-C during decoding; the message says how many entries were kept and where."""


def postprocess(answer: str) -> str:
    """The official clean-up of a decoded answer: strip, newlines to spaces, drop a trailing ``</s>``."""
    answer = answer.strip().replace("\n", " ")
    return answer[: -len("</s>")] if answer.endswith("</s>") else answer


def prepare_mask(
    path: str,
    n_layers: int,
    n_heads: int,
    prob_threshold: float = 0.5,
    shuffle: bool = False,
    shuffle_mode: str = "global",
    shuffle_seed: int = 0,
) -> torch.Tensor:
    """Load a mask file and return the 0/1 head weights to apply (optionally shuffled: random-mask ablation).

    Raises:
        MaskFileError / MaskShapeError: unreadable file or a mask made for another model (both shapes named).
    """
    logits = load_mask(path, n_layers=n_layers, n_heads=n_heads)
    stats = mask_stats(logits, n_layers, n_heads, prob_threshold)
    log_rank_zero(logger, "mask %s: after thresholding at %.2f, %s", path, prob_threshold, stats.describe())
    binary = binarize(logits, prob_threshold)
    if shuffle:
        binary = shuffle_mask(binary, n_layers, n_heads, mode=shuffle_mode, seed=shuffle_seed)
        log_rank_zero(
            logger,
            "shuffle_mask: the same number of active heads placed at random (%s, seed %d)",
            shuffle_mode,
            shuffle_seed,
        )
    return binary


def prepare_config_mask(cfg: DecodeConfig, model: Any, path: str) -> torch.Tensor:
    """:func:`prepare_mask` with the decode config's threshold and shuffle settings (evaluate, sweep, chat)."""
    return prepare_mask(
        str(path),
        model.n_layers,
        model.n_heads,
        cfg.prob_threshold,
        cfg.model.shuffle_mask,
        cfg.model.shuffle_mask_mode,
        cfg.model.shuffle_mask_seed,
    )


def decode_dataset(
    model: Any,
    dataset: Dataset,
    *,
    generate_cfg: Any,
    instruction: str = "",
    prompts: Sequence[str] | None = None,
    mask_logits: torch.Tensor | None = None,
    head_weights: torch.Tensor | None = None,
    prob_threshold: float = 0.5,
    batch_size: int = 4,
    num_workers: int = 0,
    indices: Sequence[int] | None = None,
    progress: bool = True,
    speech_embeds: torch.Tensor | None = None,
    on_batch: Callable[[list[int], list[dict[str, Any]]], None] | None = None,
    speech_cache: Any | None = None,
) -> list[dict[str, Any]]:
    """Decode (a subset of) a dataset; returns one record per entry in dataset order.

    Args:
        model: a :class:`~ahamask.models.salmonn.SALMONN`.
        dataset: a :class:`~ahamask.data.dataset.SALMONNDataset`.
        generate_cfg: the ``generate`` keys.
        instruction: the instruction written after the speech (``""`` with a mask, as the official).
        prompts: full wrapped prompts per entry instead of ``instruction`` (e.g. per-task prompts).
        mask_logits: mask logits, binarised with ``prob_threshold``; or give ``head_weights`` (0/1) directly.
        batch_size, num_workers: DataLoader settings.
        indices: the entries to decode (a rank's shard); all by default.
        progress: show a tqdm bar.
        speech_embeds: [len(indices or dataset), N, D] precomputed speech embeddings (the sweep reuses them:
            they do not depend on the prompt).
        on_batch: called after each batch with its dataset indices and records (evaluate keeps them in
            ``<output>.partial``).
        speech_cache: a :class:`~ahamask.models.speech_cache.SpeechEmbeddingCache`: each batch's embeddings
            come from it (computed once per clip over every call that shares it: masks, instructions).

    Returns:
        ``[{"id", "ground_truth", "output", "task"}]``.
    """
    if mask_logits is not None:
        head_weights = binarize(mask_logits, prob_threshold)
    order = list(indices) if indices is not None else list(range(len(dataset)))
    loader = DataLoader(
        Subset(dataset, order), batch_size=batch_size, num_workers=num_workers, collate_fn=dataset.collater
    )
    default_prompt = model.prompt_for(instruction)
    records: list[dict[str, Any]] = []
    bar = tqdm(total=len(order), desc="decoding", disable=not progress, leave=False, dynamic_ncols=True)
    start = 0
    try:
        for samples in loader:
            n = len(samples["id"])
            batch_prompts = list(prompts[start : start + n]) if prompts is not None else [default_prompt] * n
            embeds = speech_embeds[start : start + n] if speech_embeds is not None else None
            if embeds is None and speech_cache is not None:
                embeds = speech_cache.get_or_compute(samples)
            answers = model.generate(
                samples, generate_cfg, prompts=batch_prompts, head_weights=head_weights, speech_embeds=embeds
            )
            for i, answer in enumerate(answers):
                records.append(
                    {
                        "id": samples["id"][i],
                        "ground_truth": samples["text"][i],
                        "output": postprocess(answer),
                        "task": samples["task"][i],
                    }
                )
            if on_batch is not None:
                on_batch(order[start : start + n], records[start : start + n])
            start += n
            bar.update(n)
    finally:
        bar.close()  # also on an error, so the error line is not drawn over the bar
    return records


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
    from ..models.salmonn import SALMONN

    mask_path = cfg.model.weight_mask_path
    if mask_path:
        # A bare released name resolves here, and a bad one fails before minutes of model loading.
        mask_path = str(resolve_mask_path(mask_path, key="model.weight_mask_path"))
    torch.manual_seed(cfg.seed)
    model = SALMONN.from_config(cfg.model, device=info.device).eval()
    head_weights = None
    if mask_path:
        head_weights = prepare_config_mask(cfg, model, mask_path)
        if cfg.prompt.strip():
            logger.warning(
                "a mask is applied together with the instruction %r: AHAMask masks are trained with "
                "no instruction",
                cfg.prompt,
            )
    else:
        log_rank_zero(logger, "no mask: the official model with the instruction %r", cfg.prompt)
    # features="device": each batch's Whisper features are computed in one call on the model's device.
    dataset = SALMONNDataset(
        cfg.test_data_path, cfg.model.whisper_path, features="device", resampler=cfg.resampler
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
            _decode(cfg, info, model, dataset, head_weights, todo, keep)
    except KeyboardInterrupt:
        raise DecodeInterrupted(_kept_note(guard, len(shard))) from None
    except BaseException as exc:
        if guard.kept:
            exc.add_note(_kept_note(guard, len(shard)))
        raise
    ordered = [records[i] for i in shard]
    if info.world_size > 1:
        ordered = dist_utils.merge_shards(dist_utils.all_gather_object(ordered))
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


#: ``mask_application: auto`` prunes a mask that keeps at most this share of the heads and folds any denser
#: one (see :func:`choose_mask_application` for the measurements behind it).
PRUNE_MAX_DENSITY = 0.8


def choose_mask_application(
    requested: str, head_weights: torch.Tensor | None, n_layers: int, n_heads: int
) -> str | None:
    """How to apply a decoding mask: ``"fold"``, ``"hooks"``, ``"prune"``, or None without a mask.

    The rule of ``auto``: prune when the mask keeps at most :data:`PRUNE_MAX_DENSITY` (80%) of the heads, fold
    otherwise. Folding costs nothing over the unmasked model (the masked heads are still computed, their
    ``o_proj`` columns zeroed); pruning removes the masked heads' q/k/v rows and ``o_proj`` columns, which
    saves work in proportion to the heads removed but leaves layers with odd head counts and a pruning pass
    at start-up. Measured with ``scripts/bench_prune.py`` (one CPU thread on a loaded machine, LLaMA 8 x 40
    heads with the released patterns, folded time / pruned time, 7 repeats): 1.06-1.29 for the released
    masks keeping 52%-79% of the heads (asr_gender, asr_gender_json, emotion, gender), mixed at 82% (asv,
    gender_asr: 0.85-1.23 over two runs), within noise at 89% (aac) and slower at 95%-97% (asr, osr, s2tt:
    0.91); so ``auto`` prunes up to 80% and folds above. Pruning also needs a binary mask shared by the whole
    batch (the same condition as folding); a per-sample or soft mask falls back to hooks.

    Args:
        requested: ``mask_application`` from the config: ``auto``, ``fold``, ``hooks`` or ``prune``
            (``fold`` and ``hooks`` are always honoured, so each path stays reachable).
        head_weights: the 0/1 weights ``[L*(H+1)]`` (or ``[batch, L*(H+1)]``), or None.
        n_layers, n_heads: the LLM's geometry.

    Returns:
        The path to use, or None when there is no mask.

    Example:
        >>> choose_mask_application("auto", binarize(load_mask("asr_gender.pth")), 40, 40)  # 52% kept
        'prune'
    """
    if head_weights is None:
        return None
    if requested in ("fold", "hooks"):
        return requested
    flat = head_weights.reshape(-1, n_layers, n_heads + 1)[..., :n_heads]
    uniform = bool((flat == flat[:1]).all())
    binary = bool(((flat == 0) | (flat == 1)).all())
    if not (uniform and binary):
        log_rank_zero(logger, "mask_application=%s: the mask is soft or per-sample; using hooks", requested)
        return "hooks"
    density = float(flat[0].float().mean())
    if requested == "prune" or density <= PRUNE_MAX_DENSITY:
        log_rank_zero(logger, "mask_application=%s: pruning (%.1f%% of heads kept)", requested, 100 * density)
        return "prune"
    log_rank_zero(logger, "mask_application=auto: folding (%.1f%% of heads kept)", 100 * density)
    return "fold"


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
    model: Any,
    dataset: Any,
    head_weights: torch.Tensor | None,
    todo: list[int],
    keep: Callable[[list[int], list[dict[str, Any]]], None],
) -> None:
    """Decode the entries ``todo`` (in manifest order, or length-bucketed), handing each batch to ``keep``."""
    common = dict(
        generate_cfg=cfg.generate,
        instruction=cfg.prompt,
        batch_size=cfg.batch_size_eval,
        num_workers=cfg.num_workers,
        progress=info.is_main,
        on_batch=keep,
        indices=todo,
    )
    how = choose_mask_application(cfg.mask_application, head_weights, model.n_layers, model.n_heads)
    if how == "prune":
        from ..masking.prune import prune_heads

        # In place: evaluate owns the model and decodes nothing else with it (a copy would double a 13B).
        model, head_weights = prune_heads(model, head_weights, inplace=True), None
    fold = how == "fold"
    if cfg.bucket_by_length and info.world_size == 1:
        from .bucketing import decode_bucketed

        decode_bucketed(model, dataset, head_weights=head_weights, fold=fold, **common)
        return
    if cfg.bucket_by_length:
        log_rank_zero(logger, "bucket_by_length applies to single-process runs; decoding in manifest order")
    speech_cache = None
    if getattr(cfg, "speech_cache_dir", ""):
        from ..models.speech_cache import SpeechEmbeddingCache

        # Decoding trains nothing: freezing the front end lets its embeddings be kept for later runs.
        speech_cache = SpeechEmbeddingCache(model.requires_grad_(False), directory=cfg.speech_cache_dir)
    # Folding the binary mask into o_proj makes masked decoding cost the same as unmasked decoding.
    context = (
        fold_head_mask(model, head_weights, apply_ffn=cfg.model.apply_ffn_mask) if fold else nullcontext()
    )
    with context:
        decode_dataset(
            model, dataset, head_weights=None if fold else head_weights, speech_cache=speech_cache, **common
        )
