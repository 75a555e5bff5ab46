"""Batched decoding of a manifest into the official prediction JSON (what ``evaluate.py`` runs).

Official behaviour kept: the prompt is ``prompt_template`` around ``"<Speech><SpeechHere></Speech> " + prompt``;
with ``model.weight_mask_path`` set the binarised mask is applied (``sigmoid >= prob_threshold``); outputs are
stripped, newlines become spaces and a trailing ``</s>`` is removed; the file is
``{"prompt": ..., "prediction": [{"id", "ground_truth", "output"}]}``. Added: the file is written atomically,
``shuffle_mask`` is seeded, every sample decodes to its own EOS, and ``torchrun`` shards the manifest over
ranks with rank 0 merging in manifest order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
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
from ..utils.io import atomic_write_json
from ..utils.logging import log_rank_zero

logger = logging.getLogger(__name__)

__all__ = ["postprocess", "decode_dataset", "prepare_mask", "prepare_config_mask", "evaluate"]


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
    for samples in loader:
        n = len(samples["id"])
        batch_prompts = list(prompts[start : start + n]) if prompts is not None else [default_prompt] * n
        embeds = speech_embeds[start : start + n] if speech_embeds is not None else None
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
        start += n
        bar.update(n)
    bar.close()
    return records


def evaluate(cfg: DecodeConfig, device: str | None = None) -> Path:
    """Decode ``cfg.test_data_path`` and write the official prediction JSON to ``cfg.output_path``.

    Under ``torchrun`` each rank decodes a strided shard; rank 0 merges in manifest order and writes.

    Returns:
        The output path.
    """
    from ..data.dataset import SALMONNDataset
    from ..models.salmonn import SALMONN

    spec = device or cfg.device
    # Sharded whenever launched as several processes (torchrun or srun), single otherwise.
    info = dist_utils.setup_processes(True, spec)
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
    dataset = SALMONNDataset(cfg.test_data_path, cfg.model.whisper_path)
    shard = dist_utils.shard_indices(len(dataset), info.rank, info.world_size)
    common = dict(
        generate_cfg=cfg.generate,
        instruction=cfg.prompt,
        batch_size=cfg.batch_size_eval,
        num_workers=cfg.num_workers,
        progress=info.is_main,
    )
    fold = head_weights is not None and cfg.mask_application == "fold"
    if cfg.bucket_by_length and info.world_size == 1:
        from .bucketing import decode_bucketed

        records = decode_bucketed(model, dataset, head_weights=head_weights, fold=fold, **common)
    else:
        if cfg.bucket_by_length:
            log_rank_zero(
                logger, "bucket_by_length applies to single-process runs; decoding in manifest order"
            )
        # Folding the binary mask into o_proj makes masked decoding cost the same as unmasked decoding.
        context = (
            fold_head_mask(model, head_weights, apply_ffn=cfg.model.apply_ffn_mask) if fold else nullcontext()
        )
        with context:
            records = decode_dataset(
                model, dataset, head_weights=None if fold else head_weights, indices=shard, **common
            )
    if info.world_size > 1:
        records = dist_utils.merge_shards(dist_utils.all_gather_object(records))
    output = Path(cfg.output_path)
    if info.is_main:
        result = {
            "prompt": cfg.prompt,
            "prediction": [{k: r[k] for k in ("id", "ground_truth", "output")} for r in records],
        }
        atomic_write_json(result, output, indent=4)
        # DEBUG: evaluate.py prints the official "Successfully written file to ..." line; once is enough.
        log_rank_zero(logger, "wrote %d predictions to %s", len(records), output, level=logging.DEBUG)
    if info.world_size > 1:
        dist_utils.barrier()
        dist_utils.cleanup()
    return output
