"""Show a mask: its geometry, the heads it keeps per layer, optionally a picture; or a table of a folder of masks.

Usage:
    python scripts/inspect_mask.py MASK [--png OUT.png] [--threshold 0.5] [--n-layers L --n-heads H]
    python scripts/inspect_mask.py --all legacy_checkpoints/

MASK is a ``checkpoint.pth`` (released or training format), a ``.safetensors`` mask, a mask folder
(``mask.safetensors`` + ``mask_config.json``) or the name of a released mask (``gender_librispeech``).
The geometry comes from the file (safetensors metadata or a ``mask_config.json`` beside it); a bare
1640-logit released mask is recognised as SALMONN-13B (40 layers x 40 heads). ``--n-layers/--n-heads``
are only needed for a bare vector of another length.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ._common import ToolError, fail, load_with_geometry, user_errors

if TYPE_CHECKING:
    from ._common import LoadedMask

__all__ = ["build_parser", "density_code", "main", "table_rows"]

PROG = "inspect_mask"


def build_parser() -> argparse.ArgumentParser:
    """The command line (no torch needed to build it, so ``--help`` is instant)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mask", nargs="?", help="mask file, mask folder or released mask name")
    parser.add_argument("--png", type=Path, help="also draw a layers x heads heatmap into this PNG")
    parser.add_argument(
        "--all", type=Path, metavar="DIR", help="one table of every <name>/ mask folder in DIR"
    )
    parser.add_argument("--threshold", type=float, default=0.5, help="keep a head when sigmoid >= this")
    parser.add_argument("--n-layers", type=int, help="fallback geometry for a vector that states none")
    parser.add_argument("--n-heads", type=int, help="fallback geometry for a vector that states none")
    return parser


def density_code(fraction: float) -> str:
    """One character per layer: ``0``-``9`` tenths of its heads kept (rounded down), ``#`` for all."""
    return "#" if fraction >= 1.0 else str(min(int(fraction * 10), 9))


def _kept_grid(mask: LoadedMask, threshold: float):
    """[L, H] bool: the heads the mask keeps (FFN entries dropped)."""
    from ..masking.mask import binarize, head_weights

    return head_weights(binarize(mask.logits, threshold), mask.n_layers, mask.n_heads).bool()


def _describe(mask: LoadedMask, threshold: float) -> list[str]:
    """The lines printed for one mask: what it is, then one map row per layer."""
    from ..masking.mask import mask_stats

    stats = mask_stats(mask.logits, mask.n_layers, mask.n_heads, threshold)
    lines = [
        f"{mask.path}: {mask.logits.numel()} logits; {mask.n_layers} layers x {mask.n_heads} heads "
        f"(+1 FFN entry each; geometry from {mask.geometry_source})",
        stats.describe(),
    ]
    for layer, row in enumerate(_kept_grid(mask, threshold)):
        cells = "".join("#" if kept else "." for kept in row.tolist())
        lines.append(f"layer {layer:3d}: {int(row.sum()):3d}/{mask.n_heads}  {cells}")
    return lines


def _task_of(mask: LoadedMask) -> str:
    """What a mask is for: the release's description, else a ``task`` key in its sidecar, else ``-``."""
    from ..masking.checkpoint import read_mask_config
    from ..masking.released import RELEASED_MASKS

    released = RELEASED_MASKS.get(mask.label)
    if released is not None:
        return f"{released.task} ({released.paper_name})"
    sidecar = read_mask_config(mask.path) or {}
    return str(sidecar.get("task", "-"))


def table_rows(masks: list[LoadedMask], threshold: float) -> list[dict[str, str]]:
    """One row per mask: name, task, active heads, fraction, per-layer density (min/mean/max and map)."""
    rows = []
    for mask in masks:
        kept = _kept_grid(mask, threshold)
        per_layer = kept.float().mean(dim=1)
        total = mask.n_layers * mask.n_heads
        rows.append(
            {
                "mask": mask.label,
                "task": _task_of(mask),
                "active heads": f"{int(kept.sum())}/{total}",
                "fraction": f"{int(kept.sum()) / total:.1%}",
                "layer density min/mean/max": (
                    f"{per_layer.min():.2f} / {per_layer.mean():.2f} / {per_layer.max():.2f}"
                ),
                "per layer (0-9 tenths, # all)": "".join(density_code(float(d)) for d in per_layer),
            }
        )
    return rows


def _format_table(rows: list[dict[str, str]]) -> list[str]:
    """Left-aligned columns separated by two spaces, with a header and a rule."""
    headers = list(rows[0])
    widths = [max(len(h), *(len(r[h]) for r in rows)) for h in headers]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line.rstrip(), "  ".join("-" * w for w in widths)]
    out += ["  ".join(r[h].ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip() for r in rows]
    return out


def _folder_masks(folder: Path) -> list[Path]:
    """The mask file of each ``<name>/`` subfolder of ``folder`` (released ``checkpoint.pth`` or folder form)."""
    from ..masking.checkpoint import MASK_FILE_NAME
    from ..masking.released import RELEASE_FILE

    if not folder.is_dir():
        raise ToolError(f"{folder}: no such folder")
    found = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        for name in (MASK_FILE_NAME, RELEASE_FILE):
            if (sub / name).is_file():
                found.append(sub / name)
                break
    if not found:
        raise ToolError(f"{folder}: no <name>/checkpoint.pth or <name>/mask.safetensors inside")
    return found


def _inspect_all(args: argparse.Namespace) -> int:
    """``--all DIR``: the table, with one error line (and exit code 1) per file that cannot be read."""
    masks, code = [], 0
    for path in _folder_masks(args.all):
        try:
            masks.append(load_with_geometry(str(path), args.n_layers, args.n_heads))
        except user_errors() as exc:
            code = fail(PROG, exc)
    if masks:
        print("\n".join(_format_table(table_rows(masks, args.threshold))))
        print(
            f"{len(masks)} masks; fraction = share of attention heads kept at sigmoid >= {args.threshold:g}"
        )
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the exit code (0, 1 for a bad file or bad arguments, 2 for usage errors).

    Example:
        >>> main(["gender_librispeech", "--png", "gender.png"])  # doctest: +SKIP
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.mask is None) == (args.all is None):
        parser.error("give one MASK or --all DIR")
    if args.all is not None and args.png is not None:
        parser.error("--png draws one mask; for a folder use compare_masks.py DIR/*/checkpoint.pth --png OUT")
    try:
        if args.all is not None:
            return _inspect_all(args)
        mask = load_with_geometry(args.mask, args.n_layers, args.n_heads)
        print("\n".join(_describe(mask, args.threshold)))
        if args.png is not None:
            from ..training.artifacts import mask_heatmap_figure, save_figure

            fig = mask_heatmap_figure(
                mask.logits, mask.n_layers, mask.n_heads, threshold=args.threshold, title=mask.label
            )
            print(f"heatmap written to {save_figure(fig, args.png)}")
    except user_errors() as exc:
        return fail(PROG, exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
