"""Contrast steering vectors on the tiny SALMONN: zero for identical instructions, alpha 0 bit-identical,
files round-trip with their metadata, and steering moves the answer-position state by alpha * v."""

from __future__ import annotations

import pytest
import torch

from ahamask.analysis.contrast_steering import (
    contrast_vectors,
    load_vectors,
    model_identity,
    normalize_vectors,
    save_vectors,
    steering,
    steering_context,
)
from ahamask.analysis.residual import capture_residual, prompt_forward


@pytest.fixture(scope="module")
def speech(shared_tiny_model):
    g = torch.Generator().manual_seed(0)
    n, hidden = 3, shared_tiny_model.decoder.get_input_embeddings().weight.shape[-1]
    return torch.randn(n, 6, hidden, generator=g) * 0.1


def _prompts(model, text, n):
    return [model.prompt_for(text)] * n


def test_identical_instructions_give_zero_vectors(shared_tiny_model, speech):
    model = shared_tiny_model
    same = _prompts(model, "Recognize the speech.", 3)
    for position in ("last", "instruction_mean"):
        v = contrast_vectors(model, speech, same, same, position=position)
        assert sorted(v) == list(range(model.geometry.n_layers))
        assert all(float(x.abs().max()) == 0.0 for x in v.values())


def test_vector_is_the_mean_residual_difference(shared_tiny_model, speech):
    model = shared_tiny_model
    a, b = _prompts(model, "What is the gender of the speaker?", 3), _prompts(model, "", 3)
    v = contrast_vectors(model, speech, a, b, layers=[0, 1], batch_size=2)  # two batches: 2 + 1 clips
    ra = capture_residual(model, model.prompt_inputs(speech, a), [1])[1]
    rb = capture_residual(model, model.prompt_inputs(speech, b), [1])[1]
    torch.testing.assert_close(v[1], (ra - rb).mean(0), atol=1e-5, rtol=1e-5)
    assert float(v[1].norm()) > 1e-3  # the two instructions leave different states
    # instruction_mean differs from last (it averages over the whole text after the audio).
    m = contrast_vectors(model, speech, a, b, layers=[1], position="instruction_mean")
    assert not torch.allclose(m[1], v[1])
    unit = normalize_vectors(v, "unit")
    assert float(unit[1].norm()) == pytest.approx(1.0, abs=1e-5)


def test_alpha_zero_is_bit_identical_and_alpha_shifts_the_state(shared_tiny_model, speech):
    model = shared_tiny_model
    prompts = _prompts(model, "Describe the speech.", 3)
    inputs = model.prompt_inputs(speech, prompts)
    g = torch.Generator().manual_seed(1)
    vectors = {0: torch.randn(speech.shape[-1], generator=g)}
    plain = prompt_forward(model, inputs).logits
    with steering(model, vectors, 0.0):
        zero = prompt_forward(model, inputs).logits
    assert torch.equal(plain, zero)
    with steering(model, vectors, 2.0):
        moved = prompt_forward(model, inputs).logits
        state = capture_residual(model, inputs, [0])[0]
    base = capture_residual(model, inputs, [0])[0]
    torch.testing.assert_close(state - base, 2.0 * vectors[0].expand_as(base), atol=1e-5, rtol=1e-5)
    assert not torch.equal(plain[:, -1], moved[:, -1])
    # Positions before the last are untouched in layer 0's own output (last-position steering).
    torch.testing.assert_close(plain[:, 0], moved[:, 0])
    # Decoding (prefill + every step under the KV cache) with alpha 0 gives the same text.
    gen = {"max_new_tokens": 4, "num_beams": 1}
    decoded = model.generate({}, gen, prompts=prompts, speech_embeds=speech)
    with steering(model, vectors, 0.0):
        assert model.generate({}, gen, prompts=prompts, speech_embeds=speech) == decoded


def test_file_round_trip_and_steering_context(shared_tiny_model, speech, tmp_path):
    model = shared_tiny_model
    g = torch.Generator().manual_seed(2)
    vectors = {layer: torch.randn(speech.shape[-1], generator=g) for layer in range(model.geometry.n_layers)}
    meta = {
        "model": model_identity(model),
        "inject_layers": [1],
        "position": "last",
        "positions": "last",
        "prefill_only": False,
        "instruction_a": "Listen for the {}.",
        "instruction_b": "",
        "n_calibration": 3,
    }
    path = save_vectors(tmp_path / "v.safetensors", vectors, meta)
    loaded, read = load_vectors(path)
    assert all(torch.equal(loaded[k], vectors[k]) for k in vectors)
    assert read["inject_layers"] == [1] and read["layers"] == sorted(vectors) and read["instruction_b"] == ""
    inputs = model.prompt_inputs(speech, _prompts(model, "", 3))
    plain = prompt_forward(model, inputs).logits
    with steering_context(model, path, 0.0):
        assert torch.equal(prompt_forward(model, inputs).logits, plain)
    with steering_context(model, path, 1.0):
        state = capture_residual(model, inputs, [0, 1])
    base = capture_residual(model, inputs, [0, 1])
    torch.testing.assert_close(state[0], base[0])  # only layer 1 (inject_layers) is steered
    assert not torch.allclose(state[1], base[1])
    with steering_context(model, None, 5.0):
        assert torch.equal(prompt_forward(model, inputs).logits, plain)
    bad = save_vectors(tmp_path / "w.safetensors", {0: torch.ones(7)}, {"inject_layers": [0]})
    with pytest.raises(ValueError, match="hidden size"):
        steering_context(model, bad, 1.0)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="junk.safetensors"):
        load_vectors(tmp_path / "junk.safetensors")
