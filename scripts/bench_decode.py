"""Benchmark: decoding throughput, length-bucketed batches against a naive one-by-one loop.

Usage: python scripts/bench_decode.py [--threads 1] [--repeats 1] [--synthetic 200] [--batch 8] [--beams 4]

Both variants decode the same manifest with the same masked model (small bundle, see
``bench_masks.bench_bundle``, with a 256-wide LLM; a random mask keeping 78.7% of the heads, the gender
mask's share):

* naive: for each entry, ``dataset[i]`` (audio + Whisper features on the CPU), a batch of one, and
  ``model.generate`` with the mask applied by hooks;
* bucketed: :func:`ahamask.evaluation.decode.decode_dataset` over length buckets, batches of ``--batch`` clips of similar
  length, Whisper features per batch on the model's device, the mask folded into the weights.

Sets: the ten LibriSpeech demo files (``../shared/reference/demo_wavs``; skipped when absent) and
``--synthetic`` generated clips of 1 to 20 s. Prints utterances per second of both and the ratio
``<set>_speedup``, and a note when the two variants' answers differ.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cache import write_clips  # noqa: E402
from bench_masks import (  # noqa: E402
    base_parser,
    bench_bundle,
    figure,
    interleaved,
    median_ratio,
    note,
    random_mask,
    setup,
)

DEMO_WAVS = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "demo_wavs"


def demo_manifest(folder: Path) -> Path | None:
    """A manifest of the ten demo files (absolute paths), or None without the reference data."""
    wavs = sorted(DEMO_WAVS.glob("*.flac")) if DEMO_WAVS.is_dir() else []
    if not wavs:
        return None
    entries = [{"path": str(w.resolve()), "text": "Male", "task": "gender_recognition"} for w in wavs]
    path = folder / "demo.json"
    path.write_text(json.dumps({"annotation": entries}))
    return path


def main() -> None:
    parser = base_parser(__doc__, repeats=1)
    parser.add_argument("--synthetic", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--beams", type=int, default=4, help="num_beams (the official decode config: 4)")
    parser.add_argument("--new-tokens", type=int, default=10)
    parser.add_argument("--beats", action="store_true", help="add a tiny BEATs to the bundle")
    args = parser.parse_args()
    setup(args)

    from ahamask.config import load_decode_config
    from ahamask.data.buckets import entry_durations, length_buckets
    from ahamask.data.collate import collate
    from ahamask.data.dataset import SALMONNDataset
    from ahamask.evaluation.decode import decode_dataset, postprocess
    from ahamask.masking.apply import decoding_mask
    from ahamask.masking.hooks import head_mask
    from ahamask.models.salmonn import SALMONN

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # A narrower LLM than the training benchmarks' (hidden 256): with 4 beams every clip's prefill runs
        # four times, and the default run has to stay near two minutes on one CPU thread.
        bundle = bench_bundle(root / "bundle", with_beats=args.beats, hidden_size=256, intermediate_size=688)
        cfg = load_decode_config(bundle / "decode_config.yaml")
        model = SALMONN.from_config(cfg.model).eval()
        mask = random_mask(model.n_layers, model.n_heads, 0.787, seed=args.seed)
        generate = {"max_new_tokens": args.new_tokens, "num_beams": args.beams}
        prompt = model.prompt_for("")
        note(f"generate {generate}; bucketed batches of {args.batch}; mask keeps 78.7% of heads")

        sets = {}
        demo = demo_manifest(root)
        if demo is None:
            note(f"no demo files at {DEMO_WAVS}: the demo10 figures are skipped")
        else:
            sets["demo10"] = demo
        (root / "synthetic").mkdir()
        sets[f"synthetic{args.synthetic}"] = write_clips(
            root / "synthetic", args.synthetic, args.seed, 1.0, 20.0
        )

        for name, manifest in sets.items():
            dataset = SALMONNDataset(manifest, cfg.model.whisper_path)
            answers = {}

            @torch.no_grad()
            def naive(dataset=dataset, answers=answers) -> None:
                out = []
                for index in range(len(dataset)):
                    samples = collate([dataset[index]])
                    with head_mask(model.decoder, mask):
                        out += model.generate(samples, generate, prompts=[prompt])
                answers["naive"] = [postprocess(a) for a in out]

            def bucketed(dataset=dataset, answers=answers) -> None:
                buckets = length_buckets(entry_durations(dataset), args.batch)
                with decoding_mask(model.decoder, mask, "fold"):
                    records = decode_dataset(
                        model, dataset, generate_cfg=generate, batches=buckets, progress=False
                    )
                answers["bucketed"] = [r["output"] for r in records]

            # Only the small demo set gets a warm-up round; the large set amortises first-call costs itself.
            times = interleaved(
                {"naive": naive, "bucketed": bucketed}, args.repeats, warmup=int(len(dataset) <= 20)
            )
            if answers["naive"] != answers["bucketed"]:
                differ = sum(a != b for a, b in zip(answers["naive"], answers["bucketed"], strict=True))
                note(f"{name}: {differ} of {len(dataset)} answers differ between the variants")
            for variant in ("naive", "bucketed"):
                figure(
                    f"{name}_utt_per_s_{variant}", len(dataset) / statistics.median(times[variant]), digits=2
                )
            figure(f"{name}_speedup", median_ratio(times, "naive", "bucketed"), digits=2)


if __name__ == "__main__":
    main()
