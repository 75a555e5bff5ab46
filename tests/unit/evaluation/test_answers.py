"""Answer parsing: label parser rules, composite splitting, lenient JSON reading."""

from __future__ import annotations

import pytest

from ahamask.evaluation.answers import (
    LabelParser,
    answer_words,
    parse_json_answer,
    parse_label,
    split_composite,
)

GENDER = ["male", "female"]
YES_NO = ["yes", "no"]
EMOTION = ["neutral", "happy", "sad", "angry"]


def test_answer_words_drops_case_and_punctuation() -> None:
    assert answer_words("A MAN's voice!") == ["a", "man", "s", "voice"]
    assert answer_words("  female_voice...  ") == ["female", "voice"]
    assert answer_words("") == []


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Male", "male"),
        ("FEMALE!!!", "female"),
        ("The speaker is a woman.", "female"),
        ("It is a man's voice", "male"),
        ("female voice", "female"),  # "male" inside "female" must not match
        ("A young girl is speaking", "female"),
        ("male or female", None),  # two labels: ambiguous
        ("a man and a woman", None),
        ("I cannot tell.", None),
        ("", None),
    ],
)
def test_gender_answers(answer: str, expected: str | None) -> None:
    assert parse_label(answer, GENDER) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Yes.", "yes"),
        ("yes, it's the same speaker", "yes"),
        ("No, they are different speakers.", "no"),
        ("They are not the same speaker", "no"),  # longest phrase wins over the inner "same"
        ("Same person.", "yes"),
        ("maybe", None),
    ],
)
def test_verification_answers(answer: str, expected: str | None) -> None:
    assert parse_label(answer, YES_NO) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Neutral", "neutral"),
        ("The speaker sounds ANGRY.", "angry"),
        ("happiness", "happy"),
        ("excited", "happy"),  # IEMOCAP merges excited into happy
        ("sadness.", "sad"),
        ("She sounds sad and angry", None),
        ("surprised", None),
    ],
)
def test_emotion_answers(answer: str, expected: str | None) -> None:
    assert parse_label(answer, EMOTION) == expected


def test_synonyms_can_be_switched_off_or_replaced() -> None:
    assert parse_label("a man", GENDER, synonyms={}) is None
    assert parse_label("Male", GENDER, synonyms={}) == "male"
    assert parse_label("bloke", GENDER, synonyms={"Male": ["bloke"]}) == "male"
    # Labels are returned as spelled by the caller.
    assert parse_label("a woman", ["Male", "Female"]) == "Female"


def test_match_reports_every_label_found() -> None:
    parser = LabelParser(GENDER)
    assert parser.match("man or woman?") == {"male", "female"}
    assert parser.match("nobody") == set()
    # Synonyms of labels outside the set do not leak in: "same" is not a gender.
    assert parser.match("same") == set()


def test_label_parser_rejects_bad_label_sets() -> None:
    with pytest.raises(ValueError, match="non-empty list"):
        LabelParser([])
    with pytest.raises(ValueError, match="non-empty list"):
        LabelParser("male")
    with pytest.raises(ValueError, match="no letters"):
        LabelParser(["male", "?!"])
    with pytest.raises(ValueError, match="stands for two labels"):
        LabelParser(["cat", "dog"], synonyms={"cat": ["pet"], "dog": ["pet"]})


@pytest.mark.parametrize(
    ("text", "n_parts", "sep", "expected"),
    [
        ("hello world | Male", 2, "|", ["hello world", "Male"]),
        ("Male|hello world", 2, "|", ["Male", "hello world"]),
        ("a ; b ; c", 3, ";", ["a", "b", "c"]),
        ("hello world", 2, "|", None),  # no separator
        ("a | b | c", 2, "|", None),  # too many parts
        ("hello world |  ", 2, "|", None),  # empty part
    ],
)
def test_split_composite(text: str, n_parts: int, sep: str, expected: list[str] | None) -> None:
    assert split_composite(text, n_parts, sep) == expected


def test_split_composite_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        split_composite("a", 1)
    with pytest.raises(ValueError, match="sep"):
        split_composite("a|b", 2, sep="")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"ASR": "hello world", "GR": "Male"}', {"ASR": "hello world", "GR": "Male"}),
        # single quotes, text around the object, key case, an apostrophe inside a value
        (
            "Sure! {'asr': 'I don't know', 'gr': 'male'} Hope this helps.",
            {"ASR": "I don't know", "GR": "male"},
        ),
        ("{'ASR': 'hi there', 'GR': 'Female',}", {"ASR": "hi there", "GR": "Female"}),  # trailing comma
        ('{"ASR": "hi", "GR": "Male"', {"ASR": "hi", "GR": "Male"}),  # never closed
        ('{ "Asr" : "  padded  ", "gR": 3 }', {"ASR": "padded", "GR": "3"}),
        ('{"ASR": "hello world"}', None),  # a key is missing
        ('{"ASR": "hi", "GR": true}', None),  # a boolean is no answer
        ("hello world, male", None),  # no object at all
    ],
)
def test_parse_json_answer(text: str, expected: dict[str, str] | None) -> None:
    assert parse_json_answer(text, ["ASR", "GR"]) == expected


def test_parse_json_answer_accepts_alternative_key_spellings() -> None:
    keys = {"ASR": ["ASR", "asr"], "GR": ["GR", "gender"]}
    assert parse_json_answer('{"asr": "hi", "gender": "male"}', keys) == {"ASR": "hi", "GR": "male"}
    with pytest.raises(ValueError, match="at least one key"):
        parse_json_answer("{}", [])
