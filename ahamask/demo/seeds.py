"""The demo over several seeds: each seed is a whole experiment; the report is their distribution.

One base model decides, by what it happens to do with an empty prompt, which tasks its masks can reach; a
finding that holds on one seed is therefore not a finding. Each seed here builds its own world, base model,
masks and random masks (``<out>/<default>/seed_<s>/``, a complete single-seed demo folder with its own report), and
this module writes the top-level ``report.json`` / ``report.md``: every cell as mean ± std over seeds with
the per-seed values kept, strict and lenient scoring side by side, verdicts that say on how many seeds they
hold, and the reachability table (per task: on how many seeds the mask reached instruction level, partly,
or not at all, for each base-model default that was run).
"""

from __future__ import annotations

import logging
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..synth import TASKS
from ..utils.environment import environment_record
from ..utils.io import atomic_write_json, atomic_write_text
from .report import REACH_MARGIN, SWITCH_MARGIN, _headline, _markdown, text_table
from .settings import DemoSettings

logger = logging.getLogger(__name__)

__all__ = [
    "SeedsResult",
    "seed_settings",
    "run_one",
    "run_seeds",
    "render_seeds_text",
    "summarize_seeds",
    "CONDITIONS",
]

CONDITIONS = ("instruction", "none", "mask", "random")
_COLUMN = {
    "instruction": "held-out instructions",
    "none": "no instruction",
    "mask": "AHAMask",
    "random": "random mask",
}
_TITLES = {"wer": "WER % ↓", "accuracy": "accuracy % ↑", "ifr": "format-following % ↑"}


@dataclass
class SeedsResult:
    """What :func:`run_seeds` returns.

    Attributes:
        out_dir: the top-level demo folder.
        report: the top-level report.json content.
        table: the strict results table as plain text.
        stage_seconds: "<default>/seed_<s>" -> seconds spent per stage in this run.
    """

    out_dir: Path
    report: dict[str, Any]
    table: str
    stage_seconds: dict[str, dict[str, float]]


def seed_settings(settings: DemoSettings, seed: int) -> DemoSettings:
    """The settings of one seed: world, base-model weights and batches, and random masks all follow it."""
    return replace(
        settings,
        seed=seed,
        base=replace(settings.base, seed=seed),
        evaluation=replace(settings.evaluation, random_seeds=(seed,)),
    )


def _cell(entry: Mapping[str, Any], condition: str, kind: str, metric: str) -> float:
    """One seed's value of a task's condition: ``kind`` is ``strict``, ``lenient`` or ``format``."""

    def value(score: Mapping[str, Any]) -> float:
        if kind == "format":
            return score["format"]
        return score["strict" if kind == "strict" else "metrics"][metric]

    if condition == "instruction":
        return statistics.fmean(value(s) for s in entry["instruction"]["per_instruction"])
    if condition == "random":
        return statistics.fmean(value(s) for s in entry["random"]["per_seed"])
    return value(entry[condition])


def _spread(values: Sequence[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
        "per_seed": list(values),
    }


def summarize_seeds(reports: Mapping[int, Mapping[str, Any]], default_task: str) -> dict[str, Any]:
    """Aggregates single-seed reports into mean ± std cells, seed-counted verdicts and reachability.

    Args:
        reports: seed -> that seed's report.json content.
        default_task: the base model's declared no-instruction task (the preset's).

    Returns:
        ``{"seeds", "default_task", "cells": {task: {kind: {condition: {"mean", "std", "per_seed"}}}},
        "active_heads": {task: spread}, "verdicts": {task: {"counts", "sentence"}}}``; ``kind`` is
        ``strict``, ``lenient`` or ``format``, on the task's headline metric.
    """
    seeds = sorted(reports)
    tasks = list(reports[seeds[0]]["results"]["tasks"])
    cells: dict[str, Any] = {}
    heads: dict[str, Any] = {}
    found: dict[str, Any] = {}
    for task in tasks:
        metric = _headline(task)
        entries = [reports[s]["results"]["tasks"][task] for s in seeds]
        cells[task] = {
            "metric": metric,
            **{
                kind: {c: _spread([_cell(e, c, kind, metric) for e in entries]) for c in CONDITIONS}
                for kind in ("strict", "lenient", "format")
            },
        }
        heads[task] = _spread([float(e["mask_stats"]["active_heads"]) for e in entries])
        heads[task]["total"] = entries[0]["mask_stats"]["total_heads"]
        categories = [reports[s]["verdicts"][task]["category"] for s in seeds]
        counts = Counter(categories)
        beats_random = sum(reports[s]["verdicts"][task]["beats_random"] for s in seeds)
        parts = [f"{name} on {counts[name]}/{len(seeds)} seeds" for name in _ORDER if counts[name]]
        found[task] = {
            "categories": categories,
            "counts": dict(counts),
            "beats_random": beats_random,
            "sentence": f"{task}: "
            + ", ".join(parts)
            + f"; above the random mask on {beats_random}/{len(seeds)}.",
        }
    return {
        "seeds": seeds,
        "default_task": default_task,
        "cells": cells,
        "active_heads": heads,
        "verdicts": found,
    }


_ORDER = ("instruction level", "partly", "not reached", "default")


def _fmt(spread: Mapping[str, Any]) -> str:
    return f"{spread['mean']:.1f} ± {spread['std']:.1f}"


def seeds_table(summary: Mapping[str, Any], kind: str) -> list[list[str]]:
    """Rows (header first) of one kind of figure, mean ± std over seeds."""
    rows = [["task", "metric", *(_COLUMN[c] for c in CONDITIONS), "active heads"]]
    for task, cell in summary["cells"].items():
        heads = summary["active_heads"][task]
        metric = "share in format %" if kind == "format" else _TITLES[cell["metric"]]
        rows.append(
            [
                TASKS[task].display,
                metric,
                *(_fmt(cell[kind][c]) for c in CONDITIONS),
                f"{heads['mean']:.0f} ± {heads['std']:.0f} / {heads['total']}",
            ]
        )
    return rows


def reachability_rows(summaries: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    """Per task and base-model default: how many seeds reached instruction level / partly / not at all."""
    defaults = list(summaries)
    rows = [["task", *(f"default: {d}" for d in defaults)]]
    tasks = list(next(iter(summaries.values()))["cells"])
    for task in tasks:
        cells = []
        for default in defaults:
            verdict = summaries[default]["verdicts"].get(task)
            if verdict is None:
                cells.append("-")
                continue
            n = len(summaries[default]["seeds"])
            cells.append(
                ", ".join(
                    f"{k} {v}/{n}"
                    for k, v in sorted(verdict["counts"].items(), key=lambda kv: _ORDER.index(kv[0]))
                )
            )
        rows.append([TASKS[task].display, *cells])
    return rows


def render_seeds_markdown(report: Mapping[str, Any]) -> str:
    """The top-level report.md of a multi-seed demo."""
    summaries = report["presets"]
    env = report["environment"]
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
    lines = ["# AHAMask demo: results over seeds", ""]
    lines.append(
        f"Each seed builds its own world, base model, masks and random masks; cells are mean ± std over seeds "
        f"(population std; per-seed values in report.json). Ran with {packages}; Python {env['python']}; "
        f"{env['torch_threads']} torch thread(s) on {env['cpu_cores']} cores; {env['precision']}."
    )
    lines.append("")
    lines.append(
        "Strict scoring counts only answers in the task's exact output format (a default output that happens "
        "to contain a label is wrong); lenient scoring is the paper-style parser that finds a label anywhere. "
        f"Verdicts use the strict figures: *instruction level* = within {REACH_MARGIN:.0f} points of the "
        f"held-out instructions and {SWITCH_MARGIN:.0f}+ points above no instruction; *partly* = only the "
        "latter; *default* = the model already answers in this format with no instruction."
    )
    for default, summary in summaries.items():
        lines += [
            "",
            f"## Base-model default `{default}` (seeds {', '.join(map(str, summary['seeds']))})",
            "",
        ]
        lines += ["### Strict (exact format)", "", _markdown(seeds_table(summary, "strict")), ""]
        lines += ["### Lenient (paper-style parser)", "", _markdown(seeds_table(summary, "lenient")), ""]
        lines += [
            "### Share of answers in the task's exact format",
            "",
            _markdown(seeds_table(summary, "format")),
            "",
        ]
        lines += ["### Verdicts", ""]
        lines += [f"- {v['sentence']}" for v in summary["verdicts"].values()]
    lines += ["", "## Reachability", "", _markdown(reachability_rows(summaries)), ""]
    return "\n".join(lines) + "\n"


def render_seeds_text(report: Mapping[str, Any]) -> str:
    """What ``make demo`` prints: per base-model default the strict and lenient tables and the verdicts,
    then the reachability table (the same figures as report.md, as plain text)."""
    summaries = report["presets"]
    lines: list[str] = []
    for default, summary in summaries.items():
        seeds = ", ".join(map(str, summary["seeds"]))
        lines += [f"base-model default {default!r}, seeds {seeds}: strict scoring (exact format)", ""]
        lines += [text_table(seeds_table(summary, "strict")), ""]
        lines += ["lenient scoring (paper-style parser)", "", text_table(seeds_table(summary, "lenient")), ""]
        lines += [v["sentence"] for v in summary["verdicts"].values()]
        lines.append("")
    lines += ["Reachability (seeds per verdict)", "", text_table(reachability_rows(summaries))]
    return "\n".join(lines)


def write_seeds_report(
    out_dir: Path, summaries: Mapping[str, Mapping[str, Any]], settings: DemoSettings
) -> dict[str, Any]:
    """Writes the top-level report.json (no wall-clock times: byte-identical across runs) and report.md."""
    report = {
        "presets": dict(summaries),
        "settings": settings.to_json(),
        "environment": environment_record("bf16 autocast" if settings.base.bf16 == "on" else "float32"),
        "thresholds": {"reach_margin_points": REACH_MARGIN, "switch_margin_points": SWITCH_MARGIN},
    }
    atomic_write_json(report, out_dir / "report.json")
    atomic_write_text(render_seeds_markdown(report), out_dir / "report.md")
    return report


def _worker_setup(threads: int | None) -> None:
    """In a worker process: ``threads`` torch threads, logging to stderr like the parent."""
    if threads is None:
        return
    import torch

    from ..utils.logging import setup_logging

    torch.set_num_threads(threads)
    setup_logging()


def run_one(folder: Path, settings: DemoSettings, force: bool, progress: bool, threads: int | None) -> tuple:
    """One seed's demo (in this process or a worker): its report and stage times."""
    from .pipeline import run_demo

    _worker_setup(threads)
    result = run_demo(folder, settings, force=force, progress=progress)
    return result.report, result.stage_seconds


def _prepare_job(folder: Path, settings: DemoSettings, force: bool) -> None:
    """Worker job: a seed's world and base model (``force`` first removes the whole seed folder)."""
    import shutil

    from .pipeline import prepare_seed

    _worker_setup(1)
    if force and folder.exists():
        shutil.rmtree(folder)
    prepare_seed(folder, settings)


def _mask_job(folder: Path, settings: DemoSettings, task: str) -> None:
    """Worker job: one task's mask of a prepared seed."""
    from .pipeline import train_seed_mask

    _worker_setup(1)
    train_seed_mask(folder, settings, task)


def _run_scheduled(runs: list[tuple[Any, Path, DemoSettings]], jobs: int, force: bool) -> dict[Any, tuple]:
    """Runs every seed's stages over ``jobs`` single-threaded processes, as finely as they can be split.

    A seed is a chain (world + base model, then its masks, then evaluation and report), and its masks are
    independent of each other. Scheduling those pieces instead of whole seeds keeps every core busy: three
    seeds on two cores take about 1.5 seeds' time instead of 2. The results are those of the sequential run
    (each piece owns its generators; only the order in time changes).

    Args:
        runs: (key, seed folder, settings) per seed run.
        jobs: worker processes.
        force: redo everything (each seed folder is removed before its base model is trained).

    Returns:
        key -> (report, stage seconds) of each seed run.
    """
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    info = {key: (folder, one) for key, folder, one in runs}
    results: dict[Any, tuple] = {}
    masks_left: dict[Any, int] = {}
    context = multiprocessing.get_context("spawn")  # no forked torch state in the workers
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        pending = {
            pool.submit(_prepare_job, folder, one, force): ("prepare", key) for key, folder, one in runs
        }
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    kind, key = pending.pop(future)
                    value = future.result()
                    folder, one = info[key]
                    if kind == "prepare":
                        masks_left[key] = len(one.tasks)
                        for task in one.tasks:
                            pending[pool.submit(_mask_job, folder, one, task)] = ("mask", key)
                    elif kind == "mask":
                        masks_left[key] -= 1
                        if masks_left[key] == 0:
                            pending[pool.submit(run_one, folder, one, False, False, 1)] = ("finish", key)
                    else:
                        results[key] = value
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results


def run_seeds(
    out_dir: str | Path,
    settings: DemoSettings,
    seeds: Sequence[int],
    defaults: Sequence[str] | None = None,
    force: bool = False,
    progress: bool = True,
    jobs: int = 1,
) -> SeedsResult:
    """Runs the demo for every seed (and every base-model default), then writes the aggregated report.

    Args:
        out_dir: top-level folder; seed ``s`` of default ``d`` runs in ``<out>/<d>/seed_<s>/``, so a run
            with another default added reuses the seeds already computed.
        settings: the preset.
        seeds: at least one seed.
        defaults: base-model no-instruction tasks to compare (default: the preset's own).
        force: redo every stage.
        progress: progress bars (only with ``jobs == 1``).
        jobs: single-threaded worker processes; above 1, the seeds' base models, masks and evaluations are
            scheduled over them as separate pieces (results do not depend on it: every piece owns its
            generators; only the wall time changes).

    Raises:
        ValueError: no seeds, repeated seeds, or a default that is not a task of the world.
    """
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: need distinct seeds, got {list(seeds)}")
    if jobs < 1:
        raise ValueError(f"jobs: {jobs} must be >= 1")
    defaults = list(defaults or [settings.base.default_task])
    bad = [d for d in defaults if d not in settings.tasks]
    if bad:
        raise ValueError(f"defaults: {bad} are not tasks of the preset ({list(settings.tasks)})")
    out = Path(out_dir)
    runs = []
    for default in defaults:
        for seed in seeds:
            one = seed_settings(replace(settings, base=replace(settings.base, default_task=default)), seed)
            folder = out / default / f"seed_{seed}"
            runs.append((default, seed, folder, one))
    if jobs == 1:
        done: dict[Any, tuple] = {}
        for default, seed, folder, one in runs:
            logger.info("demo: default %s, seed %d -> %s", default, seed, folder)
            done[default, seed] = run_one(folder, one, force, progress, None)
    else:
        logger.info("demo: %d runs over %d single-threaded processes", len(runs), jobs)
        done = _run_scheduled([((d, s), f, o) for d, s, f, o in runs], jobs, force)
    summaries: dict[str, Any] = {}
    seconds: dict[str, dict[str, float]] = {}
    for default in defaults:
        reports = {seed: done[default, seed][0] for seed in seeds}
        for seed in seeds:
            seconds[f"{default}/seed_{seed}"] = done[default, seed][1]
        summaries[default] = summarize_seeds(reports, default)
    report = write_seeds_report(out, summaries, settings)
    first = summaries[defaults[0]]
    return SeedsResult(out, report, text_table(seeds_table(first, "strict")), seconds)
