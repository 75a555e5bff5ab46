"""The listening experiment on the MCQ world: a base model trained with a text prior, its audio-specialist
heads, its listening score, and audio-silence steering against its controls, over several seeds.

Per seed: build the MCQ world (:mod:`ahamask.synth.mcq_world`, training prior ``prior`` toward a favoured
answer, balanced held-out splits); train a small SALMONN on it with the demo's trainer pieces
(:mod:`ahamask.demo.base_model`: the initial bundle recipe, the speech-side pretraining with the auxiliary
probes, then joint training on the questions; LLaMA without LoRA); then, on the frozen model:

* probe the **calibration** split: head ranking by correlation of listening mass with the audio effect; the
  top ``k`` are the audio-specialist heads; baselines ``k`` random heads and the ``k`` heads of most mass;
* on the **test** split: accuracy, accuracy with silence instead of the audio (what the prior alone gives),
  accuracy on questions whose answer agrees / disagrees with the prior (text dominance shows as a gap), and
  the listening score of each head set against correctness;
* directions from the calibration split at the final layer: ``audio``: the residual audio-silence mean
  difference (raw), ``random``: a Gaussian of its norm, ``specialist_heads`` / ``random_heads`` /
  ``mass_heads``: the audio-silence difference of what those heads write, rescaled to the same norm (the
  controls differ in direction only); ``beta`` for each chosen on the **valid** split over ``betas`` (ties:
  the smallest), accuracy reported on **test** at that beta, and the whole test sweep kept;
  ``audio_at_heads_layer``: the residual audio-silence difference at the layer holding most specialist heads
  (the issue's "layer(s) where the selected heads sit"; ties: the deeper), added at that layer;
* the direction's norm next to the mean norm of the representation it is added to, and its cosine with the
  mean representation (the final RMSNorm cancels any component along the representation).

Seeds are run in order and all are reported (mean and population std); nothing is selected afterwards.
"""

from __future__ import annotations

import logging
import math
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.dataset import SALMONNDataset
from ..demo.base_model import (
    AuxiliaryHeads,
    BaseModelSpec,
    BaseTrainSettings,
    ClipBank,
)
from ..demo.base_model import ClipBatches as _Batches
from ..demo.base_model import aux_targets as _aux_targets
from ..demo.base_model import lr_at as _lr_at
from ..demo.base_model import pretrain_speech as _pretrain_speech
from ..demo.base_model import training_model as _training_model
from ..models.tiny import make_tiny_bundle
from ..synth.mcq_world import FAVOURED, QTYPES, build_mcq_world, mcq_corpus
from ..utils.io import atomic_write_json
from .listening import (
    ProbeBatch,
    head_correlation,
    head_table,
    heads_by_mass,
    heatmap_png,
    listening_score,
    probe_set,
    random_heads,
    score_vs_correctness,
    top_heads,
)
from .silence_steering import (
    audio_silence_direction,
    beta_sweep,
    random_direction,
    rescaled,
    save_direction,
    steered_accuracy,
)

logger = logging.getLogger(__name__)

__all__ = ["ExperimentSettings", "run_seed", "run_experiment", "summarise"]


@dataclass
class ExperimentSettings:
    """Sizes of one run (CPU-small defaults: a few minutes per seed on two cores).

    Attributes:
        seeds: the seeds (world, weights, batches and the random controls all follow the seed).
        n_clips: clips per split of the MCQ world.
        prior: training share of the favoured answer.
        model: the SALMONN sizes.
        base: the base-model optimisation (``steps`` joint steps after ``speech_steps``).
        k: number of audio-specialist heads.
        betas: the sweep.
        batch_size: probe / evaluation batch size.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    n_clips: dict[str, int] = field(
        default_factory=lambda: {"train": 400, "calib": 40, "valid": 40, "test": 80}
    )
    prior: float = 0.8
    model: BaseModelSpec = field(
        default_factory=lambda: BaseModelSpec(n_layers=4, n_heads=8, hidden_size=128, vocab_size=400)
    )
    base: BaseTrainSettings = field(
        default_factory=lambda: BaseTrainSettings(
            steps=250, batch_size=16, speech_steps=150, warmup_steps=30, empty_share=0.0
        )
    )
    k: int = 4
    betas: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
    batch_size: int = 40


def _init_bundle(out: Path, spec: BaseModelSpec, seed: int) -> Path:
    """The initial tiny bundle, its tokenizer trained with the MCQ questions and answers so that every
    answer word is a few tokens."""
    answers = [a for _, pair in QTYPES.values() for a in pair]
    return make_tiny_bundle(
        out / "init",
        extra_corpus=mcq_corpus() * 20 + answers * 50,
        chunk_seconds=2,
        seed=seed,
        lora_rank=8,
        **asdict(spec),
    )


def _joint_optimizer(
    model: Any, heads: AuxiliaryHeads, base: BaseTrainSettings
) -> tuple[torch.optim.AdamW, list, list]:
    """AdamW over the LLM (peak ``lr``) and the speech side with the auxiliary heads (peak ``speech_lr``);
    returns it with the two parameter lists (for the gradient clipping)."""
    llm = [p for p in model.llama_model.parameters() if p.requires_grad]
    llm_ids = {id(p) for p in llm}
    speech_side = [p for p in model.parameters() if p.requires_grad and id(p) not in llm_ids]
    speech_side += list(heads.parameters())
    optimizer = torch.optim.AdamW(
        [{"params": llm, "peak": base.lr}, {"params": speech_side, "peak": base.speech_lr or base.lr}],
        lr=base.lr,
        weight_decay=base.weight_decay,
    )
    return optimizer, llm, speech_side


def _train(world_root: Path, manifests: dict[str, Path], out: Path, settings: ExperimentSettings, seed: int):
    """Trains the seed's base model (speech-side pretraining, then joint training on the questions) and
    returns it frozen, with its bundle folder and the training figures."""
    bundle = _init_bundle(out, settings.model, seed)
    base = BaseTrainSettings(**{**asdict(settings.base), "seed": seed})
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = _training_model(bundle)
    bank = ClipBank.from_manifest(manifests["train"], bundle / "whisper", progress=False)
    import json

    entries = json.loads(manifests["train"].read_text(encoding="utf-8"))["annotation"]
    counts = sorted({int(lab["count"]) for lab in bank.labels})
    min_count = 2  # the world's symbol range starts at 2 (audio.DEFAULT_N_SYMBOLS)
    heads = AuxiliaryHeads(model.llama_model.config.hidden_size, 5)
    batches = _Batches(len(bank.labels), base.batch_size, rng)
    model.train()
    started = time.perf_counter()
    _pretrain_speech(model, heads, bank, batches, base, min_count, False, False)
    optimizer, llm, speech_side = _joint_optimizer(model, heads, base)
    losses = []
    for step in range(base.steps):
        idx = batches.next()
        prompts = [model.prompt_for(entries[i]["Q"]) for i in idx]
        targets = [entries[i]["text"] for i in idx]
        for group in optimizer.param_groups:
            group["lr"] = group["peak"] * _lr_at(step, base)
        speech = model.encode_speech(bank.spectrograms[idx])
        ce = model({"text": targets}, prompts=prompts, speech_embeds=speech)["loss"]
        aux = heads(speech, _aux_targets([bank.labels[i] for i in idx], min_count))
        loss = ce + base.aux_weight * aux
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(llm + speech_side, 1.0)
        optimizer.step()
        losses.append(float(ce))
    model.eval().requires_grad_(False)
    tail = losses[-25:]
    return (
        model,
        bundle,
        {
            "train_seconds": round(time.perf_counter() - started, 1),
            "final_ce": sum(tail) / len(tail),
            "train_entries": len(entries),
            "counts_seen": counts,
        },
    )


def _probe_batches(model: Any, manifest: Path, whisper: Path, batch_size: int) -> list[ProbeBatch]:
    ds = SALMONNDataset(manifest, str(whisper), features="device")
    out = []
    for start in range(0, len(ds), batch_size):
        items = [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
        entries = ds.annotation[start : start + len(items)]
        out.append(
            ProbeBatch(
                samples=ds.collater(items),
                prompts=[model.prompt_for(e["Q"]) for e in entries],
                options=[list(e["labels"]["options"]) for e in entries],
                answers=[e["labels"]["answer"] for e in entries],
                info=[
                    {
                        "qtype": e["labels"]["qtype"],
                        "agrees_with_prior": e["labels"]["answer"] == e["labels"]["favoured"],
                    }
                    for e in entries
                ],
            )
        )
    return out


def _direction_geometry(model: Any, batches: list[ProbeBatch], d: Any) -> dict[str, float]:
    """How large the direction is next to the representation it is added to, and how aligned with it.

    The final norm (RMSNorm) removes any component along the representation itself, so a direction nearly
    parallel to the mean representation moves the logits little whatever ``beta``.
    """
    from .residual import capture_residual

    reps = []
    with torch.no_grad():
        for b in batches:
            inputs = model.prompt_inputs(model.encode_audio(b.samples), b.prompts)
            reps.append(capture_residual(model, inputs, [d.layer])[d.layer].cpu())
    h = torch.cat(reps)
    mean = h.mean(0)
    return {
        "mean_representation_norm": float(h.norm(dim=-1).mean()),
        "cosine_with_mean_representation": float(
            torch.nn.functional.cosine_similarity(d.vector, mean, dim=0)
        ),
    }


def _best_beta(sweep: dict[float, float]) -> float:
    best = max(sweep.values())
    return min(b for b, acc in sweep.items() if acc == best)


def _rank_heads(model: Any, calib: Any, k: int, seed: int) -> tuple[torch.Tensor, dict[str, list]]:
    """The calibration head ranking (correlation of listening mass with the audio effect) and the three
    head sets compared: the top ``k`` (specialist), ``k`` random ones (seeded from the run's seed) and the
    ``k`` of most mass."""
    geo = model.geometry
    corr = head_correlation(calib.mass, calib.effect)
    head_sets = {
        "specialist": top_heads(corr, k),
        "random": random_heads(geo.n_layers, geo.n_heads, k, seed=1000 + seed),
        "mass": heads_by_mass(calib.mass, k),
    }
    return corr, head_sets


def _test_figures(
    test: Any, batches: list[ProbeBatch], head_sets: dict[str, list]
) -> tuple[dict[str, Any], dict[str, Any], torch.Tensor]:
    """From the test probe: the accuracy figures (with audio, with silence, on questions agreeing and
    disagreeing with the prior), each head set's listening score against correctness, and the test head
    correlation."""
    agrees = torch.tensor([i["agrees_with_prior"] for i in test.info])
    correct = test.correct
    silence_acc = sum(
        p == a
        for p, a in zip(test.predicted_silence, [b for batch in batches for b in batch.answers], strict=True)
    ) / len(test.predicted)
    listening = {
        name: score_vs_correctness(listening_score(test.mass, hs), correct) for name, hs in head_sets.items()
    }
    test_corr = head_correlation(test.mass, test.effect)
    figures = {
        "accuracy_probe": test.accuracy,
        "accuracy_silence": silence_acc,
        "accuracy_prior_agrees": float(correct[agrees].float().mean()) if agrees.any() else None,
        "accuracy_prior_disagrees": float(correct[~agrees].float().mean()) if (~agrees).any() else None,
        "n": len(test.predicted),
        "mean_audio_effect": float(test.effect.mean()),
    }
    return figures, listening, test_corr


def _directions(
    model: Any, calib: list[ProbeBatch], head_sets: dict[str, list], seed: int
) -> tuple[dict[str, Any], int]:
    """The steering directions compared (see the module docstring), built in a fixed order from the
    calibration split, and the layer holding most specialist heads (ties: the deeper one)."""
    audio = audio_silence_direction(model, calib, built_by=f"MCQ world seed {seed}, calib split")
    directions = {"audio": audio, "random": random_direction(audio, seed=2000 + seed)}
    for name, hs in head_sets.items():
        d = audio_silence_direction(
            model, calib, source="heads", heads=hs, built_by=f"{name} heads, seed {seed}"
        )
        directions[f"{name}_heads"] = rescaled(d, audio.norm, "rescaled to the audio direction's norm")
    layers = [lay for lay, _ in head_sets["specialist"]]
    head_layer = max(set(layers), key=lambda lay: (layers.count(lay), lay))
    # (Computed even when that is the final layer, so every seed has the same rows.)
    directions["audio_at_heads_layer"] = audio_silence_direction(
        model, calib, layer=head_layer, built_by=f"MCQ world seed {seed}, layer {head_layer}"
    )
    return directions, head_layer


def _sweep_report(valid_sweep: dict[str, dict], test_sweep: dict[str, dict]) -> dict[str, Any]:
    """Each direction's beta chosen on valid (ties: the smallest), both sweeps, and the test accuracy at
    the chosen beta."""
    chosen = {name: _best_beta(valid_sweep[name]) for name in valid_sweep}
    return {
        "beta_chosen_on_valid": chosen,
        "valid_sweep": {n: {str(b): a for b, a in s.items()} for n, s in valid_sweep.items()},
        "test_sweep": {n: {str(b): a for b, a in s.items()} for n, s in test_sweep.items()},
        "test_accuracy_at_chosen_beta": {n: test_sweep[n][chosen[n]] for n in valid_sweep},
    }


def run_seed(seed: int, out: Path, settings: ExperimentSettings) -> dict[str, Any]:
    """One seed of the experiment (see the module docstring); writes ``out/seed_<seed>/result.json``."""
    folder = out / f"seed_{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    world = build_mcq_world(folder / "world", seed=seed, n_clips=settings.n_clips, prior=settings.prior)
    model, bundle, training = _train(world.root, world.manifests, folder, settings, seed)
    whisper = bundle / "whisper"
    # The frozen model uses the trained encoder: the training model holds it; the dataset only needs the
    # feature extractor (identical in the bundle).
    sets = {
        s: _probe_batches(model, world.manifests[s], whisper, settings.batch_size)
        for s in ("calib", "valid", "test")
    }
    calib = probe_set(model, sets["calib"])
    corr, head_sets = _rank_heads(model, calib, settings.k, seed)
    heatmap_png(
        corr,
        folder / "head_correlation.png",
        f"seed {seed}: corr(mass, audio effect), top-{settings.k} outlined",
        head_sets["specialist"],
    )
    test = probe_set(model, sets["test"])
    test_figures, listening, test_corr = _test_figures(test, sets["test"], head_sets)
    directions, head_layer = _directions(model, sets["calib"], head_sets, seed)
    audio = directions["audio"]
    save_direction(folder / "audio_direction.safetensors", audio)
    geometry = _direction_geometry(model, sets["calib"], audio)
    valid_sweep = beta_sweep(model, sets["valid"], directions, settings.betas)
    test_sweep = beta_sweep(model, sets["test"], directions, settings.betas)
    base_acc = steered_accuracy(model, sets["test"], None, 0.0)["accuracy"]
    result = {
        "seed": seed,
        "training": training,
        "world": {"entries": world.counts, "prior": world.prior, "favoured": FAVOURED},
        "head_ranking_calib": head_table(corr, calib.mass),
        "head_sets": {n: [list(h) for h in hs] for n, hs in head_sets.items()},
        "specialist_overlap_with_mass_heads": len(set(head_sets["specialist"]) & set(head_sets["mass"])),
        "specialist_heads_test_correlation": [
            round(float(test_corr[lay, h]), 4) for lay, h in head_sets["specialist"]
        ],
        "test": {"accuracy": base_acc, **test_figures},
        "listening_vs_correctness": listening,
        "direction_norm": audio.norm,
        "direction_geometry": geometry,
        "specialist_layer": head_layer,
        **_sweep_report(valid_sweep, test_sweep),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(result, folder / "result.json")
    return result


def _stat(values: list[float | None]) -> dict[str, float | int | None]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {
        "mean": statistics.fmean(vals),
        "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0,
        "n": len(vals),
    }


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and population std over seeds of the table's numbers."""
    names = list(results[0]["test_accuracy_at_chosen_beta"])
    table = {"base": _stat([r["test"]["accuracy"] for r in results])}
    for name in names:
        table[f"steered[{name}]"] = _stat([r["test_accuracy_at_chosen_beta"][name] for r in results])
    return {
        "seeds": [r["seed"] for r in results],
        "accuracy_table": table,
        "silence_accuracy": _stat([r["test"]["accuracy_silence"] for r in results]),
        "accuracy_prior_agrees": _stat([r["test"]["accuracy_prior_agrees"] for r in results]),
        "accuracy_prior_disagrees": _stat([r["test"]["accuracy_prior_disagrees"] for r in results]),
        "listening_auc": {
            n: _stat([r["listening_vs_correctness"][n]["auc"] for r in results])
            for n in results[0]["listening_vs_correctness"]
        },
        "listening_mean_correct_minus_wrong": {
            n: _stat(
                [
                    (
                        r["listening_vs_correctness"][n]["mean_correct"]
                        - r["listening_vs_correctness"][n]["mean_wrong"]
                    )
                    if r["listening_vs_correctness"][n]["mean_wrong"] is not None
                    and r["listening_vs_correctness"][n]["mean_correct"] is not None
                    else None
                    for r in results
                ]
            )
            for n in results[0]["listening_vs_correctness"]
        },
        "beta_chosen": {n: [r["beta_chosen_on_valid"][n] for r in results] for n in names},
        "specialist_heads": [r["head_sets"]["specialist"] for r in results],
    }


def run_experiment(out: str | Path, settings: ExperimentSettings | None = None) -> dict[str, Any]:
    """Every seed of ``settings``, then ``out/summary.json`` (per-seed results included)."""
    settings = settings or ExperimentSettings()
    out = Path(out)
    results = []
    for seed in settings.seeds:
        logger.info("listening experiment: seed %d", seed)
        results.append(run_seed(seed, out, settings))
    summary = {"settings": asdict(settings), "summary": summarise(results), "per_seed": results}
    atomic_write_json(summary, out / "summary.json")
    return summary
