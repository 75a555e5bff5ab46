"""Benchmark: the batched front end on the model's device against the per-clip path, and its share of a decode.

Usage: python scripts/bench_frontend.py [--threads 1] [--repeats 5] [--batch 4] [--new-tokens 20]

On the small bundle (``bench_masks.bench_bundle`` with a tiny BEATs: Whisper on a 30 s chunk, 88 speech tokens)
and ``--batch`` clips of 2 to 15 s, it prints, all interleaved in one process at a fixed thread count:

* ``data_prep_batched_vs_per_clip``: per-clip data preparation (audio read, Whisper features clip by clip
  in the dataset, collate) over the batched one (audio read and collate, then the batch's features in one
  call on the model's device); > 1 means the batched path is faster;
* ``beats_fbank_skip_vs_full``: BEATs' fbank of the padded batch computing every frame over skipping the
  frames wholly in padding (identical values);
* ``data_prep_share_of_decode``: the batched data preparation over a whole greedy decode pass of the batch
  (``SALMONN.generate`` with ``--new-tokens`` tokens, encoders included); the target is < 0.05.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cache import write_clips  # noqa: E402
from bench_masks import base_parser, bench_bundle, figure, interleaved, median_ratio, note, setup  # noqa: E402


def main() -> None:
    parser = base_parser(__doc__, repeats=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=20)
    args = parser.parse_args()
    setup(args)

    from ahamask.config import load_decode_config
    from ahamask.data.dataset import SALMONNDataset
    from ahamask.models.beats import _zero_padded_lengths
    from ahamask.models.fbank import beats_fbank
    from ahamask.models.salmonn import SALMONN

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bundle = bench_bundle(root / "bundle", with_beats=True)
        cfg = load_decode_config(bundle / "decode_config.yaml")
        model = SALMONN.from_config(cfg.model).eval()
        (root / "clips").mkdir()
        manifest = write_clips(root / "clips", args.batch, args.seed, 2.0, 15.0)
        per_clip = SALMONNDataset(manifest, cfg.model.whisper_path)
        device = SALMONNDataset(manifest, cfg.model.whisper_path, features="device")
        indices = list(range(args.batch))
        note(
            f"batch of {args.batch} clips of 2-15 s, 30 s Whisper chunk, tiny BEATs; greedy {args.new_tokens} tokens"
        )

        def prep_per_clip() -> dict:
            return per_clip.collater([per_clip[i] for i in indices])

        def prep_batched() -> dict:
            batch = device.collater([device[i] for i in indices])
            batch["spectrogram"] = model.whisper_features(batch["raw_wav"])
            return batch

        same = torch.equal(prep_per_clip()["spectrogram"], prep_batched()["spectrogram"])
        note(f"batched features equal the per-clip ones bit for bit: {same}")
        times = interleaved({"per_clip": prep_per_clip, "batched": prep_batched}, args.repeats)
        figure("data_prep_batched_vs_per_clip", median_ratio(times, "per_clip", "batched"))
        prep = times["batched"]

        batch = prep_batched()
        raw, lengths = batch["raw_wav"], _zero_padded_lengths(batch["raw_wav"], batch["padding_mask"])
        fbank = {"full": lambda: beats_fbank(raw), "skip": lambda: beats_fbank(raw, lengths=lengths)}
        note(f"fbank values identical with the skip: {torch.equal(fbank['full'](), fbank['skip']())}")
        times = interleaved(fbank, args.repeats)
        figure("beats_fbank_skip_vs_full", median_ratio(times, "full", "skip"))

        generate = {"max_new_tokens": args.new_tokens, "min_length": args.new_tokens + 1, "num_beams": 1}
        prompts = [model.prompt_for("")] * args.batch

        @torch.no_grad()
        def decode() -> None:
            model.generate(prep_batched(), generate, prompts=prompts)

        times = interleaved({"decode": decode, "prep": prep_batched}, args.repeats)
        note(
            f"decode pass {statistics.median(times['decode']):.3f} s, batched data preparation "
            f"{statistics.median(times['prep']):.3f} s (earlier round {statistics.median(prep):.3f} s)"
        )
        figure("data_prep_share_of_decode", median_ratio(times, "prep", "decode"))


if __name__ == "__main__":
    main()
