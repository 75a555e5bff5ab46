"""What a finished run leaves for people: the shareable mask folder, a model card, pictures.

* :func:`write_mask_folder` writes ``mask.safetensors`` + ``mask_config.json`` + a Hugging Face style
  ``README.md`` model card into the run folder, so the folder can be uploaded or passed as
  ``model.weight_mask_path`` as it is.
* :func:`plot_training_curves` turns the trainer's ``steps.jsonl`` into ``curves.png``.
* :func:`mask_heatmap_figure` draws a mask as a layers x heads picture; ``inspect_mask --png`` and the
  TensorBoard logging (:func:`log_mask_image`) share it.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so nothing here
depends on (or changes) the global matplotlib backend, and nothing needs a display. Every file is written
atomically (see :mod:`ahamask.utils.io`): a crash leaves the previous file or none, never half a PNG.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..masking.checkpoint import MASK_CONFIG_NAME, MASK_FILE_NAME, save_mask_folder
from ..masking.mask import as_grid
from ..utils.io import atomic_open, atomic_write_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

__all__ = [
    "build_model_card",
    "log_mask_image",
    "mask_heatmap_figure",
    "plot_training_curves",
    "save_figure",
    "write_mask_folder",
]

CARD_NAME = "README.md"
CURVES_NAME = "curves.png"
# A Hugging Face repository id ("owner/name"); a local path is kept out of the card's base_model field.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _head_probs(logits: torch.Tensor, n_layers: int, n_heads: int) -> torch.Tensor:
    """``sigmoid(logits)`` of the attention heads only: [L*(H+1)] -> [L, H] (FFN entries dropped)."""
    flat = logits.detach().float().cpu().reshape(-1)
    return torch.sigmoid(as_grid(flat, n_layers, n_heads)[:, :n_heads])


def mask_heatmap_figure(
    logits: torch.Tensor,
    n_layers: int,
    n_heads: int,
    *,
    threshold: float = 0.5,
    title: str | None = None,
) -> Figure:
    """A layers x heads picture of a mask: the colour is each head's keep probability ``sigmoid(logit)``.

    The colour shows how sure the mask is of each head (the released masks keep many heads near the
    threshold, so it says more than the 0/1 map); the right-hand strip is the share of each layer's heads
    kept at ``threshold``.

    Args:
        logits: [L*(H+1)] or [L, H+1] mask logits.
        n_layers, n_heads: the geometry.
        threshold: keep probability from which a head counts as kept (the decode config's prob_threshold).
        title: text before the head count in the title (e.g. the mask's name).

    Returns:
        A ``matplotlib.figure.Figure`` with an Agg canvas (save it with :func:`save_figure`).

    Raises:
        MaskShapeError: the length does not fit ``n_layers`` x ``n_heads``.

    Example:
        >>> fig = mask_heatmap_figure(torch.zeros(10), 2, 4, title="tiny")
    """
    probs = _head_probs(logits, n_layers, n_heads)
    kept = probs >= threshold
    fig, grid = _heatmap_canvas(n_layers, n_heads)
    ax = fig.add_subplot(grid[0, 0])
    image = _draw_heatmap(ax, probs, kept, threshold, title)
    strip = fig.add_subplot(grid[0, 1], sharey=ax)
    strip.barh(range(n_layers), kept.float().mean(dim=1).numpy(), height=0.9, color="tab:gray")
    strip.set_xlim(0.0, 1.0)
    strip.set_xlabel("kept")
    strip.tick_params(labelleft=False)
    fig.colorbar(image, cax=fig.add_subplot(grid[0, 2]), label="sigmoid(logit)")
    return fig


def _heatmap_canvas(n_layers: int, n_heads: int) -> tuple[Figure, Any]:
    """An Agg figure sized for the geometry and its three-column grid (heatmap, per-layer strip, colour
    bar), with fixed margins in inches."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Wide for many heads, tall for many layers, within sane bounds for 2 x 4 and 40 x 40 alike.
    width = min(max(3.0 + 0.16 * n_heads, 5.5), 11.0)
    height = min(max(1.2 + 0.14 * n_layers, 2.8), 8.5)
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    # Fixed margins in inches instead of constrained layout, which took 0.8 s of the 1.3 s a 40 x 40 picture
    # costs (the trainer draws one per epoch). Columns: heatmap, per-layer strip, colour bar.
    grid = fig.add_gridspec(
        1,
        3,
        width_ratios=[max(n_heads, 4), 1.5, 0.25],
        left=0.6 / width,
        right=1.0 - 0.75 / width,
        bottom=0.5 / height,
        top=1.0 - 0.55 / height,
        wspace=0.12,
    )
    return fig, grid


def _draw_heatmap(
    ax: Any, probs: torch.Tensor, kept: torch.Tensor, threshold: float, title: str | None
) -> Any:
    """Draws the keep probabilities on ``ax`` with integer ticks and the kept-head count in the title;
    returns the image (for the colour bar)."""
    from matplotlib.ticker import MaxNLocator

    n_layers, n_heads = probs.shape
    image = ax.imshow(
        probs.numpy(), aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest"
    )
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    n_kept, total = int(kept.sum()), n_layers * n_heads
    name = f"{title}\n" if title else ""
    ax.set_title(
        f"{name}{n_kept}/{total} heads kept ({n_kept / total:.1%}, sigmoid >= {threshold:g})", fontsize=10
    )
    # Integer ticks: a 2-layer mask would otherwise get ticks at layer 0.5.
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return image


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int | None = None) -> Path:
    """Write a figure as PNG atomically (rendered in memory first, then renamed into place).

    Args:
        fig: the figure.
        path: the destination ``.png``; its folder is created.
        dpi: resolution; the figure's own by default.

    Returns:
        The destination path.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return Path(path)


def _read_steps(steps_jsonl: Path) -> list[dict[str, Any]]:
    """The records of a ``steps.jsonl``: one JSON object per line, ``{"step": N, ...}``."""
    if not steps_jsonl.is_file():
        raise FileNotFoundError(f"{steps_jsonl}: no such file (the trainer writes it into the run folder)")
    records = []
    with open(steps_jsonl, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{steps_jsonl}: line {number} is not JSON ({exc.msg})") from exc
            if not isinstance(record, dict) or "step" not in record:
                raise ValueError(f"{steps_jsonl}: line {number} is not an object with a 'step' key")
            records.append(record)
    return records


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """Steps and finite values of one metric (records that lack it are skipped)."""
    steps, values = [], []
    for record in records:
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            steps.append(int(record["step"]))
            values.append(float(value))
    return steps, values


def plot_training_curves(steps_jsonl: str | os.PathLike, out_png: str | os.PathLike) -> Path:
    """Draw ``curves.png``: loss (and validation loss), CE, tau and active heads over training steps.

    Args:
        steps_jsonl: the trainer's ``steps.jsonl`` (one ``{"step", "loss", "ce", "tau", "active_heads",
            ...}`` object per logged step; validation lines carry ``valid_loss``).
        out_png: the picture to write (atomically).

    Returns:
        ``out_png`` as a Path.

    Raises:
        FileNotFoundError: no ``steps_jsonl``.
        ValueError: a line is not a JSON object with ``step``, or no step logged a training loss.

    Example:
        >>> plot_training_curves("exp/tiny/steps.jsonl", "exp/tiny/curves.png")  # doctest: +SKIP
        PosixPath('exp/tiny/curves.png')
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(steps_jsonl)
    records = _read_steps(path)
    if not _series(records, "loss")[0]:
        raise ValueError(f"{path}: no training step with a 'loss' value was logged")
    fig = Figure(figsize=(10, 6.5), dpi=100)
    FigureCanvasAgg(fig)
    # Fixed margins: constrained layout would double the drawing time for no visible gain here.
    axes = fig.subplots(
        2,
        2,
        sharex=True,
        gridspec_kw=dict(left=0.07, right=0.98, bottom=0.08, top=0.88, hspace=0.25, wspace=0.18),
    )
    panels = (
        ("loss", "loss (CE + sparsity)", axes[0, 0]),
        ("ce", "cross-entropy", axes[0, 1]),
        ("tau", "Gumbel temperature tau", axes[1, 0]),
        ("active_heads", "active heads", axes[1, 1]),
    )
    for key, label, ax in panels:
        steps, values = _series(records, key)
        if steps:
            ax.plot(steps, values, lw=1.2, marker="." if len(steps) < 30 else None, label="train")
        else:
            ax.text(0.5, 0.5, f"{key}: not logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(label)
        ax.grid(alpha=0.3)
    valid_steps, valid_values = _series(records, "valid_loss")
    if valid_steps:
        axes[0, 0].plot(valid_steps, valid_values, "o-", color="tab:red", label="validation")
        axes[0, 0].legend()
    for ax in axes[1]:
        ax.set_xlabel("step")
    fig.suptitle(f"training curves ({path.parent.name or path.name})")
    return save_figure(fig, out_png)


def _tensorboard_writers(sink: Any) -> list[Any]:
    """The TensorBoard destinations inside ``sink``: a SummaryWriter, a TensorBoardLogger, or a MultiLogger."""
    if hasattr(sink, "log_figure") or hasattr(sink, "add_figure"):
        return [sink]
    return [w for inner in getattr(sink, "loggers", []) for w in _tensorboard_writers(inner)]


def log_mask_image(
    summary_writer_or_logger: Any,
    logits: torch.Tensor,
    n_layers: int,
    n_heads: int,
    step: int,
    *,
    tag: str = "mask",
    threshold: float = 0.5,
) -> int:
    """Send the mask heatmap and the active heads of each layer to TensorBoard.

    The scalars are ``{tag}/active_heads_layer_{l:02d}`` and ``{tag}/active_heads`` (the total); the image
    is ``{tag}/heatmap``. Only TensorBoard sinks receive them: per-layer counts would swamp
    ``steps.jsonl`` and stdout, which have the total already.

    Args:
        summary_writer_or_logger: a ``SummaryWriter``, a :class:`~ahamask.utils.logging.TensorBoardLogger`
            or a :class:`~ahamask.utils.logging.MultiLogger` holding one (other sinks are skipped).
        logits: [L*(H+1)] the mask logits.
        n_layers, n_heads: the geometry.
        step: the global step.
        tag: prefix of the TensorBoard names.
        threshold: keep probability from which a head counts as active.

    Returns:
        How many TensorBoard destinations were written (0 when there is none: nothing to do).

    Example:
        >>> log_mask_image(trainer.metrics, trainer.mask.tensor, 40, 40, trainer.global_step)  # doctest: +SKIP
        1
    """
    writers = _tensorboard_writers(summary_writer_or_logger)
    if not writers:
        return 0
    per_layer = (_head_probs(logits, n_layers, n_heads) >= threshold).sum(dim=1).tolist()
    scalars = {f"{tag}/active_heads_layer_{layer:02d}": int(n) for layer, n in enumerate(per_layer)}
    scalars[f"{tag}/active_heads"] = int(sum(per_layer))
    for writer in writers:
        fig = mask_heatmap_figure(logits, n_layers, n_heads, threshold=threshold, title=f"step {step}")
        if hasattr(writer, "log_figure"):
            writer.log_dict(scalars, step)
            writer.log_figure(f"{tag}/heatmap", fig, step)
        else:
            for name, value in scalars.items():
                writer.add_scalar(name, value, global_step=step)
            writer.add_figure(f"{tag}/heatmap", fig, global_step=step, close=True)
    return len(writers)


def _format_metric(value: Any) -> str:
    """Metrics in the card: floats to 4 significant digits, anything else as written."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def build_model_card(
    logits: torch.Tensor,
    n_layers: int,
    n_heads: int,
    *,
    base_model: str,
    task: str,
    data: str | Sequence[str],
    steps: int,
    command: str,
    valid_metrics: Mapping[str, Any] | None,
    threshold: float = 0.5,
) -> Any:
    """The run's model card as a ``huggingface_hub.ModelCard`` (YAML metadata + markdown), not yet saved.

    Args: as :func:`write_mask_folder`.

    Returns:
        A ``huggingface_hub.ModelCard``; ``str(card)`` is the ``README.md`` text.
    """
    from huggingface_hub import ModelCard, ModelCardData

    kept = int((_head_probs(logits, n_layers, n_heads) >= threshold).sum())
    total = n_layers * n_heads
    sources = [data] if isinstance(data, str) else list(data)
    hub_model = base_model if _HUB_ID.match(base_model) and not Path(base_model).exists() else None
    card_data = ModelCardData(
        base_model=hub_model,
        library_name="ahamask",
        tags=["ahamask", "attention-head-mask", "salmonn", "audio", task],
    )
    rows = _card_rows(base_model, task, sources, steps, n_layers, n_heads, kept, threshold, valid_metrics)
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    body = _card_body(task, kept, total, base_model, table, n_layers, n_heads, command)
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")


def _card_rows(
    base_model: str,
    task: str,
    sources: list[str],
    steps: int,
    n_layers: int,
    n_heads: int,
    kept: int,
    threshold: float,
    valid_metrics: Mapping[str, Any] | None,
) -> list[tuple[str, str]]:
    """The (name, value) rows of the card's summary table, the validation figures last."""
    total = n_layers * n_heads
    rows = [
        ("base model", f"`{base_model}`" if base_model else "not recorded"),
        ("task", task),
        ("training data", ", ".join(f"`{s}`" for s in sources) or "not recorded"),
        ("training steps", str(steps)),
        ("geometry", f"{n_layers} layers x {n_heads} heads (+1 FFN entry per layer, not applied)"),
        ("active heads", f"{kept}/{total} ({kept / total:.1%}) at sigmoid >= {threshold:g}"),
    ]
    for name, value in (valid_metrics or {}).items():
        rows.append((f"validation {name}", _format_metric(value)))
    return rows


def _card_body(
    task: str, kept: int, total: int, base_model: str, table: str, n_layers: int, n_heads: int, command: str
) -> str:
    """The card's markdown below the metadata: summary table, usage, files and the command that made it
    (one template, kept whole so that it reads as the page it renders)."""
    body = f"""# AHAMask mask: {task}

An attention-head mask for SALMONN: with no instruction at all, the masked model performs **{task}**.
It keeps {kept} of the {total} attention heads of `{base_model or "the base model"}` and changes no weight.

| | |
|---|---|
{table}

## Use

The folder is a mask as it stands: pass it (or `{MASK_FILE_NAME}` inside it) as `model.weight_mask_path`
and keep the decode config's `prompt` empty, as the mask was trained without an instruction.

```bash
python evaluate.py -c configs/decode_config.yaml --options model.weight_mask_path=<this folder>
python scripts/inspect_mask.py <this folder>/{MASK_FILE_NAME} --png mask.png
```

## Files

- `{MASK_FILE_NAME}`: the {n_layers * (n_heads + 1)} mask logits (layer-major, {n_heads} heads + 1 FFN entry per layer)
- `{MASK_CONFIG_NAME}`: the geometry the loader checks (n_layers, n_heads, has_ffn, base model, ahamask version)

## How it was made

```bash
{command}
```
"""
    return body


def write_mask_folder(
    run_dir: str | os.PathLike,
    logits: torch.Tensor,
    n_layers: int,
    n_heads: int,
    *,
    base_model: str,
    task: str,
    data: str | Sequence[str],
    steps: int,
    command: str,
    valid_metrics: Mapping[str, Any] | None = None,
) -> None:
    """Write the shareable mask into ``run_dir``: ``mask.safetensors``, ``mask_config.json``, ``README.md``.

    Call it on rank 0 at the end of training. Each file is written atomically; the card comes last, so a
    folder with a card always has its mask.

    Args:
        run_dir: the run's output folder.
        logits: [L*(H+1)] the final mask logits.
        n_layers, n_heads: the geometry of the model the mask was trained on.
        base_model: the base model (a hub id such as ``tsinghua-ee/SALMONN`` goes into the card metadata; a
            local path is only shown in the text).
        task: what the mask makes the model do (e.g. ``gender_recognition``).
        data: the training manifest(s).
        steps: optimizer steps taken.
        command: the command line that made the run.
        valid_metrics: the last validation figures (name -> value), or None.

    Raises:
        MaskShapeError: the length of ``logits`` does not fit the geometry.

    Example:
        >>> write_mask_folder("exp/tiny", mask.tensor, 2, 4, base_model="tiny", task="gender_recognition",
        ...                   data="data/train.json", steps=4, command="python train.py -c tiny.yaml",
        ...                   valid_metrics={"loss": 0.31})  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    _save_mask_files(run_dir, logits, n_layers, n_heads, base_model, task, steps)
    card = build_model_card(
        logits,
        n_layers,
        n_heads,
        base_model=base_model,
        task=task,
        data=data,
        steps=steps,
        command=command,
        valid_metrics=valid_metrics,
    )
    atomic_write_text(str(card), run_dir / CARD_NAME)
    logger.info(
        "shareable mask written to %s (%s, %s, %s)", run_dir, MASK_FILE_NAME, MASK_CONFIG_NAME, CARD_NAME
    )


def _save_mask_files(
    run_dir: Path, logits: torch.Tensor, n_layers: int, n_heads: int, base_model: str, task: str, steps: int
) -> None:
    """Writes ``mask.safetensors`` and ``mask_config.json``, recording the task and the steps taken so that
    the folder describes itself without the card."""
    save_mask_folder(
        logits,
        run_dir,
        n_layers,
        n_heads,
        base_model=base_model,
        extra_config={"task": task, "steps": int(steps)},
    )
