"""The listening probe (ahamask.analysis.listening) on the tiny SALMONN and on hand-built numbers."""

from __future__ import annotations

import pytest
import torch

from ahamask.analysis.attention import audio_attention
from ahamask.analysis.listening import (
    answer_logprobs,
    head_correlation,
    head_table,
    heads_by_mass,
    heatmap_png,
    listening_score,
    option_token_ids,
    probe_set,
    random_heads,
    score_vs_correctness,
    silence_like,
    top_heads,
)

from ..probe_helpers import OPTIONS, tiny_probe_batches


@pytest.fixture(scope="module")
def batches(tiny_bundle, tiny_decode_cfg, shared_tiny_model):
    return tiny_probe_batches(tiny_bundle, tiny_decode_cfg, shared_tiny_model)


def test_silence_keeps_the_audio_token_count(shared_tiny_model, batches) -> None:
    samples = batches[0].samples
    silent = silence_like(samples)
    assert torch.count_nonzero(silent["raw_wav"]) == 0
    assert silent["raw_wav"].shape == samples["raw_wav"].shape
    assert torch.count_nonzero(samples["raw_wav"]) > 0  # the original batch is untouched
    audio = shared_tiny_model.encode_audio(samples)
    quiet = shared_tiny_model.encode_audio(silent)
    assert quiet.shape == audio.shape and audio.shape[1] > 0
    assert not torch.equal(audio, quiet)  # (the random tiny front end barely tells them apart)
    with pytest.raises(ValueError, match="raw_wav"):
        silence_like({"spectrogram": torch.zeros(1, 80, 10)})


def test_probe_set_matches_its_parts(shared_tiny_model, batches) -> None:
    model = shared_tiny_model
    result = probe_set(model, batches)
    geo = model.geometry
    assert result.mass.shape == (4, geo.n_layers, geo.n_heads)
    assert result.effect.shape == (4,) and len(result.predicted) == 4 and result.correct.shape == (4,)
    assert [i["row"] for i in result.info] == [0, 1, 2, 3]
    b = batches[1]
    audio = model.encode_audio(b.samples)
    silence = model.encode_audio(silence_like(b.samples))
    torch.testing.assert_close(result.mass[2:], audio_attention(model, audio, b.prompts).audio_mass)
    lp_a, lp_s = answer_logprobs(model, audio, b.prompts), answer_logprobs(model, silence, b.prompts)
    ids = option_token_ids(model, OPTIONS)
    for row in range(2):
        pick = int(torch.argmax(lp_a[row, ids]))
        assert result.predicted[2 + row] == OPTIONS[pick]
        expected = float(lp_a[row, ids[pick]] - lp_s[row, ids[pick]])
        assert abs(float(result.effect[2 + row]) - expected) < 1e-5
        assert bool(result.correct[2 + row]) == (OPTIONS[pick] == b.answers[row])
    ref = probe_set(model, batches, effect_answer="reference")
    assert torch.equal(ref.mass, result.mass)
    with pytest.raises(ValueError, match="effect_answer"):
        probe_set(model, batches, effect_answer="gold")


def test_ranking_on_hand_built_numbers() -> None:
    gen = torch.Generator().manual_seed(0)
    effect = torch.randn(50, generator=gen)
    mass = torch.rand(50, 3, 4, generator=gen) * 0.1
    mass[:, 2, 1] = 0.2 + 0.05 * effect  # listens exactly when the audio matters
    mass[:, 0, 3] = 0.9  # attends to the audio a lot, always
    mass[:, 1, 0] = 0.3 - 0.05 * effect  # anti-correlated
    corr = head_correlation(mass, effect)
    assert corr.shape == (3, 4)
    assert abs(float(corr[2, 1]) - 1.0) < 1e-6 and abs(float(corr[1, 0]) + 1.0) < 1e-6
    assert float(corr[0, 3]) == 0.0  # no variance: 0, not NaN
    assert top_heads(corr, 1) == [(2, 1)]
    assert heads_by_mass(mass, 1) == [(0, 3)]
    assert top_heads(corr, 12)[-1] == (1, 0)
    picks = random_heads(3, 4, 5, seed=1)
    assert (
        len(set(picks)) == 5
        and picks == random_heads(3, 4, 5, seed=1)
        and picks != random_heads(3, 4, 5, seed=2)
    )
    torch.testing.assert_close(listening_score(mass, [(2, 1), (0, 3)]), (mass[:, 2, 1] + 0.9) / 2)
    table = head_table(corr, mass, k=2)
    assert table[0] == {
        "rank": 1,
        "layer": 2,
        "head": 1,
        "correlation": 1.0,
        "mean_mass": round(float(mass[:, 2, 1].mean()), 6),
    }
    with pytest.raises(ValueError, match="k"):
        top_heads(corr, 13)


def test_score_vs_correctness_numbers() -> None:
    score = torch.tensor([0.9, 0.8, 0.1, 0.5, 0.2])
    correct = torch.tensor([True, True, False, False, True])
    out = score_vs_correctness(score, correct)
    assert out["mean_correct"] == pytest.approx((0.9 + 0.8 + 0.2) / 3)
    assert out["mean_wrong"] == pytest.approx(0.3)
    # Pairs (correct, wrong): 0.9>0.1,0.9>0.5,0.8>0.1,0.8>0.5,0.2>0.1,0.2<0.5 -> 5/6.
    assert out["auc"] == pytest.approx(5 / 6)
    assert out["n_correct"] == 3 and out["n_wrong"] == 2
    assert 0 < out["correlation"] < 1


def test_heatmap_png(tmp_path) -> None:
    path = heatmap_png(torch.randn(2, 4), tmp_path / "heads.png", "test", selected=[(0, 1)])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mcq_world_prior_and_balance(tmp_path) -> None:
    from ahamask.synth.mcq_world import FAVOURED, build_mcq_world, load_mcq_world

    world = build_mcq_world(
        tmp_path / "w", seed=3, n_clips={"train": 150, "calib": 0, "valid": 0, "test": 10}, prior=0.8
    )
    import json

    train = json.loads(world.manifests["train"].read_text())["annotation"]
    test = json.loads(world.manifests["test"].read_text())["annotation"]
    favoured = sum(e["text"] == FAVOURED[e["labels"]["qtype"]] for e in train) / len(train)
    assert 0.72 <= favoured <= 0.88  # 0.8 in expectation (150 clips x 2 questions, thinned)
    assert len(test) == 20  # balanced splits ask every clip both questions
    for e in test:
        assert e["text"] in e["labels"]["options"] and e["text"] == e["labels"][e["labels"]["qtype"]]
        assert all(o in e["Q"] for o in e["labels"]["options"])
    again = build_mcq_world(
        tmp_path / "w2", seed=3, n_clips={"train": 150, "calib": 0, "valid": 0, "test": 10}
    )
    assert again.manifests["test"].read_text() == world.manifests["test"].read_text()
    assert load_mcq_world(tmp_path / "w").counts == world.counts


def test_find_audio_heads_cli(tiny_bundle, tmp_path) -> None:
    from ahamask.analysis.audio_heads_cli import main
    from ahamask.analysis.silence_steering import load_direction
    from ahamask.synth.mcq_world import build_mcq_world

    world = build_mcq_world(tmp_path / "w", seed=0, n_clips={"train": 0, "calib": 0, "valid": 0, "test": 3})
    out = tmp_path / "heads.json"
    cfg = str(tiny_bundle / "decode_config.yaml")
    args = [
        "-c",
        cfg,
        "--manifest",
        str(world.manifests["test"]),
        "--k",
        "2",
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    assert main([*args, "--direction", str(tmp_path / "d.safetensors")]) == 0
    import json

    report = json.loads(out.read_text())
    assert report["n"] == 6 and len(report["specialist_heads"]) == 2
    assert len(report["head_table"]) == 2 * 4  # every head of the tiny decoder, ranked
    assert [r["rank"] for r in report["head_table"]] == list(range(1, 9))
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert load_direction(tmp_path / "d.safetensors").layer == 1
    # The bundle's own manifest has no questions: one error line, exit 2.
    assert main(["-c", cfg, "--out", str(out), "--device", "cpu"]) == 2
