"""The espeak-ng world of the mini model: labels, held-out sentences, the strict answer reader.

The rendering tests need espeak-ng (Debian package) and are skipped with that reason where it is absent.
"""

from __future__ import annotations

import json
import random
import shutil

import pytest
import soundfile as sf

from ahamask.mini import world as mw


def test_utterances_stay_inside_their_label_bands():
    rng = random.Random(0)
    for _ in range(2000):
        utt = mw.sample_utterance(rng)
        low, high = mw.PITCH[utt.gender]
        assert low <= utt.pitch <= high
        slow, fast = mw.RATE_WPM[utt.rate]
        assert slow <= utt.wpm <= fast
        # f4 is a low voice: it must never carry the Female label (issue #18's probe).
        assert utt.variant in (mw.MALE_VARIANTS if utt.gender == "Male" else mw.FEMALE_VARIANTS)
        assert utt.variant != "f4"
        assert 4 <= len(utt.text.split()) <= 10


def test_forbidden_sentences_are_never_drawn():
    rng = random.Random(1)
    train = {mw.make_sentence(rng) for _ in range(3000)}
    test = [mw.sample_utterance(random.Random(s), forbidden=train).text for s in range(200)]
    assert not set(test) & train


@pytest.mark.parametrize(
    ("task", "text", "expected"),
    [
        ("asr", "the dog sees a red ball", "the dog sees a red ball"),
        ("asr", "The dog sees a red ball.", None),
        ("asr", "", None),
        ("gender", "Male", "Male"),
        ("gender", " female. ", "Female"),
        ("gender", "The speaker is male.", None),
        ("rate", "Slow", "Slow"),
        ("rate", "Male", None),
    ],
)
def test_parse_answer_reads_only_the_exact_format(task, text, expected):
    assert mw.parse_answer(task, text) == expected


def test_instructions_are_disjoint_and_cover_every_task():
    for task in mw.MINI_TASKS:
        train, held = set(mw.instructions(task, "train")), set(mw.instructions(task, "heldout"))
        assert len(train) >= 8 and len(held) >= 5
        assert not train & held
        assert all("{" not in text and "}" not in text for text in train | held)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng (Debian package) is not installed")
def test_world_is_rendered_labelled_and_reproducible(tmp_path):
    info = mw.build_speech_world(tmp_path / "a", {"train": 6, "test": 4}, seed=3)
    again = mw.build_speech_world(tmp_path / "b", {"train": 6, "test": 4}, seed=3)
    for split, n in (("train", 6), ("test", 4)):
        rows = {
            t: json.loads((tmp_path / "a" / info["manifests"][split][t]).read_text())["annotation"]
            for t in mw.MINI_TASKS
        }
        assert all(len(r) == n for r in rows.values())
        for i in range(n):
            paths = {rows[t][i]["path"] for t in mw.MINI_TASKS}
            assert len(paths) == 1  # every task's manifest lists the same clip at the same index
            audio, rate = sf.read(tmp_path / "a" / rows["asr"][i]["path"])
            assert rate == 16000 and 0.5 < len(audio) / rate <= mw.MAX_SECONDS
            labels = rows["asr"][i]["labels"]
            assert rows["gender"][i]["text"] == labels["gender"] and rows["rate"][i]["text"] == labels["rate"]
            assert rows["asr"][i]["text"] == labels["asr"]
            a = (tmp_path / "a" / rows["asr"][i]["path"]).read_bytes()
            assert a == (tmp_path / "b" / rows["asr"][i]["path"]).read_bytes()
    train = {r["text"] for r in json.loads((tmp_path / "a" / "train_asr.json").read_text())["annotation"]}
    test = {r["text"] for r in json.loads((tmp_path / "a" / "test_asr.json").read_text())["annotation"]}
    assert not train & test
    assert info["audio_seconds"] == again["audio_seconds"]
