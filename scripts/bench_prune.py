"""Benchmark: pruned heads against folded masks at the released masks' densities (the rule ``auto`` follows).

Usage: python scripts/bench_prune.py [--threads 1] [--repeats 5] [--layers 8] [--head-dim 16] [--batch 2]
       [--bundle-tasks asr_gender_librispeech,gender_librispeech,s2tt_covost2] [--no-bundle]

Part 1, the LLM alone: LLaMA-shaped like Vicuna-13B (40 heads per layer, MHA, FFN 2.7x wider than the model)
but small: ``--layers`` layers of head size ``--head-dim``. Each released mask
(``../shared/reference/legacy_checkpoints``) is applied through the same layers of its 40 x 40 grid, evenly
spaced (layer 0, 5, ..., 35 for 8 layers), so the per-layer pattern is the real one; without the reference
data, random masks at the released densities are used. For a ``generate`` of ``--new-tokens`` tokens after
``--prompt-len`` input positions it prints ``prune_vs_fold_<task>: ratio`` (folded time / pruned time: > 1
means pruning is faster than the zero-cost fold, the path decoding uses by default) and
``prune_vs_unmasked_<task>`` (unmasked / pruned). The pruned model's logits are checked against the masked
model's first.

Part 2, the full decode of a small SALMONN bundle (``bench_masks.bench_bundle`` with 40 heads per layer:
Whisper on a 30 s chunk, Q-Former, LLM): ``bundle_prune_vs_fold_<task>`` for ``--bundle-tasks``, the whole
``SALMONN.generate`` (encoders included, as ``evaluate.py`` spends its time), greedy, fixed answer length.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_masks import base_parser, figure, interleaved, median_ratio, note, random_llama, random_mask, setup  # noqa: E402

from ahamask.masking.released import RELEASED_HEAD_FRACTIONS  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "legacy_checkpoints"
RELEASED_DENSITIES = RELEASED_HEAD_FRACTIONS


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
            grid = (load_mask(path).values.reshape(40, 41) >= 0).float()  # sigmoid(t) >= 0.5  <=>  t >= 0
            masks[task] = (grid[picked].reshape(-1), float(grid[:, :40].mean()))
        else:
            masks[task] = (random_mask(layers, 40, density, seed), density)
    return masks


def _bundle_decode(args, masks: dict[str, tuple[torch.Tensor, float]]) -> None:
    """Part 2: fold vs prune in the whole SALMONN.generate of a small bundle with 40 heads per layer."""
    import tempfile

    from bench_masks import bench_bundle  # noqa: E402 - scripts/ is on the path (see the top of the file)

    from ahamask.config import load_decode_config
    from ahamask.masking.fold import fold_head_mask
    from ahamask.masking.prune import prune_heads
    from ahamask.models.salmonn import SALMONN

    tasks = [t for t in args.bundle_tasks.split(",") if t]
    layers = 4
    with tempfile.TemporaryDirectory() as tmp:
        bundle = bench_bundle(
            Path(tmp) / "bundle", n_layers=layers, n_heads=40, hidden_size=640, intermediate_size=1720
        )
        cfg = load_decode_config(bundle / "decode_config.yaml")
        model = SALMONN.from_config(cfg.model).eval()
        gen = torch.Generator().manual_seed(args.seed)
        samples = {
            "spectrogram": None,
            "raw_wav": torch.randn(args.batch, 16000 * 8, generator=gen) * 0.1,
            "padding_mask": torch.zeros(args.batch, 16000 * 8, dtype=torch.bool),
        }
        generate = {"max_new_tokens": args.new_tokens, "min_length": args.new_tokens + 1, "num_beams": 1}
        prompts = [model.prompt_for("")] * args.batch
        note(
            f"bundle: LLaMA {layers} x 40 heads (hidden 640), Whisper 2 layers on 30 s, batch {args.batch}, "
            f"greedy {args.new_tokens} tokens, encoders included"
        )
        small = released_masks(layers, args.seed)
        for task in tasks:
            mask = small[task][0]
            pruned = prune_heads(model, mask)

            @torch.no_grad()
            def folded(mask=mask) -> list[str]:
                with fold_head_mask(model, mask):
                    return model.generate(samples, generate, prompts=prompts)

            @torch.no_grad()
            def run_pruned(pruned=pruned) -> list[str]:
                return pruned.generate(samples, generate, prompts=prompts)

            if folded() != run_pruned():
                note(f"bundle {task}: pruned answers differ from the folded ones")
            times = interleaved({"fold": folded, "prune": run_pruned}, args.repeats)
            used = float(mask.reshape(layers, 41)[:, :40].mean())
            note(
                f"bundle {task}: {used:.1%} of heads kept in the layers used; fold {statistics.median(times['fold']):.3f} s"
            )
            figure(f"bundle_prune_vs_fold_{task}", median_ratio(times, "fold", "prune"))
            del pruned


def main() -> None:
    parser = base_parser(__doc__, repeats=5)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--prompt-len", type=int, default=100)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument(
        "--bundle-tasks",
        default="asr_gender_librispeech,gender_librispeech,s2tt_covost2",
        help="released masks timed in the full decode of the small bundle (52.3%%, 78.7%%, 96.9%% of heads)",
    )
    parser.add_argument("--no-bundle", action="store_true", help="skip part 2 (the bundle's full decode)")
    args = parser.parse_args()
    setup(args)

    from ahamask.masking.fold import fold_head_mask
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

    def decode(llm: torch.nn.Module, mask: torch.Tensor | None = None):
        @torch.no_grad()
        def run() -> None:
            if mask is None:
                llm.generate(inputs_embeds=embeds, attention_mask=attention, **gen)
                return
            with fold_head_mask(llm, mask):  # the fold and its restore are timed, as evaluate.py pays them
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
        # Each task is timed with its own folded and unmasked runs, so a slow phase of the machine cannot
        # inflate every ratio at once.
        times = interleaved(
            {"unmasked": unmasked, "fold": decode(model, mask), "prune": decode(pruned)}, args.repeats
        )
        baseline += times["unmasked"]
        used = float(mask.reshape(args.layers, 41)[:, :40].mean())
        note(
            f"{task}: {full_density:.1%} of heads kept in the released mask, {used:.1%} in the layers used; "
            f"max |logit difference| to the masked model {error:.1e}"
        )
        figure(f"prune_vs_fold_{task}", median_ratio(times, "fold", "prune"))
        figure(f"prune_vs_unmasked_{task}", median_ratio(times, "unmasked", "prune"))
        del pruned
    note(f"unmasked: {statistics.median(baseline):.3f} s per generate call")
    if not args.no_bundle:
        _bundle_decode(args, masks)


if __name__ == "__main__":
    main()
