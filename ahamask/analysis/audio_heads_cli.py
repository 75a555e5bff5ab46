"""``scripts/find_audio_heads.py``: rank a model's heads by how they listen, on a multiple-choice manifest.

    python scripts/find_audio_heads.py -c DECODE_CONFIG [--manifest M] [--k 8] [--out heads.json]
        [--direction dir.safetensors [--layer L] [--normalise raw|unit]] [--device DEV] [--options k=v ...]

The model is the config's ``model`` section (any backbone). Each manifest entry is one question: ``Q`` is
the question (wrapped by ``model.prompt_for``), ``labels.options`` its candidate answers and
``labels.answer`` (or ``text``) the reference; the MCQ world (:mod:`ahamask.synth.mcq_world`) writes
exactly this. Writes the report JSON (ranked head table, top-``k`` heads, the random and mass baselines,
the listening score against correctness, accuracy with audio and with silence) and a layers x heads heatmap
PNG beside it; ``--direction`` also writes the audio-silence steering direction of the same set.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main", "load_probe_batches"]


def build_parser():
    """The command line (shared ``-c``, ``--options``, ``--device``, ``--debug`` plus the probe's own)."""
    from ..utils.cli_args import entry_parser

    parser = entry_parser(
        __doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1], "decoding YAML (model section)"
    )
    parser.add_argument("--manifest", default=None, help="multiple-choice manifest (default: test_data_path)")
    parser.add_argument("--k", type=int, default=8, help="number of audio-specialist heads (default 8)")
    parser.add_argument(
        "--out", default=None, help="report JSON (default: <output_path stem>_audio_heads.json)"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default: batch_size_eval")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random-heads baseline")
    parser.add_argument("--direction", default=None, help="also write the audio-silence direction here")
    parser.add_argument("--layer", type=int, default=None, help="direction layer (default: the final layer)")
    parser.add_argument("--normalise", default="raw", choices=("raw", "unit"))
    return parser


def load_probe_batches(model: Any, manifest: str | Path, whisper_path: str, batch_size: int) -> list:
    """The manifest as :class:`ProbeBatch` es (waveforms kept for silence).

    Raises:
        ValueError: an entry without ``Q`` or ``labels.options``.
    """
    from ..data.dataset import SALMONNDataset
    from .listening import ProbeBatch

    ds = SALMONNDataset(manifest, whisper_path, features="device")
    for i, entry in enumerate(ds.annotation):
        labels = entry.get("labels") or {}
        if not entry.get("Q") or not isinstance(labels.get("options"), list):
            raise ValueError(
                f"{manifest}: entry {i} has no 'Q' or no 'labels.options' list (a multiple-choice entry)"
            )
    batches = []
    for start in range(0, len(ds), batch_size):
        rows = range(start, min(start + batch_size, len(ds)))
        entries = [ds.annotation[i] for i in rows]
        batches.append(
            ProbeBatch(
                samples=ds.collater([ds[i] for i in rows]),
                prompts=[model.prompt_for(e["Q"]) for e in entries],
                options=[list(e["labels"]["options"]) for e in entries],
                answers=[str(e["labels"].get("answer", e.get("text", ""))) for e in entries],
                info=[{"qtype": e["labels"].get("qtype")} for e in entries],
            )
        )
    return batches


def main(argv: Sequence[str] | None = None) -> int:
    """Run the probe; 0 on success, 2 on a bad config, file or manifest (one ``error:`` line)."""
    args = build_parser().parse_args(argv)
    from ..config import ConfigError, load_decode_config
    from ..utils.logging import setup_logging

    setup_logging(logging.INFO, rank=0)
    try:
        cfg = load_decode_config(args.cfg_path, args.options)
        manifest = args.manifest or cfg.test_data_path
        if not manifest or not Path(manifest).is_file():
            raise FileNotFoundError(f"--manifest / test_data_path: {manifest!r} is not a file")
        out = Path(
            args.out or Path(cfg.output_path).with_name(Path(cfg.output_path).stem + "_audio_heads.json")
        )
        report = run(cfg, manifest, out, args)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        if args.debug:
            raise
        print(f"find_audio_heads: error: {exc}", file=sys.stderr)
        return 2
    print(f"top-{args.k} audio-specialist heads: {report['specialist_heads']}; report {out}")
    return 0


def run(cfg: Any, manifest: str | Path, out: Path, args: Any) -> dict[str, Any]:
    """Probe, rank, write the report and the heatmap (and the direction when asked)."""
    import torch

    from ..models.backbone import build_backbone
    from ..utils.device import resolve_device
    from ..utils.io import atomic_write_json
    from .listening import head_correlation, heads_by_mass, heatmap_png, probe_set, random_heads, top_heads

    torch.manual_seed(cfg.seed)
    model = build_backbone(cfg.model, device=resolve_device(args.device or cfg.device)).eval()
    geo = model.geometry
    if not 1 <= args.k <= geo.n_layers * geo.n_heads:
        raise ValueError(f"--k: {args.k} must be in 1..{geo.n_layers * geo.n_heads}")
    batches = load_probe_batches(  # whisper_path, or model_path for Qwen2-Audio / AF3 (its feature extractor)
        model, manifest, cfg.model.front_end_path(), args.batch_size or cfg.batch_size_eval
    )
    result = probe_set(model, batches)
    corr = head_correlation(result.mass, result.effect)
    sets = {
        "specialist": top_heads(corr, args.k),
        "random": random_heads(geo.n_layers, geo.n_heads, args.k, seed=args.seed),
        "mass": heads_by_mass(result.mass, args.k),
    }
    report = _probe_report(manifest, args.k, batches, result, corr, sets)
    png = heatmap_png(
        corr, out.with_suffix(".png"), f"corr(listening mass, audio effect); top-{args.k}", sets["specialist"]
    )
    report["heatmap"] = str(png)
    if args.direction:
        report["direction"] = _write_direction(model, batches, manifest, args)
    atomic_write_json(report, out)
    return report


def _probe_report(
    manifest: str | Path, k: int, batches: list, result: Any, corr: Any, sets: dict[str, list]
) -> dict[str, Any]:
    """The report's probe figures: accuracies with audio and silence, the head sets and how well each
    set's listening score predicts correctness, and the per-head table."""
    from .listening import head_table, listening_score, score_vs_correctness

    answers = [a for b in batches for a in b.answers]
    return {
        "manifest": str(manifest),
        "n": len(answers),
        "k": k,
        "accuracy": result.accuracy,
        "accuracy_silence": sum(p == a for p, a in zip(result.predicted_silence, answers, strict=True))
        / len(answers),
        "mean_audio_effect": float(result.effect.mean()),
        "specialist_heads": [list(h) for h in sets["specialist"]],
        "baseline_heads": {n: [list(h) for h in sets[n]] for n in ("random", "mass")},
        "listening_vs_correctness": {
            n: score_vs_correctness(listening_score(result.mass, hs), result.correct)
            for n, hs in sets.items()
        },
        "head_table": head_table(corr, result.mass),
    }


def _write_direction(model: Any, batches: list, manifest: str | Path, args: Any) -> dict[str, Any]:
    """Builds the audio - silence direction at ``--layer`` over the same batches, saves it to
    ``--direction`` and returns its report entry."""
    from .silence_steering import audio_silence_direction, save_direction

    d = audio_silence_direction(
        model,
        batches,
        layer=args.layer,
        normalise=args.normalise,
        built_by=f"find_audio_heads on {manifest}",
    )
    return {"path": str(save_direction(args.direction, d)), "layer": d.layer, "norm": d.norm}
