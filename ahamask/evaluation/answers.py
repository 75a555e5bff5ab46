"""Turn free-form model answers into something a metric can score.

SALMONN answers in prose ("The speaker is a man."), so label tasks need a parser that maps an answer
to one label of a closed set, and composite tasks need the answer split into its parts ("ASR|GR"
outputs) or read as a JSON object whose parsing must survive what language models actually emit
(single quotes, text after the object, different key case).

Everything here is pure string processing: no model, no metric library.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import unicodedata
from collections.abc import Mapping, Sequence

logger = logging.getLogger(__name__)

# Synonyms per canonical label. They are only used for labels that are part of the label set being
# scored, so e.g. "same" only means "yes" when scoring a yes/no task.
DEFAULT_SYNONYMS: dict[str, tuple[str, ...]] = {
    # gender recognition
    "male": ("man", "men", "boy", "masculine", "gentleman"),
    "female": ("woman", "women", "girl", "feminine", "lady"),
    # speaker verification: SALMONN answers "Yes"/"No" to "same speaker?"
    "yes": ("same", "same speaker", "same speakers", "same person", "true", "yeah"),
    "no": ("different", "not the same", "not same", "false", "different speakers", "different person"),
    # IEMOCAP four-class emotion; "excited" is merged into "happy" as is usual for IEMOCAP
    "neutral": ("neu", "calm", "no emotion"),
    "happy": ("happiness", "hap", "joy", "joyful", "glad", "cheerful", "excited", "excitement"),
    "sad": ("sadness", "unhappy", "sorrow", "sorrowful"),
    "angry": ("anger", "ang", "mad", "furious", "annoyed"),
    # counts (e.g. the synthetic demo's "count" task)
    "zero": ("0",),
    "one": ("1",),
    "two": ("2",),
    "three": ("3",),
    "four": ("4",),
    "five": ("5",),
    "six": ("6",),
    "seven": ("7",),
    "eight": ("8",),
    "nine": ("9",),
    "ten": ("10",),
}

# Word characters without the underscore: "female_voice" gives two words, and an apostrophe splits
# "man's" into "man" + "s" so the possessive still names the label.
_WORD_RE = re.compile(r"[^\W_]+")


def answer_words(text: str) -> list[str]:
    """Split an answer into lower-case words, dropping punctuation.

    Args:
        text: Any answer or label text.

    Returns:
        The words in order, NFKC-normalised and case-folded, e.g. ``"A MAN's voice!"`` ->
        ``["a", "man", "s", "voice"]``.
    """
    return _WORD_RE.findall(unicodedata.normalize("NFKC", text).casefold())


class LabelParser:
    """Maps a free-form answer to one label of a closed set.

    Rules, applied in this order:

    1. The answer and every label/synonym are reduced to lower-case words without punctuation
       (:func:`answer_words`): case, punctuation and extra spaces never matter, and an apostrophe
       splits words (``"man's"`` contains ``"man"``).
    2. Each label matches through its own words or through any of its synonyms (a synonym may span
       several words, e.g. ``"not the same"`` for ``"no"``). Matching is on whole words, so
       ``"female"`` never matches ``"male"`` and ``"woman"`` never matches ``"man"``.
    3. Longer phrases are matched first and the words they cover are consumed, so ``"not the same
       speaker"`` is read as ``"no"`` and its inner ``"same"`` does not also count as ``"yes"``.
    4. Exactly one distinct label found -> that label. None found -> no match (``None``). Two or
       more different labels found (``"male or female"``) -> ambiguous, also returned as ``None``
       and counted as unparsed by :func:`ahamask.evaluation.metrics.accuracy`.

    Negation is not understood beyond the listed phrases: ``"not male"`` reads as ``"male"``.

    Args:
        labels: The canonical labels, e.g. ``["male", "female"]``; returned as given.
        synonyms: Extra phrases per label (keys compared case-insensitively). ``None`` uses
            :data:`DEFAULT_SYNONYMS`; pass ``{}`` for exact label words only. Entries for labels that
            are not in ``labels`` are ignored.

    Raises:
        ValueError: If ``labels`` is empty, a label has no word characters, or one phrase would
            stand for two different labels.

    Example:
        >>> LabelParser(["male", "female"]).parse("The speaker is a woman.")
        'female'
    """

    def __init__(self, labels: Sequence[str], synonyms: Mapping[str, Sequence[str]] | None = None) -> None:
        if isinstance(labels, str) or not labels:
            raise ValueError(f"labels must be a non-empty list of strings, got {labels!r}")
        self.labels: tuple[str, ...] = tuple(labels)
        table = DEFAULT_SYNONYMS if synonyms is None else synonyms
        by_key = {str(k).casefold(): v for k, v in table.items()}
        phrase_to_label: dict[tuple[str, ...], str] = {}
        for label in self.labels:
            if not answer_words(label):
                raise ValueError(f"label {label!r} has no letters or digits to match on")
            for phrase in (label, *by_key.get(label.casefold(), ())):
                words = tuple(answer_words(phrase))
                if not words:
                    continue
                owner = phrase_to_label.setdefault(words, label)
                if owner != label:
                    raise ValueError(f"phrase {phrase!r} stands for two labels: {owner!r} and {label!r}")
        # Longest first so that multi-word phrases win over the single words inside them (rule 3).
        self._phrases = sorted(phrase_to_label.items(), key=lambda item: -len(item[0]))

    def match(self, text: str) -> set[str]:
        """Return every distinct label the answer mentions (rules 1-3, before rule 4).

        Args:
            text: The model answer.

        Returns:
            The set of labels found; empty when none, two or more when ambiguous.
        """
        words = answer_words(text)
        used = [False] * len(words)
        found: set[str] = set()
        for phrase, label in self._phrases:
            k = len(phrase)
            for start in range(len(words) - k + 1):
                if tuple(words[start : start + k]) == phrase and not any(used[start : start + k]):
                    used[start : start + k] = [True] * k
                    found.add(label)
        return found

    def parse(self, text: str) -> str | None:
        """Return the single label the answer gives, or ``None`` if it gives none or several.

        Args:
            text: The model answer.

        Returns:
            One of ``self.labels`` or ``None``.
        """
        found = self.match(text)
        return next(iter(found)) if len(found) == 1 else None


def parse_label(
    text: str, labels: Sequence[str], synonyms: Mapping[str, Sequence[str]] | None = None
) -> str | None:
    """Map a free-form answer to one label, or ``None`` when it matches none or is ambiguous.

    See :class:`LabelParser` for the rules. Build a :class:`LabelParser` once when parsing many
    answers against the same labels.

    Args:
        text: The model answer, e.g. ``"It is a man's voice."``.
        labels: The canonical labels.
        synonyms: Extra phrases per label; ``None`` uses :data:`DEFAULT_SYNONYMS`.

    Returns:
        The matching label as spelled in ``labels``, or ``None``.

    Example:
        >>> parse_label("Yes, it is the same speaker.", ["yes", "no"])
        'yes'
        >>> parse_label("male or female", ["male", "female"]) is None
        True
    """
    return LabelParser(labels, synonyms).parse(text)


def split_composite(text: str, n_parts: int, sep: str = "|") -> list[str] | None:
    """Split a composite answer such as ``"hello world | Male"`` into its parts.

    The answer follows the format only if splitting on ``sep`` gives exactly ``n_parts`` parts and
    none of them is empty after stripping spaces.

    Args:
        text: The model answer or the ground truth.
        n_parts: How many parts the task has (2 for ``ASR|GR``).
        sep: The separator between parts.

    Returns:
        The stripped parts, or ``None`` when the answer is not in the required format.

    Raises:
        ValueError: If ``n_parts`` < 2 or ``sep`` is empty.

    Example:
        >>> split_composite("hello world | Male", 2)
        ['hello world', 'Male']
        >>> split_composite("hello world", 2) is None
        True
    """
    if n_parts < 2:
        raise ValueError(f"n_parts must be at least 2 for a composite answer, got {n_parts}")
    if not sep:
        raise ValueError("sep must be a non-empty string")
    parts = [part.strip() for part in text.split(sep)]
    if len(parts) != n_parts or not all(parts):
        return None
    return parts


def _first_brace_block(text: str) -> str | None:
    """Return the first ``{...}`` block, balancing braces; to the end of text if never closed."""
    start = text.find("{")
    if start < 0:
        return None
    depth = 0
    # Quotes are not tracked: apostrophes inside transcripts ("don't") would derail a quote-aware
    # scan, and braces inside answer values are rare enough not to matter.
    for pos in range(start, len(text)):
        if text[pos] == "{":
            depth += 1
        elif text[pos] == "}":
            depth -= 1
            if depth == 0:
                return text[start : pos + 1]
    return text[start:]


def _load_object(block: str) -> dict | None:
    """Read a brace block as JSON, then as a Python literal (single quotes, trailing commas)."""
    for loader in (json.loads, ast.literal_eval):
        try:
            value = loader(block)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None


def _regex_value(block: str, spellings: Sequence[str]) -> str | None:
    """Find ``"key": "value"`` for one key when the block is not valid JSON nor a Python literal.

    A quoted value ends at the first matching quote followed by ``,``, ``}`` or the end, so an
    apostrophe inside a single-quoted transcript (``'I don't know'``) does not end it early.
    """
    for key in spellings:
        head = r"[\"']?\s*" + re.escape(key) + r"\s*[\"']?\s*:\s*"
        quoted = re.search(head + r"([\"'])(.*?)\1\s*(?=,|}|$)", block, flags=re.IGNORECASE | re.DOTALL)
        if quoted:
            return quoted.group(2)
        bare = re.search(head + r"([^,}\"']*)", block, flags=re.IGNORECASE)
        if bare and bare.group(1).strip():
            return bare.group(1)
    return None


def parse_json_answer(text: str, keys: Sequence[str] | Mapping[str, Sequence[str]]) -> dict[str, str] | None:
    """Read a JSON-style answer such as ``{"ASR": "hello world", "GR": "Male"}`` leniently.

    Steps: take the first ``{...}`` block (text before and after it is ignored; an unclosed block runs
    to the end of the text); read it as JSON, else as a Python literal (single quotes, trailing
    commas), else find each key with a regular expression. Keys are matched case-insensitively and
    after stripping spaces. The answer follows the format only if every requested key is present
    with a string or number value.

    Args:
        text: The model answer or the ground truth.
        keys: The required keys, e.g. ``["ASR", "GR"]``, or a mapping from each required key to the
            spellings accepted for it, e.g. ``{"ASR": ["ASR", "asr"], "GR": ["GR", "gender"]}``.

    Returns:
        ``{key: value}`` with the keys as requested and values stripped, or ``None`` when the answer
        is not in the required format.

    Example:
        >>> parse_json_answer("Sure! {'asr': 'hi there', 'gr': 'male'} Done.", ["ASR", "GR"])
        {'ASR': 'hi there', 'GR': 'male'}
    """
    spellings = (
        {key: tuple(alts) or (key,) for key, alts in keys.items()}
        if isinstance(keys, Mapping)
        else {key: (key,) for key in keys}
    )
    if not spellings:
        raise ValueError("keys must name at least one key")
    block = _first_brace_block(text)
    if block is None:
        return None
    obj = _load_object(block)
    folded = {str(k).strip().casefold(): v for k, v in obj.items()} if obj is not None else None
    result: dict[str, str] = {}
    for key, alts in spellings.items():
        value = None
        if folded is not None:
            value = next((folded[a.casefold()] for a in alts if a.casefold() in folded), None)
            # bool is an int subclass but "True" is no transcript or label.
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                value = None
        else:
            value = _regex_value(block, alts)
        if value is None:
            return None
        result[key] = str(value).strip()
    return result
