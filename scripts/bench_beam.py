"""Benchmark: beam search with the prompt's prefill run once per sample vs transformers' per-beam prefill.

Usage: python scripts/bench_beam.py [--threads 1] [--repeats 5] [--beams 4] [--new-tokens 20]

transformers' ``generate`` expands a batch to ``batch x beams`` rows before its prefill, so the prompt and the
88 speech embeddings of a 30 s clip run through the LLM ``beams`` times for identical rows;
:func:`ahamask.models.beam_search.generate_with_shared_prefill` runs them once and repeats the KV cache.
Both variants decode the same LLM inputs (the small benchmark bundle: LLaMA 4 x 8 heads, d=512, batch 4)
in the same process, interleaved; prints ``name: ratio`` (plain time / shared-prefill time: > 1 is faster)
and checks that the ids are equal.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_masks import base_parser, bench_bundle, figure, interleaved, median_ratio, note, setup  # noqa: E402


def main() -> None:
    parser = base_parser(__doc__, repeats=5)
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    setup(args)
    from ahamask.config import load_decode_config
    from ahamask.models.backbone import build_backbone
    from ahamask.models.beam_search import generate_with_shared_prefill

    with tempfile.TemporaryDirectory() as tmp:
        bundle = bench_bundle(Path(tmp) / "bundle")
        cfg = load_decode_config(bundle / "decode_config.yaml")
        model = build_backbone(cfg.model).eval()
        gen = torch.Generator().manual_seed(args.seed)
        with torch.no_grad():
            speech = model.encode_speech(torch.randn(args.batch, 80, 3000, generator=gen))
            prompts = [model.prompt_for("")] * args.batch
            embeds, attention, _ = model.build_inputs(speech, prompts, None, pad_left=True)
        kwargs = model.generation_kwargs({"num_beams": args.beams, "max_new_tokens": args.new_tokens})
        # Decode the full length every time, so both variants do the same number of steps.
        kwargs["eos_token_id"] = None
        llm = model.llama_model
        note(f"LLM inputs {tuple(embeds.shape)}, beams {args.beams}, {args.new_tokens} new tokens")
        ids: dict[str, torch.Tensor] = {}

        def plain() -> None:
            with torch.no_grad():
                ids["plain"] = llm.generate(inputs_embeds=embeds, attention_mask=attention, **kwargs)

        def shared() -> None:
            ids["shared"] = generate_with_shared_prefill(llm, embeds, attention, **kwargs)

        times = interleaved({"plain": plain, "shared": shared}, args.repeats)
        figure(f"beam{args.beams}_shared_prefill_speedup", median_ratio(times, "plain", "shared"))
        same = torch.equal(ids["plain"], ids["shared"])
        note(f"ids equal: {same}")
        if not same:
            sys.exit("the shared prefill changed the decoded ids")


if __name__ == "__main__":
    main()
