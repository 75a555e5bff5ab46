"""Metric functions on hand-computed examples, and the task -> metric registry."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import sacrebleu

from ahamask.evaluation import metrics
from ahamask.evaluation.metrics import (
    METRICS,
    TASK_ALIASES,
    LabelError,
    accuracy,
    bleu,
    caption_metrics,
    get_metric,
    register_task,
    resolve_task,
    wer,
)

REFERENCE = Path(__file__).resolve().parents[3] / ".." / "shared" / "reference"


@pytest.fixture
def clean_registry() -> Iterator[None]:
    """Restore the registry so tests that register tasks do not leak into others."""
    saved_metrics, saved_aliases = dict(METRICS), dict(TASK_ALIASES)
    yield
    METRICS.clear()
    METRICS.update(saved_metrics)
    TASK_ALIASES.clear()
    TASK_ALIASES.update(saved_aliases)


# ---------------------------------------------------------------- WER


def test_wer_normalisation_removes_case_and_punctuation() -> None:
    out = wer(["Hello, World!"], ["hello world"])
    assert out["value"] == 0.0
    assert (out["hits"], out["ref_words"]) == (2, 2)
    # Without the normaliser both words differ.
    raw = wer(["Hello, World!"], ["hello world"], normalize=False)
    assert (raw["substitutions"], raw["value"]) == (2, 100.0)


def test_wer_normaliser_maps_spelling_and_numbers() -> None:
    # Whisper's normaliser: British -> American spelling, number words -> digits, contractions expanded.
    assert wer(["the colour is twenty five"], ["The color is 25."])["value"] == 0.0
    assert wer(["I don't know"], ["i do not know"])["value"] == 0.0


def test_wer_counts_substitution_deletion_insertion() -> None:
    # the cat sat on the mat -> the cat SIT on (the deleted) mat +THE
    out = wer(["the cat sat on the mat"], ["the cat sit on mat the"])
    assert (out["substitutions"], out["deletions"], out["insertions"], out["hits"]) == (1, 1, 1, 4)
    assert out["ref_words"] == 6
    assert out["value"] == pytest.approx(50.0)


def test_wer_is_corpus_level_not_mean_of_utterances() -> None:
    # 1 error over 5 reference words = 20 %; the mean of per-utterance WERs would be 50 %.
    out = wer(["a b c d", "e"], ["a b c d", "x"])
    assert out["value"] == pytest.approx(20.0)
    assert out["n"] == 2


def test_wer_without_reference_words_is_undefined() -> None:
    assert wer([], [])["value"] is None
    assert wer([""], [""], normalize=False)["value"] is None


def test_wer_rejects_mismatched_input() -> None:
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="hypothesis 0 is NoneType"):
        wer(["a"], [None])  # type: ignore[list-item]


# ---------------------------------------------------------------- accuracy


def test_accuracy_with_parser_counts_unparsed_and_ambiguous() -> None:
    refs = ["Male", "Female", "Male", "Female", "Male"]
    hyps = ["a man.", "WOMAN!", "male or female", "I don't know", "Female"]
    out = accuracy(refs, hyps, ["male", "female"])
    assert (out["correct"], out["unparsed"], out["ambiguous"]) == (2, 2, 1)
    assert out["value"] == pytest.approx(40.0)
    assert out["unparsed_rate"] == pytest.approx(40.0)
    assert out["confusion"] == {
        "female": {"<no label>": 1, "female": 1},
        "male": {"<no label>": 1, "female": 1, "male": 1},
    }


def test_accuracy_names_the_bad_ground_truth() -> None:
    with pytest.raises(LabelError, match="'Robot'") as info:
        accuracy(["Male", "Robot"], ["male", "male"], ["male", "female"])
    assert info.value.index == 1


def test_accuracy_derives_labels_from_references() -> None:
    # A new task such as the demo's count: labels are the distinct ground truths, digits map to words.
    out = accuracy(["two", "three", "two"], ["2", "three apples", "four"])
    assert out["labels"] == ["three", "two"]
    assert out["correct"] == 2 and out["unparsed"] == 1
    assert out["value"] == pytest.approx(200 / 3)


# ---------------------------------------------------------------- BLEU and captions


def test_bleu_matches_sacrebleu_on_a_hand_checkable_pair() -> None:
    hyp, ref = "the cat sat on the mat", "the cat is on the mat"
    out = bleu([ref], [hyp])
    # 5/6 unigrams, 3/5 bigrams (the cat, on the, the mat), 1/4 trigrams (on the mat), 0/3 4-grams,
    # which sacrebleu's default "exp" smoothing turns into 1/(2*3).
    assert out["precisions"] == pytest.approx([500 / 6, 60.0, 25.0, 100 / 6])
    # Brevity penalty 1 (6 = 6 words): BLEU is the geometric mean of the four precisions = 37.99.
    assert out["value"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25)
    assert out["value"] == pytest.approx(sacrebleu.corpus_bleu([hyp], [[ref]]).score)
    assert out["tokenize"] == "13a" and out["bp"] == 1.0


def test_bleu_perfect_match_is_100() -> None:
    assert bleu(["the cat is on the mat"], ["the cat is on the mat"])["value"] == 100.0
    # With several references a hypothesis equal to any one of them is perfect.
    assert (
        bleu([["a dog runs in the park", "the cat is on the mat"]], ["the cat is on the mat"])["value"]
        == 100.0
    )


def test_bleu_uses_zh_tokenizer_for_chinese_targets() -> None:
    ref, hyp = "我喜欢吃新鲜的苹果。", "我喜欢吃苹果。"
    out = bleu([ref], [hyp])
    assert out["tokenize"] == "zh"
    expected = sacrebleu.BLEU(tokenize="zh").corpus_score([hyp], [[ref]]).score
    assert out["value"] == pytest.approx(expected)
    # The default 13a tokenizer would see one "word" each and score 0.
    assert sacrebleu.BLEU(tokenize="13a").corpus_score([hyp], [[ref]]).score == 0.0
    assert expected > 10.0


def test_caption_metrics_rouge_l_by_hand() -> None:
    # LCS("a dog is barking", "a dog barks loudly") = "a dog": P = R = 2/4 -> F1 = 50 %.
    out = caption_metrics(["a dog barks loudly"], ["a dog is barking"])
    assert out["metric"] == "rougeL"
    assert out["value"] == pytest.approx(50.0)
    assert {"METEOR", "SPICE", "SPIDEr"} <= set(out["not_reproduced"])
    # The best of several references counts.
    best = caption_metrics([["wind blows", "a dog is barking"]], ["a dog is barking"])
    assert best["value"] == pytest.approx(100.0) and best["bleu4"] == pytest.approx(100.0)


def test_caption_metrics_reports_cider_d_when_aac_metrics_is_present(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_cider_d(candidates: list[str], mult_references: list[list[str]]) -> tuple[dict, dict]:
        seen["args"] = (candidates, mult_references)
        return {"cider_d": 1.25}, {}

    module = types.ModuleType("aac_metrics.functional.cider_d")
    module.cider_d = fake_cider_d  # type: ignore[attr-defined]
    for name in ("aac_metrics", "aac_metrics.functional"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "aac_metrics.functional.cider_d", module)
    out = caption_metrics(["a dog barks", ["rain falls", "it rains"]], ["a dog barks", "rain"])
    assert out["cider_d"] == 1.25 and "CIDEr-D" not in out["not_reproduced"]
    assert seen["args"] == (["a dog barks", "rain"], [["a dog barks"], ["rain falls", "it rains"]])


def test_caption_metrics_without_aac_metrics_says_cider_d_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aac_metrics", None)  # makes the import fail
    out = caption_metrics(["a dog barks"], ["a dog barks"])
    assert out["cider_d"] is None and "CIDEr-D" in out["not_reproduced"]


# ---------------------------------------------------------------- registry


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("asr_librispeech", "asr"),
        ("gender_librispeech", "gender"),
        ("Gender_Recognition", "gender"),
        ("emotion_iemocap", "emotion"),
        ("asv_voxceleb1", "asv"),
        ("speaker_verification", "asv"),
        ("s2tt_covost2", "s2tt"),
        ("translation_ec", "s2tt"),
        ("aac_audiocaps", "aac"),
        ("audiocaption_v2", "aac"),
        ("osr_libri2mix", "osr"),
        ("asr_gender_librispeech", "asr|gender"),
        ("gender_asr_librispeech", "gender|asr"),
        ("asr_gender_json_librispeech", "json:ASR=asr,GR=gender"),
        ("no_such_task", "no_such_task"),
    ],
)
def test_resolve_task_follows_official_names(name: str, expected: str) -> None:
    assert resolve_task(name) == expected


def test_builtin_metric_kinds() -> None:
    kinds = {task: METRICS[task].kind for task in ("asr", "osr", "gender", "emotion", "asv", "s2tt", "aac")}
    assert kinds == {
        "asr": "wer",
        "osr": "wer",
        "gender": "accuracy",
        "emotion": "accuracy",
        "asv": "accuracy",
        "s2tt": "bleu",
        "aac": "caption",
    }
    assert get_metric("gender_librispeech")(["Male"], ["a man"])["value"] == 100.0


def test_released_mask_names_all_resolve() -> None:
    masks = REFERENCE / "legacy_checkpoints"
    if not masks.is_dir():
        pytest.skip(f"released masks not found at {masks}")
    names = sorted(p.name for p in masks.iterdir() if p.is_dir())
    assert len(names) == 10
    for name in names:
        parts = resolve_task(name).removeprefix("json:").replace("|", ",").split(",")
        assert all(p.split("=")[-1] in METRICS for p in parts), name


def test_register_task_adds_a_scorable_task(clean_registry: None) -> None:
    metric = register_task("count", "accuracy", labels=["two", "three"], aliases=["how_many"])
    assert get_metric("HOW_MANY") is metric
    out = metric(["two", "three", "three"], ["2", "There are three.", "two"])
    assert out["value"] == pytest.approx(200 / 3)
    register_task("dictation", "wer", normalize=False)
    assert get_metric("dictation")(["Hello"], ["hello"])["value"] == 100.0


def test_register_task_rejects_bad_definitions(clean_registry: None) -> None:
    with pytest.raises(ValueError, match="unknown metric kind 'f1'"):
        register_task("x", "f1")
    with pytest.raises(ValueError, match="only apply to kind 'accuracy'"):
        register_task("x", "wer", labels=["a"])
    assert "x" not in metrics.METRICS
