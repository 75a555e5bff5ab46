"""The report of ``make demo-real``: tables (strict and lenient, mean +- std), verdicts, mask pictures.

Verdicts use the strict figures and are counted per mask seed: a mask *reaches instruction level* on a seed
when its metric is within 5 points of the held-out paraphrases' mean (or better), and *switches* the task when
it beats no instruction by 10 points or more (for ``asr``, the no-instruction default, only the first counts).
Reaching an instruction level that is itself no better than the random mask says nothing, so a task whose
held-out instructions do not beat the random masks by 10 points gets no "reaches" count (``None``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..demo.report import plot_masks
from ..utils.io import atomic_write_json, atomic_write_text

__all__ = ["mask_verdicts", "render_markdown", "write_demo_real_report"]

_REACH_MARGIN = 5.0
_SWITCH_MARGIN = 10.0
_CONDITIONS = (
    ("instruction", "held-out instructions"),
    ("none", "no instruction"),
    ("mask", "mask"),
    ("random", "random mask"),
)


def _better(metric: str, a: float, b: float, margin: float) -> bool:
    """True when ``a`` beats ``b`` by at least ``margin`` points (lower is better for WER)."""
    return (b - a >= margin) if metric == "wer" else (a - b >= margin)


def mask_verdicts(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per task: on how many mask seeds the mask reaches instruction level and switches the task (strict)."""
    out = {}
    for task, entry in report["tasks"].items():
        metric = entry["mask"]["strict"]["metric"]
        instr = entry["instruction"]["strict"]["mean"]
        none = entry["none"]["strict"]["mean"]
        values = entry["mask"]["strict"]["values"]
        instructions_work = _better(metric, instr, entry["random"]["strict"]["mean"], _SWITCH_MARGIN)
        reaches = (
            sum(not _better(metric, instr, v, _REACH_MARGIN) for v in values) if instructions_work else None
        )
        switches = sum(_better(metric, v, none, _SWITCH_MARGIN) for v in values)
        out[task] = {"metric": metric, "seeds": len(values), "reaches": reaches, "switches": switches}
    return out


def _fmt(cell: Mapping[str, Any]) -> str:
    return f"{cell['mean']:.1f} ± {cell['std']:.1f}" if len(cell["values"]) > 1 else f"{cell['mean']:.1f}"


def _table(report: Mapping[str, Any], kind: str) -> list[str]:
    head = "| task | metric | " + " | ".join(label for _, label in _CONDITIONS) + " |"
    lines = [head, "|" + "---|" * (len(_CONDITIONS) + 2)]
    for task, entry in report["tasks"].items():
        metric = entry["mask"][kind]["metric"]
        cells = [_fmt(entry[cond][kind]) for cond, _ in _CONDITIONS]
        lines.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
    return lines


def _format_table(report: Mapping[str, Any]) -> list[str]:
    lines = ["| task | " + " | ".join(label for _, label in _CONDITIONS) + " |", "|" + "---|" * 5]
    for task, entry in report["tasks"].items():
        lines.append(f"| {task} | " + " | ".join(_fmt(entry[c]["format"]) for c, _ in _CONDITIONS) + " |")
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown (what ``report.md`` holds and ``make demo-real`` prints)."""
    s = report["settings"]
    n_seeds = len(s["mask_seeds"])
    lines = [
        "# make demo-real: AHAMask on the mini SALMONN (Whisper-base + SmolLM2-135M-Instruct + LoRA)",
        "",
        f"{report['n_test']} held-out test clips (espeak-ng sentences never spoken in training); "
        f"{s['n_instructions']} held-out paraphrases per task; masks trained with train.py for "
        f"{s['masks']['steps']} steps of {s['masks']['batch_size']} clips on mask seeds {s['mask_seeds']} "
        f"(mean ± std over the {n_seeds} seeds; instruction cells over the paraphrases).",
        "",
        "## Strict scoring (only answers in the task's exact format count)",
        "",
        *_table(report, "strict"),
        "",
        "## Lenient scoring (the paper's: a label anywhere in the answer; WER after normalisation)",
        "",
        *_table(report, "metrics"),
        "",
        "## Share of answers in the task's format (%)",
        "",
        *_format_table(report),
        "",
        "## Verdicts (strict)",
        "",
    ]
    for task, v in mask_verdicts(report).items():
        reach = (
            f"reaches instruction level on {v['reaches']}/{v['seeds']} seeds"
            if v["reaches"] is not None
            else "has no instruction level to reach (the held-out instructions do not beat a random mask)"
        )
        lines.append(
            f"- {task}: the mask {reach}; it beats no instruction by {_SWITCH_MARGIN:.0f}+ points on "
            f"{v['switches']}/{v['seeds']} seeds."
        )
    lines += ["", "## Example answers (first test clip)", ""]
    for task, entry in report["tasks"].items():
        for cond, label in _CONDITIONS:
            lines.append(f"- {task}, {label}: `{entry['examples'][cond][0]!s}`")
    env = report["environment"]
    sec = report["seconds"]
    lines += [
        "",
        f"Active heads per mask (of {s['geometry'][0] * s['geometry'][1]}; each mask also has one FFN gate per "
        "layer, never applied, as in the official code): "
        + "; ".join(f"{t}: {e['active_heads']}" for t, e in report["tasks"].items())
        + ".",
        f"Run: {sec['total']:.0f} s in all, masks stage {sec['masks_stage']:.0f} s, {s['jobs']} single-threaded "
        f"jobs; torch {env['packages'].get('torch')}, transformers {env['packages'].get('transformers')}, "
        f"peft {env['packages'].get('peft')}, Python {env['python']}; {report['world']['espeak_ng'].split('  ')[0]}.",
        "",
    ]
    return "\n".join(lines)


def write_demo_real_report(
    report: Mapping[str, Any],
    masks: Mapping[tuple[str, int], list[float]],
    out: Path,
    n_layers: int,
    n_heads: int,
) -> list[Path]:
    """Writes ``report.json``, ``report.md`` and one picture per mask (``mask_<task>_seed<s>.png``)."""
    atomic_write_json({**report, "verdicts": mask_verdicts(report)}, out / "report.json")
    atomic_write_text(render_markdown(report), out / "report.md")
    tensors = {f"{t}_seed{s}": torch.tensor(v) for (t, s), v in masks.items()}
    return [out / "report.json", out / "report.md", *plot_masks(tensors, n_layers, n_heads, out, columns=3)]
