"""The mini model's speech world: English sentences spoken by espeak-ng, labelled for ASR, gender and rate.

Why espeak-ng: it is an ordinary Debian package, renders a clip in ~30 ms, and its voice variants and pitch
and rate options give ground-truth labels no one has to annotate. Issue #18 measured on Whisper-base that
gender is linearly decodable only when the pitch bands are apart (male ``-p 15-35``, female ``-p 65-90``:
probe 0.997-1.0; overlapping bands 0.77-0.84), and that variant ``f4`` sounds low: it is not used as female.

Sentences come from a small grammar over about 130 words (no corpus can be downloaded here); test sentences
are word combinations never spoken in training, built from the same words. Every clip fits the 4-second
Whisper context of ``pretrained/small/whisper-base-4s`` (longer renderings are redrawn).

Tasks (targets in the exact format the strict scorer reads):

* ``asr``: the sentence in lower case, no punctuation (also the no-instruction default, as SALMONN);
* ``gender``: ``Male`` or ``Female``;
* ``rate``: ``Fast`` or ``Slow`` (espeak-ng words per minute 200-240 vs 115-140).

Layout written by :func:`build_speech_world` (the manifests use the official schema plus ``labels``)::

    ROOT/audio/<split>/<id>.wav     16 kHz mono PCM
    ROOT/<split>_<task>.json        one manifest per split and task (the same clips in the same order)
    ROOT/world.json                 settings, counts, espeak-ng version (written last: marks a whole world)
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ..data.sinc_resample import resample_sinc
from ..synth.audio import write_wav
from ..utils.io import atomic_write_json, atomic_write_text

__all__ = [
    "HELDOUT_INSTRUCTIONS",
    "MINI_TASKS",
    "TRAIN_INSTRUCTIONS",
    "Utterance",
    "build_speech_world",
    "espeak_version",
    "make_sentence",
    "parse_answer",
    "sample_utterance",
]

SAMPLE_RATE = 16000
MAX_SECONDS = 3.9  # inside the 4 s encoder context
MINI_TASKS = ("asr", "gender", "rate")
LABELS = {"gender": ("Male", "Female"), "rate": ("Fast", "Slow")}
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f5")  # f4 is low-pitched: never labelled female
PITCH = {"Male": (15, 35), "Female": (65, 90)}
RATE_WPM = {"Slow": (115, 140), "Fast": (200, 240)}

_SUBJECTS = (
    "the dog", "the cat", "a bird", "my friend", "the old man", "the girl", "a small boy", "the teacher",
    "her brother", "the farmer", "our neighbour", "the baker", "a young woman", "the doctor", "his sister",
)  # fmt: skip
_VERBS = (
    "sees", "likes", "finds", "brings", "wants", "takes", "paints", "opens", "cleans", "holds", "sells",
    "buys", "carries", "moves", "drops",
)  # fmt: skip
_OBJECTS = (
    "the red ball", "a green apple", "the blue door", "some bread", "a long letter", "the big box",
    "a warm coat", "the yellow car", "an empty cup", "the heavy bag", "a new book", "the black hat",
    "some fresh fish", "a white chair", "the small key",
)  # fmt: skip
_ENDINGS = (
    "", "", "", "today", "again", "at home", "every day", "in the morning", "near the river", "after dinner",
    "with care", "at night",
)  # fmt: skip

TRAIN_INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "asr": (
        "Transcribe the audio.",
        "Write down what the speaker says.",
        "Recognize the speech and give me the transcription.",
        "What is said in this recording?",
        "Convert the speech to text.",
        "Give the transcript of this clip.",
        "Please write out every word you hear.",
        "transcribe this",
    ),
    "gender": (
        "Is the speaker male or female?",
        "What is the gender of the speaker?",
        "Tell me whether the voice is male or female.",
        "Recognize the speaker's gender.",
        "male or female?",
        "Classify the speaker as male or female.",
        "Is this a man or a woman speaking? Answer Male or Female.",
        "What gender does the voice have?",
    ),
    "rate": (
        "Is the speech fast or slow?",
        "How fast does the speaker talk? Answer Fast or Slow.",
        "Tell me whether the speaking rate is fast or slow.",
        "fast or slow?",
        "Classify the speaking rate.",
        "Does the speaker talk quickly or slowly?",
        "What is the pace of this speech: fast or slow?",
        "Is the talking speed fast or slow?",
    ),
}
HELDOUT_INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "asr": (
        "Please transcribe the speech.",
        "Write down every word of this recording.",
        "What does the speaker say? Give the text.",
        "Turn this audio into text.",
        "Recognize the words that are spoken.",
    ),
    "gender": (
        "Is the voice of a male or a female?",
        "Please tell me the gender of the voice.",
        "Male or female speaker?",
        "Recognize whether the speaker is a man or a woman.",
        "What is the speaker's gender? Answer Male or Female.",
    ),
    "rate": (
        "Is the speaking rate fast or slow?",
        "Please tell me if the speaker talks fast or slow.",
        "Fast or slow speech?",
        "Recognize the pace of the speaker.",
        "How quickly is this spoken? Answer Fast or Slow.",
    ),
}


def make_sentence(rng: random.Random) -> str:
    """One sentence of the grammar ``subject verb object [ending]`` (4-10 words, lower case)."""
    parts = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_ENDINGS)]
    return " ".join(p for p in parts if p)


@dataclass(frozen=True)
class Utterance:
    """What espeak-ng is asked to say, and the labels that follow from it."""

    text: str
    gender: str
    rate: str
    variant: str
    pitch: int
    wpm: int

    def espeak_args(self) -> list[str]:
        return ["-v", f"en-us+{self.variant}", "-p", str(self.pitch), "-s", str(self.wpm)]

    def labels(self) -> dict[str, str]:
        return {"asr": self.text, "gender": self.gender, "rate": self.rate}


def sample_utterance(rng: random.Random, forbidden: set[str] | frozenset[str] = frozenset()) -> Utterance:
    """A random sentence, gender and rate, with a voice variant and pitch/rate inside the label's band.

    Args:
        rng: the world's own generator.
        forbidden: sentences that must not be drawn (the training sentences, for the test split).
    """
    text = make_sentence(rng)
    while text in forbidden:
        text = make_sentence(rng)
    gender = rng.choice(LABELS["gender"])
    rate = rng.choice(LABELS["rate"])
    variant = rng.choice(MALE_VARIANTS if gender == "Male" else FEMALE_VARIANTS)
    return Utterance(text, gender, rate, variant, rng.randint(*PITCH[gender]), rng.randint(*RATE_WPM[rate]))


def espeak_version() -> str:
    """``espeak-ng --version``'s first line.

    Raises:
        FileNotFoundError: espeak-ng is not installed (the message says how to install it).
    """
    if shutil.which("espeak-ng") is None:
        raise FileNotFoundError("espeak-ng is not installed: apt-get install espeak-ng (Debian package)")
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[0]


def render(utt: Utterance, workdir: Path) -> np.ndarray:
    """espeak-ng's rendering of one utterance, resampled from 22.05 kHz to 16 kHz (float32, mono)."""
    wav = workdir / "clip.wav"
    subprocess.run(
        ["espeak-ng", *utt.espeak_args(), "-w", str(wav), utt.text], check=True, capture_output=True
    )
    audio, rate = sf.read(wav, dtype="float32")
    return resample_sinc(audio, rate, SAMPLE_RATE)


def parse_answer(task: str, text: str) -> str | None:
    """The answer in the task's exact format, or None (the strict scorer's reading).

    asr: lower-case words and spaces only; gender/rate: one label word, a final period allowed, any case.
    """
    answer = text.strip()
    if task == "asr":
        return answer if answer and all(c.isalpha() and c.islower() or c == " " for c in answer) else None
    word = answer.removesuffix(".").strip().capitalize()
    return word if word in LABELS[task] else None


def _render_split(
    rng: random.Random, root: Path, split: str, n: int, forbidden: set[str], workdir: Path
) -> list[dict[str, Any]]:
    (root / "audio" / split).mkdir(parents=True, exist_ok=True)
    entries = []
    while len(entries) < n:
        utt = sample_utterance(rng, forbidden)
        audio = render(utt, workdir)
        if len(audio) > MAX_SECONDS * SAMPLE_RATE:
            continue  # too long for the encoder context: draw another
        clip_id = f"{split}_{len(entries):05d}"
        rel = f"audio/{split}/{clip_id}.wav"
        write_wav(root / rel, audio, SAMPLE_RATE)
        entries.append({"id": clip_id, "path": rel, "utterance": utt, "seconds": len(audio) / SAMPLE_RATE})
    return entries


def _write_manifests(root: Path, split: str, entries: list[dict[str, Any]]) -> dict[str, str]:
    paths = {}
    for task in MINI_TASKS:
        rows = []
        for e in entries:
            utt: Utterance = e["utterance"]
            labels = {**utt.labels(), "variant": utt.variant, "pitch": utt.pitch, "wpm": utt.wpm}
            rows.append(
                {"path": e["path"], "text": utt.labels()[task], "task": task, "Q": "", "labels": labels}
            )
        name = f"{split}_{task}.json"
        lines = ",\n".join("  " + json.dumps(r, ensure_ascii=False) for r in rows)
        atomic_write_text('{"annotation": [\n' + lines + "\n]}\n", root / name)
        paths[task] = name
    return paths


def build_speech_world(root: str | Path, splits: dict[str, int], seed: int = 0) -> dict[str, Any]:
    """Renders every split's clips and writes the manifests and ``world.json``.

    Args:
        root: output folder (created; an existing ``world.json`` of the same settings is reused).
        splits: split name -> number of clips, e.g. ``{"train": 1500, "valid": 48, "test": 80}``; the test
            split (and any split but ``train``) never repeats a training sentence.
        seed: the generator seed (the clips depend on it and on the espeak-ng version only).

    Returns:
        The ``world.json`` content (``manifests``: split -> task -> manifest path relative to root).
    """
    root = Path(root)
    version = espeak_version()
    settings = {"seed": seed, "splits": dict(splits), "espeak_ng": version, "tasks": list(MINI_TASKS)}
    marker = root / "world.json"
    if marker.exists():
        info = json.loads(marker.read_text(encoding="utf-8"))
        if info.get("settings") == settings:
            return info
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    rng = random.Random(seed)
    manifests, seconds, train_sentences = {}, {}, set()
    with tempfile.TemporaryDirectory() as tmp:
        for split in sorted(splits, key=lambda s: s != "train"):  # train first: its sentences are held out
            forbidden = set() if split == "train" else train_sentences
            entries = _render_split(rng, root, split, splits[split], forbidden, Path(tmp))
            if split == "train":
                train_sentences = {e["utterance"].text for e in entries}
            manifests[split] = _write_manifests(root, split, entries)
            seconds[split] = round(sum(e["seconds"] for e in entries), 1)
    info = {"settings": settings, "manifests": manifests, "audio_seconds": seconds}
    atomic_write_json(info, marker)
    return info


def instructions(task: str, split: str) -> Sequence[str]:
    """The task's training (``"train"``) or held-out (``"heldout"``) paraphrases."""
    table = TRAIN_INSTRUCTIONS if split == "train" else HELDOUT_INSTRUCTIONS
    return table[task]
