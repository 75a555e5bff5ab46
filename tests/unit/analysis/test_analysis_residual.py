"""Residual-stream capture and steering (ahamask.analysis.residual) on the tiny SALMONN."""

from __future__ import annotations

import pytest
import torch

from ahamask.analysis.residual import add_to_residual, capture_residual, position_ids_for, prompt_forward
from ahamask.masking.hf_layout import decoder_layers

N_NEW = 4


@pytest.fixture(scope="module")
def inputs(shared_tiny_model):
    model = shared_tiny_model
    speech = torch.randn(2, 6, 64, generator=torch.Generator().manual_seed(1))
    return model.prompt_inputs(speech, [model.prompt_for(""), model.prompt_for("hello world tiny tokenizer")])


def _vector(scale: float = 3.0, seed: int = 2) -> torch.Tensor:
    return scale * torch.randn(64, generator=torch.Generator().manual_seed(seed))


def _generate(model, inputs):
    tok = model.llama_tokenizer
    with torch.no_grad():
        return model.decoder.generate(
            inputs_embeds=inputs.embeds,
            attention_mask=inputs.attention_mask,
            max_new_tokens=N_NEW,
            min_new_tokens=N_NEW,
            do_sample=False,
            num_beams=1,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )


def test_capture_equals_hidden_states(shared_tiny_model, inputs) -> None:
    out = prompt_forward(shared_tiny_model, inputs, output_hidden_states=True)
    got = capture_residual(shared_tiny_model, inputs, [0, 1])
    # hidden_states[l + 1] is the output of layer l, except the last, reported after the final norm.
    assert torch.equal(got[0], out.hidden_states[1][:, -1])
    final_norm = shared_tiny_model.decoder.get_base_model().model.norm
    torch.testing.assert_close(final_norm(got[1]), out.hidden_states[2][:, -1])
    spans = capture_residual(shared_tiny_model, inputs, [0], position="mean_span")
    expected = torch.stack(
        [out.hidden_states[1][i, s:e].mean(0) for i, (s, e) in enumerate(inputs.audio_spans)]
    )
    torch.testing.assert_close(spans[0], expected)
    every = capture_residual(shared_tiny_model, inputs, [0], position="all")
    assert torch.equal(every[0], out.hidden_states[1])


def test_scale_zero_is_bit_identical(shared_tiny_model, inputs) -> None:
    plain = _generate(shared_tiny_model, inputs)
    with add_to_residual(shared_tiny_model, {0: _vector(), 1: _vector(seed=3)}, scale=0.0):
        zero = _generate(shared_tiny_model, inputs)
    assert torch.equal(plain.sequences, zero.sequences)
    for a, b in zip(plain.logits, zero.logits, strict=True):
        assert torch.equal(a, b)
    with add_to_residual(shared_tiny_model, {1: _vector()}, scale=1.0):
        steered = _generate(shared_tiny_model, inputs)
    assert not torch.equal(plain.logits[0], steered.logits[0])
    # Hooks are gone after the context.
    again = _generate(shared_tiny_model, inputs)
    assert torch.equal(plain.logits[-1], again.logits[-1])


def test_only_the_last_position_and_later_layers_change(shared_tiny_model, inputs) -> None:
    model = shared_tiny_model
    plain = capture_residual(model, inputs, [0, 1], position="all")
    with add_to_residual(model, {0: _vector()}, scale=1.0):
        steered = capture_residual(model, inputs, [0, 1], position="all")
    for layer in (0, 1):
        assert torch.equal(
            plain[layer][:, :-1], steered[layer][:, :-1]
        )  # causal: earlier positions untouched
        assert (plain[layer][:, -1] - steered[layer][:, -1]).abs().max() > 0.1
    torch.testing.assert_close(
        steered[0][:, -1] - plain[0][:, -1], _vector().expand(2, -1), atol=1e-5, rtol=0
    )
    with add_to_residual(model, {1: _vector()}, scale=0.5):
        late = capture_residual(model, inputs, [0, 1], position="all")
    assert torch.equal(late[0], plain[0])  # a vector at layer 1 leaves layer 0 alone
    torch.testing.assert_close(
        late[1][:, -1] - plain[1][:, -1], 0.5 * _vector().expand(2, -1), atol=1e-5, rtol=0
    )
    with add_to_residual(model, {0: _vector()}, scale=1.0, positions="all"):
        everywhere = capture_residual(model, inputs, [0], position="all")
    torch.testing.assert_close(everywhere[0] - plain[0], _vector().expand_as(plain[0]), atol=1e-5, rtol=0)


def _reference_logits(model, inputs, new_ids, layer, vector, steer_from):
    """No-cache forward over prompt + generated tokens, adding ``vector`` at positions >= steer_from."""
    embeds = torch.cat([inputs.embeds, model.decoder.get_input_embeddings()(new_ids)], dim=1)
    mask = torch.cat([inputs.attention_mask, torch.ones_like(new_ids)], dim=1)
    length = inputs.embeds.shape[1]
    positions = torch.zeros(embeds.shape[1], dtype=torch.bool)
    positions[steer_from] = True

    def hook(module, args, output):
        return output + positions[None, :, None] * vector

    handle = decoder_layers(model.decoder)[layer].register_forward_hook(hook)
    try:
        with torch.no_grad():
            out = model.decoder(
                inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids_for(mask)
            )
    finally:
        handle.remove()
    return out.logits[:, length - 1 : -1]


@pytest.mark.parametrize("prefill_only", [False, True])
def test_generate_with_kv_cache_matches_a_full_forward(shared_tiny_model, inputs, prefill_only) -> None:
    model = shared_tiny_model
    vector = _vector()
    with add_to_residual(model, {0: vector}, scale=1.0, prefill_only=prefill_only):
        out = _generate(model, inputs)
    length = inputs.embeds.shape[1]
    steer = [length - 1] if prefill_only else list(range(length - 1, length + N_NEW - 1))
    ref = _reference_logits(model, inputs, out.sequences, 0, vector, steer)
    got = torch.stack(out.logits, dim=1)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    # The other rule gives different logits after the first token (the check can tell them apart).
    other = [length - 1] if not prefill_only else list(range(length - 1, length + N_NEW - 1))
    wrong = _reference_logits(model, inputs, out.sequences, 0, vector, other)
    assert not torch.allclose(got[:, 1:], wrong[:, 1:], atol=1e-3)


def test_bad_arguments(shared_tiny_model, inputs) -> None:
    with pytest.raises(ValueError, match="layers"):
        capture_residual(shared_tiny_model, inputs, [7])
    with pytest.raises(ValueError, match="position"):
        capture_residual(shared_tiny_model, inputs, [0], position="first")
    with pytest.raises(ValueError, match="vectors"):
        with add_to_residual(shared_tiny_model, {0: torch.zeros(3)}):
            pass
    with pytest.raises(ValueError, match="positions"):
        with add_to_residual(shared_tiny_model, {0: _vector()}, positions="middle"):
            pass
