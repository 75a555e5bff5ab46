"""Whisper's English normaliser (openai-whisper) vs transformers' copy, on a set of varied transcripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ahamask.evaluation.metrics import normalize_english

_NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "eleven",
    "twenty one",
    "forty two",
    "ninety nine",
    "one hundred",
    "one hundred and five",
    "two thousand and twenty",
    "nineteen eighty four",
    "three million",
    "one point five",
    "a hundred",
    "half",
    "one and a half",
    "oh seven",
    "double o seven",
]
_ORDINALS = [
    "first",
    "second",
    "third",
    "fourth",
    "twenty first",
    "thirty second",
    "hundredth",
    "1st",
    "22nd",
]
_BRITISH = [
    "colour",
    "favourite",
    "organise",
    "realise",
    "centre",
    "theatre",
    "travelling",
    "behaviour",
    "analyse",
    "defence",
    "licence",
    "programme",
    "grey",
    "neighbour",
    "aluminium",
    "catalogue",
    "apologise",
    "honour",
    "jewellery",
    "mould",
]
_CURRENCY = [
    "$5",
    "$5.50",
    "£20",
    "€3.99",
    "¢50",
    "five dollars",
    "twenty pounds",
    "ten cents",
    "three euros",
    "$1,000,000",
    "a dollar fifty",
    "one pound twenty",
]
_HANDWRITTEN = [
    "",
    "   ",
    "Hello, World!",
    "HELLO world",
    "I can't believe it's not butter.",
    "We'd've gone if they'd asked.",
    "You're, they're and we're here; isn't it?",
    "He's been there, she'll go, it'd work.",
    "won't, shan't, ain't, y'all",
    "Mr. Smith met Dr. Jones and Mrs. Brown at St. Paul's.",
    "The U.S.A. and the U.K. signed.",
    "Um, uh, hmm, I mean, you know.",
    "He said [laughs] (inaudible) <noise> okay",
    "It's 3:45 p.m. now.",
    "In 1999, 2000 and 2024.",
    "The 1990s were great; the '80s too.",
    "50% of 200 is 100.",
    "fifty percent of two hundred",
    "1/2 cup and 3/4 spoon",
    "Call 555-1234 or 1-800-FLOWERS.",
    "Room 101, floor 3B",
    "The café's naïve résumé",
    "Ærøskøbing, Łódź, straße",
    "Wait... what?!",
    "quote \"unquote\" 'single'",
    "e-mail, re-enter, co-operate",
    "one-two-three",
    "10,000 people and 1.5 million more",
    "version 2.0.1",
    "0.5 and .5 and 5.",
    "minus five degrees",
    "-5 degrees",
    "+44 20 7946 0958",
    "It was the 4th of July, 1776.",
    "Chapter XIV, Part II",
    "A1 B2 C3",
    "9am to 5pm",
    "twenty twenty-four",
    "the nineteen sixties",
    "two and two make four",
    "a million billion trillion",
    "seventy-five thousand six hundred and eighty-nine",
    "first, second, and third place",
    "twenty first century",
    "He is 6'2\" tall",
    "#hashtag @mention & more",
    "tab\tseparated\nnew line",
    "Ms. O'Neil's cat",
    "rock 'n' roll",
    "gonna wanna gotta",
    "okay OK ok",
    "mm-hmm uh-huh",
    "3 x 4 = 12",
    "20°C and 68°F",
    "10km, 5kg, 3ft",
    "£1.50 for a coffee",
    "$0.99 sale",
    "the 2nd and 3rd rows",
    "100th anniversary",
    "I've got 99 problems",
    "it's 10 o'clock",
    "ten past nine",
    "1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, 101st",
    "twelfth night",
    "sixes and sevens",
    "nineties and noughties",
    "point five",
    "five point oh",
    "one one one",
    "oh oh seven",
    "a couple of hundred",
    "and a half",
    "The colour of the theatre's centre was grey.",
    "She apologised for her behaviour.",
    "I realise the programme is cancelled.",
    "Mister and Missus Smith",
    "Saint Louis and Mount Everest",
    "Jr. and Sr. and Prof. Lee",
    "Gen. Lt. Col. Sgt. Capt.",
    "LOL, BRB, IDK",
    "Goodbye!!!",
    "???",
    "...",
    "'",
    "-",
    "$",
    "%",
    "1",
    "0",
    "00",
    "007",
    "3.14159",
    "2,5",
    "1e10",
    "i.e. e.g. etc.",
    "and/or",
    "A--B",
    "naïveté",
    "über cool",
    "piñata",
    "hello   world",
    "HeLLo WoRLD",
    "one hundred twenty three thousand four hundred fifty six",
    "two point five million dollars",
    "a third of the cake",
    "three quarters",
    "seven eighths",
    "the year two thousand",
    "5 thousand",
    "5k",
    "the 70s and the 1970s",
    "he'll've",
    "I'd rather not",
    "let's go",
    "how'd you do that",
    "where're you",
    "who's there",
    "what've you done",
    "there'd be",
    "it'll",
    "you'd've",
    "her's, its, theirs",
]


def _cases() -> list[str]:
    cases = list(_HANDWRITTEN)
    for word in _NUMBER_WORDS:
        cases += [word, f"I have {word} apples.", f"{word.upper()} DOLLARS", f"about {word} percent"]
    for word in _ORDINALS:
        cases += [word, f"the {word} time", f"on the {word} of May"]
    for word in _BRITISH:
        cases += [word, f"My {word.capitalize()}!", f"{word}s and {word}"]
    for money in _CURRENCY:
        cases += [money, f"It costs {money}.", f"{money} each"]
    for n in (0, 7, 13, 21, 99, 100, 101, 1000, 1234, 2024, 1000000):
        cases += [str(n), f"{n:,}", f"{n}th", f"{n}%", f"${n}"]
    return list(dict.fromkeys(cases))  # unique, in order


CASES = _cases()


def test_the_case_set_is_large_and_varied():
    assert len(CASES) >= 200
    assert any(c.startswith("$") for c in CASES) and any("£" in c for c in CASES)
    assert any("'" in c for c in CASES) and any("colour" in c for c in CASES)


def test_metrics_normaliser_is_whispers():
    # The function the metrics use gives openai-whisper's EnglishTextNormalizer's text (with its spellings).
    whisper_normalizers = pytest.importorskip("whisper.normalizers")
    reference = whisper_normalizers.EnglishTextNormalizer()
    assert [normalize_english(c) for c in CASES] == [reference(c) for c in CASES]
    assert normalize_english("The colour of the theatre's centre!") == "the color of the theater is center"


def _transformers_normalizer(mapping: dict[str, str]):
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer(mapping)


def test_transformers_copy_with_whispers_spelling_map_gives_the_same_text():
    # transformers ships the code but not the British->American map (it reads it from a Whisper
    # tokenizer folder's normalizer.json); given openai-whisper's english.json, the text is identical.
    whisper_normalizers = pytest.importorskip("whisper.normalizers")
    mapping = json.loads((Path(whisper_normalizers.__file__).parent / "english.json").read_text())
    ours = _transformers_normalizer(mapping)
    assert [ours(c) for c in CASES] == [normalize_english(c) for c in CASES]


def test_transformers_copy_alone_differs_on_british_spellings():
    # Without a spelling map (all that transformers itself provides) every British spelling stays British.
    bare = _transformers_normalizer({})
    differing = [c for c in CASES if bare(c) != normalize_english(c)]
    british = [c for c in CASES if any(w in c.lower() for w in _BRITISH)]
    assert differing and set(differing) <= set(british)
    assert bare("colour") == "colour" and normalize_english("colour") == "color"
