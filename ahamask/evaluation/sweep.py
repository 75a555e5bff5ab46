"""Instruction sensitivity: one manifest decoded under many phrasings of an instruction, and under masks.

The AHAMask paper motivates masks by how much a speech LLM's answers depend on the wording of the
instruction. This module measures that spread: the same manifest is decoded once per instruction variant
(no mask), each run is scored with :func:`ahamask.evaluation.scoring.score_predictions`, and the metric is
summarised over variants (mean, standard deviation, min, max). Each given mask is decoded with the
instruction-free prompt, as masks are used, and reported beside the summary for comparison.

The model is loaded once and the speech embeddings of the manifest are computed once: they come from the
audio encoders and the Q-Former only, which never see the prompt or the mask, so every one of the N
conditions (instructions and masks) reuses them: each clip is encoded once, however large N is (tested by
counting encoder calls). They go through the shared :class:`~ahamask.models.speech_cache.SpeechEmbeddingCache`
when one is given, so with ``speech_cache_dir`` a later sweep or ``evaluate.py`` run on the same audio and
model encodes nothing at all.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..config import DecodeConfig
from ..data.collate import collate
from ..masking.apply import decoding_mask, prepare_mask
from ..masking.value import Mask
from ..models.backbone import AudioLLM, pad_audio_rows
from ..utils.io import atomic_write_json
from .decode import decode_dataset, prepare_config_mask
from .scoring import _METRIC_TITLES, UnknownTaskError, plan_task, score_predictions

logger = logging.getLogger(__name__)

__all__ = [
    "summarize",
    "load_instructions",
    "encode_dataset",
    "run_sweep",
    "format_sweep",
    "instruction_sweep",
]

# Metrics where a smaller value is better; every other metric of scoring.py (accuracy, BLEU, ROUGE-L,
# instruction-following rate) is better when larger.
_LOWER_IS_BETTER = frozenset({"wer"})


def summarize(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, spread and range of a metric over variants.

    ``std`` is the population standard deviation (divisor n): the variants are the whole set under study,
    and it stays defined (0.0) for a single variant. ``std_sample`` (divisor n - 1) is given too for those
    who treat the variants as a sample of all possible phrasings; it is None below two values.
    Variants without a value (a metric that could not be computed) are left out and counted in ``n_missing``.

    Args:
        values: one metric value per variant, None where there is none.

    Returns:
        ``{"n", "n_missing", "mean", "std", "std_sample", "min", "max"}``; statistics are None when no
        value is present.

    Raises:
        ValueError: a value is NaN or infinite (it would silently poison the mean).

    Example:
        >>> summarize([1.0, 2.0, 3.0, 4.0])["std"]
        1.118033988749895
    """
    present = [float(v) for v in values if v is not None]
    for i, value in enumerate(present):
        if not math.isfinite(value):
            raise ValueError(f"summarize: value {i} is {value}, expected a finite number or None")
    out: dict[str, Any] = {"n": len(present), "n_missing": len(values) - len(present)}
    if not present:
        return {**out, "mean": None, "std": None, "std_sample": None, "min": None, "max": None}
    return {
        **out,
        "mean": statistics.fmean(present),
        "std": statistics.pstdev(present),
        "std_sample": statistics.stdev(present) if len(present) > 1 else None,
        "min": min(present),
        "max": max(present),
    }


def load_instructions(path: str | os.PathLike) -> list[str]:
    """Read an instruction file: a JSON list of strings (see ``prompts/instructions/``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, not a non-empty list, or an entry that is not a string (index named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"instructions: no such file: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"instructions {path}: not valid JSON ({exc})") from None
    if not isinstance(data, list) or not data:
        raise ValueError(f"instructions {path}: expected a non-empty JSON list of strings")
    for i, item in enumerate(data):
        if not isinstance(item, str):
            raise ValueError(
                f"instructions {path}: entry {i} is {type(item).__name__} {item!r}, expected a string"
            )
    return data


@torch.no_grad()
def encode_dataset(
    model: AudioLLM,
    dataset: Dataset,
    batch_size: int = 4,
    num_workers: int = 0,
    speech_cache: Any | None = None,
) -> torch.Tensor:
    """Speech embeddings of every entry, in dataset order, batched as :func:`decode_dataset` batches.

    The batching matters with BEATs, whose features depend on the batch's padding: with the same batch
    size the cached embeddings equal those ``decode_dataset`` would compute itself.

    Args:
        model: a SALMONN.
        dataset: a SALMONNDataset (with ``features="device"`` the model computes the Whisper features).
        batch_size, num_workers: DataLoader settings.
        speech_cache: a :class:`~ahamask.models.speech_cache.SpeechEmbeddingCache` to read from and fill.

    Returns:
        [entries, speech_tokens, llm_hidden] on the model's device (about entries x 88 x 5120 values for
        SALMONN-13B on 30 s audio: 0.9 MB per entry in fp16).
    """
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=dataset.collater)
    chunks = [
        speech_cache.get_or_compute(batch) if speech_cache is not None else model.encode_audio(batch)
        for batch in loader
    ]
    return pad_audio_rows(chunks)  # zero-padded where batches give different audio-token counts


class _Metadata(Dataset):
    """A dataset's labels without its audio: decoding from cached embeddings never reads the audio.

    Passing it to :func:`decode_dataset` instead of the real dataset saves decoding every audio file and
    computing its Whisper features again for each variant. The spectrogram and waveform are 1-value stubs
    that ``collate`` accepts and ``generate`` ignores once ``speech_embeds`` are given.
    """

    collater = staticmethod(collate)

    def __init__(self, annotation: Sequence[Mapping[str, Any]]) -> None:
        self.annotation = annotation

    def __len__(self) -> int:
        return len(self.annotation)

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.annotation[index]
        stub = {"spectrogram": torch.zeros(1, 1), "raw_wav": np.zeros(1, np.float32)}
        return {**stub, **{key: entry[key] for key in ("text", "task", "Q", "id")}}


def _prepare_masks(
    model: AudioLLM,
    masks: Sequence[str | os.PathLike] | Mapping[str, Mask | torch.Tensor],
    prob_threshold: float,
) -> list[tuple[str, Mask]]:
    """(name, gates) for mask files (binarised here) or ready masks by name (a tensor is taken as 0/1 gates)."""
    geo = model.geometry
    if isinstance(masks, Mapping):
        out = []
        for name, mask in masks.items():
            if not isinstance(mask, Mask):
                mask = Mask.from_gates(mask.detach().float(), source=f"mask {name!r}")
            out.append((str(name), mask.fit(geo.n_layers, geo.n_heads).gates(prob_threshold)))
        return out
    return [(str(p), prepare_mask(str(p), geo, prob_threshold)) for p in masks]


def _check_one_task(tasks: Sequence[str], where: str) -> None:
    """A sweep summarises one metric: refuse before decoding a manifest whose entries need several."""
    groups = set()
    # plan_task folds aliases (gender_recognition, gender_librispeech -> gender) exactly as scoring groups them.
    for name in set(tasks):
        try:
            groups.add(plan_task(name).name)
        except UnknownTaskError as exc:
            raise ValueError(f"{where}: task {name!r} cannot be scored ({exc}); pass a task") from None
    if len(groups) != 1:
        raise ValueError(
            f"{where}: entries of several tasks {sorted(groups)}; sweep one task at a time or pass one"
        )


def _score(records: list[dict], tasks: list[str], where: str) -> dict[str, Any]:
    """Score one run; returns the single task's entry (metric, value, n, details)."""
    report = score_predictions(records, tasks, source=where)
    if len(report["tasks"]) != 1:
        raise ValueError(f"{where}: task {tasks[0]!r} has no metric (unscored: {report['unscored']})")
    name, entry = next(iter(report["tasks"].items()))
    return {"task": name, **entry}


def run_sweep(
    model: AudioLLM,
    dataset: Dataset,
    instructions: Sequence[str],
    masks: Sequence[str | os.PathLike] | Mapping[str, Mask | torch.Tensor] = (),
    generate_cfg: Any = None,
    task: str | None = None,
    *,
    batch_size: int = 4,
    num_workers: int = 0,
    prob_threshold: float = 0.5,
    seed: int | None = 42,
    progress: bool = False,
    speech_cache: Any | None = None,
) -> dict[str, Any]:
    """Decode and score a dataset under each instruction (no mask) and each mask (no instruction).

    (Over 60 lines only through its documented arguments; a run is :func:`_decode_run` and
    :func:`_run_record`, the report :func:`_sweep_report`.)

    Args:
        model: a SALMONN in eval mode.
        dataset: a SALMONNDataset (its ``annotation`` gives ids, ground truths and tasks).
        instructions: instruction variants, each written after the speech as ``evaluate.py`` writes ``prompt``.
        masks: mask files (binarised with ``prob_threshold``), or ``{name: 0/1 weights [L*(H+1)]}``.
        generate_cfg: the ``generate`` keys.
        task: the task of every entry; by default each entry's manifest ``task``.
        batch_size, num_workers: DataLoader settings (as ``batch_size_eval``, ``num_workers``).
        prob_threshold: threshold for mask files.
        seed: reseed torch before each run, so sampled decoding draws the same noise for every variant
            (greedy and beam search do not use it); None leaves the RNG alone.
        progress: tqdm bars.
        speech_cache: a :class:`~ahamask.models.speech_cache.SpeechEmbeddingCache` the embeddings come from
            (shared with other sweeps and evaluations of the same model); None encodes them directly, still
            once for all conditions.

    Returns:
        ``{"manifest", "n_entries", "task", "metric", "lower_is_better", "ids", "instructions": [run],
        "summary": summarize(values) + {"best", "worst"} (indices into "instructions"), "masks": [run]}``
        where a run is ``{"instruction", "prompt", "mask", "active_heads", "value", "score", "outputs"}``;
        ``active_heads`` is the share of heads a mask keeps (None without a mask).

    Raises:
        ValueError: no instructions, entries of several tasks, a task without a metric, a mask that does
            not fit the model.

    Example:
        >>> report = run_sweep(model, dataset, ["Transcribe.", "What is said?"], ["asr_mask.pth"])
        >>> report["summary"]["mean"], report["masks"][0]["value"]
    """
    if not instructions:
        raise ValueError("run_sweep: no instructions given")
    where, annotation, tasks = _sweep_entries(dataset, task)
    mask_list = _prepare_masks(model, masks, prob_threshold)

    # The speech embeddings do not depend on the prompt (encoders and Q-Former never see it), so they are
    # computed once here and passed to every decode instead of running the encoders once per variant.
    speech_embeds = encode_dataset(model, dataset, batch_size, num_workers, speech_cache)
    labels_only = _Metadata(annotation)
    # Instruction runs come first, then the masks: results[: len(instructions)] are the variants.
    runs: list[tuple[str, str | None, Mask | None]] = [(text, None, None) for text in instructions]
    runs += [("", name, weights) for name, weights in mask_list]

    results = []
    for index, (instruction, mask_name, weights) in enumerate(runs):
        if seed is not None:
            torch.manual_seed(seed)
        label = f"mask {mask_name}" if mask_name else f"instruction {index}: {instruction!r}"
        logger.info("sweep run %d/%d: %s", index + 1, len(runs), label)
        records = _decode_run(
            model, labels_only, speech_embeds, generate_cfg, instruction, weights, batch_size, progress
        )
        score = _score(records, tasks, f"{where} ({label})")
        results.append(_run_record(model, instruction, mask_name, weights, score, records))
    return _sweep_report(
        results[: len(instructions)], results[len(instructions) :], where, annotation, prob_threshold
    )


def _sweep_entries(dataset: Dataset, task: str | None) -> tuple[str, Sequence[Mapping[str, Any]], list[str]]:
    """The dataset's name, its annotation and each entry's task, checked to be one scored task.

    Raises:
        ValueError: the dataset has no ``annotation``, or its entries are of several tasks.
    """
    where = str(getattr(dataset, "ann_path", "dataset"))
    annotation = getattr(dataset, "annotation", None)
    if annotation is None:
        raise ValueError(f"{where}: run_sweep needs a dataset with an 'annotation' list (a SALMONNDataset)")
    tasks = [task] * len(annotation) if task else [entry["task"] for entry in annotation]
    _check_one_task(tasks, where)
    return where, annotation, tasks


def _decode_run(
    model: AudioLLM,
    labels_only: Dataset,
    speech_embeds: torch.Tensor,
    generate_cfg: Any,
    instruction: str,
    weights: Mask | None,
    batch_size: int,
    progress: bool,
) -> list[dict[str, Any]]:
    """Decodes every entry once with ``instruction`` and (when given) the mask ``weights``."""
    # Hooks, as every sweep so far: a run's figures stay those of earlier runs bit for bit.
    with decoding_mask(model.decoder, weights, "hooks"):
        return decode_dataset(
            model,
            labels_only,
            generate_cfg=generate_cfg,
            instruction=instruction,
            batch_size=batch_size,
            progress=progress,
            speech_embeds=speech_embeds,
        )


def _run_record(
    model: AudioLLM,
    instruction: str,
    mask_name: str | None,
    weights: Mask | None,
    score: dict[str, Any],
    records: list[dict[str, Any]],
) -> dict[str, Any]:
    """One run of the report: what was asked, the share of heads kept, the score and the outputs."""
    active = None
    if weights is not None:
        active = float(weights.head_gates().float().mean())
    return {
        "instruction": instruction,
        "prompt": model.prompt_for(instruction),
        "mask": mask_name,
        "active_heads": active,
        "value": score["value"],
        "score": score,
        "outputs": [r["output"] for r in records],
    }


def _sweep_report(
    variants: list[dict[str, Any]],
    mask_runs: list[dict[str, Any]],
    where: str,
    annotation: Sequence[Mapping[str, Any]],
    prob_threshold: float,
) -> dict[str, Any]:
    """The report of :func:`run_sweep` from its instruction runs and mask runs."""
    metric = variants[0]["score"]["metric"]
    lower = metric in _LOWER_IS_BETTER
    summary = summarize([r["value"] for r in variants])
    scored = [i for i, r in enumerate(variants) if r["value"] is not None]
    # Best and worst by the metric's own direction (a stable sort: the earlier variant wins a tie for best).
    rank = sorted(scored, key=lambda i: variants[i]["value"] * (1 if lower else -1))
    summary["best"], summary["worst"] = (rank[0], rank[-1]) if rank else (None, None)
    return {
        "manifest": where,
        "n_entries": len(annotation),
        "task": variants[0]["score"]["task"],
        "metric": metric,
        "lower_is_better": lower,
        "prob_threshold": prob_threshold,
        "ids": [entry["id"] for entry in annotation],
        "instructions": variants,
        "summary": summary,
        "masks": mask_runs,
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def format_sweep(report: Mapping[str, Any], width: int = 60) -> str:
    """The sweep as a console table: one row per instruction, the summary, then one row per mask.

    Args:
        report: the dict from :func:`run_sweep`.
        width: instructions longer than this are shortened with an ellipsis.
    """
    title = _METRIC_TITLES.get(report["metric"], report["metric"])
    arrow = "lower is better" if report["lower_is_better"] else "higher is better"
    rows = [("#", "variant", title)]
    for i, run in enumerate(report["instructions"]):
        text = repr(run["instruction"])
        rows.append((str(i), text if len(text) <= width else text[: width - 3] + "...", _fmt(run["value"])))
    s = report["summary"]
    rows.append(("", f"mean over {s['n']} instructions", _fmt(s["mean"])))
    rows.append(("", "std (population)", _fmt(s["std"])))
    rows.append(("", "min / max", f"{_fmt(s['min'])} / {_fmt(s['max'])}"))
    for i, run in enumerate(report["masks"]):
        # The folder names a released mask: every one of them is called checkpoint.pth.
        name = Path(run["mask"]).parent.name + "/" + Path(run["mask"]).name if run["mask"] else "?"
        rows.append(
            (
                f"m{i}",
                f"mask {name} ({100 * run['active_heads']:.1f}% heads), no instruction",
                _fmt(run["value"]),
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    lines = [f"task {report['task']} ({report['n_entries']} entries), {title}: {arrow}"]
    lines += [f"{r[0].rjust(widths[0])}  {r[1].ljust(widths[1])}  {r[2].rjust(widths[2])}" for r in rows]
    return "\n".join(lines)


def instruction_sweep(
    cfg: DecodeConfig,
    instructions: str | os.PathLike | Sequence[str],
    masks: Sequence[str | os.PathLike] = (),
    task: str | None = None,
    out: str | os.PathLike | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Run :func:`run_sweep` from a decode config (what ``scripts/instruction_sweep.py`` calls).

    Args:
        cfg: the decode config: model, ``test_data_path``, ``generate``, ``batch_size_eval``, ``num_workers``,
            ``prob_threshold``, ``seed``, ``device`` and the ``model.shuffle_mask*`` keys are used.
        instructions: an instruction file (JSON list) or the instructions themselves.
        masks: mask files; ``model.weight_mask_path`` is not added (instruction runs are mask-free).
        task: one task for every entry instead of the manifest's.
        out: write the report here as JSON (atomically).
        device: overrides ``cfg.device``.

    Returns:
        The report of :func:`run_sweep` plus ``config`` (instructions file, generate keys, seed).
    """
    source = None
    if isinstance(instructions, (str, os.PathLike)):
        source, instructions = str(instructions), load_instructions(instructions)
    if cfg.model.weight_mask_path and str(cfg.model.weight_mask_path) not in map(str, masks):
        logger.warning(
            "model.weight_mask_path=%s is not used by the sweep; list it in --masks to compare it",
            cfg.model.weight_mask_path,
        )
    dataset, model, speech_cache = _load_sweep_inputs(cfg, device)
    # Mask files are binarised (and shuffled when the config asks for the random-mask ablation) exactly as
    # evaluate.py does, so a mask's figure here equals the one evaluate.py + score.py give.
    prepared = {str(p): prepare_config_mask(cfg, model, p) for p in masks}
    report = run_sweep(
        model,
        dataset,
        list(instructions),
        prepared,
        cfg.generate,
        task,
        batch_size=cfg.batch_size_eval,
        num_workers=cfg.num_workers,
        prob_threshold=cfg.prob_threshold,
        seed=cfg.seed,
        progress=True,
        speech_cache=speech_cache,
    )
    report["config"] = _sweep_config(cfg, source)
    if out is not None:
        atomic_write_json(report, out, indent=2)
        logger.info("sweep report written to %s", out)
    return report


def _load_sweep_inputs(cfg: DecodeConfig, device: str | None) -> tuple[Dataset, AudioLLM, Any]:
    """The manifest, the model (eval, frozen) and its speech-embedding cache, in that order: the manifest
    is read before the model is loaded, so a bad manifest fails in a second, not after minutes."""
    from ..data.dataset import SALMONNDataset
    from ..models.backbone import build_backbone
    from ..models.speech_cache import SpeechEmbeddingCache
    from ..utils import distributed as dist_utils

    # features="device": the model computes each batch's Whisper features in one call on its device.
    dataset = SALMONNDataset(
        cfg.test_data_path, cfg.model.front_end_path(), features="device", resampler=cfg.resampler
    )
    torch.manual_seed(cfg.seed)
    # The sweep runs in one process: launched as several it would decode everything N times.
    info = dist_utils.setup_processes(False, device or cfg.device, key=None)
    model = build_backbone(cfg.model, device=info.device).eval().requires_grad_(False)
    # Inference only, so the front end is frozen: its embeddings are cached (on disk with speech_cache_dir).
    speech_cache = SpeechEmbeddingCache(model, directory=getattr(cfg, "speech_cache_dir", "") or None)
    return dataset, model, speech_cache


def _sweep_config(cfg: DecodeConfig, source: str | None) -> dict[str, Any]:
    """The settings recorded with a sweep report, so a figure can be traced to its decoding keys."""
    generate = (
        dataclasses.asdict(cfg.generate) if dataclasses.is_dataclass(cfg.generate) else dict(cfg.generate)
    )
    return {
        "instructions_file": source,
        "generate": generate,
        "seed": cfg.seed,
        "shuffle_mask": cfg.model.shuffle_mask,
    }
