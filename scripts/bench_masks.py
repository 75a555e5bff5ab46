"""Benchmark: what a head mask costs at inference (folded vs hooks) and in a training step (hooks).

Usage: python scripts/bench_masks.py [--threads 1] [--repeats 7] [--layers 4] [--hidden 512] [--heads 8]

Prints ``name: value`` lines (targets: ``generate_folded_vs_unmasked`` <= 1.02, ``train_step_hooks_vs_nomask``
<= 1.05); lines starting with ``#`` describe the set-up. Both variants of a figure run in the same process,
interleaved (the order alternates every repeat), and each figure is the median of the per-repeat ratios.

This file also holds the small helpers the other ``scripts/bench_*.py`` import (they run from ``scripts/``):
:func:`interleaved`, :func:`median_ratio`, :func:`figure`, :func:`note`, :func:`base_parser`,
:func:`random_llama`, :func:`random_mask` and :func:`bench_bundle`.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would interleave with the figures


# ---------------------------------------------------------------------------------------------- helpers
def base_parser(description: str, repeats: int) -> argparse.ArgumentParser:
    """Arguments every benchmark takes: --threads, --repeats, --seed."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (fixed so runs compare; default 1)"
    )
    parser.add_argument("--repeats", type=int, default=repeats, help="timed repeats per variant")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def setup(args: argparse.Namespace) -> None:
    """Fix the thread count and the seed, quiet the libraries' loggers."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' deprecation notices
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # save_pretrained's bars while the benchmark bundles are written
    note(f"torch {torch.__version__}, {args.threads} thread(s), {args.repeats} repeats, seed {args.seed}")


def interleaved(
    variants: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Wall-clock seconds of each variant, run in turns; the order flips every repeat to cancel drift."""
    for _ in range(warmup):
        for run in variants.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    items = list(variants.items())
    for repeat in range(repeats):
        for name, run in items if repeat % 2 == 0 else items[::-1]:
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """Median of the per-repeat ratios ``numerator / denominator`` (paired, so slow phases cancel)."""
    return statistics.median(a / b for a, b in zip(times[numerator], times[denominator], strict=True))


def figure(name: str, value: float, digits: int = 3) -> None:
    """Print one result as ``name: value``."""
    print(f"{name}: {value:.{digits}f}", flush=True)


def note(text: str) -> None:
    """Print a line of context (not a figure)."""
    print(f"# {text}", flush=True)


def random_llama(
    layers: int,
    hidden: int,
    heads: int,
    kv_heads: int | None = None,
    intermediate: int | None = None,
    vocab: int = 1000,
    seed: int = 0,
) -> torch.nn.Module:
    """A randomly initialised LLaMA of the given shape (float32, sdpa, eval mode)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate or int(hidden * 2.6875) // 8 * 8,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        max_position_embeddings=4096,
        pad_token_id=0,
        eos_token_id=2,
        bos_token_id=1,
    )
    return LlamaForCausalLM(config).eval()


def random_mask(layers: int, heads: int, keep: float, seed: int = 0) -> torch.Tensor:
    """A 0/1 mask ``[L*(H+1)]`` keeping ``round(keep * L * H)`` heads at random (FFN entries 1)."""
    gen = torch.Generator().manual_seed(seed)
    heads_kept = torch.ones(layers * heads)
    heads_kept[
        torch.randperm(layers * heads, generator=gen)[: layers * heads - round(keep * layers * heads)]
    ] = 0.0
    return torch.cat([heads_kept.reshape(layers, heads), torch.ones(layers, 1)], dim=1).reshape(-1)


def bench_bundle(out: Path, **overrides: Any) -> Path:
    """The benchmarks' small SALMONN: 30 s Whisper chunk (88 speech tokens), LLM and encoder sized so the
    front end takes roughly the share of a training step it takes in SALMONN-13B (about a third)."""
    from ahamask.models.tiny import make_tiny_bundle

    sizes = dict(
        n_layers=4,
        n_heads=8,
        hidden_size=512,
        intermediate_size=1376,
        whisper_d_model=128,
        whisper_layers=2,
        whisper_heads=4,
        chunk_seconds=30,
        qformer_hidden_size=128,
        qformer_num_heads=4,
        qformer_intermediate_size=256,
    )
    sizes.update(overrides)
    return make_tiny_bundle(out, **sizes)


# ---------------------------------------------------------------------------------------------- benchmark
def main() -> None:
    parser = base_parser(__doc__, repeats=7)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--keep", type=float, default=0.523, help="share of heads kept (asr_gender: 52.3%%)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, default=100, help="88 speech tokens + prompt, as SALMONN")
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    setup(args)

    from ahamask.masking.fold import fold_head_mask
    from ahamask.masking.gumbel import gumbel_sigmoid
    from ahamask.masking.hooks import head_mask

    model = random_llama(args.layers, args.hidden, args.heads, seed=args.seed)
    mask = random_mask(args.layers, args.heads, args.keep, seed=args.seed)
    embeds = torch.randn(args.batch, args.prompt_len, args.hidden) * 0.02
    attention = torch.ones(args.batch, args.prompt_len, dtype=torch.long)
    note(
        f"LLaMA {args.layers} layers x {args.heads} heads, hidden {args.hidden}; batch {args.batch}, "
        f"{args.prompt_len} input positions, {args.new_tokens} new tokens (greedy, fixed length)"
    )
    note(f"mask keeps {int(mask.reshape(args.layers, -1)[:, :-1].sum())} of {args.layers * args.heads} heads")

    gen = {
        "max_new_tokens": args.new_tokens,
        "min_new_tokens": args.new_tokens,
        "do_sample": False,
        "pad_token_id": 0,
    }

    @torch.no_grad()
    def unmasked() -> None:
        model.generate(inputs_embeds=embeds, attention_mask=attention, **gen)

    @torch.no_grad()
    def folded() -> None:  # the fold and the restore are inside the timed region
        with fold_head_mask(model, mask):
            model.generate(inputs_embeds=embeds, attention_mask=attention, **gen)

    @torch.no_grad()
    def hooked() -> None:
        with head_mask(model, mask, logits=False):
            model.generate(inputs_embeds=embeds, attention_mask=attention, **gen)

    times = interleaved({"unmasked": unmasked, "folded": folded, "hooks": hooked}, args.repeats)
    note(f"generate: unmasked {statistics.median(times['unmasked']):.3f} s per call")
    figure("generate_folded_vs_unmasked", median_ratio(times, "folded", "unmasked"))
    figure("generate_hooks_vs_unmasked", median_ratio(times, "hooks", "unmasked"))

    # A mask-training step (forward + backward through the whole LLM) against the same step without a mask.
    labels = torch.randint(3, 1000, (args.batch, args.prompt_len))
    logits = torch.full((mask.numel(),), 4.0, requires_grad=True)
    train_embeds = embeds.clone().requires_grad_(True)

    def step_nomask() -> None:
        # The inputs take the gradient instead of the mask, so backward runs through every layer as well.
        model(inputs_embeds=train_embeds, attention_mask=attention, labels=labels).loss.backward()
        train_embeds.grad = None

    def step_hooks() -> None:
        weights = gumbel_sigmoid(logits.unsqueeze(0).repeat(args.batch, 1), 1.0, hard=True)
        with head_mask(model, weights, logits=False):
            loss = model(inputs_embeds=embeds, attention_mask=attention, labels=labels).loss
        (loss + 1e-4 * weights.sum(1).mean()).backward()
        logits.grad = None

    times = interleaved({"nomask": step_nomask, "hooks": step_hooks}, args.repeats)
    note(f"train step: no mask {statistics.median(times['nomask']):.3f} s")
    figure("train_step_hooks_vs_nomask", median_ratio(times, "hooks", "nomask"))


if __name__ == "__main__":
    main()
