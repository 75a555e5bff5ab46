"""The metrics' English normaliser gives openai-whisper's text, checked against its committed outputs.

``normalize_english`` runs transformers' copy of Whisper's ``EnglishTextNormalizer`` with Whisper's
British->American spelling map shipped as package data. The reference is the output of openai-whisper
20250625's own ``EnglishTextNormalizer`` on ``CASES``, stored in ``data/normalizer_whisper_expected.json``
so that the check needs no openai-whisper. After editing the cases, regenerate the fixture where
openai-whisper is installed: ``python tests/unit/evaluation/test_normalizer.py``.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

from ahamask.evaluation.metrics import normalize_english

FIXTURE = Path(__file__).parent / "data" / "normalizer_whisper_expected.json"
# sha256 of openai-whisper 20250625's whisper/normalizers/english.json, of which the shipped map is a copy.
WHISPER_SPELLING_SHA256 = "6607f948be9824d2e1b2fa2223cd94c06c45afa4e05ea0e3d5e1f2bdffde2465"

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
_TIMES = [
    "3:45",
    "10:30 am",
    "12:00 p.m.",
    "23:59",
    "5:05:30",
    "half past three",
    "quarter to five",
    "at 7 o'clock",
    "noon and midnight",
    "7.30pm",
]
_PERCENTAGES = [
    "12.5%",
    "0.1%",
    "-3%",
    "100 percent",
    "50 per cent",
    "ninety nine point nine percent",
    "a 5% rise",
    "25 % off",
]
_FRACTIONS = [
    "1/3",
    "2/3 of it",
    "3 1/2",
    "one third",
    "two fifths",
    "five sixths",
    "½",
    "¼ mile",
    "50/50",
]
_SYMBOLS = [
    "a & b",
    "x + y = z",
    "100 < 200 > 50",
    "C++ and C#",
    "email@example.com",
    "http://example.com/a?b=c",
    "~approx",
    "*emphasis* and _under_",
    "back\\slash",
    "¥100 and ₹50",
    "a|b",
    "1,234.56",
    "$1.5 million",
    "£3.5bn",
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
    for phrase in _TIMES + _PERCENTAGES + _FRACTIONS + _SYMBOLS:
        cases += [phrase, f"He said {phrase}, twice."]
    for n in (0, 7, 13, 21, 99, 100, 101, 1000, 1234, 2024, 1000000):
        cases += [str(n), f"{n:,}", f"{n}th", f"{n}%", f"${n}"]
    return list(dict.fromkeys(cases))  # unique, in order


CASES = _cases()


def _expected() -> list[list[str]]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))["pairs"]


def test_the_case_set_is_large_and_varied():
    assert len(CASES) >= 200
    assert any(c.startswith("$") for c in CASES) and any("£" in c for c in CASES)
    assert any("'" in c for c in CASES) and any("colour" in c for c in CASES)
    assert any(":" in c for c in CASES) and any("%" in c for c in CASES) and any("/" in c for c in CASES)


def test_the_fixture_holds_whispers_outputs_for_exactly_these_cases():
    # Editing CASES without regenerating the fixture fails here rather than comparing a stale set.
    data = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert data["reference"] == "openai-whisper 20250625, whisper.normalizers.EnglishTextNormalizer()"
    assert [pair[0] for pair in data["pairs"]] == CASES


def test_metrics_normaliser_gives_openai_whispers_text_on_every_case():
    differing = [(c, normalize_english(c), want) for c, want in _expected() if normalize_english(c) != want]
    assert differing == []
    assert normalize_english("The colour of the theatre's centre!") == "the color of the theater is center"
    assert normalize_english("I have twenty one apples.") == "i have 21 apples"
    assert normalize_english("It costs £20.") == "it costs £20"


def test_the_shipped_spelling_map_is_whispers_file():
    raw = (resources.files("ahamask.evaluation") / "data" / "whisper_english_spelling.json").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == WHISPER_SPELLING_SHA256
    mapping = json.loads(raw)
    assert len(mapping) == 1739 and mapping["colour"] == "color" and mapping["programme"] == "program"


def test_without_the_spelling_map_only_british_spellings_differ():
    # transformers itself ships no map (it reads a Whisper tokenizer folder's normalizer.json); without
    # one, exactly the British spellings stay British, so the shipped map is what makes the text identical.
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    bare = EnglishTextNormalizer({})
    differing = [c for c, want in _expected() if bare(c) != want]
    british = [c for c in CASES if any(w in c.lower() for w in _BRITISH)]
    assert differing and set(differing) <= set(british)
    assert bare("colour") == "colour" and normalize_english("colour") == "color"


def _regenerate_fixture() -> None:
    """Writes openai-whisper's outputs on CASES to FIXTURE (needs openai-whisper installed)."""
    from importlib.metadata import version

    from whisper.normalizers import EnglishTextNormalizer

    from ahamask.utils.io import atomic_open

    whisper_version = version("openai-whisper")
    reference = EnglishTextNormalizer()
    source = json.dumps(f"openai-whisper {whisper_version}, whisper.normalizers.EnglishTextNormalizer()")
    pairs = ",\n".join("  " + json.dumps([c, reference(c)], ensure_ascii=False) for c in CASES)
    with atomic_open(FIXTURE) as f:  # one [input, output] pair per line, so a diff shows what changed
        f.write(f'{{\n "reference": {source},\n "pairs": [\n{pairs}\n ]\n}}\n')
    print(f"wrote {len(CASES)} pairs from openai-whisper {whisper_version} to {FIXTURE}")


if __name__ == "__main__":
    _regenerate_fixture()
