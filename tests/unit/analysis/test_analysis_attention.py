"""The attention read-out of the listening probe (ahamask.analysis.attention) on the tiny SALMONN."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from ahamask.analysis.attention import audio_attention, transformers_model
from ahamask.analysis.residual import position_ids_for
from ahamask.masking.hf_layout import attention, decoder_layers


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    return torch.randn(2, 6, 64, generator=torch.Generator().manual_seed(0))


def _prompts(model) -> list[str]:
    # Different instruction lengths: row 0 is left-padded.
    return [model.prompt_for(""), model.prompt_for("hello world this is a tiny tokenizer")]


def test_rows_are_distributions_and_padding_gets_nothing(shared_tiny_model, speech) -> None:
    model = shared_tiny_model
    result = audio_attention(model, speech, _prompts(model), keep_rows=True)
    geo = model.geometry
    assert result.weights.shape == (2, geo.n_layers, geo.n_heads, 6)
    assert result.layers == list(range(geo.n_layers))
    torch.testing.assert_close(result.total_mass, torch.ones(2, geo.n_layers, geo.n_heads), atol=1e-5, rtol=0)
    inputs = model.prompt_inputs(speech, _prompts(model))
    pad = int((inputs.attention_mask[0] == 0).sum())
    assert pad > 0
    assert torch.all(result.rows[0, :, :, :pad] == 0)
    assert torch.all(result.audio_mass > 0) and torch.all(result.audio_mass < 1)
    # The implementation the model was built with is back.
    assert transformers_model(model.decoder).config._attn_implementation == "sdpa"


def test_padded_row_equals_the_row_alone(shared_tiny_model, speech) -> None:
    model = shared_tiny_model
    prompts = _prompts(model)
    both = audio_attention(model, speech, prompts)
    for i in range(2):
        alone = audio_attention(model, speech[i : i + 1], prompts[i : i + 1])
        torch.testing.assert_close(both.weights[i], alone.weights[0], atol=1e-6, rtol=1e-5)
        assert alone.audio_spans[0][1] - alone.audio_spans[0][0] == 6


def test_first_layer_matches_a_hand_computation(shared_tiny_model, speech) -> None:
    model = shared_tiny_model
    prompts = _prompts(model)
    inputs = model.prompt_inputs(speech, prompts)
    layer = decoder_layers(model.decoder)[0]
    attn = attention(layer)
    with torch.no_grad():
        x = layer.input_layernorm(inputs.embeds)
        batch, length, _ = x.shape
        q = attn.q_proj(x).view(batch, length, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(batch, length, -1, attn.head_dim).transpose(1, 2)
        rotary = transformers_model(model.decoder).model.rotary_emb
        cos, sin = rotary(x, position_ids_for(inputs.attention_mask))
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        scores = (q[:, :, -1:] @ k.transpose(2, 3))[:, :, 0] / attn.head_dim**0.5  # [batch, heads, keys]
        scores = scores.masked_fill(inputs.attention_mask[:, None, :] == 0, float("-inf"))
        probs = scores.softmax(-1)
    expected = torch.stack([probs[i, :, s:e].sum(-1) for i, (s, e) in enumerate(inputs.audio_spans)])
    result = audio_attention(model, speech, prompts, layers=[0])
    assert result.layers == [0]
    torch.testing.assert_close(result.audio_mass[:, 0], expected, atol=1e-5, rtol=1e-4)


def test_sdpa_model_reads_the_same_as_an_eager_model(tiny_model, shared_tiny_model, speech) -> None:
    eager = tiny_model  # a second copy of the same weights
    transformers_model(eager.decoder).set_attn_implementation("eager")
    prompts = _prompts(eager)
    a = audio_attention(shared_tiny_model, speech, prompts, layers=[1])
    b = audio_attention(eager, speech, prompts, layers=[1])
    assert torch.equal(a.weights, b.weights)
    # And the eager model's own output_attentions agrees (transformers' reference).
    inputs = eager.prompt_inputs(speech, prompts)
    with torch.no_grad():
        out = eager.decoder(
            inputs_embeds=inputs.embeds,
            attention_mask=inputs.attention_mask,
            position_ids=position_ids_for(inputs.attention_mask),
            output_attentions=True,
        )
    ref = out.attentions[1][:, :, -1]
    expected = torch.stack([ref[i, :, s:e] for i, (s, e) in enumerate(inputs.audio_spans)])
    torch.testing.assert_close(b.weights[:, 0], expected, atol=1e-6, rtol=1e-5)


def test_bad_layer_and_query(shared_tiny_model, speech) -> None:
    with pytest.raises(ValueError, match="layers"):
        audio_attention(shared_tiny_model, speech, _prompts(shared_tiny_model), layers=[5])
    with pytest.raises(ValueError, match="query"):
        audio_attention(shared_tiny_model, speech, _prompts(shared_tiny_model), query="first")
