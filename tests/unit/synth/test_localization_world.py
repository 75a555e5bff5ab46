"""The localisation world: events at the labelled times, distinct types, reproducible files, targets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from ahamask.analysis.localization_metrics import parse_time_span
from ahamask.synth.localization_world import (
    EVENT_TYPES,
    build_localization_world,
    load_localization_world,
    localization_target,
    render_event,
    render_localization_clip,
    sample_localization_clip,
    token_event_targets,
)


def _band_energy(x: np.ndarray, lo: float, hi: float, sr: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    return float(spectrum[(freqs >= lo) & (freqs < hi)].sum() / spectrum.sum())


def test_events_are_placed_at_their_labels_without_overlap():
    for i in range(30):
        clip = sample_localization_clip(np.random.default_rng([3, i]), background=False)
        labels = clip.labels()
        kinds = labels["event_types"]
        assert 1 <= len(kinds) <= 3 and len(set(kinds)) == len(kinds)
        spans = [(e["onset_s"], e["offset_s"]) for e in labels["events"]]
        assert all(0.0 <= s < e <= 3.0 for s, e in spans)
        assert all(
            b[0] - a[1] >= 0.1 - 1e-6 for a, b in zip(spans[:-1], spans[1:], strict=True)
        )  # >= 0.1 s apart
        x = render_localization_clip(clip)
        sr = 16000
        # Without background, the samples are non-zero exactly inside the events (apart from the fades' zeros).
        inside = np.zeros(len(x), dtype=bool)
        for e in clip.events:
            inside[e.onset : e.onset + e.length] = True
            rms = np.sqrt(np.mean(x[e.onset : e.onset + e.length] ** 2))
            assert 20 * np.log10(rms) == pytest.approx(e.level_dbfs, abs=0.2)
        assert not np.any(x[~inside]) and sr == clip.sample_rate


def test_event_types_have_their_own_spectra():
    def event(kind):
        from ahamask.synth.localization_world import EventSpec, _event_param

        return render_event(EventSpec(kind, 0, 8000, -20.0, _event_param(kind, np.random.default_rng(0)), 1))

    assert _band_energy(event("whistle"), 2900, 3500) > 0.95
    assert _band_energy(event("siren"), 450, 1550) > 0.9
    assert _band_energy(event("buzzer"), 0, 400) > 0.8
    assert _band_energy(event("hiss"), 4000, 8000) > 0.6
    assert _band_energy(event("knock"), 1500, 2500) > 0.5


def test_targets_and_token_supervision():
    labels = {
        "event_types": ["whistle", "knock"],
        "events": [
            {"type": "whistle", "onset_s": 0.25, "offset_s": 0.6, "level_dbfs": -20.0},
            {"type": "knock", "onset_s": 1.0, "offset_s": 1.4, "level_dbfs": -20.0},
        ],
    }
    assert localization_target("tags", labels) == "whistle knock"
    assert localization_target("detect", labels, "siren") == "no"
    assert localization_target("detect", labels, "knock") == "yes"
    answer = localization_target("localize", labels, "whistle")
    assert answer == "from 0.2 to 0.6" or answer == "from 0.3 to 0.6"
    assert parse_time_span(answer) is not None
    with pytest.raises(ValueError, match="siren"):
        localization_target("localize", labels, "siren")
    times = np.stack([np.arange(0, 1.5, 0.25), np.arange(0, 1.5, 0.25) + 0.25], axis=1)
    targets = token_event_targets(labels, times)
    w, k = EVENT_TYPES.index("whistle"), EVENT_TYPES.index("knock")
    np.testing.assert_allclose(targets[:, w], [0, 1, 0.4, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(targets[:, k], [0, 0, 0, 0, 1, 0.6], atol=1e-6)


def test_build_is_reproducible_and_in_the_official_schema(tmp_path):
    a = build_localization_world(tmp_path / "a", seed=1, n_train=3, n_calib=2, n_test=3)
    b = build_localization_world(tmp_path / "b", seed=1, n_train=3, n_calib=2, n_test=3)
    for split in ("train", "calib", "test"):
        for task in ("tags", "detect", "localize"):
            assert a.manifests[split][task].read_bytes() == b.manifests[split][task].read_bytes()
    assert (tmp_path / "a/test/wav/test_00002.wav").read_bytes() == (
        tmp_path / "b/test/wav/test_00002.wav"
    ).read_bytes()
    entries = json.loads(a.manifests["test"]["localize"].read_text())["annotation"]
    n_events = sum(
        len(e["labels"]["event_types"])
        for e in json.loads(a.manifests["test"]["tags"].read_text())["annotation"]
    )
    assert len(entries) == n_events  # one localize entry per event of a clip
    for e in entries:
        assert set(e) == {"path", "text", "task", "Q", "labels"}
        assert e["Q"] == e["labels"]["target"] and e["task"] == "localize"
        on, off = e["labels"]["interval"]
        assert parse_time_span(e["text"]) == pytest.approx((on, off), abs=0.051)
        wav, sr = sf.read(a.manifests["test"]["localize"].parent / e["path"])
        assert sr == 16000 and len(wav) == 48000
    loaded = load_localization_world(tmp_path / "a")
    assert loaded.manifests == a.manifests and loaded.event_types == EVENT_TYPES
    prompts = json.loads(a.prompt_files["train_prompt"].read_text())
    assert all("<SpeechHere>" in t for ts in prompts.values() for t in ts)
    assert all("{}" in t for t in prompts["detect"] + prompts["localize"])
    with pytest.raises(FileExistsError, match="already built"):
        build_localization_world(tmp_path / "a", n_train=1, n_calib=1, n_test=1)
