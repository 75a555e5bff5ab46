"""How well a predicted time interval localises a sound event, and the baselines it is compared with.

Intervals are ``(start, end)`` in seconds with ``start <= end``. Three numbers are reported per prediction,
so a result can be compared with the paper whatever exact definition it used:

* **overlap** (the headline, our reading of the paper's "overlap with ground-truth intervals"): the share of
  the ground-truth interval that the prediction covers, ``|P & G| / |G|``. With the predicted length fixed to
  the ground-truth length (the window read-out and the random baseline) it equals ``|P & G| / |P|``, so it
  does not reward long predictions there; for free-length predictions (direct prompting) it does, which is
  why IoU is reported next to it;
* **IoU**: ``|P & G| / |P | G|``;
* **hit**: the midpoint of the prediction lies inside the ground truth (closed interval).

A missing prediction (a direct-prompting answer with no parseable span) scores 0 on all three and is counted
in ``parsed``. Predictions are clipped to the clip ``[0, clip_seconds]`` before scoring when the clip length
is given.

The random baseline places an interval of the ground truth's length uniformly in the clip, from a generator
the caller owns (:func:`random_interval`).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "Interval",
    "check_interval",
    "intersection",
    "overlap",
    "iou",
    "hit",
    "score_interval",
    "random_interval",
    "parse_time_span",
    "summarize",
    "mean_std",
]

Interval = tuple[float, float]


def check_interval(interval: Sequence[float], name: str = "interval") -> Interval:
    """``(start, end)`` as floats, or ValueError naming ``name`` when it is not a finite span with start <= end."""
    if len(interval) != 2:
        raise ValueError(f"{name}: expected (start, end), got {interval!r}")
    start, end = float(interval[0]), float(interval[1])
    if not (math.isfinite(start) and math.isfinite(end)) or start > end:
        raise ValueError(f"{name}: expected finite start <= end, got {interval!r}")
    return start, end


def _clip(interval: Interval, clip_seconds: float | None) -> Interval:
    if clip_seconds is None:
        return interval
    start = min(max(interval[0], 0.0), clip_seconds)
    end = min(max(interval[1], 0.0), clip_seconds)
    return start, end


def intersection(a: Sequence[float], b: Sequence[float]) -> float:
    """Length of the common part of two intervals (0 when disjoint)."""
    a, b = check_interval(a, "a"), check_interval(b, "b")
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def overlap(pred: Sequence[float], true: Sequence[float]) -> float:
    """``|P & G| / |G|``: the share of the ground truth the prediction covers (1.0 for a zero-length G inside P)."""
    true = check_interval(true, "true")
    length = true[1] - true[0]
    if length <= 0:
        pred = check_interval(pred, "pred")
        return float(pred[0] <= true[0] <= pred[1])
    return intersection(pred, true) / length


def iou(pred: Sequence[float], true: Sequence[float]) -> float:
    """``|P & G| / |P | G|`` (the union of two overlapping intervals is one span; of disjoint ones, the sum)."""
    pred, true = check_interval(pred, "pred"), check_interval(true, "true")
    inter = intersection(pred, true)
    union = (pred[1] - pred[0]) + (true[1] - true[0]) - inter
    return inter / union if union > 0 else float(pred == true)


def hit(pred: Sequence[float], true: Sequence[float]) -> bool:
    """True when the prediction's midpoint lies in the closed ground-truth interval."""
    pred, true = check_interval(pred, "pred"), check_interval(true, "true")
    mid = 0.5 * (pred[0] + pred[1])
    return true[0] <= mid <= true[1]


def score_interval(
    pred: Sequence[float] | None, true: Sequence[float], clip_seconds: float | None = None
) -> dict[str, float]:
    """``{"overlap", "iou", "hit", "parsed"}`` of one prediction (``None``: no prediction, all zero)."""
    true = check_interval(true, "true")
    if pred is None:
        return {"overlap": 0.0, "iou": 0.0, "hit": 0.0, "parsed": 0.0}
    pred = _clip(check_interval(pred, "pred"), clip_seconds)
    return {
        "overlap": overlap(pred, true),
        "iou": iou(pred, true),
        "hit": float(hit(pred, true)),
        "parsed": 1.0,
    }


def random_interval(length: float, clip_seconds: float, generator: np.random.Generator) -> Interval:
    """An interval of ``length`` seconds (at most the clip) with its start uniform in ``[0, clip - length]``.

    Args:
        length: the interval's length (the ground truth's, for the same-length baseline).
        clip_seconds: the clip's length.
        generator: the caller's generator (one per run, seeded: the baseline is reproducible).
    """
    if clip_seconds <= 0 or length < 0:
        raise ValueError(
            f"random_interval: need clip_seconds > 0 and length >= 0, got {clip_seconds}, {length}"
        )
    length = min(length, clip_seconds)
    start = float(generator.uniform(0.0, clip_seconds - length)) if clip_seconds > length else 0.0
    return start, start + length


_NUMBER = r"(\d+(?::\d+(?:\.\d+)?)?(?:\.\d+)?)"
_SPAN = re.compile(_NUMBER + r"\s*(?:s|sec|secs|seconds?)?\s*(?:to|-|–|until|and|,)\s*" + _NUMBER)


def _seconds(token: str) -> float:
    if ":" in token:  # mm:ss(.f)
        minutes, seconds = token.split(":", 1)
        return 60.0 * float(minutes) + float(seconds)
    return float(token)


def parse_time_span(text: str) -> Interval | None:
    """The first time span in a free-text answer, or None.

    Understands ``"from 0.4 to 0.9"``, ``"0.4 - 0.9 s"``, ``"between 0.4 and 0.9 seconds"``, ``"[0.4, 0.9]"``,
    ``"00:01.5 to 00:02"``; a reversed span is put in order. A single number is not a span (None).
    """
    match = _SPAN.search(text.replace("−", "-"))
    if match is None:
        return None
    a, b = _seconds(match.group(1)), _seconds(match.group(2))
    return (min(a, b), max(a, b))


def summarize(scores: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The mean of each metric over examples, plus ``n`` (the number of examples)."""
    rows = list(scores)
    if not rows:
        return {"n": 0}
    keys = rows[0].keys()
    return {"n": len(rows), **{k: float(np.mean([r[k] for r in rows])) for k in keys}}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) over seeds."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std: no values")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0
