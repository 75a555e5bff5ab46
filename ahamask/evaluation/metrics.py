"""The paper's metrics, computed with the field's libraries, and the task -> metric registry.

Every metric takes parallel lists of references and hypotheses and returns a flat dict with at least
``metric`` (its name), ``value`` (the headline number, in percent or BLEU points) and ``n`` (the
number of pairs), plus metric-specific counts.

- ASR and OSR: corpus WER (sum of errors over sum of reference words) with ``jiwer`` after Whisper's
  ``EnglishTextNormalizer`` (transformers' copy, with Whisper's spelling map shipped as package data).
- Gender, emotion, speaker verification and any task given a label set: accuracy after
  :class:`ahamask.evaluation.answers.LabelParser`, plus the rate of answers matching no label.
- Speech translation: corpus BLEU-4 with ``sacrebleu`` (``zh`` tokenizer for Chinese targets,
  ``13a`` otherwise).
- Audio captioning: ROUGE-L (``rouge-score``) and BLEU-4 (``sacrebleu``). The paper's METEOR, SPICE
  and SPIDEr are not reproduced: their reference implementations (pycocoevalcap) run Java, which this
  project does not require. CIDEr-D is added when the optional ``aac-metrics`` package is installed
  (it computes CIDEr-D in Python, but its package import pulls in sentence-transformers, msclap and
  torchmetrics, too heavy to be a default dependency). The ROUGE-L here is rouge-score's F1 over
  lower-cased alphanumeric words, not pycocoevalcap's PTB-tokenised F(beta=1.2), so caption numbers
  are close to but not identical with COCO-toolkit numbers.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from ahamask.evaluation.answers import LabelParser, answer_words

logger = logging.getLogger(__name__)

# Han ideographs (CJK unified + extension A): a reference containing any is treated as Chinese.
_HAN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
NO_LABEL = "<no label>"


class LabelError(ValueError):
    """A reference (ground truth) that maps to no label or to several; ``index`` is its position."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


def _check_pairs(refs: Sequence[Any], hyps: Sequence[Any]) -> None:
    if len(refs) != len(hyps):
        raise ValueError(f"got {len(refs)} references but {len(hyps)} hypotheses")
    for i, hyp in enumerate(hyps):
        if not isinstance(hyp, str):
            raise ValueError(f"hypothesis {i} is {type(hyp).__name__}, expected a string")


@functools.lru_cache(maxsize=1)
def _english_normalizer() -> Callable[[str], str]:
    # transformers' copy of openai-whisper's EnglishTextNormalizer, handed Whisper's British->American
    # spelling map (openai-whisper's english.json, shipped in data/, MIT): transformers ships the code but
    # not the map (it reads a Whisper tokenizer folder's normalizer.json), and without it every British
    # spelling stays British. With it the text equals openai-whisper 20250625's on the 450 strings of
    # tests/unit/evaluation/test_normalizer.py (and on 20,000 random token mixes when checked once), so the metrics
    # no longer need openai-whisper (numba, llvmlite, tiktoken, triton). Imported and loaded on first use.
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    spelling = resources.files("ahamask.evaluation") / "data" / "whisper_english_spelling.json"
    return EnglishTextNormalizer(json.loads(spelling.read_text(encoding="utf-8")))


def normalize_english(text: str) -> str:
    """Apply Whisper's English text normaliser (case, punctuation, spelling, numbers, fillers).

    Args:
        text: A transcript.

    Returns:
        The normalised transcript, e.g. ``"Hello, World!"`` -> ``"hello world"``.
    """
    return _english_normalizer()(text)


def wer(refs: Sequence[str], hyps: Sequence[str], normalize: bool = True) -> dict[str, Any]:
    """Corpus word error rate: total edits over total reference words, in percent.

    Args:
        refs: Reference transcripts.
        hyps: Hypothesis transcripts, same length as ``refs``.
        normalize: Apply Whisper's ``EnglishTextNormalizer`` to both sides first (as the paper's
            LibriSpeech numbers do); ``False`` compares whitespace-split words as given.

    Returns:
        ``metric`` ("wer"), ``value`` (WER in percent, ``None`` when the references hold no word),
        ``n``, ``ref_words``, ``hits``, ``substitutions``, ``deletions``, ``insertions``,
        ``normalized``.

    Raises:
        ValueError: If the lists differ in length or hold non-strings.

    Example:
        >>> wer(["Hello, World!"], ["hello world"])["value"]
        0.0
    """
    _check_pairs(refs, hyps)
    for i, ref in enumerate(refs):
        if not isinstance(ref, str):
            raise ValueError(f"reference {i} is {type(ref).__name__}, expected a string")
    counts = {"hits": 0, "substitutions": 0, "deletions": 0, "insertions": 0}
    if refs:
        import jiwer

        if normalize:
            refs = [normalize_english(r) for r in refs]
            hyps = [normalize_english(h) for h in hyps]
        out = jiwer.process_words(list(refs), list(hyps))
        counts = {name: int(getattr(out, name)) for name in counts}
    ref_words = counts["hits"] + counts["substitutions"] + counts["deletions"]
    errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
    if ref_words == 0:
        logger.warning("WER is undefined: the %d references hold no word", len(refs))
    value = 100.0 * errors / ref_words if ref_words else None
    return {
        "metric": "wer",
        "value": value,
        "n": len(refs),
        "ref_words": ref_words,
        **counts,
        "normalized": normalize,
    }


def _labels_from_refs(refs: Sequence[str]) -> list[str]:
    """The distinct ground truths as lower-cased word strings: the label set of a task that has none
    registered (a count, whose labels are whatever the data holds)."""
    labels = sorted({" ".join(answer_words(str(r))) for r in refs} - {""})
    if not labels:
        raise ValueError("no labels given and the references hold no words to use as labels")
    return labels


def _tally_labels(
    parser: LabelParser, refs: Sequence[str], hyps: Sequence[str]
) -> tuple[int, int, int, dict[str, Counter[str]]]:
    """``(correct, unparsed, ambiguous, confusion)`` over the pairs; a ground truth that does not parse
    to exactly one label raises :class:`LabelError` with its index (the data is wrong, not the model)."""
    correct = unparsed = ambiguous = 0
    confusion: dict[str, Counter[str]] = {}
    for i, (ref, hyp) in enumerate(zip(refs, hyps, strict=True)):
        ref_found = parser.match(str(ref))
        if len(ref_found) != 1:
            raise LabelError(
                i, f"ground truth {ref!r} maps to {sorted(ref_found) or 'no label'} of {list(parser.labels)}"
            )
        ref_label = ref_found.pop()
        found = parser.match(hyp)
        pred = found.pop() if len(found) == 1 else NO_LABEL
        unparsed += pred == NO_LABEL
        ambiguous += len(found) > 1
        correct += pred == ref_label
        confusion.setdefault(ref_label, Counter())[pred] += 1
    return correct, unparsed, ambiguous, confusion


def accuracy(
    refs: Sequence[str],
    hyps: Sequence[str],
    labels: Sequence[str] | None = None,
    synonyms: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Classification accuracy after parsing both sides with :class:`LabelParser`, in percent.

    An answer that matches no label, or mentions two different labels (ambiguous), counts as wrong
    and as unparsed.

    Args:
        refs: Ground-truth answers (``"Male"``); each must parse to exactly one label.
        hyps: Model answers (``"The speaker is a man."``).
        labels: The label set. ``None`` uses the distinct ground truths (lower-cased words), which
            suits a new task such as a count whose labels are whatever the data holds.
        synonyms: Extra phrases per label; ``None`` uses ``DEFAULT_SYNONYMS``.

    Returns:
        ``metric`` ("accuracy"), ``value`` (percent correct), ``n``, ``correct``, ``unparsed``,
        ``ambiguous`` (the part of ``unparsed`` naming several labels), ``unparsed_rate`` (percent),
        ``labels``, and ``confusion`` ({reference label: {predicted label or "<no label>": count}}).

    Raises:
        LabelError: If a ground truth maps to no label or to several (its index is attached).
        ValueError: If the lists differ in length.

    Example:
        >>> accuracy(["Male", "Female"], ["a man", "male"], ["male", "female"])["value"]
        50.0
    """
    _check_pairs(refs, hyps)
    parser = LabelParser(labels if labels is not None else _labels_from_refs(refs), synonyms)
    correct, unparsed, ambiguous, confusion = _tally_labels(parser, refs, hyps)
    n = len(refs)
    return {
        "metric": "accuracy",
        "value": 100.0 * correct / n if n else None,
        "n": n,
        "correct": correct,
        "unparsed": unparsed,
        "ambiguous": ambiguous,
        "unparsed_rate": 100.0 * unparsed / n if n else None,
        "labels": list(parser.labels),
        "confusion": {ref: dict(sorted(c.items())) for ref, c in sorted(confusion.items())},
    }


def _reference_streams(refs: Sequence[str | Sequence[str]]) -> list[list[str | None]]:
    """Turn per-sample references (one string or several) into sacrebleu's reference streams."""
    per_sample = [[r] if isinstance(r, str) else list(r) for r in refs]
    for i, group in enumerate(per_sample):
        if not group or not all(isinstance(r, str) for r in group):
            raise ValueError(f"reference {i} must be a string or a non-empty list of strings, got {group!r}")
    width = max((len(g) for g in per_sample), default=1)
    # sacrebleu accepts None for a sample that has fewer references than the widest one.
    return [[g[k] if k < len(g) else None for g in per_sample] for k in range(width)]


def bleu(
    refs: Sequence[str | Sequence[str]],
    hyps: Sequence[str],
    tokenize: str | None = None,
    lowercase: bool = False,
) -> dict[str, Any]:
    """Corpus BLEU-4 with sacrebleu.

    Args:
        refs: One reference per sample, or a list of references per sample.
        hyps: Hypotheses, same length as ``refs``.
        tokenize: A sacrebleu tokenizer name. ``None`` picks ``"zh"`` when any reference contains a
            Chinese character and ``"13a"`` otherwise (sacrebleu's defaults for those targets).
        lowercase: Case-insensitive BLEU (used for captions).

    Returns:
        ``metric`` ("bleu"), ``value`` (BLEU, 0-100), ``n``, ``tokenize``, ``precisions`` (1- to
        4-gram, percent), ``bp``, ``sys_len``, ``ref_len``, ``signature``.

    Raises:
        ValueError: On length mismatch or a malformed reference.

    Example:
        >>> bleu(["the cat is on the mat"], ["the cat is on the mat"])["value"]
        100.0
    """
    from sacrebleu.metrics import BLEU

    _check_pairs(refs, hyps)
    streams = _reference_streams(refs)
    if tokenize is None:
        has_han = any(r is not None and _HAN_RE.search(r) for stream in streams for r in stream)
        tokenize = "zh" if has_han else "13a"
    scorer = BLEU(tokenize=tokenize, lowercase=lowercase)
    if not hyps:
        return {"metric": "bleu", "value": None, "n": 0, "tokenize": tokenize}
    result = scorer.corpus_score(list(hyps), streams)
    return {
        "metric": "bleu",
        # sacrebleu's perfect score is 100.00000000000004; rounding keeps "perfect" exactly 100.
        "value": round(float(result.score), 10),
        "n": len(hyps),
        "tokenize": tokenize,
        "precisions": [float(p) for p in result.precisions],
        "bp": float(result.bp),
        "sys_len": int(result.sys_len),
        "ref_len": int(result.ref_len),
        "signature": str(scorer.get_signature()),
    }


def _cider_d(refs: list[list[str]], hyps: list[str]) -> float | None:
    """CIDEr-D (x10 scale, as reported in captioning papers) if ``aac-metrics`` is installed."""
    try:
        from aac_metrics.functional.cider_d import cider_d
    except ImportError:
        return None
    try:
        corpus, _ = cider_d(hyps, refs)
    except ValueError as err:
        # aac-metrics refuses fewer than two candidates: CIDEr's IDF needs a corpus.
        logger.warning("CIDEr-D not computed: %s", err)
        return None
    return float(corpus["cider_d"])


def caption_metrics(refs: Sequence[str | Sequence[str]], hyps: Sequence[str]) -> dict[str, Any]:
    """Java-free audio-captioning metrics: ROUGE-L F1 (headline) and BLEU-4, plus CIDEr-D if possible.

    Args:
        refs: One reference caption per sample or a list of them (AudioCaps has five).
        hyps: Generated captions.

    Returns:
        ``metric`` ("rougeL"), ``value`` (mean best-reference ROUGE-L F1, percent), ``n``, ``bleu4``
        (lower-cased 13a corpus BLEU), ``cider_d`` (``None`` without aac-metrics), and
        ``not_reproduced`` naming the paper metrics left out.

    Raises:
        ValueError: On length mismatch or a malformed reference.
    """
    from rouge_score import rouge_scorer

    _check_pairs(refs, hyps)
    per_sample = [list(g) for g in zip(*_reference_streams(refs), strict=True)] if refs else []
    per_sample = [[r for r in g if r is not None] for g in per_sample]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    # score_multi keeps the best-matching reference, as multi-reference ROUGE-L does.
    rouge = [scorer.score_multi(g, h)["rougeL"].fmeasure for g, h in zip(per_sample, hyps, strict=True)]
    cider = _cider_d(per_sample, list(hyps)) if hyps else None
    left_out = ["METEOR", "SPICE", "SPIDEr"] + (["CIDEr-D"] if cider is None else [])
    return {
        "metric": "rougeL",
        "value": 100.0 * sum(rouge) / len(rouge) if rouge else None,
        "n": len(hyps),
        "bleu4": bleu(refs, hyps, tokenize="13a", lowercase=True)["value"],
        "cider_d": cider,
        "not_reproduced": left_out,
    }


# kind -> metric function; a task's kind says which one scores it.
METRIC_KINDS: dict[str, Callable[..., dict[str, Any]]] = {
    "wer": wer,
    "accuracy": accuracy,
    "bleu": bleu,
    "caption": caption_metrics,
}


@dataclass
class TaskMetric:
    """A task's metric: its kind plus the options bound to it (labels, synonyms, tokenizer).

    Calling it with ``(refs, hyps)`` runs the metric, so :data:`METRICS` maps task names to callables.
    """

    task: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)

    def __call__(self, refs: Sequence[Any], hyps: Sequence[str]) -> dict[str, Any]:
        return METRIC_KINDS[self.kind](refs, hyps, **self.options)


# canonical task name -> metric; filled by register_task below.
METRICS: dict[str, TaskMetric] = {}
# lower-cased alias (official data/mask names) -> canonical task name or composite spec.
TASK_ALIASES: dict[str, str] = {}


def register_task(
    name: str,
    kind: str,
    labels: Sequence[str] | None = None,
    synonyms: Mapping[str, Sequence[str]] | None = None,
    aliases: Sequence[str] = (),
    **options: Any,
) -> TaskMetric:
    """Register (or replace) the metric of a task so prediction files using its name get scored.

    Args:
        name: The task name as written in manifests, e.g. ``"count"`` (matched case-insensitively).
        kind: One of :data:`METRIC_KINDS`: ``"wer"``, ``"accuracy"``, ``"bleu"``, ``"caption"``.
        labels: Label set for ``"accuracy"``; ``None`` uses the distinct ground truths.
        synonyms: Extra phrases per label for ``"accuracy"``; ``None`` uses the defaults.
        aliases: Other names for the same task.
        **options: Further keyword arguments of the metric function (e.g. ``tokenize="zh"``).

    Returns:
        The registered :class:`TaskMetric`.

    Raises:
        ValueError: For an unknown kind, or labels/synonyms given to a kind that takes none.

    Example:
        >>> register_task("count", "accuracy", labels=["two", "three", "four", "five"]).kind
        'accuracy'
    """
    if kind not in METRIC_KINDS:
        raise ValueError(
            f"unknown metric kind {kind!r} for task {name!r}; expected one of {sorted(METRIC_KINDS)}"
        )
    if kind != "accuracy" and (labels is not None or synonyms is not None):
        raise ValueError(f"task {name!r}: labels/synonyms only apply to kind 'accuracy', not {kind!r}")
    if kind == "accuracy":
        options = {"labels": None if labels is None else list(labels), "synonyms": synonyms, **options}
    key = name.strip().lower()
    metric = TaskMetric(task=key, kind=kind, options=options)
    METRICS[key] = metric
    TASK_ALIASES.pop(key, None)
    for alias in aliases:
        TASK_ALIASES[alias.strip().lower()] = key
    return metric


def register_alias(alias: str, target: str) -> None:
    """Make ``alias`` stand for a registered task or a composite spec (``"asr|gender"``, ``"json:..."``).

    Args:
        alias: The extra name, e.g. the name of a released mask (``"asr_gender_librispeech"``).
        target: What it stands for.
    """
    TASK_ALIASES[alias.strip().lower()] = target


def resolve_task(name: str) -> str:
    """Return the canonical name (or composite spec) for a task name, following aliases.

    Args:
        name: A task name as found in a manifest.

    Returns:
        The canonical name; an unknown name comes back lower-cased and stripped.
    """
    key = name.strip().lower()
    return TASK_ALIASES.get(key, key)


def get_metric(name: str) -> TaskMetric | None:
    """Return the metric registered for a single task (aliases followed), or ``None``."""
    return METRICS.get(resolve_task(name))


# Built-in tasks: the paper's and SALMONN's task names, and the ten released masks' names.
register_task("asr", "wer", aliases=("asr_librispeech", "librispeech", "transcription", "speech_recognition"))
register_task("osr", "wer", aliases=("osr_libri2mix", "speech_separation", "overlapped_speech_recognition"))
register_task(
    "gender",
    "accuracy",
    labels=("male", "female"),
    aliases=("gender_recognition", "gender_librispeech", "gr"),
)
register_task(
    "emotion",
    "accuracy",
    labels=("neutral", "happy", "sad", "angry"),
    aliases=("emotion_recognition", "emotion_iemocap", "er"),
)
register_task(
    "asv", "accuracy", labels=("yes", "no"), aliases=("speaker_verification", "asv_voxceleb1", "sv")
)
# CoVoST2 en->zh (SALMONN's "translation_ec"): the tokenizer follows the target script.
register_task("s2tt", "bleu", aliases=("s2tt_covost2", "translation_ec", "translation", "st"))
register_task("s2tt_en2de", "bleu", tokenize="13a", aliases=("translation_en2de",))
# Japanese has no spaces; "char" avoids the optional MeCab dependency of "ja-mecab".
register_task("s2tt_en2ja", "bleu", tokenize="char", aliases=("translation_en2ja",))
register_task(
    "aac", "caption", aliases=("aac_audiocaps", "audiocaption", "audiocaption_v2", "audio_captioning")
)
# Composite masks: README of the official repo ("ASR|GR", "GR|ASR", JSON with "ASR" and "GR" keys).
# The separator of the official training names "*_and_*" / "emotion_gender" is assumed to be "|" too.
for _alias, _spec in {
    "asr_gender_librispeech": "asr|gender",
    "asr_and_gender": "asr|gender",
    "gender_asr_librispeech": "gender|asr",
    "gender_and_asr": "gender|asr",
    "emotion_gender": "emotion|gender",
    "gender_emotion": "gender|emotion",
    "asr_gender_json_librispeech": "json:ASR=asr,GR=gender",
    "asr_gender_jsonstyle": "json:ASR=asr,GR=gender",
}.items():
    register_alias(_alias, _spec)
