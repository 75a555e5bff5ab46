"""The synthetic world of ``make demo``: tasks, targets, manifests, prompt files and the builder.

:func:`build_world` writes, under one folder::

    world.json                  parameters, task table, alphabet, relative paths of everything below
    prompts/*.json              prompt files in the official format (see ahamask.synth.instructions)
    <split>/wav/<split>_NNNNN.wav   16 kHz mono PCM_16 clips, each written once
    <split>/<task>.json         one manifest per split and task
    <split>/mixed.json          every clip with several tasks, for training the base model

Manifests use the official schema ``{"annotation": [{"path", "text", "task", "Q"}]}`` plus a
``labels`` dict per entry. Paths are relative to the manifest's own folder (the official loader
reads them relative to the working directory; ahamask resolves them against the manifest).

Every clip is drawn from its own generator seeded with (seed, split, index), so a clip does not
depend on how many clips the other splits hold, and re-running with the same arguments gives
byte-identical files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import ahamask.synth.audio as audio
from ahamask.synth.instructions import PROMPT_TEMPLATE, prompt_files, wrapped_halves
from ahamask.utils.io import atomic_write_text

logger = logging.getLogger(__name__)

WORLD_FORMAT = "ahamask-synth-world"
WORLD_VERSION = 1
SPLITS = ("train", "valid", "test")
_SPLIT_IDS = {"train": 0, "valid": 1, "test": 2}
MIXED_NAME = "mixed"
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}
METRICS = ("wer", "accuracy", "composite", "json")


@dataclass(frozen=True)
class TaskSpec:
    """One row of the task table.

    Attributes:
        name: task id used in manifests, prompt files and file names, e.g. "asr_gender".
        metric: "wer" (word error rate over symbol words), "accuracy" (exact match over ``labels``),
            "composite" (``parts`` joined by ``separator``) or "json" (an object keyed by ``parts``).
        display: the task as the paper writes it, e.g. "asr|gender".
        description: one line saying what the answer is.
        label_key: for single tasks, the field of an entry's ``labels`` the answer comes from.
        labels: closed answer set of an accuracy task, in a fixed order.
        parts: component tasks of a composite or JSON task, in output order (also the JSON keys).
        separator: text between the parts of a composite task.
    """

    name: str
    metric: str
    display: str
    description: str
    label_key: str | None = None
    labels: tuple[str, ...] = ()
    parts: tuple[str, ...] = ()
    separator: str = ""

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"TaskSpec {self.name!r}: metric must be one of {METRICS}, got {self.metric!r}")

    def to_json(self) -> dict[str, object]:
        """Returns the row as a JSON-ready dict (what world.json stores)."""
        return {
            "name": self.name,
            "metric": self.metric,
            "display": self.display,
            "description": self.description,
            "label_key": self.label_key,
            "labels": list(self.labels),
            "parts": list(self.parts),
            "separator": self.separator,
            "json_keys": list(self.parts) if self.metric == "json" else [],
        }


_COUNT_WORDS = tuple(
    NUMBER_WORDS[n] for n in range(audio.DEFAULT_N_SYMBOLS[0], audio.DEFAULT_N_SYMBOLS[1] + 1)
)

TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec(
            "asr", "wer", "asr", "the symbol words in spoken order, space separated", label_key="symbols"
        ),
        TaskSpec(
            "gender",
            "accuracy",
            "gender",
            "the voice register (analogue of gender)",
            "register",
            ("low", "high"),
        ),
        TaskSpec("count", "accuracy", "count", "the number of symbols as a word", "count", _COUNT_WORDS),
        TaskSpec(
            "loudness",
            "accuracy",
            "loudness",
            "the level (analogue of emotion)",
            "loudness",
            ("quiet", "loud"),
        ),
        TaskSpec(
            "asr_gender",
            "composite",
            "asr|gender",
            "transcript, '|', register",
            parts=("asr", "gender"),
            separator="|",
        ),
        TaskSpec(
            "gender_asr",
            "composite",
            "gender|asr",
            "register, '|', transcript",
            parts=("gender", "asr"),
            separator="|",
        ),
        TaskSpec(
            "asr_gender_json",
            "json",
            "asr_gender_json",
            'JSON object {"asr": transcript, "gender": register}',
            parts=("asr", "gender"),
        ),
    )
}
DEFAULT_TASKS = ("asr", "gender", "count", "asr_gender", "gender_asr", "asr_gender_json")


def _task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"task: unknown task {name!r}; known tasks: {list(TASKS)}")
    return TASKS[name]


def make_target(task: str, labels: Mapping[str, object]) -> str:
    """Returns the reference answer of a task for a clip.

    Args:
        task: task name (a key of :data:`TASKS`).
        labels: the clip's labels (``ClipSpec.labels()`` or a manifest entry's ``labels``).

    Returns:
        The target text, e.g. "ba di ko" (asr), "low" (gender), "three" (count),
        "ba di ko|low" (asr_gender), '{"asr": "ba di ko", "gender": "low"}' (asr_gender_json).

    Raises:
        ValueError: if the task is unknown or a label it needs is missing.
    """
    spec = _task(task)
    if spec.metric == "composite":
        return spec.separator.join(make_target(p, labels) for p in spec.parts)
    if spec.metric == "json":
        # json.dumps' default separators give exactly '{"asr": "...", "gender": "..."}'.
        return json.dumps({p: make_target(p, labels) for p in spec.parts})
    assert spec.label_key is not None  # single tasks always name their field (table invariant)
    if spec.label_key not in labels:
        raise ValueError(f"labels: missing key {spec.label_key!r} needed by task {task!r}")
    value = labels[spec.label_key]
    if spec.name == "asr":
        return " ".join(value)  # type: ignore[arg-type]
    if spec.name == "count":
        return NUMBER_WORDS[int(value)]  # type: ignore[call-overload]
    return str(value)


def parse_output(task: str, text: str) -> dict[str, str] | None:
    """Reads a model output as an answer of ``task``, if it has that task's format.

    Outer whitespace is ignored, and so is whitespace around a composite separator; everything else
    must match the target format exactly (lowercase words, the closed label sets).

    Args:
        task: task name.
        text: decoded model output.

    Returns:
        Single task name -> answer (e.g. {"asr": "ba di", "gender": "low"}), or None when the text is
        not in the task's format.

    Raises:
        ValueError: if the task is unknown.
    """
    spec = _task(task)
    text = text.strip()
    if spec.metric == "wer":
        words = text.split(" ")
        return {task: text} if text and all(w in audio.SYMBOL_WORDS for w in words) else None
    if spec.metric == "accuracy":
        return {task: text} if text in spec.labels else None
    if spec.metric == "composite":
        pieces = text.split(spec.separator)
        if len(pieces) != len(spec.parts):
            return None
        parsed = [parse_output(p, piece) for p, piece in zip(spec.parts, pieces, strict=True)]
    else:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            return None
        # JSON objects are unordered: any key order is the format, but no extra or missing key.
        if not isinstance(obj, dict) or sorted(obj) != sorted(spec.parts):
            return None
        if not all(isinstance(v, str) for v in obj.values()):
            return None
        parsed = [parse_output(p, obj[p]) for p in spec.parts]
    if any(p is None for p in parsed):
        return None
    return {k: v for p in parsed for k, v in p.items()}  # type: ignore[union-attr]


def detect_task(text: str, tasks: Sequence[str] | None = None) -> str | None:
    """Says which task's format an output has: the evidence of *which* task a masked model performed.

    The answer vocabularies of the single tasks are disjoint, so at most one task matches.

    Args:
        text: decoded model output.
        tasks: candidate tasks (default: all of :data:`TASKS`).

    Returns:
        The matching task name, or None if the output is in no candidate's format.
    """
    for name in tasks if tasks is not None else TASKS:
        if parse_output(name, text) is not None:
            return name
    return None


def answer_words(tasks: Sequence[str] = DEFAULT_TASKS) -> list[str]:
    """The words answers are made of: symbol words, then the label sets of the tasks involved.

    A tokenizer trained on :func:`world_corpus` sees each distinct target once, so rare answer
    words ("three") may be split into pieces; pass these as user-defined symbols to keep them whole.

    Args:
        tasks: task names; composite and JSON tasks contribute their parts' words and JSON keys.

    Returns:
        Distinct words in a fixed order.

    Raises:
        ValueError: if a task is unknown.
    """
    words: dict[str, None] = {}
    for name in tasks:
        spec = _task(name)
        for part in spec.parts or (name,):
            part_spec = TASKS[part]
            for w in audio.SYMBOL_WORDS if part_spec.metric == "wer" else part_spec.labels:
                words.setdefault(w, None)
        if spec.metric == "json":
            for key in spec.parts:
                words.setdefault(key, None)
    return list(words)


@dataclass(frozen=True)
class WorldInfo:
    """Where a built world lives and how it was made (the in-memory form of world.json).

    Attributes:
        root: the world folder.
        seed: generator seed.
        sample_rate: samples per second of every clip.
        clip_seconds: length of every clip.
        snr_db: noise SNR range, or None for clean clips.
        splits: split -> number of clips.
        tasks: task names with manifests and prompts.
        manifests: split -> task -> manifest path.
        mixed_manifests: split -> multi-task manifest path.
        prompt_files: prompt file stem (e.g. "train_prompt") -> path.
        world_json: path of world.json.
    """

    root: Path
    seed: int
    sample_rate: int
    clip_seconds: float
    snr_db: tuple[float, float] | None
    splits: dict[str, int]
    tasks: tuple[str, ...]
    manifests: dict[str, dict[str, Path]] = field(default_factory=dict)
    mixed_manifests: dict[str, Path] = field(default_factory=dict)
    prompt_files: dict[str, Path] = field(default_factory=dict)
    world_json: Path = Path()

    def task_specs(self) -> list[TaskSpec]:
        """Returns the task table rows of this world's tasks, in order."""
        return [TASKS[t] for t in self.tasks]


def _write_json(path: Path, obj: object) -> None:
    # Through the project's atomic writer (temp file, fsync, os.replace): a reader never sees half a
    # file, and world.json, written last, marks a complete world.
    atomic_write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", path)


def _write_manifest(path: Path, entries: list[dict[str, object]]) -> None:
    # One entry per line: still plain JSON in the official schema, but greppable and written by the
    # C encoder (indent=2 falls back to the pure-Python one, which took longer than the audio).
    lines = ",\n".join("  " + json.dumps(e, ensure_ascii=False) for e in entries)
    atomic_write_text('{"annotation": [\n' + lines + "\n]}\n" if entries else '{"annotation": []}\n', path)


def _validate(
    seed: int,
    counts: dict[str, int],
    clip_seconds: float,
    tasks: Sequence[str],
    snr_db: tuple[float, float] | None,
) -> None:
    errors = []
    if not isinstance(seed, int) or seed < 0:
        errors.append(f"seed: expected a non-negative int, got {seed!r}")
    for split, n in counts.items():
        if not isinstance(n, int) or n < 0:
            errors.append(f"n_{split}: expected a non-negative int, got {n!r}")
    need = audio.min_clip_seconds(audio.DEFAULT_N_SYMBOLS[1])
    if clip_seconds < need - 1e-9:
        errors.append(
            f"clip_seconds: {clip_seconds} cannot hold {audio.DEFAULT_N_SYMBOLS[1]} symbols; need >= {need:.2f}"
        )
    if not tasks:
        errors.append("tasks: expected at least one task")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        errors.append(f"tasks: unknown {unknown}; known tasks: {list(TASKS)}")
    if len(set(tasks)) != len(tasks):
        errors.append(f"tasks: duplicates in {list(tasks)}")
    if snr_db is not None and not (len(snr_db) == 2 and snr_db[0] <= snr_db[1]):
        errors.append(f"snr_db: expected (low, high) with low <= high or None, got {snr_db!r}")
    if errors:
        raise ValueError("build_world: " + "; ".join(errors))


def _prepare_root(root: Path, overwrite: bool) -> None:
    world_json = root / "world.json"
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root}: exists and is not a folder")
    if world_json.exists():
        if not overwrite:
            raise FileExistsError(
                f"{world_json}: a world is already built here; pass overwrite=True to rebuild it"
            )
        # Only the folders a world owns are removed, so stale clips of a larger earlier build go away
        # while anything else the user keeps there survives.
        world_json.unlink()
        for sub in (*SPLITS, "prompts"):
            if (root / sub).is_dir():
                shutil.rmtree(root / sub)
    elif root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"{root}: folder is not empty and holds no world.json; refusing to write into it"
        )
    root.mkdir(parents=True, exist_ok=True)


def _entry(wav_rel: str, task: str, labels: Mapping[str, object]) -> dict[str, object]:
    return {"path": wav_rel, "text": make_target(task, labels), "task": task, "Q": "", "labels": dict(labels)}


def _mixed_count(tasks: tuple[str, ...], mixed_tasks_per_clip: int | None) -> int:
    """How many tasks each clip gets in the mixed manifests (default: all), checked to be in range."""
    k = len(tasks) if mixed_tasks_per_clip is None else mixed_tasks_per_clip
    if not 1 <= k <= len(tasks):
        raise ValueError(f"mixed_tasks_per_clip: expected 1..{len(tasks)}, got {mixed_tasks_per_clip!r}")
    return k


def _world_info(
    root: Path,
    seed: int,
    clip_seconds: float,
    snr_db: tuple[float, float] | None,
    counts: dict[str, int],
    tasks: tuple[str, ...],
    manifests: dict[str, dict[str, Path]],
    mixed: dict[str, Path],
) -> WorldInfo:
    """Writes the prompt files and gathers the built world's description (world.json is written later)."""
    return WorldInfo(
        root=root,
        seed=seed,
        sample_rate=audio.SAMPLE_RATE,
        clip_seconds=float(clip_seconds),
        snr_db=None if snr_db is None else (float(snr_db[0]), float(snr_db[1])),
        splits=counts,
        tasks=tasks,
        manifests=manifests,
        mixed_manifests=mixed,
        prompt_files=_write_prompt_files(root, tasks),
        world_json=root / "world.json",
    )


def build_world(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    n_train: int = 2000,
    n_valid: int = 200,
    n_test: int = 300,
    clip_seconds: float = 2.0,
    tasks: Sequence[str] = DEFAULT_TASKS,
    snr_db: tuple[float, float] | None = audio.DEFAULT_SNR_DB,
    mixed_tasks_per_clip: int | None = None,
    overwrite: bool = False,
) -> WorldInfo:
    """Generates the synthetic world: audio, manifests, prompt files and world.json.

    Args:
        out_dir: world folder; created if missing, must be empty unless it holds a world.
        seed: non-negative generator seed; the same seed gives byte-identical files.
        n_train: number of training clips.
        n_valid: number of validation clips.
        n_test: number of test clips.
        clip_seconds: length of every clip (>= 1.7 s so that six symbols fit).
        tasks: task names (keys of :data:`TASKS`).
        snr_db: range of the white-noise SNR, or None for clean audio.
        mixed_tasks_per_clip: how many tasks each clip gets in the mixed manifests (default: all).
            With fewer, clip i takes tasks i, i+1, ... (cyclically), so every task is equally used.
        overwrite: rebuild when ``out_dir`` already holds a world (its split and prompt folders are
            removed first).

    Returns:
        The world's :class:`WorldInfo` (also written as world.json).

    Raises:
        ValueError: for bad arguments (all problems reported at once).
        FileExistsError: if ``out_dir`` holds a world and ``overwrite`` is False, or holds other files.

    Example:
        >>> info = build_world("/tmp/world", n_train=100, n_valid=10, n_test=20)  # doctest: +SKIP
        >>> info.manifests["test"]["asr_gender"]  # doctest: +SKIP
        PosixPath('/tmp/world/test/asr_gender.json')
    """
    tasks = tuple(tasks)
    counts = {"train": n_train, "valid": n_valid, "test": n_test}
    _validate(seed, counts, clip_seconds, tasks, snr_db)
    k = _mixed_count(tasks, mixed_tasks_per_clip)
    root = Path(out_dir)
    _prepare_root(root, overwrite)
    started = time.perf_counter()
    manifests: dict[str, dict[str, Path]] = {}
    mixed: dict[str, Path] = {}
    for split in SPLITS:
        clips = _render_split(root / split, split, counts[split], seed, clip_seconds, snr_db)
        manifests[split], mixed[split] = _write_split_manifests(root / split, clips, tasks, k)
    info = _world_info(root, seed, clip_seconds, snr_db, counts, tasks, manifests, mixed)
    # world.json goes last: its presence marks a complete world.
    _write_json(info.world_json, _world_json(info))
    elapsed = time.perf_counter() - started
    logger.info("built synthetic world in %s: %s clips, tasks %s, %.1f s", root, counts, list(tasks), elapsed)
    return info


def _render_split(
    split_dir: Path,
    split: str,
    n: int,
    seed: int,
    clip_seconds: float,
    snr_db: tuple[float, float] | None,
) -> list[tuple[str, dict[str, object]]]:
    """Renders a split's clips into ``split_dir/wav``; returns each clip's relative wav path and labels.

    Clip ``i`` of a split draws from its own generator ``(seed, split, i)``, so a clip does not depend on
    how many clips come before it or in other splits.
    """
    (split_dir / "wav").mkdir(parents=True, exist_ok=True)
    clips: list[tuple[str, dict[str, object]]] = []
    for i in range(n):
        clip_id = f"{split}_{i:05d}"
        rng = np.random.default_rng([seed, _SPLIT_IDS[split], i])
        spec = audio.sample_clip_spec(rng, clip_seconds=clip_seconds, snr_db=snr_db)
        wav_rel = f"wav/{clip_id}.wav"
        audio.write_wav(split_dir / wav_rel, audio.render_clip(spec), spec.sample_rate)
        clips.append((wav_rel, {"clip_id": clip_id, **spec.labels()}))
    return clips


def _write_split_manifests(
    split_dir: Path, clips: list[tuple[str, dict[str, object]]], tasks: tuple[str, ...], k: int
) -> tuple[dict[str, Path], Path]:
    """Writes one manifest per task and the mixed manifest (``k`` tasks per clip) of a split.

    Returns:
        task -> manifest path, and the mixed manifest's path.
    """
    manifests = {}
    for task in tasks:
        path = split_dir / f"{task}.json"
        _write_manifest(path, [_entry(rel, task, lab) for rel, lab in clips])
        manifests[task] = path
    mixed_entries = [
        _entry(rel, tasks[(i + j) % len(tasks)], lab) for i, (rel, lab) in enumerate(clips) for j in range(k)
    ]
    mixed = split_dir / f"{MIXED_NAME}.json"
    _write_manifest(mixed, mixed_entries)
    return manifests, mixed


def _write_prompt_files(root: Path, tasks: tuple[str, ...]) -> dict[str, Path]:
    """Writes the world's prompt files into ``root/prompts``; returns stem -> path."""
    (root / "prompts").mkdir(exist_ok=True)
    prompt_paths = {}
    for stem, content in prompt_files(tasks).items():
        prompt_paths[stem] = root / "prompts" / f"{stem}.json"
        _write_json(prompt_paths[stem], content)
    return prompt_paths


def _world_json(info: WorldInfo) -> dict[str, object]:
    def rel(p: Path) -> str:
        return p.relative_to(info.root).as_posix()

    return {
        "format": WORLD_FORMAT,
        "version": WORLD_VERSION,
        "seed": info.seed,
        "sample_rate": info.sample_rate,
        "clip_seconds": info.clip_seconds,
        "snr_db": None if info.snr_db is None else list(info.snr_db),
        "n_symbols": list(audio.DEFAULT_N_SYMBOLS),
        "splits": info.splits,
        "tasks": [TASKS[t].to_json() for t in info.tasks],
        "alphabet": {s.word: list(s.tones_hz) for s in audio.ALPHABET},
        "registers": {
            r.name: {"f0_range_hz": list(r.f0_range_hz), "timbre_scale_range": list(r.timbre_scale_range)}
            for r in audio.REGISTERS.values()
        },
        "loudness_dbfs": {k: list(v) for k, v in audio.LOUDNESS_DBFS.items()},
        "number_words": {str(n): w for n, w in NUMBER_WORDS.items()},
        "prompt_template": PROMPT_TEMPLATE,
        "files": {
            "manifests": {s: {t: rel(p) for t, p in m.items()} for s, m in info.manifests.items()},
            "mixed": {s: rel(p) for s, p in info.mixed_manifests.items()},
            "prompts": {k: rel(p) for k, p in info.prompt_files.items()},
        },
    }


def load_world(out_dir: str | os.PathLike[str]) -> WorldInfo:
    """Reads the :class:`WorldInfo` of a world built earlier.

    Args:
        out_dir: the world folder (holding world.json).

    Returns:
        The world's info, with absolute paths under ``out_dir``.

    Raises:
        FileNotFoundError: if world.json or a file it lists is missing.
        ValueError: if world.json is not a synthetic world of this version or misses a key.
    """
    root = Path(out_dir)
    path = root / "world.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; build the world first (scripts/make_synth_world.py)")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != WORLD_FORMAT or data.get("version") != WORLD_VERSION:
        raise ValueError(
            f"{path}: expected format {WORLD_FORMAT!r} version {WORLD_VERSION}, "
            f"got {data.get('format')!r} version {data.get('version')!r}"
        )
    missing = [
        k
        for k in ("seed", "sample_rate", "clip_seconds", "snr_db", "splits", "tasks", "files")
        if k not in data
    ]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    files = data["files"]

    def resolve(rel: str) -> Path:
        p = root / rel
        if not p.is_file():
            raise FileNotFoundError(f"{path}: lists {rel!r} but {p} does not exist")
        return p

    return WorldInfo(
        root=root,
        seed=int(data["seed"]),
        sample_rate=int(data["sample_rate"]),
        clip_seconds=float(data["clip_seconds"]),
        snr_db=None if data["snr_db"] is None else (float(data["snr_db"][0]), float(data["snr_db"][1])),
        splits={k: int(v) for k, v in data["splits"].items()},
        tasks=tuple(t["name"] for t in data["tasks"]),
        manifests={s: {t: resolve(r) for t, r in m.items()} for s, m in files["manifests"].items()},
        mixed_manifests={s: resolve(r) for s, r in files["mixed"].items()},
        prompt_files={k: resolve(r) for k, r in files["prompts"].items()},
        world_json=path,
    )


def world_corpus(info: WorldInfo) -> list[str]:
    """Every text the LLM of the demo will see, for training its sentencepiece tokenizer.

    That is: the two prompt halves around the audio for every template of every prompt file
    (``"USER: <Speech>"`` and ``"</Speech> <instruction>\\nASSISTANT:"``, the latter also without an
    instruction), then every distinct target of every manifest. The halves keep their ``"\\n"``:
    a LLaMA-style tokenizer with byte fallback turns it into ``<0x0A>``.

    Args:
        info: a built world (from :func:`build_world` or :func:`load_world`).

    Returns:
        Distinct strings, in a fixed order (prompt pieces first, then targets in manifest order).
    """
    seen: dict[str, None] = {}
    for path in info.prompt_files.values():
        content = json.loads(path.read_text(encoding="utf-8"))
        for templates in content.values():
            for template in [templates] if isinstance(templates, str) else templates:
                for piece in wrapped_halves(template):
                    seen.setdefault(piece, None)
    for split in SPLITS:
        for path in [*info.manifests.get(split, {}).values(), info.mixed_manifests.get(split)]:
            if path is None:
                continue
            for entry in json.loads(path.read_text(encoding="utf-8"))["annotation"]:
                seen.setdefault(entry["text"], None)
    return list(seen)
