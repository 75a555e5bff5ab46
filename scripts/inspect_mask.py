"""Print a mask file's geometry and active heads per layer.

Usage: python scripts/inspect_mask.py MASK [--n-layers 40] [--n-heads 40] [--threshold 0.5]
"""

import argparse

from ahamask.masking.checkpoint import load_mask
from ahamask.masking.mask import as_grid, binarize, mask_stats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mask")
    parser.add_argument("--n-layers", type=int, default=40)
    parser.add_argument("--n-heads", type=int, default=40)
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args()
    logits = load_mask(args.mask)
    stats = mask_stats(logits, args.n_layers, args.n_heads, args.threshold)
    print(f"{args.mask}: {logits.numel()} logits; {stats.describe()}")
    grid = as_grid(binarize(logits, args.threshold), args.n_layers, args.n_heads)[:, : args.n_heads]
    for layer, row in enumerate(grid):
        print(
            f"layer {layer:3d}: {int(row.sum()):3d}/{args.n_heads}  "
            + "".join("#" if v else "." for v in row.tolist())
        )


if __name__ == "__main__":
    main()
