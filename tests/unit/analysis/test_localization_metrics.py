"""The localisation metrics on hand-made intervals, the random baseline and the answer parser."""

from __future__ import annotations

import numpy as np
import pytest

from ahamask.analysis.localization_metrics import (
    hit,
    intersection,
    iou,
    mean_std,
    overlap,
    parse_time_span,
    random_interval,
    score_interval,
    summarize,
)


def test_overlap_iou_hit_on_hand_made_intervals():
    true = (1.0, 2.0)
    # Half of the truth covered by a same-length prediction shifted by 0.5 s.
    assert intersection((1.5, 2.5), true) == pytest.approx(0.5)
    assert overlap((1.5, 2.5), true) == pytest.approx(0.5)
    assert iou((1.5, 2.5), true) == pytest.approx(0.5 / 1.5)
    assert hit((1.5, 2.5), true)  # midpoint 2.0 is on the closed boundary
    assert not hit((1.6, 2.6), true)
    # A long prediction covering everything: overlap 1, IoU penalises the length.
    assert overlap((0.0, 3.0), true) == 1.0
    assert iou((0.0, 3.0), true) == pytest.approx(1 / 3)
    # Disjoint and touching intervals share nothing.
    assert overlap((2.0, 3.0), true) == 0.0
    assert iou((3.0, 4.0), true) == 0.0
    # Identical intervals.
    assert iou(true, true) == 1.0 and overlap(true, true) == 1.0


def test_score_interval_clips_and_handles_missing_predictions():
    assert score_interval(None, (1.0, 2.0)) == {"overlap": 0.0, "iou": 0.0, "hit": 0.0, "parsed": 0.0}
    # (-1, 1.5) clipped to the clip gives (0, 1.5): overlap 0.5, IoU 0.5 / 2.0, midpoint 0.75 misses.
    s = score_interval((-1.0, 1.5), (1.0, 2.0), clip_seconds=3.0)
    assert s == {"overlap": 0.5, "iou": 0.25, "hit": 0.0, "parsed": 1.0}
    with pytest.raises(ValueError, match="pred"):
        score_interval((2.0, 1.0), (1.0, 2.0))


def test_random_interval_has_the_length_and_is_reproducible():
    a = [random_interval(0.5, 3.0, np.random.default_rng(7)) for _ in range(2)]
    assert a[0] == a[1]
    rng = np.random.default_rng(0)
    draws = [random_interval(0.5, 3.0, rng) for _ in range(2000)]
    assert all(e - s == pytest.approx(0.5) and 0.0 <= s and e <= 3.0 for s, e in draws)
    # Expected overlap of a uniformly placed 0.5 s window with a truth at (1.0, 1.5) in a 3 s clip:
    # the start is uniform on [0, 2.5] and the overlap is 1 - |s - 1| / 0.5 for |s - 1| < 0.5 (a triangle of
    # area 0.5), so the mean is 0.5 / 2.5 = 0.2.
    mean = np.mean([overlap(d, (1.0, 1.5)) for d in draws])
    assert mean == pytest.approx(0.2, abs=0.02)
    assert random_interval(5.0, 3.0, rng) == (0.0, 3.0)


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("from 0.4 to 0.9", (0.4, 0.9)),
        ("The whistle is heard 1.2 - 1.8 s into the clip.", (1.2, 1.8)),
        ("between 0.5 and 2 seconds", (0.5, 2.0)),
        ("[2.5, 1.0]", (1.0, 2.5)),
        ("00:01.5 to 00:02", (1.5, 2.0)),
        ("0.3s-0.7s", (0.3, 0.7)),
    ],
)
def test_parse_time_span(text, span):
    assert parse_time_span(text) == pytest.approx(span)


@pytest.mark.parametrize("text", ["whistle knock", "yes", "at 1.5 seconds", ""])
def test_parse_time_span_rejects_non_spans(text):
    assert parse_time_span(text) is None


def test_summarize_and_mean_std():
    rows = [{"overlap": 1.0, "iou": 0.5}, {"overlap": 0.0, "iou": 0.0}]
    assert summarize(rows) == {"n": 2, "overlap": 0.5, "iou": 0.25}
    assert summarize([]) == {"n": 0}
    mean, std = mean_std([0.2, 0.4, 0.6])
    assert mean == pytest.approx(0.4) and std == pytest.approx(0.2)
    assert mean_std([0.3]) == (0.3, 0.0)
