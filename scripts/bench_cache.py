"""Benchmark: mask-training epoch time with cached speech embeddings against recomputing them every epoch.

Usage: python scripts/bench_cache.py [--threads 1] [--repeats 3] [--clips 16] [--batch 4] [--beats]

Two ``MaskTrainer`` runs on the same small bundle (see ``bench_masks.bench_bundle``) and the same synthetic
training set (``--clips`` clips of 1 to 15 s) alternate epochs; one has ``run.cache_speech_embeds=true``.
Its first epoch fills the cache (``epoch_fill_vs_uncached``, against the median uncached epoch); later
epochs read it (``epoch_cached_vs_uncached``, < 1 is faster). Epoch time includes loading the audio and
Whisper features, which the cache does not skip (the features are its key). That cached and uncached runs
train the same mask is tested in tests/unit/models/test_speech_cache.py; here the two runs share one process
and its random stream, so their Gumbel draws differ.
"""

from __future__ import annotations

import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_masks import base_parser, bench_bundle, figure, interleaved, median_ratio, note, setup  # noqa: E402


def write_clips(folder: Path, count: int, seed: int, low: float = 1.0, high: float = 15.0) -> Path:
    """Writes ``count`` voiced-buzz clips of random length and an ASR manifest; returns the manifest."""
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(count):
        t = np.arange(int(16000 * rng.uniform(low, high))) / 16000
        f0 = rng.uniform(90, 250)
        wav = sum(0.1 / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 6)) + 0.01 * rng.standard_normal(
            t.size
        )
        sf.write(folder / f"clip{i:03d}.wav", wav.astype(np.float32), 16000, subtype="PCM_16")
        entries.append({"path": f"clip{i:03d}.wav", "text": "hello world", "task": "asr"})
    manifest = folder / "clips.json"
    manifest.write_text(json.dumps({"annotation": entries}))
    return manifest


def main() -> None:
    parser = base_parser(__doc__, repeats=3)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--beats", action="store_true", help="add a tiny BEATs to the bundle")
    args = parser.parse_args()
    setup(args)

    from ahamask.config import load_train_config
    from ahamask.training.trainer import MaskTrainer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bundle = bench_bundle(root / "bundle", with_beats=args.beats)
        (root / "clips").mkdir()
        manifest = write_clips(root / "clips", args.clips, args.seed)
        iters = args.clips // args.batch
        trainers = {}
        for name, cached in (("uncached", False), ("cached", True)):
            cfg = load_train_config(
                bundle / "config.yaml",
                [
                    f"datasets.train_ann_path={manifest}",
                    "datasets.valid_ann_path=",
                    f"run.output_dir={root / name}",
                    "run.job_id=bench",
                    f"run.cache_speech_embeds={cached}",
                    f"run.batch_size_train={args.batch}",
                    f"run.iters_per_epoch={iters}",
                    f"run.optims.max_epoch={args.repeats + 3}",
                ],
            )
            trainers[name] = MaskTrainer(cfg)
            trainers[name].setup()
        note(
            f"{args.clips} clips of 1-15 s, batch {args.batch}, {iters} steps per epoch (one pass over them)"
        )

        epochs = {"uncached": 0, "cached": 0}

        def epoch_of(name: str):
            def run() -> None:
                # The trainer's tqdm bar is on for rank 0; keep it off the figures.
                with contextlib.redirect_stderr(io.StringIO()):
                    trainers[name].train_epoch(epochs[name])
                epochs[name] += 1

            return run

        start = time.perf_counter()
        epoch_of("cached")()  # fills the cache
        fill = time.perf_counter() - start
        times = interleaved({"uncached": epoch_of("uncached"), "cached": epoch_of("cached")}, args.repeats)
        cache = trainers["cached"].speech_cache
        note(
            f"uncached epoch {statistics.median(times['uncached']):.2f} s; cache: {cache.hits} hits, "
            f"{cache.misses} misses, {len(cache)} entries"
        )
        figure("epoch_fill_vs_uncached", fill / statistics.median(times["uncached"]))
        figure("epoch_cached_vs_uncached", median_ratio(times, "cached", "uncached"))
        for trainer in trainers.values():
            trainer.cleanup()


if __name__ == "__main__":
    main()
