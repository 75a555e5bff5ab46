"""The localisation experiment: does instruction-contrast steering make the attention read-out find events?

Per seed, on CPU: build a localisation world (:mod:`ahamask.synth.localization_world`), train a small SALMONN
base model on it (reusing the demo's bundle builder, training model, schedule, batching and bundle writer
from :mod:`ahamask.demo.base_model`), build one steering vector per event type on the calibration clips
(A = "Listen for the <event>.", B = the instruction-free prompt), then localise every event of the test clips
four ways and score them (:mod:`ahamask.analysis.localization_metrics`):

* **steered read-out**: the attention of the answer position under the read-out prompt with ``alpha * v_event``
  added (:mod:`ahamask.analysis.temporal`);
* **unsteered read-out**: the same without the vector (``alpha = 0``);
* **direct prompting**: the model is asked "When do you hear the <event>?" and the span parsed from its answer;
* **random**: an interval of the true length placed uniformly (the same-length baseline).

Also reported: the read-out under instruction A itself (the prompt the vector was taken from), the other
read-out prompt, and the steered read-out for every ``alpha`` of ``steering.alphas`` (the dependence study).

The base model (our stand-in for a pretrained LALM): its audio encoder is first pretrained on frame-level
event presence (per-token BCE with the event shares of each token's span, plus a clip-level bag of events;
the stand-in for an audio-tagging encoder such as BEATs) and then frozen (as SALMONN freezes Whisper; it
also keeps a step CPU-cheap), then the decoder trains on three tasks:
``tags`` (also the empty-instruction default), ``detect`` (yes/no for a queried event) and, with a small
share (``base.localize_share``, "a little grounding data"), ``localize`` (the span as text). The read-out is
never trained: nothing in training looks at attention.

Only the base model is a SALMONN: :func:`build_event_vectors` and :func:`localize` take any
:class:`~ahamask.models.backbone.AudioLLM` (the ``build`` / ``localize`` commands of
:mod:`ahamask.analysis.steering_vectors_cli` run them on a Qwen2-Audio or AF3 bundle too).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import load_decode_config
from ..data.dataset import SALMONNDataset
from ..demo.base_model import (
    BaseModelSpec,
    BaseTrainSettings,
    ClipBank,
    build_initial_bundle,
    save_trained_bundle,
)
from ..demo.base_model import ClipBatches as _Batches
from ..demo.base_model import lr_at as _lr_at
from ..demo.base_model import training_model as _training_model
from ..models.backbone import AudioLLM, pad_audio_rows
from ..models.salmonn import SALMONN
from ..synth.localization_world import (
    TEST_TEMPLATES,
    TRAIN_TEMPLATES,
    LocalizationWorld,
    build_localization_world,
    localization_target,
    token_event_targets,
)
from ..utils.io import atomic_write_json, atomic_write_text
from .attention import audio_attention
from .contrast_steering import (
    contrast_vectors,
    default_inject_layers,
    load_vectors,
    model_identity,
    normalize_vectors,
    save_vectors,
    steering,
)
from .localization_metrics import mean_std, parse_time_span, random_interval, score_interval, summarize
from .temporal import ReadoutConfig, readout, top_audio_heads

logger = logging.getLogger(__name__)

__all__ = [
    "WorldSection",
    "BaseSection",
    "SteeringSection",
    "ReadoutSection",
    "LocalizationConfig",
    "train_localization_base",
    "build_event_vectors",
    "localize",
    "run_experiment",
    "format_table",
]


@dataclass
class WorldSection:
    """The localisation world of each seed (clips per split, clip length)."""

    n_train: int = 400
    n_calib: int = 30
    n_test: int = 50
    clip_seconds: float = 3.0


@dataclass
class BaseSection:
    """The base model: sizes (the demo's :class:`BaseModelSpec` fields) and training."""

    n_layers: int = 4
    n_heads: int = 8
    hidden_size: int = 128
    intermediate_size: int = 256
    vocab_size: int = 400
    second_per_window: float = 0.12
    steps: int = 400
    speech_steps: int = 120
    batch_size: int = 16
    lr: float = 3e-3
    speech_lr: float = 1e-3
    warmup_steps: int = 40
    empty_share: float = 0.2
    localize_share: float = 0.1


@dataclass
class SteeringSection:
    """How vectors are built and injected (see :mod:`ahamask.analysis.contrast_steering`).

    ``instruction_a`` holds ``{}`` for the event; ``inject_layers`` empty means the default middle layer;
    ``calibration``: ``with_event`` (clips holding the event) or ``all``.
    """

    instruction_a: str = "Listen for the {}."
    instruction_b: str = ""
    position: str = "last"
    normalize: str = "none"
    inject_layers: list[int] = field(default_factory=list)
    positions: str = "last"
    prefill_only: bool = False
    alpha: float = 1.0
    alphas: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0, 4.0, 8.0])
    calibration: str = "with_event"


@dataclass
class ReadoutSection:
    """How attention becomes an interval (see :mod:`ahamask.analysis.temporal`).

    ``prompt``: ``query`` (the direct-prompting question) or ``neutral`` (``instruction_b``); ``layers`` empty
    means every layer after the first injected one; ``heads``: ``all`` or ``top:K`` (K heads with the most
    audio mass on the calibration clips under the read-out prompt, the listening probe's ranking).
    """

    prompt: str = "query"
    layers: list[int] = field(default_factory=list)
    heads: str = "all"
    normalize: str = "none"
    smooth_seconds: float = 0.25
    rule: str = "window"
    threshold: float = 0.5


@dataclass
class LocalizationConfig:
    """Everything the experiment depends on (``configs/experiments/localization.yaml``).

    ``decode_config`` and ``world_dir`` are read only by ``scripts/steering_vectors.py build|localize``: a
    trained bundle's decode config and a built localisation world (the experiment makes its own per seed).
    """

    out_dir: str = "exp/localization"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    world: WorldSection = field(default_factory=WorldSection)
    base: BaseSection = field(default_factory=BaseSection)
    steering: SteeringSection = field(default_factory=SteeringSection)
    readout: ReadoutSection = field(default_factory=ReadoutSection)
    plots: int = 8
    max_new_tokens: int = 12
    batch_size: int = 64
    decode_config: str = ""
    world_dir: str = ""


# ---------------------------------------------------------------------------------------------------- base model
class EventHeads(nn.Module):
    """Probes on the speech embeddings: per-token event presence and the clip's bag of events (dropped after)."""

    def __init__(self, width: int, n_types: int) -> None:
        super().__init__()
        self.frame = nn.Linear(width, n_types)
        self.bag = nn.Linear(width, n_types)

    def forward(self, speech: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        loss = F.binary_cross_entropy_with_logits(self.frame(speech), frame)
        bag = (frame.amax(1) > 0).float()
        return loss + F.binary_cross_entropy_with_logits(self.bag(speech.mean(1)), bag)


def _example(labels: dict, types: Sequence[str], rng: random.Random, cfg: BaseSection) -> tuple[str, str]:
    """(instruction, target) of one training example drawn for a clip."""
    if rng.random() < cfg.empty_share:
        return "", localization_target("tags", labels)
    present = list(labels["event_types"])
    u = rng.random()
    if u < cfg.localize_share:
        event = rng.choice(present)
        return rng.choice(TRAIN_TEMPLATES["localize"]).format(event), localization_target(
            "localize", labels, event
        )
    if u < cfg.localize_share + (1 - cfg.localize_share) / 2:
        absent = [t for t in types if t not in present]
        event = rng.choice(present) if rng.random() < 0.5 or not absent else rng.choice(absent)
        return rng.choice(TRAIN_TEMPLATES["detect"]).format(event), localization_target(
            "detect", labels, event
        )
    return rng.choice(TRAIN_TEMPLATES["tags"]), localization_target("tags", labels)


def train_localization_base(
    world: LocalizationWorld, out: Path, cfg: BaseSection, seed: int, progress: bool = False
) -> Path:
    """Train the base model of one seed and write it as a bundle at ``out`` (returns its decode config)."""
    started = time.perf_counter()
    init = build_initial_bundle(
        world.world_info(), out.with_name(out.name + "_init"), _base_spec(cfg), seed=seed
    )
    settings = BaseTrainSettings(
        steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, speech_lr=cfg.speech_lr,
        speech_steps=cfg.speech_steps, warmup_steps=cfg.warmup_steps, seed=seed, max_new_tokens=12,
    )  # fmt: skip
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = _training_model(init)
    bank = ClipBank.from_manifest(world.manifests["train"]["tags"], init / "whisper", progress)
    types = list(world.event_types)
    frames = _event_frames(model, bank, types)
    heads = EventHeads(model.llama_model.config.hidden_size, len(types))
    llm = [p for p in model.llama_model.parameters() if p.requires_grad]
    llm_ids = {id(p) for p in llm}
    speech_side = [p for p in model.parameters() if p.requires_grad and id(p) not in llm_ids] + list(
        heads.parameters()
    )
    batches = _Batches(len(bank.labels), cfg.batch_size, rng)
    model.train()
    aux_end = _pretrain_event_encoder(model, heads, speech_side, bank, frames, batches, cfg)
    curve = _train_decoder(model, llm, bank, batches, types, rng, cfg, settings)
    model.eval()
    save_trained_bundle(
        model,
        init,
        out,
        12,
        {
            "train": world.manifests["train"]["tags"],
            "valid": world.manifests["calib"]["tags"],
            "test": world.manifests["test"]["localize"],
        },
    )
    summary = {
        "seconds": round(time.perf_counter() - started, 1),
        "speech_aux_end": aux_end,
        "final_ce": float(np.mean(curve[-25:])) if curve else float("nan"),
        "ce_curve": [round(float(np.mean(curve[i : i + 25])), 4) for i in range(0, len(curve), 25)],
        "settings": asdict(cfg),
        "seed": seed,
    }
    atomic_write_json(summary, out / "base_training.json")
    logger.info(
        "base model (seed %d) trained in %.0f s, final CE %.3f", seed, summary["seconds"], summary["final_ce"]
    )
    return out / "decode_config.yaml"


def _base_spec(cfg: BaseSection) -> BaseModelSpec:
    """The demo's model sizes from the config's base section."""
    return BaseModelSpec(
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        vocab_size=cfg.vocab_size,
        second_per_window=cfg.second_per_window,
    )


def _event_frames(model: Any, bank: ClipBank, types: list[str]) -> torch.Tensor:
    """[clips, audio tokens, event types] the share of each token's span covered by each event (the
    targets of the encoder pretraining), on the token grid of the model's audio encoder."""
    with torch.no_grad():
        n_tokens = model.encode_speech(bank.spectrograms[:1]).shape[1]
    times = model.audio_token_times(n_tokens).numpy()
    return torch.from_numpy(np.stack([token_event_targets(lab, times, types) for lab in bank.labels]))


def _pretrain_event_encoder(
    model: Any,
    heads: EventHeads,
    speech_side: list,
    bank: ClipBank,
    frames: torch.Tensor,
    batches: _Batches,
    cfg: BaseSection,
) -> float:
    """Phase 1: the speech side alone learns where each event is (frame-level presence); returns the last
    step's auxiliary loss (NaN without steps)."""
    opt = torch.optim.AdamW(speech_side, lr=cfg.speech_lr, weight_decay=0.01)
    for _ in range(cfg.speech_steps):
        batch = batches.next()
        loss = heads(model.encode_speech(bank.spectrograms[batch]), frames[batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(speech_side, 1.0)
        opt.step()
    return float(loss.detach()) if cfg.speech_steps else float("nan")


def _train_decoder(
    model: Any,
    llm: list,
    bank: ClipBank,
    batches: _Batches,
    types: list[str],
    rng: random.Random,
    cfg: BaseSection,
    settings: BaseTrainSettings,
) -> list[float]:
    """Phase 2: the decoder learns the tasks on the frozen speech embeddings (random task and paraphrase
    per clip); returns the CE of every step.

    Freezing the speech side here, as SALMONN freezes Whisper, makes a step an LLM step only: the
    embeddings are computed once (CPU time is the budget of this experiment).
    """
    model.eval()
    with torch.no_grad():
        bank_speech = torch.cat(
            [model.encode_speech(bank.spectrograms[lo : lo + 64]) for lo in range(0, len(bank.labels), 64)]
        )
    model.train()
    opt = torch.optim.AdamW(llm, lr=cfg.lr, weight_decay=0.01)
    curve = []
    for step in range(cfg.steps):
        batch = batches.next()
        pairs = [_example(bank.labels[i], types, rng, cfg) for i in batch]
        for group in opt.param_groups:
            group["lr"] = cfg.lr * _lr_at(step, settings)
        ce = model(
            {"text": [t for _, t in pairs]},
            prompts=[model.prompt_for(i) for i, _ in pairs],
            speech_embeds=bank_speech[batch],
        )["loss"]
        opt.zero_grad(set_to_none=True)
        ce.backward()
        torch.nn.utils.clip_grad_norm_(llm, 1.0)
        opt.step()
        curve.append(float(ce.detach()))
    return curve


# ---------------------------------------------------------------------------------------------------- audio
def _encode_manifest(
    model: AudioLLM, manifest: Path, batch_size: int
) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """(annotation entries, clip path -> [n_tokens, hidden] speech embeddings), each clip encoded once.

    Every row is zero-padded to the manifest's most audio tokens (:func:`pad_audio_rows`: Qwen2-Audio / AF3
    give a shorter clip fewer tokens and read its count back from the padding; SALMONN's rows are all the same
    length), so rows of any chunks stack and one ``audio_token_times`` serves them all.
    """
    front_end = getattr(model.cfg, "front_end_path", None)  # whisper_path, else a transformers model folder
    dataset = SALMONNDataset(manifest, front_end() if callable(front_end) else model.cfg.whisper_path)
    entries = list(dataset.annotation)
    first: dict[str, int] = {}
    for i, e in enumerate(entries):
        first.setdefault(e["path"], i)
    embeds: dict[str, torch.Tensor] = {}
    order = list(first.items())
    with torch.no_grad():
        for lo in range(0, len(order), batch_size):
            chunk = order[lo : lo + batch_size]
            samples = dataset.collater([dataset[i] for _, i in chunk])
            speech = model.encode_audio(samples)
            for (path, _), row in zip(chunk, speech, strict=True):
                embeds[path] = row
    if embeds:
        embeds = dict(zip(embeds, pad_audio_rows(list(embeds.values())).unbind(0), strict=True))
    return entries, embeds


# ---------------------------------------------------------------------------------------------------- vectors
def build_event_vectors(
    model: AudioLLM, world: LocalizationWorld, out_dir: Path, cfg: SteeringSection, batch_size: int = 64
) -> dict[str, Path]:
    """One vector file per event type from the calibration clips; returns event -> file."""
    entries, embeds = _encode_manifest(model, world.manifests["calib"]["tags"], batch_size)
    inject = list(cfg.inject_layers) or default_inject_layers(model.geometry.n_layers)
    files = {}
    for event in world.event_types:
        rows = [e for e in entries if cfg.calibration == "all" or event in e["labels"]["event_types"]]
        if not rows:
            raise ValueError(f"calibration: no calibration clip holds a {event!r}; raise world.n_calib")
        speech = torch.stack([embeds[e["path"]] for e in rows])
        a = [model.prompt_for(cfg.instruction_a.format(event))] * len(rows)
        b = [model.prompt_for(cfg.instruction_b.format(event))] * len(rows)
        vectors = normalize_vectors(
            contrast_vectors(model, speech, a, b, position=cfg.position), cfg.normalize
        )
        files[event] = save_vectors(
            out_dir / f"{event}.safetensors",
            vectors,
            {
                "model": model_identity(model),
                "event": event,
                "instruction_a": cfg.instruction_a.format(event),
                "instruction_b": cfg.instruction_b.format(event),
                "position": cfg.position,
                "normalize": cfg.normalize,
                "inject_layers": inject,
                "positions": cfg.positions,
                "prefill_only": cfg.prefill_only,
                "calibration": cfg.calibration,
                "n_calibration": len(rows),
                "built_by": "mean over calibration clips of residual(A) - residual(B), same audio",
            },
        )
    return files


# ---------------------------------------------------------------------------------------------------- localise
def _readout_cfg(
    cfg: LocalizationConfig, model: AudioLLM, heads: list[tuple[int, int]] | None
) -> ReadoutConfig:
    r = cfg.readout
    return ReadoutConfig(
        layers=_read_layers(cfg, model),
        heads=heads,
        normalize=r.normalize,
        smooth_seconds=r.smooth_seconds,
        rule=r.rule,
        threshold=r.threshold,
    )


def _read_layers(cfg: LocalizationConfig, model: AudioLLM) -> list[int]:
    n = model.geometry.n_layers
    if cfg.readout.layers:
        return list(cfg.readout.layers)
    inject = list(cfg.steering.inject_layers) or default_inject_layers(n)
    return list(range(min(inject) + 1, n)) or [n - 1]


def _prompt(model: AudioLLM, kind: str, event: str, cfg: LocalizationConfig) -> str:
    if kind == "query":
        return model.prompt_for(TEST_TEMPLATES["localize"].format(event))
    if kind == "neutral":
        return model.prompt_for(cfg.steering.instruction_b.format(event))
    if kind == "instruction_a":
        return model.prompt_for(cfg.steering.instruction_a.format(event))
    raise ValueError(f"readout.prompt: {kind!r} is not 'query' or 'neutral'")


def localize(
    model: AudioLLM,
    world: LocalizationWorld,
    vector_files: dict[str, Path],
    cfg: LocalizationConfig,
    seed: int,
    plot_dir: Path | None = None,
) -> dict[str, Any]:
    """Score every method on the test clips of ``world``; returns ``{"methods": {name: summary}, ...}``."""
    entries, embeds = _encode_manifest(model, world.manifests["test"]["localize"], cfg.batch_size)
    vectors = {e: load_vectors(p)[0] for e, p in vector_files.items()}
    inject = list(cfg.steering.inject_layers) or default_inject_layers(model.geometry.n_layers)
    read_layers = _read_layers(cfg, model)
    n_tokens = next(iter(embeds.values())).shape[0]
    heads = _readout_heads(model, world, cfg, read_layers)
    run = _TestRun(
        model, cfg, entries, embeds, vectors, inject, read_layers, model.audio_token_times(n_tokens),
        _readout_cfg(cfg, model, heads), world.clip_seconds,
    )  # fmt: skip
    alpha = cfg.steering.alpha
    prompt = cfg.readout.prompt
    other = "neutral" if prompt == "query" else "query"
    run.record("steered read-out", prompt, alpha)
    run.record("unsteered read-out", prompt, 0.0)
    run.record(f"steered read-out ({other} prompt)", other, alpha)
    run.record(f"unsteered read-out ({other} prompt)", other, 0.0)
    run.record("read-out under instruction A", "instruction_a", 0.0)
    sweep = _alpha_sweep(run, cfg.steering.alphas, prompt, alpha)
    answers = run.record_direct_prompting()
    run.record_random(np.random.default_rng([seed, 7919]))
    if plot_dir is not None and cfg.plots:
        _plot_examples(run, plot_dir, cfg.plots, seed)
    return {
        "methods": {k: summarize(v) for k, v in run.scores.items()},
        "alpha_sweep": {f"{a:g}": s for a, s in sweep.items()},
        "read_layers": read_layers,
        "inject_layers": inject,
        "heads": heads or "all",
        "n_examples": len(entries),
        "direct_answers_sample": answers[:10],
    }


def _readout_heads(
    model: AudioLLM, world: LocalizationWorld, cfg: LocalizationConfig, read_layers: list[int]
) -> list[tuple[int, int]] | None:
    """The heads the read-out averages: None for ``all``; for ``top:K`` the K heads with the most audio mass
    on the calibration clips under the read-out prompt."""
    if cfg.readout.heads.startswith("top:"):
        calib, cembeds = _encode_manifest(model, world.manifests["calib"]["localize"], cfg.batch_size)
        speech = torch.stack([cembeds[e["path"]] for e in calib])
        att = audio_attention(
            model,
            speech,
            [_prompt(model, cfg.readout.prompt, e["Q"], cfg) for e in calib],
            layers=read_layers,
        )
        return top_audio_heads(att, int(cfg.readout.heads.split(":", 1)[1]))
    if cfg.readout.heads != "all":
        raise ValueError(f"readout.heads: {cfg.readout.heads!r} is not 'all' or 'top:K'")
    return None


@dataclass
class _TestRun:
    """The test clips of one :func:`localize` call and what every method scored on them so far.

    ``scores``: method -> one score per test row, in the order the methods ran (the report's order);
    ``curves`` / ``preds``: the read-out curves and predicted intervals kept for the plots.
    """

    model: AudioLLM
    cfg: LocalizationConfig
    entries: list[dict]
    embeds: dict[str, torch.Tensor]
    vectors: dict[str, dict[int, torch.Tensor]]
    inject: list[int]
    read_layers: list[int]
    times: torch.Tensor
    rcfg: ReadoutConfig
    clip: float
    scores: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    curves: dict[str, torch.Tensor] = field(default_factory=dict)
    preds: dict[str, list] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.truths = [tuple(e["labels"]["interval"]) for e in self.entries]
        self.lengths = [t[1] - t[0] for t in self.truths]

    def _chunks(self) -> Any:
        """(first row, entries, stacked speech embeddings) per batch of ``cfg.batch_size`` test rows."""
        for lo in range(0, len(self.entries), self.cfg.batch_size):
            chunk = self.entries[lo : lo + self.cfg.batch_size]
            yield lo, chunk, torch.stack([self.embeds[e["path"]] for e in chunk])

    def _score(self, name: str, preds: list) -> None:
        self.scores[name] = [score_interval(p, t, self.clip) for p, t in zip(preds, self.truths, strict=True)]

    def record(self, name: str, prompt_kind: str, alpha: float) -> None:
        """The attention read-out under ``prompt_kind`` with ``alpha`` times each row's event vector added."""
        model, steer = self.model, self.cfg.steering
        rows_curves, rows_preds = [], []
        for lo, chunk, speech in self._chunks():
            prompts = [_prompt(model, prompt_kind, e["Q"], self.cfg) for e in chunk]
            per_row = {
                layer: torch.stack([self.vectors[e["Q"]][layer] for e in chunk]) for layer in self.inject
            }
            with steering(model, per_row, alpha, layers=self.inject, positions=steer.positions,
                          prefill_only=steer.prefill_only):  # fmt: skip
                att = audio_attention(model, speech, prompts, layers=self.read_layers)
            curves, preds = readout(att, self.times, self.rcfg, self.lengths[lo : lo + len(chunk)], self.clip)
            rows_curves.append(curves)
            rows_preds += preds
        self._score(name, rows_preds)
        self.curves[name] = torch.cat(rows_curves)
        self.preds[name] = rows_preds

    def record_direct_prompting(self) -> list[str]:
        """Asks for the span (greedy decoding) and scores the parsed answers; returns the answers."""
        answers: list[str] = []
        gen = {"max_new_tokens": self.cfg.max_new_tokens, "num_beams": 1, "do_sample": False}
        for _, chunk, speech in self._chunks():
            prompts = [_prompt(self.model, "query", e["Q"], self.cfg) for e in chunk]
            answers += self.model.generate({}, gen, prompts=prompts, speech_embeds=speech)
        direct = [parse_time_span(a) for a in answers]
        self._score("direct prompting", direct)
        self.preds["direct prompting"] = direct
        return answers

    def record_random(self, generator: np.random.Generator) -> None:
        """The same-length baseline: an interval of each true length placed uniformly."""
        self._score(
            "random interval", [random_interval(length, self.clip, generator) for length in self.lengths]
        )


def _alpha_sweep(run: _TestRun, alphas: Sequence[float], prompt: str, alpha: float) -> dict[float, dict]:
    """The steered read-out's summary at every ``alpha`` of the sweep (the configured one reused, the others
    run and then dropped from the methods)."""
    sweep = {}
    for a in alphas:
        key = f"steered alpha={a:g}"
        if a == alpha:
            sweep[a] = summarize(run.scores["steered read-out"])
            continue
        run.record(key, prompt, a)
        sweep[a] = summarize(run.scores.pop(key))
        run.curves.pop(key), run.preds.pop(key)
    return sweep


def _plot_examples(run: _TestRun, plot_dir: Path, plots: int, seed: int) -> None:
    """The first ``plots`` test rows (every row for a negative count) as pictures of the read-out curves
    against the true interval."""
    entries = run.entries
    n = len(entries) if plots < 0 else min(plots, len(entries))
    for i in range(n):
        _plot_example(
            plot_dir / f"example_{i:03d}.png",
            run.times,
            {k: run.curves[k][i] for k in ("unsteered read-out", "steered read-out")},
            run.truths[i],
            {k: run.preds[k][i] for k in ("unsteered read-out", "steered read-out", "direct prompting")},
            f"seed {seed}: {entries[i]['Q']} in {Path(entries[i]['path']).name} (events: {' '.join(entries[i]['labels']['event_types'])})",
        )


def _plot_example(path: Path, times: torch.Tensor, curves: dict, truth, preds: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    centres = times.float().mean(-1).numpy()
    fig, ax = plt.subplots(figsize=(7, 2.8))
    ax.axvspan(truth[0], truth[1], color="tab:green", alpha=0.2, label="true interval")
    colours = ("tab:gray", "tab:blue", "tab:red")
    for k, (name, curve) in enumerate(curves.items()):
        ax.step(centres, curve.numpy(), where="mid", color=colours[k % len(colours)], label=name)
    top = max(float(c.max()) for c in curves.values()) * 1.1
    for k, (name, p) in enumerate(preds.items()):
        if p is not None:
            ax.hlines(top * (1.02 + 0.05 * k), p[0], p[1], colors=("tab:gray", "tab:blue", "tab:red")[k % 3], lw=3,
                      label=f"{name}: {p[0]:.2f}-{p[1]:.2f} s")  # fmt: skip
    ax.set_xlabel("seconds")
    ax.set_ylabel("attention share")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------- the run
_ROWS = ("steered read-out", "unsteered read-out", "direct prompting", "random interval")


def format_table(per_seed: list[dict[str, Any]], metrics: Sequence[str] = ("overlap", "iou", "hit")) -> str:
    """A plain-text table: method rows, metric columns as mean +- std over seeds (percent)."""
    names = list(_ROWS) + [m for m in per_seed[0]["methods"] if m not in _ROWS]
    width = max(len(n) for n in names) + 2
    lines = [f"{'method':<{width}}" + "".join(f"{m:>18}" for m in metrics)]
    for name in names:
        cells = []
        for m in metrics:
            mean, std = mean_std([100 * s["methods"][name][m] for s in per_seed])
            cells.append(f"{mean:8.2f} +- {std:5.2f}")
        lines.append(f"{name:<{width}}" + "".join(f"{c:>18}" for c in cells))
    parsed = mean_std([100 * s["methods"]["direct prompting"]["parsed"] for s in per_seed])
    lines.append(f"(direct prompting answers with a parseable span: {parsed[0]:.1f} +- {parsed[1]:.1f} %)")
    lines.append("")
    lines.append(f"{'alpha':<8}" + "".join(f"{m:>18}" for m in metrics) + "   (steered read-out)")
    for a in per_seed[0]["alpha_sweep"]:
        cells = []
        for m in metrics:
            mean, std = mean_std([100 * s["alpha_sweep"][a][m] for s in per_seed])
            cells.append(f"{mean:8.2f} +- {std:5.2f}")
        lines.append(f"{a:<8}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


def run_seed(cfg: LocalizationConfig, seed: int, out: Path) -> dict[str, Any]:
    """World, base model, vectors and localisation of one seed under ``out/seed_<seed>``."""
    root = out / f"seed_{seed}"
    started = time.perf_counter()
    world_dir = root / "world"
    if world_dir.exists():
        import shutil

        shutil.rmtree(root)
    w = cfg.world
    world = build_localization_world(world_dir, seed=seed, n_train=w.n_train, n_calib=w.n_calib, n_test=w.n_test,
                                     clip_seconds=w.clip_seconds)  # fmt: skip
    t_world = time.perf_counter() - started
    decode_cfg = train_localization_base(world, root / "base", cfg.base, seed)
    t_base = time.perf_counter() - started - t_world
    model = SALMONN.from_config(load_decode_config(decode_cfg).model).eval()
    files = build_event_vectors(model, world, root / "vectors", cfg.steering, cfg.batch_size)
    result = localize(model, world, files, cfg, seed, plot_dir=root / "plots")
    result["seed"] = seed
    result["seconds"] = {"world": round(t_world, 1), "base": round(t_base, 1),
                         "total": round(time.perf_counter() - started, 1)}  # fmt: skip
    result["base_training"] = json.loads((root / "base" / "base_training.json").read_text())
    atomic_write_json(result, root / "report.json")
    logger.info("seed %d: %s", seed, {k: round(v["overlap"], 3) for k, v in result["methods"].items()})
    return result


def run_experiment(cfg: LocalizationConfig) -> tuple[str, dict[str, Any]]:
    """Every seed, then the table; writes ``report.json`` and ``table.txt`` under ``cfg.out_dir``."""
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_seed = [run_seed(cfg, seed, out) for seed in cfg.seeds]
    table = format_table(per_seed)
    report = {
        "config": asdict(cfg),
        "per_seed": per_seed,
        "table": table,
        "summary": {
            name: {
                m: mean_std([s["methods"][name][m] for s in per_seed])
                for m in ("overlap", "iou", "hit", "parsed")
            }
            for name in per_seed[0]["methods"]
        },
    }
    atomic_write_json(report, out / "report.json")
    atomic_write_text(table + "\n", out / "table.txt")
    return table, report
