"""Stage 3 of the demo: decode the held-out clips of every task under every condition, and score them.

Conditions per task: each held-out instruction paraphrase (never seen in training), no instruction, the
task's trained mask with no instruction, and random masks with the same number of active heads (the
``shuffle_mask`` ablation). Decoding goes through :func:`ahamask.evaluation.decode.decode_dataset` and
scoring through :func:`ahamask.evaluation.scoring.score_predictions`, the functions behind ``evaluate.py``
and ``scripts/score.py``; every prediction list is also written as an official prediction file.

Two things keep ~80 decodes cheap. The test manifests of all tasks list the same clips, so the clips are
loaded once into memory and the speech embeddings (which do not depend on the prompt or the mask: the mask
acts on the LLM only) are computed once and passed to every decode.

The world's classification tasks are scored under their own names (``demo_gender`` with labels low/high,
``demo_count`` with the number words) so that registering them does not change the project's ``gender``
task (male/female); answers are matched on exact label words (no synonyms).
"""

from __future__ import annotations

import logging
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from ..data.dataset import SALMONNDataset
from ..evaluation.decode import decode_dataset
from ..evaluation.metrics import register_task, wer
from ..evaluation.scoring import score_predictions
from ..evaluation.sweep import encode_dataset
from ..masking.apply import decoding_mask
from ..masking.mask import binarize, mask_stats, shuffle_mask
from ..synth import TASKS, WorldInfo, detect_task, parse_output, task_instructions
from ..utils.io import atomic_write_json

if TYPE_CHECKING:  # SALMONN pulls in transformers; the annotation alone does not need it loaded
    from ..models.salmonn import SALMONN

logger = logging.getLogger(__name__)

__all__ = [
    "CachedClips",
    "Condition",
    "scoring_task",
    "aggregate",
    "conditions_for",
    "decode_condition",
    "run_sweep",
    "score_records",
    "strict_metrics",
]

_PREFIX = "demo_"


def scoring_task(task: str) -> str:
    """The scorer's task spec for a world task, registering the world's label sets first.

    Args:
        task: a world task, e.g. ``"gender_asr"``.

    Returns:
        ``"asr"``, ``"demo_gender"``, ``"demo_gender|asr"`` or ``"json:asr=asr,gender=demo_gender"``.
    """
    spec = TASKS[task]

    def single(name: str) -> str:
        part = TASKS[name]
        if part.metric == "wer":
            return name  # the project's "asr": WER after Whisper's English normalisation
        register_task(_PREFIX + name, "accuracy", labels=part.labels, synonyms={})
        return _PREFIX + name

    if spec.metric == "composite":
        return spec.separator.join(single(p) for p in spec.parts)
    if spec.metric == "json":
        return "json:" + ",".join(f"{p}={single(p)}" for p in spec.parts)
    return single(task)


class CachedClips(Dataset):
    """A manifest's items held in memory, with ``collater``: what decode_dataset needs, loaded once.

    Args:
        items: items of a :class:`SALMONNDataset` (spectrogram, raw_wav, text, task, Q, id).
    """

    collater = staticmethod(SALMONNDataset.collater)

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]

    @classmethod
    def load(cls, manifest: Path, whisper_path: str) -> CachedClips:
        """Loads every item of a manifest (audio decoded and featurised once)."""
        dataset = SALMONNDataset(manifest, whisper_path)
        return cls([dataset[i] for i in range(len(dataset))])

    def relabel(self, manifest: Path) -> CachedClips:
        """The same clips with another task's texts, from a manifest listing the same files in order.

        Raises:
            ValueError: if the manifest lists other files (the entry index is named).
        """
        from ..data.manifest import load_manifest

        entries = load_manifest(manifest)
        if len(entries) != len(self.items):
            raise ValueError(f"{manifest}: {len(entries)} entries, expected the same {len(self.items)} clips")
        items = []
        for index, (item, entry) in enumerate(zip(self.items, entries, strict=True)):
            if entry["id"] != item["id"]:
                raise ValueError(f"{manifest}: entry {index} is {entry['id']!r}, expected {item['id']!r}")
            items.append({**item, "text": entry["text"], "task": entry["task"], "Q": entry["Q"]})
        return CachedClips(items)


@dataclass(frozen=True)
class Condition:
    """One way of asking the frozen model for a task.

    Attributes:
        name: file-friendly id, e.g. ``"instruction_3"``, ``"none"``, ``"mask"``, ``"random_0"``.
        kind: ``"instruction"``, ``"none"``, ``"mask"`` or ``"random"``.
        instruction: text after the audio ("" for no instruction).
        head_weights: 0/1 mask [n_layers * (n_heads + 1)] or None.
    """

    name: str
    kind: str
    instruction: str = ""
    head_weights: torch.Tensor | None = None


def conditions_for(
    task: str,
    logits: torch.Tensor | None,
    n_layers: int,
    n_heads: int,
    n_instructions: int,
    random_seeds: Sequence[int],
    held_out: Sequence[str] | None = None,
) -> list[Condition]:
    """The conditions of one task: held-out instructions, none, its mask, random masks of the same size.

    Args:
        task: world task.
        logits: the task's trained mask logits (None: no mask conditions).
        n_layers, n_heads: the LLM geometry.
        n_instructions: how many held-out paraphrases (the first ones).
        random_seeds: one random mask per seed.
        held_out: the task's held-out paraphrases (default: the synthetic world's).

    Returns:
        The conditions, instructions first.
    """
    if held_out is None:
        held_out = task_instructions(task, "heldout")
    out = [
        Condition(f"instruction_{i}", "instruction", text) for i, text in enumerate(held_out[:n_instructions])
    ]
    out.append(Condition("none", "none"))
    if logits is not None:
        binary = binarize(logits)
        out.append(Condition("mask", "mask", head_weights=binary))
        for seed in random_seeds:
            # The same number of active heads, placed at random over the whole model.
            random = shuffle_mask(binary, n_layers, n_heads, mode="global", seed=seed)
            out.append(Condition(f"random_{seed}", "random", head_weights=random))
    return out


def score_records(records: list[dict[str, Any]], task: str) -> dict[str, Any]:
    """Scores one condition's predictions of one task.

    Args:
        records: ``{"id", "ground_truth", "output"}`` entries.
        task: the world task they were asked for.

    Returns:
        ``{"metrics": {"wer"|"accuracy"|"ifr": value, ...}, "format": % of outputs in the task's exact
        format, "performed": {task or "other": % of outputs in that task's format}}``.
    """
    spec = TASKS[task]
    report = score_predictions(records, [scoring_task(task)] * len(records), source=f"demo {task}")
    (entry,) = report["tasks"].values()
    metrics: dict[str, float] = {}
    if spec.metric in ("composite", "json"):
        metrics["ifr"] = entry["value"]
        for part in entry["parts"].values():
            metrics[part["metric"]] = part["value"]
    else:
        metrics[entry["metric"]] = entry["value"]
    n = len(records)
    in_format = sum(parse_output(task, r["output"]) is not None for r in records)
    performed = Counter(detect_task(r["output"]) or "other" for r in records)
    return {
        "metrics": metrics,
        "strict": strict_metrics(records, task),
        "format": 100.0 * in_format / n,
        "performed": {k: 100.0 * v / n for k, v in sorted(performed.items())},
    }


def strict_metrics(records: list[dict[str, Any]], task: str) -> dict[str, float]:
    """The task's metrics when only answers in the task's exact output format count.

    The lenient (paper-style) scorer finds a label anywhere in an answer, so a default output that happens to
    contain one (``"ba ko mu|high"`` for the register task) counts as correct. Here an answer is first read
    with :func:`ahamask.synth.parse_output`; one that is not in the task's format is an empty transcript
    (asr) or a wrong label (classification), and format-following is the exact-format share.

    Returns:
        ``{"wer"|"accuracy": value}`` for single tasks; ``{"ifr": format share, <part metric>: value}`` for
        composite and JSON tasks (each part scored on the exactly formatted answers, the others as wrong).
    """
    spec = TASKS[task]
    parsed = [parse_output(task, r["output"]) or {} for r in records]
    truths = [parse_output(task, r["ground_truth"]) for r in records]
    if any(t is None for t in truths):
        raise ValueError(f"demo {task}: a ground truth is not in the task's own format")
    parts = spec.parts or (task,)
    out: dict[str, float] = {}
    if spec.metric in ("composite", "json"):
        out["ifr"] = 100.0 * sum(bool(p) for p in parsed) / len(records)
    for part in parts:
        refs = [t[part] for t in truths]
        hyps = [p.get(part, "") for p in parsed]
        if TASKS[part].metric == "wer":
            out["wer"] = wer(refs, hyps, normalize=False)["value"]
        else:
            out["accuracy"] = 100.0 * sum(h == r for h, r in zip(hyps, refs, strict=True)) / len(refs)
    return out


def aggregate(scores: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, std (population), min and max of each metric and of the format share over conditions."""
    keys = list(scores[0]["metrics"]) + ["format"]
    out: dict[str, Any] = {}
    for key in keys:
        values = [s["metrics"][key] if key != "format" else s["format"] for s in scores]
        out[key] = {
            "mean": statistics.fmean(values),
            "std": statistics.pstdev(values),
            "min": min(values),
            "max": max(values),
            "n": len(values),
        }
    return out


def decode_condition(
    model: SALMONN,
    clips: CachedClips,
    embeds: Any,
    cond: Condition,
    task: str,
    generate_cfg: Any,
    batch_size: int,
    out_dir: Path,
    scorer: Callable[[list[dict[str, Any]], str], dict[str, Any]] = score_records,
) -> dict[str, Any]:
    """Decodes the test clips under one condition, writes ``<task>/<condition>.json``, returns its score
    (``scorer(records, task)``, the synthetic world's :func:`score_records` by default)."""
    with decoding_mask(model.decoder, cond.head_weights, "hooks"):
        records = decode_dataset(
            model,
            clips,
            generate_cfg=generate_cfg,
            instruction=cond.instruction,
            batch_size=batch_size,
            progress=False,
            speech_embeds=embeds,
        )
    atomic_write_json(
        {
            "prompt": model.prompt_for(cond.instruction),
            "prediction": [{k: r[k] for k in ("id", "ground_truth", "output")} for r in records],
        },
        out_dir / task / f"{cond.name}.json",
    )
    return {
        **scorer(records, task),
        "instruction": cond.instruction,
        "examples": [r["output"] for r in records[:3]],
    }


def _task_entry(
    scores: Mapping[str, dict[str, Any]],
    clips: CachedClips,
    mask: torch.Tensor | None,
    n_layers: int,
    n_heads: int,
) -> dict[str, Any]:
    """One task's results: per-instruction and summary scores, no instruction, mask and random masks."""
    instr = [s for c, s in scores.items() if c.startswith("instruction_")]
    randoms = [s for c, s in scores.items() if c.startswith("random_")]
    entry: dict[str, Any] = {
        "reference": clips.items[0]["text"],
        "metrics": list(instr[0]["metrics"]),
        "instruction": {"per_instruction": instr, "summary": aggregate(instr)},
        "none": scores["none"],
    }
    if mask is not None:
        stats = mask_stats(mask, n_layers, n_heads)
        entry["mask"] = scores["mask"]
        entry["random"] = {"per_seed": randoms, "summary": aggregate(randoms)}
        entry["mask_stats"] = {"active_heads": stats.active_heads, "total_heads": n_layers * n_heads}
    return entry


def run_sweep(
    model: SALMONN,
    world: WorldInfo,
    tasks: Sequence[str],
    masks: Mapping[str, torch.Tensor],
    generate_cfg: Any,
    out_dir: Path,
    n_instructions: int = 10,
    random_seeds: Sequence[int] = (0,),
    batch_size: int = 100,
    progress: bool = True,
) -> dict[str, Any]:
    """Decodes and scores every condition of every task on the world's test split.

    Args:
        model: the frozen base SALMONN (eval mode).
        world: the built world.
        tasks: tasks to evaluate.
        masks: task -> trained mask logits.
        generate_cfg: generation settings (the base bundle's decode config ``generate``).
        out_dir: where prediction files go (``<task>/<condition>.json``).
        n_instructions: held-out paraphrases per task.
        random_seeds: seeds of the random masks.
        batch_size: decoding batch size.
        progress: show a progress bar over the decodes.

    Returns:
        ``{"n_clips", "tasks": {task: {"metrics": [...], "instruction": {"per_instruction": [...],
        "summary": {...}}, "none": score, "mask": score, "random": {"per_seed": [...], "summary": {...}},
        "mask_stats": {...}}}}`` (see :func:`score_records` for a score).
    """
    whisper_path = model.cfg.whisper_path
    base_clips = CachedClips.load(world.manifests["test"][tasks[0]], whisper_path)
    embeds = encode_dataset(model, base_clips, batch_size)  # the evaluation sweep's encoder pass
    plans = []
    for task in tasks:
        clips = base_clips if task == tasks[0] else base_clips.relabel(world.manifests["test"][task])
        conditions = conditions_for(
            task, masks.get(task), model.n_layers, model.n_heads, n_instructions, random_seeds
        )
        plans.append((task, clips, conditions))
    total = sum(len(c) for _, _, c in plans)
    results: dict[str, Any] = {"n_clips": len(base_clips), "tasks": {}}
    bar = tqdm(total=total, desc="evaluation", disable=not progress, dynamic_ncols=True)
    for task, clips, conditions in plans:
        scores: dict[str, dict[str, Any]] = {}
        for cond in conditions:
            bar.set_postfix_str(f"{task}: {cond.name}")
            scores[cond.name] = decode_condition(
                model, clips, embeds, cond, task, generate_cfg, batch_size, out_dir
            )
            bar.update(1)
        entry = _task_entry(scores, clips, masks.get(task), model.n_layers, model.n_heads)
        results["tasks"][task] = entry
    bar.close()
    return results
