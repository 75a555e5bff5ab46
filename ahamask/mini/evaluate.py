"""Scoring and decoding of ``make demo-real``: the conditions of ``make demo`` on the espeak-ng world.

Conditions and decoding are the demo's own (:func:`ahamask.demo.sweep.conditions_for` and
:func:`~ahamask.demo.sweep.decode_condition`: held-out paraphrases, no instruction, the task's mask, random
masks with as many active heads); only the task table differs, so only scoring is here:

* lenient (the paper's way): the project's scorers, ``asr`` (WER after Whisper's English normalisation),
  ``gender`` (male/female and their synonyms found anywhere in the answer) and ``mini_rate`` (fast/slow);
* strict: an answer counts only in the task's exact format (:func:`ahamask.mini.world.parse_answer`): a
  lower-case transcript, or one label word; anything else is an empty transcript or a wrong label;
* format: the share of answers in the task's format, and which task's format each answer is in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..demo.sweep import CachedClips, decode_condition
from ..evaluation.metrics import register_task, wer
from ..evaluation.scoring import score_predictions
from ..evaluation.sweep import encode_dataset
from .world import LABELS, MINI_TASKS, parse_answer

__all__ = ["detect_task", "lenient_task", "mini_score", "strict_metrics", "decode_job"]


def lenient_task(task: str) -> str:
    """The project scorer's task for a mini task (``rate`` is registered as ``mini_rate`` on first use)."""
    if task == "rate":
        register_task(
            "mini_rate", "accuracy", labels=[label.lower() for label in LABELS["rate"]], synonyms={}
        )
        return "mini_rate"
    return task


def detect_task(text: str) -> str | None:
    """Which task's exact format an answer is in (label tasks first: ``Male`` is not a transcript)."""
    for task in ("gender", "rate", "asr"):
        if parse_answer(task, text) is not None:
            return task
    return None


def strict_metrics(records: Sequence[dict[str, Any]], task: str) -> dict[str, float]:
    """WER (asr) or accuracy (labels) when only answers in the task's exact format count."""
    hyps = [parse_answer(task, r["output"]) or "" for r in records]
    refs = [r["ground_truth"] for r in records]
    if task == "asr":
        return {"wer": wer(refs, hyps, normalize=False)["value"]}
    return {"accuracy": 100.0 * sum(h == r for h, r in zip(hyps, refs, strict=True)) / len(refs)}


def mini_score(records: list[dict[str, Any]], task: str) -> dict[str, Any]:
    """One condition's score, in the shape of :func:`ahamask.demo.sweep.score_records`."""
    report = score_predictions(records, [lenient_task(task)] * len(records), source=f"demo-real {task}")
    (entry,) = report["tasks"].values()
    n = len(records)
    performed = Counter(detect_task(r["output"]) or "other" for r in records)
    return {
        "metrics": {entry["metric"]: entry["value"]},
        "strict": strict_metrics(records, task),
        "format": 100.0 * sum(parse_answer(task, r["output"]) is not None for r in records) / n,
        "performed": {k: 100.0 * v / n for k, v in sorted(performed.items())},
    }


def decode_job(
    model: Any,
    manifests: dict[str, Path],
    plans: Sequence[tuple[str, Any]],
    out_dir: Path,
    generate_cfg: dict[str, Any],
    batch_size: int = 20,
) -> dict[str, dict[str, Any]]:
    """Decodes a list of ``(task, condition)`` plans on the test clips (encoded once) and scores each.

    Args:
        model: the frozen mini SALMONN.
        manifests: task -> test manifest (the same clips in the same order for every task).
        plans: what to decode; a condition's ``name`` should say which mask seed it belongs to.
        out_dir: prediction files go to ``out_dir/<task>/<condition>.json``.
        generate_cfg: the ``generate`` keys.
        batch_size: decoding batch size.

    Returns:
        ``{task: {condition name: score}}``.
    """
    first = MINI_TASKS[0]
    base = CachedClips.load(manifests[first], model.cfg.whisper_path)
    embeds = encode_dataset(model, base, batch_size)
    clips = {t: base if t == first else base.relabel(manifests[t]) for t in {t for t, _ in plans}}
    out: dict[str, dict[str, Any]] = {}
    for task, cond in plans:
        score = decode_condition(
            model, clips[task], embeds, cond, task, generate_cfg, batch_size, out_dir, scorer=mini_score
        )
        out.setdefault(task, {})[cond.name] = score
    return out
