"""Score a prediction file (the official evaluate.py format) task by task.

A prediction file is ``{"prompt": ..., "prediction": [{"id", "ground_truth", "output"}, ...]}``.
Each entry's task comes from ``--task``, else from the manifest entry whose ``path`` equals the
entry's ``id`` (its ``task`` field, default ``"asr"`` as in the official dataset), else from a
``task`` field in the entry itself. Entries are grouped by canonical task name (aliases such as
``gender_recognition`` or ``gender_librispeech`` join ``gender``) and each group is scored with the
metric registered in :data:`ahamask.evaluation.metrics.METRICS`.

Composite tasks are written ``"asr|gender"`` (answer parts separated by ``|``) or
``"json:ASR=asr,GR=gender"`` (a JSON object whose key ``ASR`` holds the ``asr`` part); the released
masks' names map onto these forms. The answer and the ground truth are split the same way; the
instruction-following rate (share of answers in the required format) is the headline number and
each part is scored with its own metric over *all* entries, an answer out of format giving empty
parts (all deletions for WER, unparsed for accuracy), so format failures cost part metrics too.
Tasks without a metric are counted under ``unscored``, never dropped.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ahamask.evaluation.answers import parse_json_answer, split_composite
from ahamask.evaluation.metrics import METRICS, LabelError, TaskMetric, resolve_task

logger = logging.getLogger(__name__)

# Headline names for the console table.
_METRIC_TITLES = {
    "wer": "WER %",
    "accuracy": "accuracy %",
    "bleu": "BLEU",
    "rougeL": "ROUGE-L %",
    "instruction_following_rate": "IFR %",
}


class UnknownTaskError(ValueError):
    """A task name with no registered metric (or a composite with such a part)."""


@dataclass(frozen=True)
class TaskPlan:
    """How one task's answers are read: whole, split on a separator, or as a JSON object.

    Attributes:
        name: Canonical name, the key of the task in the report.
        fmt: ``"single"``, ``"sep"`` or ``"json"``.
        parts: Canonical single-task names of the parts (empty for ``"single"``).
        keys: JSON key of each part (``"json"`` only).
        sep: Separator between parts (``"sep"`` only).
    """

    name: str
    fmt: str = "single"
    parts: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    sep: str = "|"


def _single(name: str) -> str:
    task = resolve_task(name)
    if not task or "|" in task or task.startswith("json:"):
        raise UnknownTaskError(f"part {name!r} must be a single task")
    return task


def plan_task(name: str) -> TaskPlan:
    """Work out how answers of a task are split into parts.

    Args:
        name: A task name or alias (``"gender_recognition"``), a separator spec (``"asr|gender"``)
            or a JSON spec (``"json:ASR=asr,GR=gender"``; ``"json:asr,gender"`` uses the task names
            as keys).

    Returns:
        The :class:`TaskPlan`. Whether each part has a metric is checked when scoring.

    Raises:
        UnknownTaskError: For an empty name or a malformed composite spec.
    """
    spec = resolve_task(name)
    if not spec:
        raise UnknownTaskError("empty task name")
    if spec.lower().startswith("json:"):
        keys, parts = [], []
        for item in filter(None, (s.strip() for s in spec[5:].split(","))):
            key, has_task, task = item.partition("=")
            keys.append(key.strip())
            parts.append(_single(task if has_task else key))
        if len(parts) < 2 or not all(keys):
            raise UnknownTaskError(f"JSON task {name!r} must name at least two 'KEY=task' parts")
        return TaskPlan(name=spec, fmt="json", parts=tuple(parts), keys=tuple(keys))
    if "|" in spec:
        parts = tuple(_single(p) for p in spec.split("|"))
        return TaskPlan(name="|".join(parts), fmt="sep", parts=parts)
    return TaskPlan(name=spec)


def _metric_for(task: str, labels: Sequence[str] | None) -> TaskMetric:
    """The metric of a single task; ``labels`` turns a task without one into a classification task."""
    metric = METRICS.get(task)
    if metric is None and labels is not None:
        return TaskMetric(task=task, kind="accuracy", options={"labels": list(labels), "synonyms": None})
    if metric is None:
        raise UnknownTaskError(f"no metric registered for task {task!r} (see register_task)")
    return metric


def _run_metric(
    metric: TaskMetric, refs: list[Any], hyps: list[str], rows: list[int], ids: list[Any], where: str
) -> dict[str, Any]:
    """Run a metric, naming the prediction entry when a ground truth is at fault."""
    try:
        result = metric(refs, hyps)
    except LabelError as err:
        row = rows[err.index]
        raise ValueError(f"{where}: entry {row} (id {ids[row]!r}), task {metric.task!r}: {err}") from None
    return {
        "metric": result["metric"],
        "value": result["value"],
        "n": result["n"],
        "details": {k: v for k, v in result.items() if k not in ("metric", "value", "n")},
    }


def _split(text: Any, plan: TaskPlan, key_spellings: dict[str, tuple[str, ...]]) -> list[str] | None:
    if not isinstance(text, str):
        return None
    if plan.fmt == "sep":
        return split_composite(text, len(plan.parts), plan.sep)
    parsed = parse_json_answer(text, key_spellings)
    return None if parsed is None else [parsed[k] for k in plan.keys]


def _score_composite(
    plan: TaskPlan, rows: list[int], predictions: list[dict], labels: Sequence[str] | None, where: str
) -> dict[str, Any]:
    metrics = [_metric_for(p, labels) for p in plan.parts]
    # A JSON key is also accepted under its part's task name ({"asr": ..., "gender": ...}).
    spellings = {k: (k, p) for k, p in zip(plan.keys, plan.parts, strict=True)} if plan.fmt == "json" else {}
    ids = [entry.get("id") for entry in predictions]
    part_refs: list[list[str]] = [[] for _ in plan.parts]
    part_hyps: list[list[str]] = [[] for _ in plan.parts]
    followed = 0
    for row in rows:
        ref_parts = _split(predictions[row]["ground_truth"], plan, spellings)
        if ref_parts is None:
            raise ValueError(
                f"{where}: entry {row} (id {ids[row]!r}): ground truth "
                f"{predictions[row]['ground_truth']!r} is not in the format of task {plan.name!r}"
            )
        hyp_parts = _split(predictions[row]["output"], plan, spellings)
        followed += hyp_parts is not None
        for k in range(len(plan.parts)):
            part_refs[k].append(ref_parts[k])
            part_hyps[k].append(hyp_parts[k] if hyp_parts is not None else "")
    parts: dict[str, Any] = {}
    for k, metric in enumerate(metrics):
        key = plan.parts[k] if plan.parts.count(plan.parts[k]) == 1 else f"{plan.parts[k]}#{k + 1}"
        parts[key] = _run_metric(metric, part_refs[k], part_hyps[k], rows, ids, where)
    fmt = f"separator {plan.sep!r}" if plan.fmt == "sep" else f"JSON keys {list(plan.keys)}"
    return {
        "metric": "instruction_following_rate",
        "value": 100.0 * followed / len(rows),
        "n": len(rows),
        "details": {"followed": followed, "format": fmt},
        "parts": parts,
    }


def score_predictions(
    predictions: list[dict],
    tasks: list[str],
    *,
    labels: Sequence[str] | None = None,
    source: str = "predictions",
) -> dict[str, Any]:
    """Score prediction entries task by task.

    Args:
        predictions: Entries ``{"id", "ground_truth", "output"}`` as written by evaluate.py.
        tasks: The task of each entry (names, aliases or composite specs), same length.
        labels: A label set that makes tasks without a registered metric (e.g. ``"count"``)
            classification tasks. Registered tasks keep their own labels, so a file mixing tasks
            can be scored in one go; use :func:`ahamask.evaluation.metrics.register_task` to change
            a registered task's labels.
        source: Name of where the entries came from, used in error messages.

    Returns:
        ``{"n_entries", "tasks": {task: {"metric", "value", "n", "details", "names"[, "parts"]}},
        "unscored": {task name: count}}``. Values are percent (WER, accuracy, IFR, ROUGE-L) or BLEU
        points; ``names`` lists the task names seen for the group.

    Raises:
        ValueError: On mismatched lengths, an entry without a string ``output`` or without a
            ``ground_truth``, or a ground truth the task cannot read (entry index and id named).

    Example:
        >>> preds = [{"id": "a.flac", "ground_truth": "Male", "output": "A man."}]
        >>> score_predictions(preds, ["gender_recognition"])["tasks"]["gender"]["value"]
        100.0
    """
    _check_entries(predictions, tasks, source)
    groups, unscored = _group_by_plan(tasks, source)
    ids = [entry.get("id") for entry in predictions]
    report: dict[str, Any] = {"n_entries": len(predictions), "tasks": {}, "unscored": unscored}
    for task_name, (plan, rows, names) in sorted(groups.items()):
        try:
            entry = _score_group(plan, rows, predictions, ids, labels, source)
        except UnknownTaskError as err:
            logger.warning("%s: task %r not scored: %s", source, task_name, err)
            for row in rows:
                unscored[tasks[row]] = unscored.get(tasks[row], 0) + 1
            continue
        entry["names"] = sorted(names)
        report["tasks"][task_name] = entry
    report["unscored"] = dict(sorted(unscored.items()))
    return report


def _check_entries(predictions: list[dict], tasks: list[str], source: str) -> None:
    """Reject malformed input before any scoring, naming the entry, so a bad file fails with its line
    instead of deep inside a metric."""
    if len(predictions) != len(tasks):
        raise ValueError(f"{source}: {len(predictions)} predictions but {len(tasks)} task names")
    for i, entry in enumerate(predictions):
        if not isinstance(entry, dict):
            raise ValueError(f"{source}: entry {i} is {type(entry).__name__}, expected an object")
        if not isinstance(entry.get("output"), str):
            raise ValueError(f"{source}: entry {i} (id {entry.get('id')!r}) has no string 'output'")
        if entry.get("ground_truth") is None:
            raise ValueError(f"{source}: entry {i} (id {entry.get('id')!r}) has no 'ground_truth'")
        if not isinstance(tasks[i], str):
            raise ValueError(f"{source}: task of entry {i} is {tasks[i]!r}, expected a string")


def _group_by_plan(
    tasks: list[str], source: str
) -> tuple[dict[str, tuple[TaskPlan, list[int], set[str]]], dict[str, int]]:
    """Rows grouped by task plan (aliases of one task score together) with the names seen per group;
    names that cannot be planned are counted in the second dict ("unscored") instead of failing the file."""
    groups: dict[str, tuple[TaskPlan, list[int], set[str]]] = {}
    unscored: dict[str, int] = {}
    for row, name in enumerate(tasks):
        try:
            plan = plan_task(name)
        except UnknownTaskError as err:
            logger.warning("%s: task %r not scored: %s", source, name, err)
            unscored[name] = unscored.get(name, 0) + 1
            continue
        group = groups.setdefault(plan.name, (plan, [], set()))
        group[1].append(row)
        group[2].add(name)
    return groups, unscored


def _score_group(
    plan: TaskPlan,
    rows: list[int],
    predictions: list[dict],
    ids: list[Any],
    labels: Sequence[str] | None,
    source: str,
) -> dict[str, Any]:
    """One task group's score entry: its metric over the rows, or per part for a composite task."""
    if plan.fmt == "single":
        metric = _metric_for(plan.name, labels)
        refs = [predictions[r]["ground_truth"] for r in rows]
        hyps = [predictions[r]["output"] for r in rows]
        return _run_metric(metric, refs, hyps, rows, ids, source)
    return _score_composite(plan, rows, predictions, labels, source)


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no such file: {path}")
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} {path}: not valid JSON ({err})") from None


def _manifest_index(manifest_path: Path) -> dict[str, list[tuple[Any, str]]]:
    """Map each manifest ``path`` (as written) to its (text, task) pairs; task defaults to ``"asr"``."""
    # Read here rather than through ahamask.data.manifest: that package imports torch (~3 s), which a
    # scorer of JSON files does not need.
    data = _read_json(manifest_path, "manifest")
    annotation = data.get("annotation") if isinstance(data, dict) else None
    if not isinstance(annotation, list):
        raise ValueError(f"manifest {manifest_path}: expected an object with an 'annotation' list")
    index: dict[str, list[tuple[Any, str]]] = {}
    for i, ann in enumerate(annotation):
        if not isinstance(ann, dict) or not isinstance(ann.get("path"), str):
            raise ValueError(f"manifest {manifest_path}: entry {i} has no string 'path'")
        task = ann.get("task", "asr")
        if not isinstance(task, str):
            raise ValueError(f"manifest {manifest_path}: entry {i} has a non-string 'task' {task!r}")
        index.setdefault(ann["path"], []).append((ann.get("text"), task))
    return index


def _task_from_manifest(index: dict[str, list[tuple[Any, str]]], entry: dict, row: int, where: str) -> str:
    entry_id = entry.get("id")
    candidates = index.get(entry_id) if isinstance(entry_id, str) else None
    if not candidates:
        raise ValueError(f"{where}: entry {row}: id {entry.get('id')!r} is not a 'path' of the manifest")
    tasks = {task for _, task in candidates}
    if len(tasks) > 1:
        # The same audio may serve several tasks (ASR and gender of one utterance): the ground truth,
        # which evaluate.py copies from the manifest text, tells them apart.
        tasks = {task for text, task in candidates if text == entry.get("ground_truth")}
    if len(tasks) != 1:
        raise ValueError(
            f"{where}: entry {row}: id {entry.get('id')!r} has several manifest tasks and its ground truth "
            "does not single one out"
        )
    return tasks.pop()


def score_file(
    pred_path: str | os.PathLike,
    manifest_path: str | os.PathLike | None = None,
    task: str | None = None,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Score a prediction file written by evaluate.py.

    Args:
        pred_path: The prediction JSON.
        manifest_path: The test manifest (``{"annotation": [{"path", "text", "task", ...}]}``) that
            gives each entry's task through its ``path`` (= the entry's ``id``).
        task: One task for every entry; overrides the manifest.
        labels: Label set for tasks without a registered metric (see :func:`score_predictions`).

    Returns:
        The report of :func:`score_predictions` plus ``prediction_file``, ``manifest`` and ``prompt``.

    Raises:
        FileNotFoundError: If a file is missing.
        ValueError: If a file is malformed, an entry's task cannot be found, or an entry is bad (the
            file and entry index are named).

    Example:
        >>> report = score_file("tmp.json", "data/test/demo.json")  # doctest: +SKIP
    """
    pred_path = Path(pred_path)
    data = _read_json(pred_path, "prediction file")
    predictions = data.get("prediction") if isinstance(data, dict) else None
    if not isinstance(predictions, list):
        raise ValueError(f"prediction file {pred_path}: expected an object with a 'prediction' list")
    where = str(pred_path)
    if task is not None:
        tasks = [task] * len(predictions)
    elif manifest_path is not None:
        index = _manifest_index(Path(manifest_path))
        tasks = [
            _task_from_manifest(index, e if isinstance(e, dict) else {}, i, where)
            for i, e in enumerate(predictions)
        ]
    else:
        tasks = []
        for i, entry in enumerate(predictions):
            if not isinstance(entry, dict) or not isinstance(entry.get("task"), str):
                raise ValueError(f"{where}: entry {i} has no 'task': pass a manifest or a task")
            tasks.append(entry["task"])
    report = score_predictions(predictions, tasks, labels=labels, source=where)
    return {
        "prediction_file": str(pred_path),
        "manifest": None if manifest_path is None else str(manifest_path),
        "prompt": data.get("prompt"),
        **report,
    }


def _notes(entry: dict[str, Any]) -> str:
    d = entry.get("details", {})
    metric = entry["metric"]
    if metric == "wer":
        return (
            f"S={d['substitutions']} D={d['deletions']} I={d['insertions']} H={d['hits']} "
            f"ref_words={d['ref_words']}"
        )
    if metric == "accuracy":
        rate = d.get("unparsed_rate")
        rate_text = "n/a" if rate is None else f"{rate:.1f}%"
        return f"unparsed {rate_text} ({d['unparsed']}, ambiguous {d['ambiguous']})"
    if metric == "bleu" and "bp" in d:
        return f"tokenize={d['tokenize']} BP={d['bp']:.3f}"
    if metric == "rougeL":
        cider = "n/a" if d.get("cider_d") is None else f"{d['cider_d']:.3f}"
        bleu4 = "n/a" if d.get("bleu4") is None else f"{d['bleu4']:.2f}"
        return f"BLEU-4={bleu4} CIDEr-D={cider}"
    if metric == "instruction_following_rate":
        return f"followed {d['followed']}/{entry['n']} ({d['format']})"
    return ""


def format_table(report: dict[str, Any]) -> str:
    """Render a report as a plain-text table, one row per task and per composite part.

    Args:
        report: The dict from :func:`score_predictions` or :func:`score_file`.

    Returns:
        The table, ending with the unscored task names and counts when there are any.
    """
    rows = [("task", "n", "metric", "value", "notes")]
    for name, entry in report.get("tasks", {}).items():
        entries = [(name, entry)] + [(f"  {name}/{p}", e) for p, e in entry.get("parts", {}).items()]
        for label, e in entries:
            value = "n/a" if e["value"] is None else f"{e['value']:.2f}"
            rows.append((label, str(e["n"]), _METRIC_TITLES.get(e["metric"], e["metric"]), value, _notes(e)))
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    lines = [
        "  ".join(
            [r[0].ljust(widths[0]), r[1].rjust(widths[1]), r[2].ljust(widths[2]), r[3].rjust(widths[3]), r[4]]
        ).rstrip()
        for r in rows
    ]
    unscored = report.get("unscored", {})
    if unscored:
        lines.append("unscored (no metric): " + ", ".join(f"{t} ({c})" for t, c in unscored.items()))
    return "\n".join(lines)


def save_report(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a report as JSON atomically (temporary file in the same folder, then ``os.replace``).

    Args:
        report: The report dict.
        path: Destination; missing parent folders are created.

    Returns:
        The destination path.
    """
    # Not ahamask.utils.io.atomic_write_json: that module imports torch at load time (see _manifest_index).
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        # Never leave a half-written temporary file behind, whatever interrupted the write.
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


__all__ = [
    "TaskPlan",
    "UnknownTaskError",
    "format_table",
    "plan_task",
    "save_report",
    "score_file",
    "score_predictions",
]
