"""Compare masks: how much their kept heads overlap (IoU), how dense each layer is, which heads all keep.

Usage:
    python scripts/compare_masks.py M1 M2 [M3 ...] [--png OUT.png] [--threshold 0.5]
    python scripts/compare_masks.py legacy_checkpoints/*/checkpoint.pth --png iou.png

Each M is a mask file, a mask folder or a released name (``gender_librispeech``); all must share one
geometry. Prints the IoU table of the kept heads (|A and B| / |A or B|) and the number of heads kept by
every mask; ``--png`` draws the IoU matrix beside a per-layer density plot.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ._common import ToolError, fail, load_with_geometry, user_errors

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

    from ._common import LoadedMask

__all__ = ["build_parser", "comparison_figure", "iou_matrix", "main"]

PROG = "compare_masks"


def build_parser() -> argparse.ArgumentParser:
    """The command line (no torch needed to build it, so ``--help`` is instant)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("masks", nargs="+", metavar="MASK", help="two or more masks")
    parser.add_argument("--png", type=Path, help="draw the IoU matrix and the per-layer density here")
    parser.add_argument("--dpi", type=int, default=100, help="resolution of the PNG (default: 100)")
    parser.add_argument("--threshold", type=float, default=0.5, help="keep a head when sigmoid >= this")
    parser.add_argument("--n-layers", type=int, help="fallback geometry for vectors that state none")
    parser.add_argument("--n-heads", type=int, help="fallback geometry for vectors that state none")
    return parser


def iou_matrix(kept: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over union of kept-head sets.

    Args:
        kept: [n_masks, L, H] bool, the heads each mask keeps.

    Returns:
        [n_masks, n_masks] float; 1 on the diagonal (and for two masks that keep no head at all).
    """
    flat = kept.reshape(kept.shape[0], -1).float()
    inter = flat @ flat.T
    sizes = flat.sum(dim=1)
    union = sizes[:, None] + sizes[None, :] - inter
    iou = inter / union.clamp(min=1.0)
    return iou.masked_fill(union == 0, 1.0)


def comparison_figure(labels: list[str], kept: torch.Tensor, threshold: float = 0.5) -> Figure:
    """The IoU matrix (annotated) beside the share of heads each mask keeps per layer.

    Args:
        labels: one name per mask.
        kept: [n_masks, L, H] bool.
        threshold: shown in the titles.

    Returns:
        A ``matplotlib.figure.Figure`` with an Agg canvas.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n, n_layers = kept.shape[0], kept.shape[1]
    iou = iou_matrix(kept).numpy()
    size = 2.0 + 0.55 * n
    fig = Figure(figsize=(size + 6.0, max(size, 4.5)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_iou, ax_layers = fig.subplots(1, 2, width_ratios=[size, 6.0])
    image = ax_iou.imshow(iou, vmin=0.0, vmax=1.0, cmap="magma")
    # Names on the rows, their numbers on the columns: long rotated names would not fit under the matrix.
    ax_iou.set_xticks(range(n), [str(i) for i in range(n)], fontsize=8)
    ax_iou.set_yticks(range(n), [f"{label} ({i})" for i, label in enumerate(labels)], fontsize=8)
    for i in range(n):
        for j in range(n):
            # Dark text on the bright cells, light on the dark ones.
            colour = "black" if iou[i, j] > 0.6 else "white"
            ax_iou.text(j, i, f"{iou[i, j]:.2f}", ha="center", va="center", fontsize=7, color=colour)
    shared = int(kept.all(dim=0).sum())
    ax_iou.set_title(f"IoU of kept heads; {shared} heads kept by all {n}", fontsize=10)
    fig.colorbar(image, ax=ax_iou, shrink=0.8)
    density = kept.float().mean(dim=2).numpy()  # [n_masks, L]
    for index, label in enumerate(labels):
        ax_layers.plot(
            range(n_layers), density[index], lw=1.2, marker="." if n_layers <= 20 else None, label=label
        )
    ax_layers.set_xlabel("layer")
    ax_layers.set_ylabel("share of heads kept")
    ax_layers.set_ylim(0.0, 1.02)
    ax_layers.set_title(f"heads kept per layer (sigmoid >= {threshold:g})", fontsize=10)
    ax_layers.grid(alpha=0.3)
    ax_layers.legend(fontsize=7, ncol=2 if n > 5 else 1, loc="lower left")
    return fig


def _kept_stack(masks: list[LoadedMask], threshold: float) -> torch.Tensor:
    """[n_masks, L, H] bool, after checking that every mask has the first one's geometry."""
    import torch

    from ..masking.mask import binarize, head_weights

    first = masks[0]
    for mask in masks[1:]:
        if (mask.n_layers, mask.n_heads) != (first.n_layers, first.n_heads):
            raise ToolError(
                f"{mask.path}: {mask.n_layers} layers x {mask.n_heads} heads, but {first.path} has "
                f"{first.n_layers} x {first.n_heads}; only masks of one geometry can be compared"
            )
    return torch.stack(
        [head_weights(binarize(m.logits, threshold), m.n_layers, m.n_heads).bool() for m in masks]
    )


def _table(labels: list[str], kept: torch.Tensor) -> list[str]:
    """The printed IoU table: one row per mask, columns numbered as the rows."""
    iou = iou_matrix(kept)
    width = max(len(label) for label in labels)
    total = kept.shape[1] * kept.shape[2]
    lines = [f"{'#':>2}  {'mask':<{width}}  {'kept':>9}  " + " ".join(f"{j:>5}" for j in range(len(labels)))]
    for i, label in enumerate(labels):
        cells = " ".join(f"{float(v):5.3f}" for v in iou[i])
        lines.append(f"{i:>2}  {label:<{width}}  {int(kept[i].sum()):>4}/{total:<4}  {cells}")
    lines.append(
        f"heads kept by all {len(labels)} masks: {int(kept.all(dim=0).sum())} of {total}; "
        f"by none: {int((~kept.any(dim=0)).sum())}"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the exit code (0, 1 for a bad file or mismatched masks, 2 for usage errors).

    Example:
        >>> main(["asr_librispeech", "gender_librispeech", "--png", "iou.png"])  # doctest: +SKIP
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.masks) < 2:
        parser.error("give at least two masks to compare")
    try:
        masks = [load_with_geometry(spec, args.n_layers, args.n_heads) for spec in args.masks]
        labels = [m.label for m in masks]
        if len(set(labels)) < len(labels):  # two files of one name: fall back to the paths
            labels = [str(m.path) for m in masks]
        kept = _kept_stack(masks, args.threshold)
        print(f"IoU of the kept heads (sigmoid >= {args.threshold:g})")
        print("\n".join(_table(labels, kept)))
        if args.png is not None:
            from ..training.artifacts import save_figure

            print(
                f"figure written to {save_figure(comparison_figure(labels, kept, args.threshold), args.png, dpi=args.dpi)}"
            )
    except user_errors() as exc:
        return fail(PROG, exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
