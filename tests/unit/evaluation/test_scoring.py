"""Scoring prediction files: grouping by task, composites, unknown tasks, reports, CLI, instruction sets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ahamask.evaluation.scoring import (
    TaskPlan,
    UnknownTaskError,
    format_table,
    plan_task,
    save_report,
    score_file,
    score_predictions,
)

REPO = Path(__file__).resolve().parents[3]


def _entry(gt: str, out: str, id_: str = "x.flac") -> dict[str, str]:
    return {"id": id_, "ground_truth": gt, "output": out}


def _write_json(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


# ---------------------------------------------------------------- task plans


def test_plan_task_reads_single_sep_and_json_specs() -> None:
    assert plan_task("gender_recognition") == TaskPlan(name="gender")
    assert plan_task("gender_asr_librispeech") == TaskPlan(
        name="gender|asr", fmt="sep", parts=("gender", "asr")
    )
    assert plan_task("ASR | gender_recognition").parts == ("asr", "gender")
    json_plan = plan_task("asr_gender_json_librispeech")
    assert (json_plan.fmt, json_plan.keys, json_plan.parts) == ("json", ("ASR", "GR"), ("asr", "gender"))
    assert plan_task("json:asr,emotion").keys == ("asr", "emotion")
    with pytest.raises(UnknownTaskError, match="at least two"):
        plan_task("json:ASR=asr")
    with pytest.raises(UnknownTaskError, match="single task"):
        plan_task("asr|asr_gender_librispeech")


# ---------------------------------------------------------------- single tasks


def test_tasks_are_grouped_by_canonical_name() -> None:
    preds = [
        _entry("Male", "The speaker is male."),
        _entry("Female", "a woman"),
        _entry("Male", "female"),
        _entry("Hello, World!", "hello world"),
        _entry("good morning everyone", "good morning"),
    ]
    tasks = ["gender_recognition", "gender_librispeech", "gender", "asr", "asr_librispeech"]
    report = score_predictions(preds, tasks)
    gender, asr = report["tasks"]["gender"], report["tasks"]["asr"]
    assert (gender["metric"], gender["n"], gender["value"]) == ("accuracy", 3, pytest.approx(200 / 3))
    assert gender["names"] == ["gender", "gender_librispeech", "gender_recognition"]
    # 1 deletion over 5 reference words.
    assert (asr["metric"], asr["value"], asr["details"]["deletions"]) == ("wer", pytest.approx(20.0), 1)
    assert report["unscored"] == {} and report["n_entries"] == 5


def test_unknown_task_is_reported_not_dropped() -> None:
    preds = [_entry("3", "three"), _entry("5", "five"), _entry("Male", "male")]
    report = score_predictions(preds, ["count", "count", "gender"])
    assert report["unscored"] == {"count": 2}
    assert list(report["tasks"]) == ["gender"]
    assert "unscored (no metric): count (2)" in format_table(report)


def test_labels_make_an_unknown_task_a_classification_task() -> None:
    preds = [_entry("three", "3"), _entry("five", "There are five."), _entry("two", "five")]
    report = score_predictions(preds, ["count"] * 3, labels=["two", "three", "five"])
    count = report["tasks"]["count"]
    assert (count["metric"], count["value"]) == ("accuracy", pytest.approx(200 / 3))
    assert report["unscored"] == {}


def test_bad_entries_are_named() -> None:
    with pytest.raises(ValueError, match="entry 1 .* no string 'output'"):
        score_predictions([_entry("a", "a"), {"id": "b.flac", "ground_truth": "a"}], ["asr", "asr"])
    with pytest.raises(ValueError, match="2 predictions but 1 task names"):
        score_predictions([_entry("a", "a"), _entry("a", "a")], ["asr"])
    # The ground truth of entry 1 is not a gender: the entry and its id are named.
    with pytest.raises(ValueError, match=r"entry 1 \(id 'b.flac'\), task 'gender'.*'Robot'"):
        score_predictions([_entry("Male", "male"), _entry("Robot", "male", "b.flac")], ["gender"] * 2)


# ---------------------------------------------------------------- composite tasks


def test_separator_composite_scores_parts_and_following_rate() -> None:
    preds = [
        _entry("hello world | Male", "hello world | It is a man."),
        _entry("good day | Female", "good day | male"),
        _entry("see you | Male", "see you"),  # no separator: not following, parts empty
        _entry("thank you | Female", "thank you|female"),
    ]
    report = score_predictions(preds, ["asr_gender_librispeech"] * 4)
    entry = report["tasks"]["asr|gender"]
    assert (entry["metric"], entry["value"], entry["details"]["followed"]) == (
        "instruction_following_rate",
        75.0,
        3,
    )
    asr, gender = entry["parts"]["asr"], entry["parts"]["gender"]
    # 8 reference words, the 2 of "see you" deleted.
    assert (asr["value"], asr["details"]["deletions"], asr["details"]["ref_words"]) == (25.0, 2, 8)
    assert (gender["value"], gender["details"]["unparsed"]) == (50.0, 1)


def test_json_composite_is_read_leniently() -> None:
    gt = '{"ASR": "hello world", "GR": "Male"}'
    preds = [
        _entry(gt, '{"ASR": "hello world", "GR": "Male"}'),
        _entry(gt, "Here you go: {'asr': 'hello world', 'gr': 'male'} Anything else?"),
        _entry(gt, '{"asr": "hello world", "gender": "a man"}'),  # the part task names as keys
        _entry(gt, '{"ASR": "hello world"}'),  # GR missing: not following
        _entry(gt, "hello world, male"),  # not JSON: not following
    ]
    report = score_predictions(preds, ["asr_gender_json_librispeech"] * 5)
    entry = report["tasks"]["json:ASR=asr,GR=gender"]
    assert entry["value"] == pytest.approx(60.0) and entry["details"]["followed"] == 3
    assert entry["parts"]["gender"]["value"] == pytest.approx(60.0)
    # 10 reference words; both unfollowed answers lose their 2 words.
    assert entry["parts"]["asr"]["details"]["deletions"] == 4
    assert entry["parts"]["asr"]["value"] == pytest.approx(40.0)


def test_composite_ground_truth_must_follow_the_format() -> None:
    with pytest.raises(ValueError, match=r"entry 0 \(id 'x.flac'\).*not in the format"):
        score_predictions([_entry("hello world", "hello world | male")], ["asr|gender"])


def test_composite_with_unknown_part_is_unscored() -> None:
    report = score_predictions([_entry("a | b", "a | b")], ["asr|mood"])
    assert report["unscored"] == {"asr|mood": 1} and report["tasks"] == {}


# ---------------------------------------------------------------- files, report, CLI


@pytest.fixture
def demo_files(tmp_path: Path) -> tuple[Path, Path]:
    """A manifest in the official schema and a prediction file written the way evaluate.py writes it."""
    manifest = {
        "annotation": [
            {"path": "wavs/a.flac", "text": "Male", "task": "gender_recognition"},
            {"path": "wavs/b.flac", "text": "Female", "task": "gender_recognition"},
            # The same audio used for two tasks: the ground truth tells the entries apart.
            {"path": "wavs/b.flac", "text": "她喜欢吃苹果。", "task": "translation_ec"},
            {"path": "wavs/c.flac", "text": "Neutral", "task": "emotion_recognition"},
            {"path": "wavs/d.flac", "text": "4", "task": "count"},
        ]
    }
    preds = {
        "prompt": "",
        "prediction": [
            _entry("Male", "The speaker is a man.", "wavs/a.flac"),
            _entry("Female", "male", "wavs/b.flac"),
            _entry("她喜欢吃苹果。", "她喜欢吃苹果。", "wavs/b.flac"),
            _entry("Neutral", "The speaker sounds calm.", "wavs/c.flac"),
            _entry("4", "four", "wavs/d.flac"),
        ],
    }
    return _write_json(tmp_path / "pred.json", preds), _write_json(tmp_path / "manifest.json", manifest)


def test_score_file_takes_tasks_from_the_manifest(demo_files: tuple[Path, Path]) -> None:
    pred, manifest = demo_files
    report = score_file(pred, manifest)
    assert report["tasks"]["gender"]["value"] == 50.0
    assert (
        report["tasks"]["s2tt"]["value"] == 100.0 and report["tasks"]["s2tt"]["details"]["tokenize"] == "zh"
    )
    assert report["tasks"]["emotion"]["value"] == 100.0
    assert report["unscored"] == {"count": 1}
    assert report["prediction_file"] == str(pred) and report["prompt"] == ""


def test_score_file_task_override_and_missing_task(demo_files: tuple[Path, Path], tmp_path: Path) -> None:
    pred, _ = demo_files
    report = score_file(pred, task="asr")
    assert list(report["tasks"]) == ["asr"] and report["tasks"]["asr"]["n"] == 5
    with pytest.raises(ValueError, match="entry 0 has no 'task'"):
        score_file(pred)
    other = _write_json(tmp_path / "m2.json", {"annotation": [{"path": "wavs/a.flac", "text": "Male"}]})
    with pytest.raises(ValueError, match="entry 1: id 'wavs/b.flac' is not a 'path' of the manifest"):
        score_file(pred, other)
    with pytest.raises(FileNotFoundError, match="prediction file: no such file"):
        score_file(tmp_path / "missing.json")


def test_manifest_without_task_defaults_to_asr(tmp_path: Path) -> None:
    manifest = _write_json(tmp_path / "m.json", {"annotation": [{"path": "a.flac", "text": "hello world"}]})
    pred = _write_json(
        tmp_path / "p.json", {"prompt": "", "prediction": [_entry("hello world", "hello", "a.flac")]}
    )
    assert score_file(pred, manifest)["tasks"]["asr"]["value"] == 50.0


def test_format_table_and_atomic_save(demo_files: tuple[Path, Path], tmp_path: Path) -> None:
    pred, manifest = demo_files
    report = score_file(pred, manifest)
    table = format_table(report)
    lines = table.splitlines()
    assert lines[0].split() == ["task", "n", "metric", "value", "notes"]
    assert any(line.split()[:5] == ["gender", "2", "accuracy", "%", "50.00"] for line in lines)
    out = save_report(report, tmp_path / "reports" / "report.json")
    assert json.loads(out.read_text(encoding="utf-8")) == report
    assert [p.name for p in out.parent.iterdir()] == ["report.json"]  # no temporary file left


def test_score_cli_end_to_end(demo_files: tuple[Path, Path], tmp_path: Path) -> None:
    pred, manifest = demo_files
    out = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "score.py"),
        str(pred),
        "--manifest",
        str(manifest),
        "--labels",
        "two",
        "three",
        "four",
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "count" in done.stdout and "100.00" in done.stdout
    report = json.loads(out.read_text(encoding="utf-8"))
    # --labels turned the unregistered count task into a classification task; gender keeps its labels.
    assert report["tasks"]["count"]["value"] == 100.0 and report["unscored"] == {}
    assert report["tasks"]["gender"]["details"]["labels"] == ["male", "female"]

    bad = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "score.py"), str(tmp_path / "nope.json"), "--task", "asr"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "no such file" in bad.stderr


# ---------------------------------------------------------------- instruction paraphrase sets


@pytest.mark.parametrize("name", ["asr", "gender"])
def test_instruction_paraphrase_sets(name: str) -> None:
    items = json.loads((REPO / "prompts" / "instructions" / f"{name}.json").read_text(encoding="utf-8"))
    assert isinstance(items, list) and len(items) >= 10
    assert all(isinstance(s, str) and s.strip() == s and s for s in items)
    assert len(set(items)) == len(items)
    # They must vary punctuation and capitalisation, not only wording.
    assert any(s[-1] == "?" for s in items) and any(s[-1].isalpha() for s in items)
    assert any(s == s.lower() for s in items) and any(s == s.upper() for s in items)
