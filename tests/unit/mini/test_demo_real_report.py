"""make demo-real's scoring (strict vs lenient), verdicts and report text, on hand-made predictions."""

from __future__ import annotations

import pytest

from ahamask.mini.evaluate import detect_task, mini_score, strict_metrics
from ahamask.mini.report import mask_verdicts, render_markdown


def _records(task, pairs):
    return [{"id": str(i), "ground_truth": t, "output": o} for i, (t, o) in enumerate(pairs)]


def test_lenient_finds_labels_that_strict_rejects():
    recs = _records("gender", [("Male", "The speaker is male."), ("Female", "Female"), ("Male", "Female")])
    score = mini_score(recs, "gender")
    assert score["metrics"]["accuracy"] == pytest.approx(200 / 3)
    assert score["strict"]["accuracy"] == pytest.approx(100 / 3)
    assert score["format"] == pytest.approx(200 / 3)
    assert score["performed"] == {"gender": pytest.approx(200 / 3), "other": pytest.approx(100 / 3)}


def test_rate_is_scored_on_its_own_labels():
    recs = _records("rate", [("Fast", "fast."), ("Slow", "It is slow"), ("Slow", "Male")])
    score = mini_score(recs, "rate")
    assert score["metrics"]["accuracy"] == pytest.approx(200 / 3)
    assert score["strict"]["accuracy"] == pytest.approx(100 / 3)


def test_strict_asr_counts_a_formatted_answer_only():
    recs = _records("asr", [("the dog sees", "The dog sees."), ("a cat", "a cat")])
    assert strict_metrics(recs, "asr")["wer"] == pytest.approx(
        60.0
    )  # 3 of 5 words lost with the first answer
    assert mini_score(recs, "asr")["metrics"]["wer"] == pytest.approx(0.0)  # normalised: both right


@pytest.mark.parametrize(
    ("text", "task"), [("Male", "gender"), ("slow", "rate"), ("the dog sees", "asr"), ("The dog.", None)]
)
def test_detect_task(text, task):
    assert detect_task(text) == task


def _cell(metric, values):
    mean = sum(values) / len(values)
    return {"metric": metric, "mean": mean, "std": 0.0, "values": values}


def _entry(metric, instr, none, mask, random):
    conds = {"instruction": instr, "none": none, "mask": mask, "random": random}
    entry = {
        c: {
            "strict": _cell(metric, v),
            "metrics": _cell(metric, v),
            "format": _cell("format", [100.0] * len(v)),
        }
        for c, v in conds.items()
    }
    entry["examples"] = {c: ["x"] for c in conds}
    entry["active_heads"] = [100, 120]
    return entry


def _report(tasks):
    return {
        "tasks": tasks,
        "n_test": 60,
        "settings": {
            "mask_seeds": [42, 43],
            "n_instructions": 3,
            "masks": {"steps": 60, "batch_size": 6},
            "geometry": [30, 9],
            "jobs": 2,
        },
        "seconds": {"total": 100.0, "masks_stage": 60.0},
        "environment": {"packages": {"torch": "2.13.0"}, "python": "3.11"},
        "world": {"espeak_ng": "eSpeak NG 1.51  Data at: x"},
    }


def test_verdicts_count_seeds_and_refuse_an_empty_instruction_level():
    report = _report(
        {
            "gender": _entry("accuracy", [90.0, 94.0], [0.0], [91.0, 60.0], [50.0, 50.0]),
            "rate": _entry("accuracy", [52.0, 50.0], [0.0], [50.0, 50.0], [50.0, 50.0]),
            "asr": _entry("wer", [20.0, 22.0], [21.0], [24.0, 40.0], [100.0, 100.0]),
        }
    )
    v = mask_verdicts(report)
    assert v["gender"] == {"metric": "accuracy", "seeds": 2, "reaches": 1, "switches": 2}
    assert v["rate"]["reaches"] is None  # instructions at chance: nothing to reach
    assert v["asr"] == {"metric": "wer", "seeds": 2, "reaches": 1, "switches": 0}
    text = render_markdown(report)
    assert "| gender | accuracy | 92.0 ± 0.0 | 0.0 | 75.5 ± 0.0 | 50.0 ± 0.0 |" in text
    assert "rate: the mask has no instruction level to reach" in text
    assert "gender: the mask reaches instruction level on 1/2 seeds" in text
