"""Audio-silence steering (ahamask.analysis.silence_steering) on the tiny SALMONN."""

from __future__ import annotations

import pytest
import torch

from ahamask.analysis.listening import answer_logprobs, silence_like
from ahamask.analysis.residual import capture_residual, prompt_forward
from ahamask.analysis.silence_steering import (
    audio_silence_direction,
    beta_sweep,
    load_direction,
    random_direction,
    rescaled,
    save_direction,
    steered_accuracy,
    steering_context,
)
from ahamask.masking.hf_layout import attention, decoder_layers

from ..probe_helpers import tiny_probe_batches


@pytest.fixture(scope="module")
def batches(tiny_bundle, tiny_decode_cfg, shared_tiny_model):
    return tiny_probe_batches(tiny_bundle, tiny_decode_cfg, shared_tiny_model)


def _outputs(model, batch, silent: bool):
    samples = silence_like(batch.samples) if silent else batch.samples
    inputs = model.prompt_inputs(model.encode_audio(samples), batch.prompts)
    return inputs, prompt_forward(model, inputs, output_hidden_states=True)


def test_residual_direction_is_the_mean_difference(shared_tiny_model, batches) -> None:
    model = shared_tiny_model
    d = audio_silence_direction(model, batches, layer=0)
    # By hand: transformers' own record of layer 0's output at the last position, four rows averaged.
    diffs = []
    for batch in batches:
        audio = _outputs(model, batch, False)[1].hidden_states[1][:, -1]
        quiet = _outputs(model, batch, True)[1].hidden_states[1][:, -1]
        diffs.append(audio - quiet)
    expected = torch.cat(diffs).mean(0)
    torch.testing.assert_close(d.vector, expected, atol=1e-6, rtol=1e-5)
    assert d.layer == 0 and d.meta["n_calibration"] == 4 and d.meta["source"] == "residual"
    assert d.meta["raw_norm"] == pytest.approx(float(expected.norm()), rel=1e-5)
    final = audio_silence_direction(model, batches, normalise="unit")
    assert final.layer == model.geometry.n_layers - 1  # the documented default: the final layer
    assert final.norm == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="source"):
        audio_silence_direction(model, batches, source="mlp")
    with pytest.raises(ValueError, match="heads"):
        audio_silence_direction(model, batches, source="heads")


def test_heads_direction_adds_up_to_the_attention_output(shared_tiny_model, batches) -> None:
    model = shared_tiny_model
    geo = model.geometry
    layer = 1
    every = audio_silence_direction(
        model, batches, source="heads", heads=[(layer, h) for h in range(geo.n_heads)]
    )
    # The writes of all heads of a layer are its attention output minus the o_proj bias (none here).
    captured = {}
    hook = attention(decoder_layers(model.decoder)[layer]).register_forward_hook(
        lambda m, a, out: captured.__setitem__("x", out[0][:, -1].detach())
    )
    diffs = []
    try:
        for batch in batches:
            _outputs(model, batch, False)
            audio = captured["x"]
            _outputs(model, batch, True)
            diffs.append(audio - captured["x"])
    finally:
        hook.remove()
    torch.testing.assert_close(every.vector, torch.cat(diffs).mean(0), atol=1e-6, rtol=1e-5)
    a = audio_silence_direction(model, batches, source="heads", heads=[(0, 1)])
    b = audio_silence_direction(model, batches, source="heads", heads=[(1, 2)])
    ab = audio_silence_direction(model, batches, source="heads", heads=[(0, 1), (1, 2)])
    torch.testing.assert_close(ab.vector, a.vector + b.vector, atol=1e-6, rtol=1e-5)
    assert ab.meta["heads"] == [[0, 1], [1, 2]]


def test_file_round_trip_and_bad_file(shared_tiny_model, batches, tmp_path) -> None:
    d = audio_silence_direction(shared_tiny_model, batches, built_by="unit test")
    path = save_direction(tmp_path / "dir.safetensors", d)
    back = load_direction(path)
    assert torch.equal(back.vector, d.vector) and back.layer == d.layer
    assert back.meta["built_by"] == "unit test" and back.meta["n_calibration"] == 4
    assert back.meta["model"] == str(shared_tiny_model.cfg.llama_path)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="junk"):
        load_direction(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError):
        load_direction(tmp_path / "missing.safetensors")


def test_steering_zero_is_identical_and_beta_moves_the_final_representation(
    shared_tiny_model, batches, tmp_path
) -> None:
    model = shared_tiny_model
    d = audio_silence_direction(model, batches)
    path = save_direction(tmp_path / "d.safetensors", d)
    batch = batches[0]
    audio = model.encode_audio(batch.samples)
    plain = answer_logprobs(model, audio, batch.prompts)
    with steering_context(model, path, 0.0):
        zero = answer_logprobs(model, audio, batch.prompts)
    assert torch.equal(plain, zero)
    beta = 5.0
    inputs = model.prompt_inputs(audio, batch.prompts)
    h = capture_residual(model, inputs, [d.layer])[d.layer]
    base = model.decoder.get_base_model()
    expected = base.lm_head(base.model.norm(h + beta * d.vector)).log_softmax(-1)
    with steering_context(model, path, beta):
        steered = answer_logprobs(model, audio, batch.prompts)
    torch.testing.assert_close(steered, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(steered, plain)


def test_controls_and_sweep(shared_tiny_model, batches) -> None:
    model = shared_tiny_model
    d = audio_silence_direction(model, batches)
    r = random_direction(d, seed=3)
    assert r.norm == pytest.approx(d.norm, rel=1e-5) and r.meta["source"] == "random"
    assert abs(float(torch.nn.functional.cosine_similarity(r.vector, d.vector, dim=0))) < 0.9
    assert rescaled(r, 2.0).norm == pytest.approx(2.0, rel=1e-5)
    sweep = beta_sweep(model, batches, {"audio": d, "random": r}, [0.0, 50.0])
    unsteered = steered_accuracy(model, batches, None, 0.0)["accuracy"]
    assert sweep["audio"][0.0] == unsteered and sweep["random"][0.0] == unsteered
    assert set(sweep["audio"]) == {0.0, 50.0}
