"""A multiple-choice audio question world where a language prior competes with the audio (text dominance).

The paper's premise is that LALMs lean on language priors and under-use decisive audio. This world makes that
measurable at laptop scale. Each question asks about a clip's voice register ("low or high?") or level
("quiet or loud?"), with its two options in a random order in the question text. The answer is one option
word. The prior: in the **training** split the answer of each question type is its *favoured* option
(``high``, ``loud`` by default) for a share ``prior`` of the entries (0.8 by default; entries with the other
answer are kept with probability ``(1 - prior) / prior``), so a model can reach ``prior`` accuracy from the
question text alone. The calibration, validation and test splits are **balanced** (every clip asked both
questions, labels a fair coin), so there the prior is right half the time and only the audio can do better.

The cues are made weaker than in the demo world (:mod:`ahamask.synth.world`) so that the audio is
informative but takes effort to read: the two registers' f0 and tone-shift ranges and the two levels'
ranges are closer, and overlap a little (``CUES``). The clips are drawn by
:func:`ahamask.synth.audio.sample_clip_spec` and then given these ranges with ``dataclasses.replace``
(the labels are read from the replaced spec, so audio and labels agree), rendered by
:func:`ahamask.synth.audio.render_clip` and written by :func:`ahamask.synth.audio.write_wav`.

Layout under the world folder: ``<split>/wav/*.wav`` and ``<split>.json`` manifests in the official schema
(``path``, ``text`` = the answer, ``task`` = ``"mcq"``, ``Q`` = the question) with ``labels`` holding the
clip labels plus ``qtype``, ``options``, ``favoured`` and ``answer``; ``mcq_world.json`` records the
parameters. Every clip comes from its own generator seeded with ``(seed, split, index)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ahamask.synth import audio
from ahamask.utils.io import atomic_write_text

__all__ = [
    "CUES",
    "FAVOURED",
    "MCQ_SPLITS",
    "MCQ_TASK",
    "QTYPES",
    "McqWorld",
    "build_mcq_world",
    "load_mcq_world",
    "mcq_corpus",
    "question_text",
]

MCQ_TASK = "mcq"
MCQ_SPLITS = ("train", "calib", "valid", "test")
_SPLIT_IDS = {"train": 10, "calib": 11, "valid": 12, "test": 13}
#: question type -> (label key, its two answers).
QTYPES: dict[str, tuple[str, tuple[str, str]]] = {
    "register": ("register", ("low", "high")),
    "loudness": ("loudness", ("quiet", "loud")),
}
#: The answer the training prior favours, per question type.
FAVOURED: dict[str, str] = {"register": "high", "loudness": "loud"}
#: Question wordings; ``{a}`` and ``{b}`` are the two options in the order of the question.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "register": (
        "Is the voice {a} or {b}?",
        "Which register is the voice in: {a} or {b}?",
        "Answer {a} or {b}: how does the voice sound?",
    ),
    "loudness": (
        "Is the clip {a} or {b}?",
        "How loud is the voice: {a} or {b}?",
        "Answer {a} or {b}: what is the level of the clip?",
    ),
}
#: Cue ranges of the MCQ clips (closer than the demo world's, slightly overlapping).
CUES: dict[str, dict[str, tuple[float, float]]] = {
    "f0_hz": {"low": (140.0, 180.0), "high": (165.0, 205.0)},
    "timbre_scale": {"low": (0.99, 1.03), "high": (1.01, 1.05)},
    "level_dbfs": {"quiet": (-28.0, -22.0), "loud": (-24.0, -18.0)},
}
_FORMAT = "ahamask-mcq-world"


def question_text(qtype: str, options: tuple[str, str], template: int = 0) -> str:
    """The question of ``qtype`` with its options in the given order."""
    return TEMPLATES[qtype][template].format(a=options[0], b=options[1])


@dataclass(frozen=True)
class McqWorld:
    """A built MCQ world.

    Attributes:
        root: the folder.
        seed: generator seed.
        prior: share of training answers equal to the favoured option.
        manifests: split -> manifest path.
        counts: split -> number of entries.
        params: everything recorded in ``mcq_world.json``.
    """

    root: Path
    seed: int
    prior: float
    manifests: dict[str, Path] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    params: dict[str, object] = field(default_factory=dict)


def _mcq_clip(
    rng: np.random.Generator, clip_seconds: float, snr_db: tuple[float, float] | None
) -> audio.ClipSpec:
    spec = audio.sample_clip_spec(rng, clip_seconds=clip_seconds, snr_db=snr_db)
    reg, loud = spec.register, spec.loudness
    return dataclasses.replace(
        spec,
        f0_hz=round(float(rng.uniform(*CUES["f0_hz"][reg])), 2),
        timbre_scale=round(float(rng.uniform(*CUES["timbre_scale"][reg])), 4),
        level_dbfs=round(float(rng.uniform(*CUES["level_dbfs"][loud])), 2),
    )


def _entries(
    wav_rel: str, labels: Mapping[str, object], rng: np.random.Generator, keep_rule: float | None
) -> list[dict[str, object]]:
    """The questions asked of one clip (both types; in the skewed split some are dropped)."""
    out = []
    for qtype, (key, answers) in QTYPES.items():
        answer = str(labels[key])
        order = answers if rng.random() < 0.5 else answers[::-1]
        template = int(rng.integers(0, len(TEMPLATES[qtype])))
        keep = rng.random()
        if keep_rule is not None and answer != FAVOURED[qtype] and keep >= keep_rule:
            continue
        out.append(
            {
                "path": wav_rel,
                "text": answer,
                "task": MCQ_TASK,
                "Q": question_text(qtype, order, template),
                "labels": {
                    **labels,
                    "qtype": qtype,
                    "options": list(order),
                    "favoured": FAVOURED[qtype],
                    "answer": answer,
                },
            }
        )
    return out


def build_mcq_world(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    n_clips: Mapping[str, int] | None = None,
    prior: float = 0.8,
    clip_seconds: float = 2.0,
    snr_db: tuple[float, float] | None = audio.DEFAULT_SNR_DB,
) -> McqWorld:
    """Writes the MCQ world: clips, one manifest per split, ``mcq_world.json`` (last).

    Args:
        out_dir: folder (created; an existing MCQ world in it is overwritten).
        seed: generator seed (same seed, same bytes).
        n_clips: clips per split (default train 600, calib 60, valid 60, test 100); each clip gives two
            questions in the balanced splits, about ``1 + (1 - prior) / prior`` in the training split.
        prior: share of training answers that are the favoured option, in [0.5, 1).
        clip_seconds: length of every clip.
        snr_db: white-noise SNR range, or None for clean clips.

    Raises:
        ValueError: a prior outside [0.5, 1) or an unknown split.
    """
    counts = {"train": 600, "calib": 60, "valid": 60, "test": 100, **(n_clips or {})}
    unknown = sorted(set(counts) - set(MCQ_SPLITS))
    if unknown:
        raise ValueError(f"n_clips: unknown splits {unknown}; known: {list(MCQ_SPLITS)}")
    if not 0.5 <= prior < 1.0:
        raise ValueError(f"prior: {prior} must be in [0.5, 1)")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    keep_other = (1.0 - prior) / prior
    manifests, sizes = {}, {}
    for split in MCQ_SPLITS:
        (root / split / "wav").mkdir(parents=True, exist_ok=True)
        entries: list[dict[str, object]] = []
        for i in range(counts[split]):
            rng = np.random.default_rng([seed, _SPLIT_IDS[split], i])
            spec = _mcq_clip(rng, clip_seconds, snr_db)
            rel = f"{split}/wav/{split}_{i:05d}.wav"
            audio.write_wav(root / rel, audio.render_clip(spec), spec.sample_rate)
            labels = {"clip_id": f"{split}_{i:05d}", **spec.labels()}
            entries.extend(_entries(rel, labels, rng, keep_other if split == "train" else None))
        path = root / f"{split}.json"
        lines = ",\n".join("  " + json.dumps(e, ensure_ascii=False) for e in entries)
        atomic_write_text('{"annotation": [\n' + lines + "\n]}\n", path)
        manifests[split], sizes[split] = path, len(entries)
    params: dict[str, object] = {
        "format": _FORMAT,
        "seed": seed,
        "prior": prior,
        "clips": counts,
        "entries": sizes,
        "clip_seconds": clip_seconds,
        "snr_db": None if snr_db is None else list(snr_db),
        "favoured": FAVOURED,
        "cues": {k: {c: list(r) for c, r in v.items()} for k, v in CUES.items()},
        "manifests": {s: p.name for s, p in manifests.items()},
    }
    atomic_write_text(json.dumps(params, indent=2) + "\n", root / "mcq_world.json")
    return McqWorld(root, seed, prior, manifests, sizes, params)


def load_mcq_world(out_dir: str | os.PathLike[str]) -> McqWorld:
    """Reads a world written by :func:`build_mcq_world`.

    Raises:
        FileNotFoundError: no ``mcq_world.json`` (or a manifest it lists) in ``out_dir``.
    """
    root = Path(out_dir)
    path = root / "mcq_world.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no MCQ world here (build it with build_mcq_world)")
    params = json.loads(path.read_text(encoding="utf-8"))
    manifests = {s: root / name for s, name in params["manifests"].items()}
    for split, p in manifests.items():
        if not p.is_file():
            raise FileNotFoundError(f"{path}: lists the {split} manifest {p}, which does not exist")
    return McqWorld(
        root, int(params["seed"]), float(params["prior"]), manifests, dict(params["entries"]), params
    )


def mcq_corpus() -> list[str]:
    """Every question wording (both option orders) and answer word, for training a tokenizer."""
    texts = []
    for qtype, (_, answers) in QTYPES.items():
        for t in range(len(TEMPLATES[qtype])):
            for order in (answers, answers[::-1]):
                texts.append(question_text(qtype, order, t))
        texts.extend(answers)
    return texts
