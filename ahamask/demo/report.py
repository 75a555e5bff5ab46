"""Stage 4 of the demo: the results table (markdown and text), report.json, and pictures of the masks.

The table has the paper's shape: one row per task and metric, with the held-out instructions (mean +- std,
min-max), no instruction, the task's AHAMask, and a random mask with the same number of active heads. A
second table gives the share of outputs in each task's exact format: *which* task the frozen model
performed. Every sentence of the verdict is computed from the numbers, with the thresholds stated.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..masking.mask import binarize, head_weights
from ..synth import TASKS
from ..utils.io import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["mask_iou", "verdicts", "results_table", "write_report", "plot_masks", "plot_iou"]

_TITLES = {"wer": "WER %", "accuracy": "accuracy %", "ifr": "format-following %"}
_LOWER_IS_BETTER = {"wer"}
# A mask "reaches instruction level" when its headline metric is within this many points of the held-out
# instructions' mean, and "switches the model" when it beats no instruction by at least this many points.
REACH_MARGIN = 5.0
SWITCH_MARGIN = 20.0
# A task is the model's no-instruction default when at least this share (%) of its answers has its format.
DEFAULT_SHARE = 50.0


def _grid(logits: torch.Tensor, n_layers: int, n_heads: int) -> torch.Tensor:
    """[L*(H+1)] logits -> [L, H] 0/1 head mask (FFN gates dropped: the official never applies them)."""
    return head_weights(binarize(logits), n_layers, n_heads)


def mask_iou(masks: Mapping[str, torch.Tensor], n_layers: int, n_heads: int) -> dict[str, dict[str, float]]:
    """Intersection over union of the active heads of every pair of masks.

    Args:
        masks: task -> logits [L*(H+1)].
        n_layers, n_heads: the LLM geometry.

    Returns:
        task -> task -> IoU in [0, 1] (1.0 on the diagonal; two empty masks count as 1.0).
    """
    grids = {t: _grid(m, n_layers, n_heads).bool() for t, m in masks.items()}
    out: dict[str, dict[str, float]] = {}
    for a, ga in grids.items():
        out[a] = {}
        for b, gb in grids.items():
            union = int((ga | gb).sum())
            out[a][b] = 1.0 if union == 0 else int((ga & gb).sum()) / union
    return out


def _headline(task: str) -> str:
    return (
        "ifr"
        if TASKS[task].metric in ("composite", "json")
        else ("wer" if TASKS[task].metric == "wer" else "accuracy")
    )


def _better(metric: str, a: float, b: float, margin: float) -> bool:
    """True when ``a`` beats ``b`` by at least ``margin`` points in the metric's direction."""
    return (b - a >= margin) if metric in _LOWER_IS_BETTER else (a - b >= margin)


def verdicts(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Says, per task, what its mask did: switch the model to the task (at or below instruction level) or not.

    Args:
        results: the sweep's results (``tasks`` -> entry).

    Returns:
        task -> ``{"category", "metric", "instruction", "none", "mask", "random", "none_format", "default",
        "reaches_instruction", "switches", "beats_random", "sentence"}``, on the headline metric
        (format-following for composite tasks, WER for asr, accuracy otherwise) under strict scoring (only
        answers in the task's exact format count). ``default`` is True when at least half of the
        no-instruction answers are already in the task's format. ``category``: ``"default"``,
        ``"instruction level"`` (within REACH_MARGIN of the instructions and SWITCH_MARGIN above no
        instruction), ``"partly"`` (only the latter) or ``"not reached"``.
    """
    out = {}
    for task, entry in results["tasks"].items():
        if "mask" not in entry:
            continue
        metric = _headline(task)
        # Strict figures: only answers in the task's exact format count (see demo.sweep.strict_metrics).
        instr = _mean(s["strict"][metric] for s in entry["instruction"]["per_instruction"])
        none = entry["none"]["strict"][metric]
        mask = entry["mask"]["strict"][metric]
        rnd = _mean(s["strict"][metric] for s in entry["random"]["per_seed"])
        none_format = entry["none"]["format"]
        default = none_format >= DEFAULT_SHARE
        reaches = not _better(metric, instr, mask, REACH_MARGIN)
        switches = _better(metric, mask, none, SWITCH_MARGIN)
        beats_random = _better(metric, mask, rnd, SWITCH_MARGIN)
        sentence = f"{task}: {_TITLES[metric]} {mask:.1f} with the mask vs {instr:.1f} with held-out " + (
            f"instructions (no instruction {none:.1f}, random mask {rnd:.1f}): "
            f"{_verdict_phrase(default, switches, reaches, none_format)}."
        )
        category = _category(default, switches, reaches)
        out[task] = {
            "category": category,
            "metric": metric,
            "instruction": instr,
            "none": none,
            "mask": mask,
            "random": rnd,
            "none_format": none_format,
            "default": default,
            "reaches_instruction": reaches,
            "switches": switches,
            "beats_random": beats_random,
            "sentence": sentence,
        }
    return out


def _verdict_phrase(default: bool, switches: bool, reaches: bool, none_format: float) -> str:
    """The verdict's words: already the default, switched (at or below instruction level), or not."""
    level = "at" if reaches else "below"
    if default:
        return (
            f"the model already does this task with no instruction ({none_format:.0f}% of answers in its "
            f"format); with the mask it stays {level} instruction level"
        )
    if switches:
        return f"the mask switches the model to this task, {level} instruction level"
    return "the mask does not switch the model to this task"


def _category(default: bool, switches: bool, reaches: bool) -> str:
    """``default``, ``instruction level``, ``partly`` or ``not reached`` (see :func:`verdicts`)."""
    if default:
        return "default"
    if reaches and switches:
        return "instruction level"
    if switches:
        return "partly"
    return "not reached"


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def results_table(results: Mapping[str, Any]) -> list[list[str]]:
    """Rows of the paper-shaped table (first row: header).

    Columns: task, metric, held-out instructions mean +- std, their min-max, no instruction, AHAMask, random
    mask, active heads of the mask.
    """
    rows = [
        [
            "task",
            "metric",
            "instruction (mean ± std)",
            "instruction min–max",
            "no instruction",
            "AHAMask",
            "random mask",
            "active heads",
        ]
    ]
    for task, entry in results["tasks"].items():
        for i, metric in enumerate(entry["metrics"]):
            summary = entry["instruction"]["summary"][metric]
            arrow = "↓" if metric in _LOWER_IS_BETTER else "↑"
            has_mask = "mask" in entry
            stats = entry.get("mask_stats", {})
            rows.append(
                [
                    TASKS[task].display if i == 0 else "",
                    f"{_TITLES[metric]} {arrow}",
                    f"{summary['mean']:.1f} ± {summary['std']:.1f}",
                    f"{summary['min']:.1f}–{summary['max']:.1f}",
                    _fmt(entry["none"]["metrics"][metric]),
                    _fmt(entry["mask"]["metrics"][metric]) if has_mask else "-",
                    _fmt(entry["random"]["summary"][metric]["mean"]) if has_mask else "-",
                    f"{stats['active_heads']}/{stats['total_heads']}" if has_mask and i == 0 else "",
                ]
            )
    return rows


def format_rows(results: Mapping[str, Any]) -> list[list[str]]:
    """Rows of the "which task was performed" table: % of outputs in the asked task's exact format."""
    rows = [
        ["task", "instruction (mean)", "no instruction", "AHAMask", "random mask", "no instruction performs"]
    ]
    for task, entry in results["tasks"].items():
        performed = ", ".join(
            f"{k} {v:.0f}%" for k, v in sorted(entry["none"]["performed"].items(), key=lambda kv: -kv[1])
        )
        has_mask = "mask" in entry
        rows.append(
            [
                TASKS[task].display,
                _fmt(entry["instruction"]["summary"]["format"]["mean"]),
                _fmt(entry["none"]["format"]),
                _fmt(entry["mask"]["format"]) if has_mask else "-",
                _fmt(entry["random"]["summary"]["format"]["mean"]) if has_mask else "-",
                performed,
            ]
        )
    return rows


def _code_cell(text: str) -> str:
    """A model output as a markdown table cell (code-formatted; ``_markdown`` escapes its ``|``)."""
    return f"`{text}`" if text else "(empty)"


def _markdown(rows: Sequence[Sequence[str]]) -> str:
    """A markdown table; ``|`` inside cells (``asr|gender``, composite answers) is escaped."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(rows[0]), "|" + "---|" * len(rows[0]), *map(line, rows[1:])])


def text_table(rows: Sequence[Sequence[str]]) -> str:
    """Plain-text rendering of table rows (what the demo prints at the end)."""
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_masks(
    masks: Mapping[str, torch.Tensor], n_layers: int, n_heads: int, out_dir: Path, columns: int = 2
) -> list[Path]:
    """One PNG per mask (layers x heads, dark = head kept) and an overview ``masks.png`` with all of them
    (``columns`` masks per row). A mask named after a synthetic-world task is titled with its display name.

    Returns:
        The written paths.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    paths = []
    grids = {t: _grid(m, n_layers, n_heads).numpy() for t, m in masks.items()}

    def draw(ax: Any, task: str) -> None:
        grid = grids[task]
        ax.imshow(grid, cmap="Greys", vmin=0, vmax=1, aspect="equal")
        title = TASKS[task].display if task in TASKS else task
        ax.set_title(f"{title}: {int(grid.sum())}/{grid.size} heads", fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(n_heads))
        ax.set_yticks(range(n_layers))

    for task in grids:
        fig, ax = plt.subplots(figsize=(0.45 * n_heads + 1.5, 0.45 * n_layers + 1.2))
        draw(ax, task)
        fig.tight_layout()
        paths.append(_save(fig, out_dir / f"mask_{task}.png"))
        plt.close(fig)
    ncols = min(columns, len(grids))
    nrows = -(-len(grids) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, squeeze=False, figsize=(ncols * (0.45 * n_heads + 1.2), nrows * (0.45 * n_layers + 1.4))
    )
    for index, task in enumerate(grids):  # the grid may have spare axes when the count is odd
        draw(axes.flat[index], task)
    for ax in list(axes.flat)[len(grids) :]:
        ax.axis("off")
    fig.suptitle("AHAMask masks (black: head kept, white: head switched off)", fontsize=10)
    fig.tight_layout()
    paths.append(_save(fig, out_dir / "masks.png"))
    plt.close(fig)
    return paths


def plot_iou(iou: Mapping[str, Mapping[str, float]], path: Path) -> Path:
    """Heat map of the mask-overlap (IoU) matrix, values written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(iou)
    labels = [TASKS[t].display for t in tasks]
    matrix = [[iou[a][b] for b in tasks] for a in tasks]
    fig, ax = plt.subplots(figsize=(1.0 * len(tasks) + 2.0, 0.9 * len(tasks) + 1.5))
    image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(tasks)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(tasks)), labels)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(
                j,
                i,
                f"{value:.2f}",
                ha="center",
                va="center",
                color="white" if value < 0.6 else "black",
                fontsize=8,
            )
    ax.set_title("mask overlap (IoU of active heads)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def _save(fig: Any, path: Path) -> Path:
    # savefig into a temporary name and rename: a reader never sees half a PNG.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    return path


def write_report(
    out_dir: Path,
    results: Mapping[str, Any],
    masks: Mapping[str, torch.Tensor],
    n_layers: int,
    n_heads: int,
    context: Mapping[str, Any],
) -> dict[str, Any]:
    """Writes report.md, report.json and the PNGs under ``out_dir``.

    Args:
        out_dir: the demo folder.
        results: the sweep's results.
        masks: task -> trained mask logits.
        n_layers, n_heads: the LLM geometry.
        context: settings, stage timings and the base-model summary (stored in report.json).

    Returns:
        The report.json content.
    """
    iou = mask_iou(masks, n_layers, n_heads)
    per_layer = {t: _grid(m, n_layers, n_heads).sum(dim=1).int().tolist() for t, m in masks.items()}
    found = verdicts(results)
    pictures = plot_masks(masks, n_layers, n_heads, out_dir) + [plot_iou(iou, out_dir / "mask_iou.png")]
    report = {
        "context": dict(context),
        "results": results,
        "verdicts": found,
        "masks": {
            t: {"active_heads_per_layer": per_layer[t], "active_heads": sum(per_layer[t])} for t in masks
        },
        "mask_iou": iou,
        "pictures": [p.name for p in pictures],
        "thresholds": {
            "reach_margin_points": REACH_MARGIN,
            "switch_margin_points": SWITCH_MARGIN,
            "default_share_percent": DEFAULT_SHARE,
        },
    }
    atomic_write_json(report, out_dir / "report.json")
    atomic_write_text(_render_markdown(report, n_layers, n_heads), out_dir / "report.md")
    logger.info("report written to %s", out_dir / "report.md")
    return report


def _base_line(base: Mapping[str, Any]) -> str:
    """One sentence on how the base model was trained (from base_training.json)."""
    if not base:
        return ""
    cfg = base.get("settings", {})
    precision = "bf16 autocast" if base.get("bf16") else "float32"
    return (
        f"Base model: {cfg.get('speech_steps', 0)} speech-side steps on the auxiliary probes, then "
        f"{base.get('steps', '?')} joint steps of {cfg.get('batch_size', '?')} clips ({precision}); final "
        f"cross-entropy {base.get('final_ce', float('nan')):.3f} per target token."
    )


def _environment_line(ctx: Mapping[str, Any]) -> str:
    """Versions, threads and precision the run used (stage times are in timings.json, not here)."""
    env = ctx.get("environment")
    if not env:
        return ""
    packages = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items() if v)
    return (
        f"Ran with {packages}; Python {env.get('python')}; {env.get('torch_threads')} torch thread(s) on "
        f"{env.get('cpu_cores')} cores; {env.get('precision')}."
    )


def _render_markdown(report: Mapping[str, Any], n_layers: int, n_heads: int) -> str:
    """report.md: the setup, the results tables, what they show, examples and the masks."""
    lines = _summary_lines(report, n_layers, n_heads)
    lines += _verdict_lines(report["verdicts"])
    lines += ["", "## Examples (first held-out clip)", ""]
    lines += [_markdown(_example_rows(report["results"])), ""]
    lines += _mask_lines(report, n_layers, n_heads)
    lines += ["", "Pictures: " + ", ".join(f"[{p}]({p})" for p in report["pictures"]), ""]
    return "\n".join(lines)


def _summary_lines(report: Mapping[str, Any], n_layers: int, n_heads: int) -> list[str]:
    """The setup paragraph, the results and task-format tables, and the thresholds of the verdicts."""
    ctx = report["context"]
    results = report["results"]
    settings = ctx.get("settings", {})
    n_instr = settings.get("evaluation", {}).get("n_instructions", "?")
    return [
        "# AHAMask demo: results",
        "",
        f"A tiny SALMONN-architecture model ({ctx.get('parameters', 0):,} parameters; LLM {n_layers} "
        f"layers x {n_heads} heads) was trained from scratch to follow instructions on the synthetic "
        "world's tasks, then frozen; one head mask per task was trained with no instruction at all "
        "(configs/demo_mask.yaml through train.py's code path). Evaluation on "
        f"{results['n_clips']} held-out clips per task: {n_instr} held-out instruction paraphrases "
        "(never seen in training), no instruction, the task's mask (no instruction), and a random mask "
        "with the same number of active heads.",
        "",
        f"Preset `{settings.get('name', '?')}`, seed {settings.get('seed', '?')}. " + _environment_line(ctx),
        "",
        _base_line(ctx.get("base_training", {})),
        "",
        "## Results (↑ higher is better, ↓ lower is better)",
        "",
        _markdown(results_table(results)),
        "",
        "Format-following % (composite tasks): share of answers that split into the task's parts. WER and "
        "accuracy of composite tasks are of their parts, over all answers (an answer out of format scores as "
        "empty parts).",
        "",
        "## Which task did the model perform?",
        "",
        "Share (%) of answers in the exact output format of the task asked for (the tasks' answer "
        "vocabularies are disjoint, so the format tells which task was done).",
        "",
        _markdown(format_rows(results)),
        "",
        "## What it shows",
        "",
        "Thresholds: a mask is *at instruction level* when its headline metric is within "
        f"{REACH_MARGIN:g} points of the held-out instructions' mean, and *switches the model* when it "
        f"beats no instruction by at least {SWITCH_MARGIN:g} points; a task is the model's no-instruction "
        "default when at least "
        f"{DEFAULT_SHARE:g}% of the no-instruction answers are in its format.",
        "",
    ]


def _verdict_lines(verdict: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One sentence per task, then the tasks grouped by what their mask achieved."""
    lines = [f"- {v['sentence']}" for v in verdict.values()]
    groups = {
        "switched to instruction level": [
            t for t, v in verdict.items() if not v["default"] and v["switches"] and v["reaches_instruction"]
        ],
        "switched, below instruction level": [
            t
            for t, v in verdict.items()
            if not v["default"] and v["switches"] and not v["reaches_instruction"]
        ],
        "not switched": [t for t, v in verdict.items() if not v["default"] and not v["switches"]],
        "done with no instruction already": [t for t, v in verdict.items() if v["default"]],
    }
    lines += [
        "",
        "In short: " + "; ".join(f"{k}: {', '.join(v) if v else 'none'}" for k, v in groups.items()) + ".",
    ]
    return lines


def _example_rows(results: Mapping[str, Any]) -> list[list[str]]:
    """The examples table: each masked task's answers to its first held-out clip under every condition."""
    example_rows = [["task", "reference", "instruction 0", "no instruction", "AHAMask", "random mask"]]
    for task, entry in results["tasks"].items():
        if "mask" not in entry:
            continue
        first = entry["instruction"]["per_instruction"][0]
        texts = [
            entry.get("reference", ""),
            first["examples"][0],
            entry["none"]["examples"][0],
            entry["mask"]["examples"][0],
            entry["random"]["per_seed"][0]["examples"][0],
        ]
        example_rows.append([TASKS[task].display, *map(_code_cell, texts)])
    return example_rows


def _mask_lines(report: Mapping[str, Any], n_layers: int, n_heads: int) -> list[str]:
    """Active heads per layer of every mask, and the masks' pairwise overlap."""
    lines = [
        "## Masks",
        "",
        "Active heads per layer (of " + str(n_heads) + "):",
        "",
        _markdown(
            [["task", *[f"layer {i}" for i in range(n_layers)], "total"]]
            + [
                [TASKS[t].display, *map(str, m["active_heads_per_layer"]), str(m["active_heads"])]
                for t, m in report["masks"].items()
            ]
        ),
        "",
        "Mask overlap (IoU of active heads):",
        "",
    ]
    tasks = list(report["mask_iou"])
    lines.append(
        _markdown(
            [["", *[TASKS[t].display for t in tasks]]]
            + [[TASKS[a].display, *[f"{report['mask_iou'][a][b]:.2f}" for b in tasks]] for a in tasks]
        )
    )
    return lines
