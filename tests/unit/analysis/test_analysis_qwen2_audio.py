"""The listening probe, audio-silence steering, instruction-contrast steering and the temporal read-out on the
tiny Qwen2-Audio and Audio Flamingo 3 bundles (issues 15 and 16: "the same commands run on a tiny Qwen2-Audio
bundle"): the numbers the SALMONN tests pin, and the CLIs end to end on Qwen2-Audio.

The batch holds a 1.0 s and a 2.0 s clip: 25 and 50 audio tokens of 40 ms, so the shorter row's audio span
ends before the batch's padded width (the case SALMONN never has).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ahamask.analysis.attention import audio_attention, eager_attention
from ahamask.analysis.contrast_steering import contrast_vectors, load_vectors, steering
from ahamask.analysis.listening import ProbeBatch, answer_logprobs, option_token_ids, probe_set, silence_like
from ahamask.analysis.residual import add_to_residual, prompt_forward
from ahamask.analysis.silence_steering import audio_silence_direction
from ahamask.analysis.temporal import token_centres, token_index
from ahamask.models.hf_audio_llm import audio_token_counts

from ..hf_audio_helpers import batch_of, decode, load_model, make_bundle, tone

ARCHS = ["qwen2_audio", "audio_flamingo3"]
OPTIONS = ["male", "female"]
SECONDS = (1.0, 2.0)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Bundles built once per module, on first use (the CLI tests use the Qwen2-Audio one only)."""
    built: dict = {}

    def get(arch: str):
        if arch not in built:
            built[arch] = make_bundle(arch, tmp_path_factory.mktemp(arch))
        return built[arch]

    return get


@pytest.fixture(scope="module", params=ARCHS)
def arch(request):
    return request.param


@pytest.fixture(scope="module")
def model(bundles, arch):
    model, _ = load_model(bundles(arch))
    assert model.decoder.config._attn_implementation == "sdpa"  # the default the probe must switch from
    return model


@pytest.fixture(scope="module")
def batch():
    return batch_of(tone(SECONDS[0], 140.0, seed=1), tone(SECONDS[1], 220.0, seed=2))


def _prompts(model) -> list[str]:
    return [model.prompt_for("What is the gender of the speaker?"), model.prompt_for("")]


def test_attention_rows_are_distributions_over_the_audio_tokens(model, batch):
    speech = model.encode_audio(batch)
    assert audio_token_counts(speech) == [25, 50] and speech.shape[1] == 50
    prompts = _prompts(model)
    att = audio_attention(model, speech, prompts, keep_rows=True)
    geo = model.geometry
    assert att.weights.shape == (2, geo.n_layers, geo.n_heads, 50)
    assert torch.allclose(att.total_mass, torch.ones_like(att.total_mass), atol=1e-5)
    # The audio spans are exactly the placeholder's positions as the transformers processor expands them.
    audio_id = model.tokenizer.convert_tokens_to_ids(model.audio_placeholder)
    width, shifts = att.rows.shape[-1], []
    for i, seconds in enumerate(SECONDS):
        wave = batch["raw_wav"][i, : int(16000 * seconds)].numpy()
        ids = model.processor(text=[prompts[i]], audio=[wave], return_tensors="pt", sampling_rate=16000)[
            "input_ids"
        ][0]
        shift = width - len(ids)  # left padding
        where = (ids == audio_id).nonzero().flatten() + shift
        start, end = att.audio_spans[i]
        assert (start, end) == (int(where[0]), int(where[-1]) + 1) and end - start == len(where)
        assert torch.equal(att.weights[i, :, :, : end - start], att.rows[i, :, :, start:end])
        assert float(att.rows[i, :, :, :shift].abs().sum()) == 0.0  # padded keys get nothing
        shifts.append(shift)
    assert max(shifts) > 0  # one row is left-padded
    # The 25-token row has no weight past its own audio (not the text that follows it).
    assert float(att.weights[0, :, :, 25:].abs().max()) == 0.0
    mass = att.audio_mass
    assert bool(((mass > 0.0) & (mass < 1.0)).all())


def test_sdpa_probe_equals_an_eager_model_and_is_restored(bundles, arch, model, batch):
    speech = model.encode_audio(batch)
    switched = audio_attention(model, speech, _prompts(model))
    assert model.decoder.config._attn_implementation == "sdpa"
    assert model.model.config.text_config._attn_implementation == "sdpa"
    eager, _ = load_model(bundles(arch), attn_implementation="eager")
    # The same audio embeddings (the eager model's audio tower would compute them with eager attention too).
    native = audio_attention(eager, speech, _prompts(eager))
    assert torch.equal(switched.weights, native.weights)
    with pytest.raises(RuntimeError, match="inside"):  # restored on error too
        with eager_attention(model.decoder):
            assert model.decoder.config._attn_implementation == "eager"
            raise RuntimeError("inside")
    assert model.decoder.config._attn_implementation == "sdpa"


def test_steering_scale_zero_is_bit_identical_and_a_vector_moves_logits(model, batch):
    hidden = int(model.decoder.get_input_embeddings().weight.shape[-1])
    vector = torch.randn(hidden, generator=torch.Generator().manual_seed(0)) * 4
    plain_ids, plain_scores = decode(model, batch)
    for positions in ("last", "all"):
        with add_to_residual(model, {0: vector, 1: vector}, scale=0.0, positions=positions):
            ids, scores = decode(model, batch)
        assert torch.equal(ids, plain_ids) and torch.equal(scores, plain_scores)
    with add_to_residual(model, {0: vector}, scale=1.0):
        _, steered = decode(model, batch)
    keep = torch.isfinite(steered) & torch.isfinite(plain_scores)
    assert float((steered[keep] - plain_scores[keep]).abs().max()) > 1e-2


def test_silence_keeps_the_audio_tokens_and_the_effect_is_finite(model, batch):
    quiet = silence_like(batch)
    audio, silence = model.encode_audio(batch), model.encode_audio(quiet)
    assert audio_token_counts(silence) == audio_token_counts(audio) == [25, 50]
    prompts = _prompts(model)
    assert (
        model.prompt_inputs(silence, prompts).audio_spans == model.prompt_inputs(audio, prompts).audio_spans
    )
    assert not torch.equal(audio, silence)
    from ahamask.analysis.listening import _check_same_audio_positions

    _check_same_audio_positions(model, audio, silence, prompts)
    short = silence.clone()
    short[1, 40:] = 0.0  # row 1 would read as 40 audio tokens: same shape, other positions
    with pytest.raises(RuntimeError, match="other positions"):
        _check_same_audio_positions(model, audio, short, prompts)
    result = probe_set(model, [ProbeBatch(batch, prompts, [OPTIONS, OPTIONS], ["male", "female"])])
    assert result.mass.shape == (2, model.geometry.n_layers, model.geometry.n_heads)
    assert bool(torch.isfinite(result.effect).all()) and float(result.effect.abs().max()) > 0.0
    # The effect is log p(predicted | audio) - log p(predicted | silence), recomputed here.
    lp_audio, lp_silence = answer_logprobs(model, audio, prompts), answer_logprobs(model, silence, prompts)
    for i, answer in enumerate(result.predicted):
        token = option_token_ids(model, [answer])[0]
        assert math.isclose(
            float(result.effect[i]), float(lp_audio[i, token] - lp_silence[i, token]), abs_tol=1e-6
        )


def test_audio_silence_direction_is_the_mean_residual_difference(model, batch):
    prompts = _prompts(model)
    direction = audio_silence_direction(model, [ProbeBatch(batch, prompts, [OPTIONS, OPTIONS])], layer=0)
    # By hand, from transformers' own hidden states (entry 1 is the output of decoder layer 0).
    states = [
        prompt_forward(model, model.prompt_inputs(model.encode_audio(s), prompts), output_hidden_states=True)
        for s in (batch, silence_like(batch))
    ]
    by_hand = (states[0].hidden_states[1][:, -1] - states[1].hidden_states[1][:, -1]).float().mean(0)
    assert direction.layer == 0 and direction.meta["n_calibration"] == 2
    assert torch.allclose(direction.vector, by_hand, atol=1e-6) and direction.norm > 0


def test_contrast_of_one_instruction_is_zero_and_times_round_trip(model, batch):
    speech = model.encode_audio(batch)
    same = [model.prompt_for("Listen for the whistle.")] * 2
    for position in ("last", "instruction_mean"):
        zero = contrast_vectors(model, speech, same, same, position=position)
        assert sorted(zero) == [0, 1] and all(torch.count_nonzero(v) == 0 for v in zero.values())
    other = contrast_vectors(model, speech, same, [model.prompt_for("")] * 2)
    assert all(float(v.norm()) > 0 for v in other.values())
    times = model.audio_token_times(50)
    assert torch.allclose(times[:, 0], torch.arange(50) * 0.04) and torch.allclose(
        times[:, 1] - times[:, 0], torch.full((50,), 0.04)
    )
    centres = token_centres(times)
    assert [token_index(times, float(c)) for c in centres] == list(range(50))
    assert token_index(times, 0.04 * 7 + 0.001) == 7 and token_index(times, 10.0) == 49


def test_contrast_steering_moves_the_read_out_only_when_alpha_is_nonzero(model, batch):
    speech = model.encode_audio(batch)
    a, b = [model.prompt_for("Listen for the whistle.")] * 2, [model.prompt_for("")] * 2
    vectors = contrast_vectors(model, speech, a, b)
    plain = audio_attention(model, speech, b, layers=[1]).weights
    with steering(model, vectors, 0.0, layers=[0]):
        zero = audio_attention(model, speech, b, layers=[1]).weights
    with steering(model, {0: vectors[0] / vectors[0].norm() * 50}, 1.0):
        moved = audio_attention(model, speech, b, layers=[1]).weights
    assert torch.equal(zero, plain)
    assert float((moved - plain).abs().max()) > 1e-4


# ------------------------------------------------------------------------------ the CLIs on Qwen2-Audio
@pytest.fixture(scope="module")
def qwen(bundles):
    return bundles("qwen2_audio")


def _evaluate(bundle, tmp_path, name: str, *options: str) -> list[str]:
    from ahamask.config import load_decode_config
    from ahamask.evaluation.evaluator import evaluate

    cfg = load_decode_config(
        bundle / "decode_config.yaml",
        [f"output_path={tmp_path / name}", "generate.num_beams=1", "generate.max_new_tokens=6", *options],
    )
    return [p["output"] for p in json.loads(evaluate(cfg).read_text())["prediction"]]


def test_find_audio_heads_and_evaluate_with_its_direction(qwen, tmp_path):
    from ahamask.analysis.audio_heads_cli import main
    from ahamask.analysis.silence_steering import load_direction
    from ahamask.synth.mcq_world import build_mcq_world

    world = build_mcq_world(tmp_path / "w", seed=0, n_clips={"train": 0, "calib": 0, "valid": 0, "test": 3})
    out, path = tmp_path / "heads.json", tmp_path / "d.safetensors"
    args = ["-c", str(qwen / "decode_config.yaml"), "--manifest", str(world.manifests["test"])]
    args += [
        "--k",
        "2",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--direction",
        str(path),
        "--normalise",
        "unit",
        "--options",
        "model.whisper_path=",  # a real Qwen2-Audio config names model_path only
    ]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["n"] == 6 and len(report["specialist_heads"]) == 2
    assert [r["rank"] for r in report["head_table"]] == list(range(1, 9))  # 2 layers x 4 heads, ranked
    assert math.isfinite(report["mean_audio_effect"]) and 0.0 <= report["accuracy"] <= 1.0
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    direction = load_direction(path)
    assert direction.layer == 1 and math.isclose(direction.norm, 1.0, rel_tol=1e-5)
    assert direction.meta["model"] == str(qwen / "model")
    # evaluate.py decodes with the direction: strength 0 is the unsteered run, a strength changes answers.
    plain = _evaluate(qwen, tmp_path, "plain.json")
    zero = _evaluate(qwen, tmp_path, "zero.json", f"steering_path={path}", "steering_strength=0")
    steered = _evaluate(qwen, tmp_path, "steered.json", f"steering_path={path}", "steering_strength=8")
    assert zero == plain and steered != plain


def test_steering_vectors_build_and_localize(qwen, tmp_path):
    from omegaconf import OmegaConf

    from ahamask.analysis.steering_vectors_cli import main
    from ahamask.config import load_decode_config
    from ahamask.synth.localization_world import build_localization_world

    world = build_localization_world(tmp_path / "w", seed=0, n_train=0, n_calib=4, n_test=2, clip_seconds=3.0)
    decode = OmegaConf.load(qwen / "decode_config.yaml")
    del decode.model["whisper_path"], decode.model["llama_path"]  # as a real Qwen2-Audio config: model_path
    OmegaConf.save(decode, tmp_path / "decode_config.yaml")
    options = [
        f"decode_config={tmp_path / 'decode_config.yaml'}",
        f"world_dir={tmp_path / 'w'}",
        f"out_dir={tmp_path / 'out'}",
        "plots=1",
        "steering.alphas=[0.0,4.0]",
        "steering.calibration=all",
        "batch_size=8",
    ]
    cfg = str(Path(__file__).resolve().parents[3] / "configs" / "experiments" / "localization.yaml")
    assert main(["localize", "-c", cfg, "--options", *options]) == 2  # no vectors yet: one error line
    assert main(["build", "-c", cfg, "--options", *options]) == 0
    vectors, meta = load_vectors(tmp_path / "out" / "vectors" / "whistle.safetensors")
    assert meta["model"]["arch"] == "qwen2_audio" and meta["model"]["hidden_size"] == 64
    assert meta["inject_layers"] == [0] and sorted(vectors) == [0, 1] and meta["n_calibration"] == 4
    # The file holds what contrast_vectors gives on the calibration clips (A: the event, B: no instruction).
    from ahamask.analysis.localization_experiment import _encode_manifest

    model = load_model(qwen)[0]
    assert load_decode_config(qwen / "decode_config.yaml").model.arch == "qwen2_audio"
    _, embeds = _encode_manifest(model, world.manifests["calib"]["tags"], 8)
    speech = torch.stack(list(embeds.values()))
    again = contrast_vectors(
        model, speech, [model.prompt_for("Listen for the whistle.")] * 4, [model.prompt_for("")] * 4
    )
    assert all(torch.allclose(vectors[layer], again[layer], atol=1e-6) for layer in (0, 1))
    assert main(["localize", "-c", cfg, "--options", *options]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    methods = report["methods"]
    for name in ("steered read-out", "unsteered read-out", "direct prompting", "random interval"):
        assert 0.0 <= methods[name]["overlap"] <= 1.0 and 0.0 <= methods[name]["iou"] <= 1.0
    assert (
        report["read_layers"] == [1]
        and report["inject_layers"] == [0]
        and set(report["alpha_sweep"]) == {"0", "4"}
    )
    assert report["alpha_sweep"]["0"] == methods["unsteered read-out"]
    assert "steered read-out" in (tmp_path / "out" / "table.txt").read_text()
    assert (tmp_path / "out" / "plots" / "example_000.png").read_bytes()[:4] == b"\x89PNG"


def test_a_manifest_of_clips_of_other_lengths_stacks_with_its_counts(bundles, arch, model):
    from ahamask.analysis.localization_experiment import _encode_manifest

    manifest = bundles(arch) / "data" / "test.json"  # clips of 1.77 .. 2.37 s
    _, pairs = _encode_manifest(model, manifest, 2)
    _, alone = _encode_manifest(model, manifest, 1)
    stacked = torch.stack(list(pairs.values()))
    counts = [audio_token_counts(row[None])[0] for row in alone.values()]
    assert len(set(counts)) > 1 and stacked.shape[1] == max(counts)
    assert audio_token_counts(stacked) == counts
