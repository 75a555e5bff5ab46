"""A localisation world: clips with sound events at known times among distractors, for temporal read-outs.

Each clip is the demo's synthetic "speech" (:func:`ahamask.synth.audio.sample_clip_spec` /
:func:`~ahamask.synth.audio.render_clip`: symbols spoken over a buzz, with noise) as background, plus one to
three *sound events* of distinct types placed at random, non-overlapping times. The event types are made to
be told apart from each other and from the speech by their spectra:

* ``whistle``: a steady pure tone at 3.0-3.4 kHz (above every symbol tone);
* ``siren``: a tone swept sinusoidally between 500 and 1500 Hz, 4 sweeps per second;
* ``knock``: a train of 8 ms decaying 2 kHz bursts, 12-16 per second;
* ``buzzer``: a square wave at 70-80 Hz (below every voice f0 range; rich in odd harmonics);
* ``hiss``: white noise high-passed by a first difference (energy rising to 8 kHz).

The event's position, length (0.3-0.9 s by default) and loudness (its RMS level, -32 to -14 dBFS, against the
speech's -34 to -14) vary per clip. A clip is drawn from its own generator seeded with (seed, split, index),
so clips do not depend on each other and a rebuild is byte-identical.

Tasks (what the base model of the experiment is trained on, and what the experiment asks):

* ``tags``: the event types present, in temporal order ("whistle knock"); the empty instruction's default;
* ``detect``: "is there a <event> in the clip?" -> "yes" / "no" (the event fills ``{}``, official ``Q``);
* ``localize``: "when do you hear the <event>?" -> "from 0.4 to 0.9" (one decimal).

Manifests use the official schema ``{"annotation": [{"path", "text", "task", "Q", "labels"}]}``: ``Q`` holds
the queried event type (prompt templates have ``{}`` where it goes, as SALMONN's QA prompts), ``labels`` the
clip's events (``[{"type", "onset_s", "offset_s", "level_dbfs"}]``) and, for ``detect`` and ``localize``
entries, ``target`` and ``interval`` (``[onset_s, offset_s]`` of the queried event; ``None`` when absent).
``localize`` has one entry per event of a clip. Paths are relative to the manifest's folder.

Layout::

    localization_world.json       parameters and the relative paths below
    prompts/*.json                train_prompt.json (task -> templates with {}), test_prompt.json
    <split>/wav/<split>_NNNNN.wav
    <split>/{tags,detect,localize}.json
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ahamask.synth import audio
from ahamask.synth.instructions import SPEECH_TAG
from ahamask.synth.world import WorldInfo
from ahamask.utils.io import atomic_write_text

__all__ = [
    "EVENT_TYPES",
    "LOCALIZATION_TASKS",
    "TRAIN_TEMPLATES",
    "TEST_TEMPLATES",
    "EventSpec",
    "LocalizationClip",
    "LocalizationWorld",
    "sample_localization_clip",
    "render_event",
    "render_localization_clip",
    "localization_target",
    "format_span",
    "token_event_targets",
    "build_localization_world",
    "load_localization_world",
]

FORMAT = "ahamask-localization-world"
VERSION = 1
SPLITS = ("train", "calib", "test")
_SPLIT_IDS = {"train": 10, "calib": 11, "test": 12}
EVENT_TYPES: tuple[str, ...] = ("whistle", "siren", "knock", "buzzer", "hiss")
LOCALIZATION_TASKS: tuple[str, ...] = ("tags", "detect", "localize")
EVENT_SECONDS = (0.3, 0.9)
EVENT_LEVEL_DBFS = (-32.0, -14.0)
N_EVENTS = (1, 3)
EVENT_GAP_SECONDS = 0.1  # minimum silence between two events (no overlap: each interval is unambiguous)

#: Training paraphrases per task; ``{}`` is the queried event. The steering instruction A of the experiment
#: ("Listen for the {}.") is one of the detect paraphrases, so its words are known to the model.
TRAIN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "tags": (
        "Which sounds do you hear?",
        "List the sound events in order.",
        "What sounds are in the clip?",
        "Name every sound you hear, in order.",
        "tag the sounds",
    ),
    "detect": (
        "Listen for the {}.",
        "Is there a {} in the clip?",
        "Do you hear a {}? Answer yes or no.",
        "Listen for the {}: is it there?",
        "does the clip contain a {}?",
    ),
    "localize": (
        "When do you hear the {}?",
        "At what time is the {}?",
        "Give the start and end time of the {}.",
        "when is the {} in the clip?",
    ),
}
#: The question direct prompting asks (one fixed wording per task, the official test-prompt form).
TEST_TEMPLATES: dict[str, str] = {task: templates[0] for task, templates in TRAIN_TEMPLATES.items()}


@dataclass(frozen=True)
class EventSpec:
    """One sound event of a clip (times in samples, so a spec re-renders bit-exactly).

    Attributes:
        kind: one of :data:`EVENT_TYPES`.
        onset: first sample.
        length: number of samples.
        level_dbfs: RMS level of the event.
        param: the type's free parameter (whistle/siren/knock/buzzer: Hz or rate; hiss: unused).
        seed: seed of the event's own noise or jitter.
    """

    kind: str
    onset: int
    length: int
    level_dbfs: float
    param: float
    seed: int


@dataclass(frozen=True)
class LocalizationClip:
    """A background speech clip plus its events.

    Attributes:
        background: the speech spec (None: silence).
        events: the events in temporal order.
        n_samples: clip length in samples.
        sample_rate: samples per second.
    """

    background: audio.ClipSpec | None
    events: tuple[EventSpec, ...]
    n_samples: int
    sample_rate: int = audio.SAMPLE_RATE

    @property
    def seconds(self) -> float:
        return self.n_samples / self.sample_rate

    def intervals(self) -> dict[str, tuple[float, float]]:
        """Event type -> ``(onset_s, offset_s)``."""
        sr = self.sample_rate
        return {e.kind: (e.onset / sr, (e.onset + e.length) / sr) for e in self.events}

    def labels(self) -> dict[str, object]:
        """The JSON-ready labels of the clip (manifests store them under ``labels``)."""
        sr = self.sample_rate
        return {
            "clip_seconds": self.seconds,
            "events": [
                {
                    "type": e.kind,
                    "onset_s": e.onset / sr,
                    "offset_s": (e.onset + e.length) / sr,
                    "level_dbfs": e.level_dbfs,
                }
                for e in self.events
            ],
            "event_types": [e.kind for e in self.events],
            "speech_symbols": list(self.background.symbols) if self.background else [],
        }


def _event_param(kind: str, rng: np.random.Generator) -> float:
    if kind == "whistle":
        return float(round(rng.uniform(3000.0, 3400.0), 1))
    if kind == "knock":
        return float(round(rng.uniform(12.0, 16.0), 2))
    if kind == "buzzer":
        return float(round(rng.uniform(70.0, 80.0), 2))
    return 0.0


def _check_event_ranges(
    clip_seconds: float,
    event_types: Sequence[str],
    n_events: tuple[int, int],
    event_seconds: tuple[float, float],
) -> None:
    """Rejects unknown event types and ranges that cannot fit the clip, before anything is drawn."""
    unknown = [k for k in event_types if k not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"event_types: unknown {unknown}; known: {list(EVENT_TYPES)}")
    lo, hi = n_events
    if not 1 <= lo <= hi <= len(event_types):
        raise ValueError(f"n_events: expected 1 <= min <= max <= {len(event_types)}, got {n_events}")
    need = hi * event_seconds[1] + (hi - 1) * EVENT_GAP_SECONDS
    if need > clip_seconds:
        raise ValueError(
            f"clip_seconds: {clip_seconds} s cannot hold {hi} events of up to {event_seconds[1]} s ({need:.2f} s)"
        )


def _place_events(
    rng: np.random.Generator,
    kinds: Sequence[str],
    clip_seconds: float,
    event_seconds: tuple[float, float],
    level_dbfs: tuple[float, float],
    sample_rate: int,
) -> list[EventSpec]:
    """Draws the events' lengths, levels and free-time shares, then each event's parameter and seed (in
    that order), and lays the events out without overlap; one place for the placement rule."""
    n = len(kinds)
    lengths = rng.uniform(*event_seconds, size=n)
    levels = rng.uniform(*level_dbfs, size=n)
    free = clip_seconds - lengths.sum() - (n - 1) * EVENT_GAP_SECONDS
    shares = rng.dirichlet(np.ones(n + 1)) * free
    events, t = [], shares[0]
    for i, kind in enumerate(kinds):
        onset = int(round(t * sample_rate))
        length = int(round(lengths[i] * sample_rate))
        events.append(
            EventSpec(
                kind=kind,
                onset=onset,
                length=min(length, int(round(clip_seconds * sample_rate)) - onset),
                level_dbfs=float(round(levels[i], 2)),
                param=_event_param(kind, rng),
                seed=int(rng.integers(0, 2**32)),
            )
        )
        t += lengths[i] + EVENT_GAP_SECONDS + shares[i + 1]
    return events


def sample_localization_clip(
    rng: np.random.Generator,
    *,
    clip_seconds: float = 3.0,
    event_types: Sequence[str] = EVENT_TYPES,
    n_events: tuple[int, int] = N_EVENTS,
    event_seconds: tuple[float, float] = EVENT_SECONDS,
    level_dbfs: tuple[float, float] = EVENT_LEVEL_DBFS,
    background: bool = True,
    sample_rate: int = audio.SAMPLE_RATE,
) -> LocalizationClip:
    """Draws a clip: distinct event types, uniform lengths and levels, random non-overlapping placement.

    Placement: the events' lengths and the minimum gaps are laid out in a random order, and the free time is
    split into ``n + 1`` random shares (a uniform point on the simplex) before, between and after them.

    Raises:
        ValueError: an unknown event type, or a range that cannot fit the clip.
    """
    _check_event_ranges(clip_seconds, event_types, n_events, event_seconds)
    lo, hi = n_events
    n = int(rng.integers(lo, hi + 1))
    kinds = [event_types[i] for i in rng.permutation(len(event_types))[:n]]
    events = _place_events(rng, kinds, clip_seconds, event_seconds, level_dbfs, sample_rate)
    spec = None
    if background:
        spec = audio.sample_clip_spec(
            rng,
            clip_seconds=clip_seconds,
            sample_rate=sample_rate,
            n_symbols=(1, 4),
            snr_db=audio.DEFAULT_SNR_DB,
        )
    return LocalizationClip(spec, tuple(events), int(round(clip_seconds * sample_rate)), sample_rate)


def render_event(event: EventSpec, sample_rate: int = audio.SAMPLE_RATE) -> np.ndarray:
    """The event's samples (float32, length ``event.length``) at its RMS level, with 10 ms fades."""
    n = event.length
    t = np.arange(n) / sample_rate
    rng = np.random.default_rng(event.seed)
    if event.kind == "whistle":
        wave = np.sin(2 * np.pi * event.param * t)
    elif event.kind == "siren":
        # Instantaneous frequency 1000 + 500 sin(2 pi 4 t): its phase is the closed-form integral.
        phase = 1000.0 * t - 500.0 / (2 * np.pi * 4.0) * np.cos(2 * np.pi * 4.0 * t)
        wave = np.sin(2 * np.pi * phase)
    elif event.kind == "knock":
        period = 1.0 / event.param
        local = np.mod(t, period)
        wave = np.sin(2 * np.pi * 2000.0 * local) * np.exp(-local / 0.008) * (local < 0.03)
    elif event.kind == "buzzer":
        wave = np.sign(np.sin(2 * np.pi * event.param * t))
    elif event.kind == "hiss":
        noise = rng.standard_normal(n + 1)
        wave = np.diff(noise)
    else:
        raise ValueError(f"event kind: unknown {event.kind!r}; known: {list(EVENT_TYPES)}")
    wave = wave.astype(np.float32) * audio._ramp_envelope(n, int(round(audio.RAMP_SECONDS * sample_rate)))
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) if n else 0.0
    if rms > 0:
        wave *= np.float32(10.0 ** (event.level_dbfs / 20.0) / rms)
    return wave


def render_localization_clip(clip: LocalizationClip) -> np.ndarray:
    """Background speech plus every event, clipped to [-1, 1) (float32, ``clip.n_samples`` long)."""
    out = (
        audio.render_clip(clip.background).astype(np.float32)
        if clip.background is not None
        else np.zeros(clip.n_samples, dtype=np.float32)
    )
    for event in clip.events:
        out[event.onset : event.onset + event.length] += render_event(event, clip.sample_rate)
    return np.clip(out, -1.0, 32767.0 / 32768.0)


def format_span(interval: Sequence[float]) -> str:
    """The localize answer: ``"from 0.4 to 0.9"`` (one decimal; parsed back by ``parse_time_span``)."""
    return f"from {interval[0]:.1f} to {interval[1]:.1f}"


def localization_target(task: str, labels: dict, event: str | None = None) -> str:
    """The reference answer of ``task`` for a clip's labels (``event``: the queried type, for detect/localize).

    Raises:
        ValueError: an unknown task, a missing event for detect/localize, or localize of an absent event.
    """
    types = list(labels["event_types"])
    if task == "tags":
        return " ".join(types)
    if event is None:
        raise ValueError(f"task {task!r} needs the queried event")
    if task == "detect":
        return "yes" if event in types else "no"
    if task == "localize":
        for e in labels["events"]:
            if e["type"] == event:
                return format_span((e["onset_s"], e["offset_s"]))
        raise ValueError(f"localize: the clip has no {event!r} (events: {types})")
    raise ValueError(f"task: unknown {task!r}; known: {list(LOCALIZATION_TASKS)}")


def token_event_targets(
    labels: dict, token_times: np.ndarray, event_types: Sequence[str] = EVENT_TYPES
) -> np.ndarray:
    """[n_tokens, n_types] share of each token's time span covered by each event type (0..1).

    The frame-level supervision of the experiment's audio-encoder pretraining (the stand-in for an
    audio-tagging encoder such as BEATs), computed through the backbone's own token-to-time map.
    """
    out = np.zeros((len(token_times), len(event_types)), dtype=np.float32)
    index = {k: i for i, k in enumerate(event_types)}
    for e in labels["events"]:
        if e["type"] not in index:
            continue
        start = np.maximum(token_times[:, 0], e["onset_s"])
        end = np.minimum(token_times[:, 1], e["offset_s"])
        span = np.maximum(token_times[:, 1] - token_times[:, 0], 1e-9)
        out[:, index[e["type"]]] = np.clip((end - start) / span, 0.0, 1.0)
    return out


@dataclass
class LocalizationWorld:
    """A built localisation world (the in-memory form of ``localization_world.json``).

    Attributes:
        root: the world folder.
        seed: generator seed.
        clip_seconds: length of every clip.
        event_types: the event vocabulary.
        splits: split -> number of clips.
        manifests: split -> task -> manifest path.
        prompt_files: ``train_prompt`` / ``test_prompt`` -> path.
    """

    root: Path
    seed: int
    clip_seconds: float
    event_types: tuple[str, ...]
    splits: dict[str, int]
    manifests: dict[str, dict[str, Path]] = field(default_factory=dict)
    prompt_files: dict[str, Path] = field(default_factory=dict)

    def world_info(self) -> WorldInfo:
        """A :class:`~ahamask.synth.world.WorldInfo` view (no demo tasks) for code that reads prompt files
        and manifests through it (``world_corpus``, the demo's bundle builder)."""
        return WorldInfo(
            root=self.root,
            seed=self.seed,
            sample_rate=audio.SAMPLE_RATE,
            clip_seconds=self.clip_seconds,
            snr_db=audio.DEFAULT_SNR_DB,
            splits=dict(self.splits),
            tasks=(),
            manifests={s: dict(m) for s, m in self.manifests.items()},
            mixed_manifests={},
            prompt_files=dict(self.prompt_files),
            world_json=self.root / "localization_world.json",
        )


def _write_manifest(path: Path, entries: list[dict]) -> None:
    lines = ",\n".join("  " + json.dumps(e, ensure_ascii=False) for e in entries)
    atomic_write_text('{"annotation": [\n' + lines + "\n]}\n" if entries else '{"annotation": []}\n', path)


def _prompt_contents() -> dict[str, dict]:
    def wrap(instruction: str) -> str:
        return f"{SPEECH_TAG} {instruction}"

    return {
        "train_prompt": {t: [wrap(i) for i in TRAIN_TEMPLATES[t]] for t in LOCALIZATION_TASKS},
        "test_prompt": {t: wrap(TEST_TEMPLATES[t]) for t in LOCALIZATION_TASKS},
    }


def build_localization_world(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    n_train: int = 600,
    n_calib: int = 60,
    n_test: int = 100,
    clip_seconds: float = 3.0,
    event_types: Sequence[str] = EVENT_TYPES,
    overwrite: bool = False,
) -> LocalizationWorld:
    """Writes the clips, the three manifests per split, the prompt files and ``localization_world.json``.

    Args:
        out_dir: the folder (must be empty unless it holds a localisation world and ``overwrite``).
        seed: non-negative seed; the same arguments give byte-identical files.
        n_train, n_calib, n_test: clips per split (``calib``: the steering vectors' calibration clips).
        clip_seconds: length of every clip.
        event_types: the event vocabulary (a subset of :data:`EVENT_TYPES`).
        overwrite: rebuild a world already there.

    Raises:
        ValueError: bad counts or seed; FileExistsError: a non-empty folder that is not a world.
    """
    counts = {"train": n_train, "calib": n_calib, "test": n_test}
    _check_counts(counts, seed)
    event_types = tuple(event_types)
    root = Path(out_dir)
    marker = root / "localization_world.json"
    _prepare_localization_root(root, marker, overwrite)
    manifests = {
        split: _build_localization_split(root, split, counts[split], seed, clip_seconds, event_types)
        for split in SPLITS
    }
    prompt_files = _write_localization_prompts(root)
    world = LocalizationWorld(root, seed, float(clip_seconds), event_types, counts, manifests, prompt_files)
    meta = _localization_meta(root, seed, clip_seconds, event_types, counts, manifests, prompt_files)
    atomic_write_text(json.dumps(meta, indent=2) + "\n", marker)  # last: marks a complete world
    return world


def _check_counts(counts: dict[str, int], seed: int) -> None:
    """Rejects negative or non-int clip counts and seeds, before anything is written."""
    bad = [f"n_{k}={v}" for k, v in counts.items() if not isinstance(v, int) or v < 0]
    if bad or not isinstance(seed, int) or seed < 0:
        raise ValueError(
            f"build_localization_world: expected non-negative ints, got {bad or [f'seed={seed}']}"
        )


def _prepare_localization_root(root: Path, marker: Path, overwrite: bool) -> None:
    """Makes ``root`` ready for a build: clears an earlier world when ``overwrite`` (marker first, so a
    crash mid-way never leaves a folder that looks complete) and refuses a foreign non-empty folder."""
    if marker.exists():
        if not overwrite:
            raise FileExistsError(
                f"{marker}: a world is already built here; pass overwrite=True to rebuild it"
            )
        marker.unlink()
        for sub in (*SPLITS, "prompts"):
            if (root / sub).is_dir():
                shutil.rmtree(root / sub)
    elif root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root}: folder is not empty and holds no localization_world.json")
    root.mkdir(parents=True, exist_ok=True)


def _build_localization_split(
    root: Path, split: str, count: int, seed: int, clip_seconds: float, event_types: tuple[str, ...]
) -> dict[str, Path]:
    """Renders one split's clips (clip ``i`` from its own generator ``[seed, split id, i]``) and writes the
    split's three manifests; returns them by task."""
    (root / split / "wav").mkdir(parents=True, exist_ok=True)
    entries: dict[str, list[dict]] = {t: [] for t in LOCALIZATION_TASKS}
    for i in range(count):
        rng = np.random.default_rng([seed, _SPLIT_IDS[split], i])
        clip = sample_localization_clip(rng, clip_seconds=clip_seconds, event_types=event_types)
        clip_id = f"{split}_{i:05d}"
        rel = f"wav/{clip_id}.wav"
        audio.write_wav(root / split / rel, render_localization_clip(clip), clip.sample_rate)
        for task, task_entries in _clip_entries(rng, i, clip, clip_id, rel, event_types).items():
            entries[task].extend(task_entries)
    manifests = {}
    for task in LOCALIZATION_TASKS:
        manifests[task] = root / split / f"{task}.json"
        _write_manifest(manifests[task], entries[task])
    return manifests


def _clip_entries(
    rng: np.random.Generator,
    i: int,
    clip: LocalizationClip,
    clip_id: str,
    rel: str,
    event_types: tuple[str, ...],
) -> dict[str, list[dict]]:
    """The manifest entries of one clip per task: one ``tags``, one ``detect`` (alternately a present and
    an absent type, drawn from the clip's own generator after its audio) and one ``localize`` per event."""
    labels = {"clip_id": clip_id, **clip.labels()}
    tags = {
        "path": rel,
        "text": localization_target("tags", labels),
        "task": "tags",
        "Q": "",
        "labels": labels,
    }
    present = labels["event_types"]
    absent = [k for k in event_types if k not in present]
    query = (
        present[int(rng.integers(len(present)))]
        if (i % 2 == 0 or not absent)
        else absent[int(rng.integers(len(absent)))]
    )
    intervals = clip.intervals()
    detect = {
        "path": rel,
        "text": localization_target("detect", labels, query),
        "task": "detect",
        "Q": query,
        "labels": {**labels, "target": query, "interval": list(intervals.get(query, ())) or None},
    }
    localize = [
        {
            "path": rel,
            "text": localization_target("localize", labels, kind),
            "task": "localize",
            "Q": kind,
            "labels": {**labels, "target": kind, "interval": list(intervals[kind])},
        }
        for kind in present
    ]
    return {"tags": [tags], "detect": [detect], "localize": localize}


def _write_localization_prompts(root: Path) -> dict[str, Path]:
    """Writes ``prompts/train_prompt.json`` and ``prompts/test_prompt.json``; returns their paths by stem."""
    (root / "prompts").mkdir(exist_ok=True)
    prompt_files = {}
    for stem, content in _prompt_contents().items():
        prompt_files[stem] = root / "prompts" / f"{stem}.json"
        atomic_write_text(json.dumps(content, indent=2) + "\n", prompt_files[stem])
    return prompt_files


def _localization_meta(
    root: Path,
    seed: int,
    clip_seconds: float,
    event_types: tuple[str, ...],
    counts: dict[str, int],
    manifests: dict[str, dict[str, Path]],
    prompt_files: dict[str, Path],
) -> dict[str, object]:
    """The content of ``localization_world.json``: the settings and the files, relative to ``root``."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "seed": seed,
        "clip_seconds": float(clip_seconds),
        "event_types": list(event_types),
        "splits": counts,
        "event_seconds": list(EVENT_SECONDS),
        "event_level_dbfs": list(EVENT_LEVEL_DBFS),
        "n_events": list(N_EVENTS),
        "files": {
            "manifests": {
                s: {t: p.relative_to(root).as_posix() for t, p in m.items()} for s, m in manifests.items()
            },
            "prompts": {k: p.relative_to(root).as_posix() for k, p in prompt_files.items()},
        },
    }


def load_localization_world(out_dir: str | os.PathLike[str]) -> LocalizationWorld:
    """Reads a world built earlier.

    Raises:
        FileNotFoundError: no ``localization_world.json``; ValueError: another format or version.
    """
    root = Path(out_dir)
    marker = root / "localization_world.json"
    if not marker.is_file():
        raise FileNotFoundError(f"{marker}: no such file; build the world first")
    meta = json.loads(marker.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{marker}: expected format {FORMAT!r} version {VERSION}")
    files = meta["files"]
    return LocalizationWorld(
        root=root,
        seed=int(meta["seed"]),
        clip_seconds=float(meta["clip_seconds"]),
        event_types=tuple(meta["event_types"]),
        splits={k: int(v) for k, v in meta["splits"].items()},
        manifests={s: {t: root / r for t, r in m.items()} for s, m in files["manifests"].items()},
        prompt_files={k: root / r for k, r in files["prompts"].items()},
    )


def world_settings(world: LocalizationWorld) -> dict[str, object]:
    """The world's parameters as a JSON-ready dict (for reports)."""
    data = asdict(world)
    data["root"] = str(world.root)
    data["manifests"] = {s: {t: str(p) for t, p in m.items()} for s, m in world.manifests.items()}
    data["prompt_files"] = {k: str(p) for k, p in world.prompt_files.items()}
    return data
