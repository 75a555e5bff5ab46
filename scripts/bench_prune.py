"""Benchmark: decoding speed of pruned models at the released masks' densities, against the unmasked model.

Usage: python scripts/bench_prune.py [--threads 1] [--repeats 5] [--layers 8] [--head-dim 16] [--batch 2]

The model is LLaMA-shaped like Vicuna-13B (40 heads per layer, MHA, FFN 2.7x wider than the model) but small:
``--layers`` layers of head size ``--head-dim``. Each released mask
(``../shared/reference/legacy_checkpoints``) is applied through the same layers of its 40 x 40 grid, evenly
spaced (layer 0, 5, ..., 35 for 8 layers),
so the per-layer pattern is the real one; without the reference data, random masks at the released
densities are used. Prints ``prune_speedup_<task>: ratio`` (unmasked time / pruned time, > 1 is faster) for a
``generate`` of ``--new-tokens`` tokens after ``--prompt-len`` input positions; the pruned model's logits are
checked against the masked model first.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_masks import base_parser, figure, interleaved, median_ratio, note, random_llama, random_mask, setup  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "legacy_checkpoints"
# Share of heads the released masks keep (from ../shared/reference/README.md), used without the files.
RELEASED_DENSITIES = {
    "asr_gender_librispeech": 0.523,
    "asr_gender_json_librispeech": 0.702,
    "emotion_iemocap": 0.716,
    "gender_librispeech": 0.787,
    "asv_voxceleb1": 0.819,
    "gender_asr_librispeech": 0.822,
    "aac_audiocaps": 0.891,
    "asr_librispeech": 0.953,
    "osr_libri2mix": 0.969,
    "s2tt_covost2": 0.969,
}


def released_masks(layers: int, seed: int) -> dict[str, tuple[torch.Tensor, float]]:
    """task -> (0/1 mask [layers*41] over some layers of the released grid, density of the full mask)."""
    from ahamask.masking.checkpoint import load_mask

    # Evenly spaced layers: 0, 5, ..., 35 when 8 divides 40, else rounded positions over 0..39.
    if 40 % layers == 0:
        picked = torch.arange(0, 40, 40 // layers)
    else:
        picked = torch.linspace(0, 39, layers).round().long()
    masks = {}
    for task, density in RELEASED_DENSITIES.items():
        path = REFERENCE / task / "checkpoint.pth"
        if path.is_file():
            grid = (load_mask(path).reshape(40, 41) >= 0).float()  # sigmoid(t) >= 0.5  <=>  t >= 0
            masks[task] = (grid[picked].reshape(-1), float(grid[:, :40].mean()))
        else:
            masks[task] = (random_mask(layers, 40, density, seed), density)
    return masks


def main() -> None:
    parser = base_parser(__doc__, repeats=5)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--prompt-len", type=int, default=100)
    parser.add_argument("--new-tokens", type=int, default=16)
    args = parser.parse_args()
    setup(args)

    from ahamask.masking.hooks import head_mask
    from ahamask.masking.prune import prune_heads

    hidden = 40 * args.head_dim
    model = random_llama(args.layers, hidden, 40, seed=args.seed)
    masks = released_masks(args.layers, args.seed)
    source = (
        "released masks" if (REFERENCE / "asr_librispeech" / "checkpoint.pth").is_file() else "random masks"
    )
    note(
        f"LLaMA {args.layers} layers x 40 heads of {args.head_dim} (hidden {hidden}); {source}; batch "
        f"{args.batch}, {args.prompt_len} input positions, {args.new_tokens} new tokens (greedy, fixed "
        "length)"
    )
    embeds = torch.randn(args.batch, args.prompt_len, hidden) * 0.02
    attention = torch.ones(args.batch, args.prompt_len, dtype=torch.long)
    gen = {
        "max_new_tokens": args.new_tokens,
        "min_new_tokens": args.new_tokens,
        "do_sample": False,
        "pad_token_id": 0,
    }

    def decode(llm: torch.nn.Module):
        @torch.no_grad()
        def run() -> None:
            llm.generate(inputs_embeds=embeds, attention_mask=attention, **gen)

        return run

    unmasked = decode(model)
    with torch.no_grad():
        unmasked()  # first call: warms the allocator and transformers' lazy set-up for every variant
    baseline = []
    for task, (mask, full_density) in masks.items():
        pruned = prune_heads(model, mask)
        with torch.no_grad(), head_mask(model, mask, logits=False):
            expected = model(inputs_embeds=embeds, attention_mask=attention).logits
            error = (
                (pruned(inputs_embeds=embeds, attention_mask=attention).logits - expected).abs().max().item()
            )
        if error > 1e-4:
            raise RuntimeError(f"{task}: pruned logits differ from the masked model's by {error:.2e}")
        # Each task is timed in pairs with its own unmasked runs, so a slow phase of the machine cannot
        # inflate every ratio at once.
        times = interleaved({"unmasked": unmasked, "pruned": decode(pruned)}, args.repeats)
        baseline += times["unmasked"]
        used = float(mask.reshape(args.layers, 41)[:, :40].mean())
        note(
            f"{task}: {full_density:.1%} of heads kept in the released mask, {used:.1%} in the layers used; "
            f"max |logit difference| to the masked model {error:.1e}"
        )
        figure(f"prune_speedup_{task}", median_ratio(times, "unmasked", "pruned"))
        del pruned
    note(f"unmasked: {statistics.median(baseline):.3f} s per generate call")


if __name__ == "__main__":
    main()
