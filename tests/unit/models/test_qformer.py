"""The Q-Former (transformers' Blip2QFormerModel): official keys load strictly; outputs equal BERT's."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ahamask.models.qformer import build_qformer, module_name, official_name

_PREFIX = "speech_Qformer."


def _official_qformer_state(tiny_bundle) -> dict[str, torch.Tensor]:
    """The Q-Former tensors of the tiny bundle's official-layout checkpoint, prefix removed."""
    state = torch.load(tiny_bundle / "salmonn.pth", weights_only=True)["model"]
    return {k: v for k, v in state.items() if k.startswith(_PREFIX)}


def _bert_reference(
    state: dict[str, torch.Tensor],
    queries: torch.Tensor,
    audio: torch.Tensor,
    audio_mask: torch.Tensor | None,
    n_heads: int,
    n_layers: int,
) -> torch.Tensor:
    """SALMONN's BERT Q-Former written from the official keys, op for op as the hand-written module was.

    LayerNorm on the queries; per layer self-attention, cross-attention with BERT's additive mask (0 where
    attended, float min where padded), then the query feed-forward block; post-LN residuals, exact GELU.
    """

    def w(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return state[f"{_PREFIX}{name}.weight"], state[f"{_PREFIX}{name}.bias"]

    def layer_norm(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], *w(name), eps=1e-12)

    def attend(x: torch.Tensor, context: torch.Tensor, block: str, mask: torch.Tensor | None) -> torch.Tensor:
        batch, length, width = x.shape
        head_dim = width // n_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, -1, n_heads, head_dim).transpose(1, 2)

        q = split(F.linear(x, *w(f"{block}.self.query")))
        k = split(F.linear(context, *w(f"{block}.self.key")))
        v = split(F.linear(context, *w(f"{block}.self.value")))
        bias = None if mask is None else (1.0 - mask[:, None, None, :].to(q.dtype)) * torch.finfo(q.dtype).min
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1 / math.sqrt(head_dim))
        out = out.transpose(1, 2).reshape(batch, length, width)
        return layer_norm(F.linear(out, *w(f"{block}.output.dense")) + x, f"{block}.output.LayerNorm")

    hidden = layer_norm(queries, "bert.embeddings.LayerNorm")
    for i in range(n_layers):
        p = f"bert.encoder.layer.{i}."
        hidden = attend(hidden, hidden, p + "attention", None)
        hidden = attend(hidden, audio, p + "crossattention", audio_mask)
        ffn = F.gelu(F.linear(hidden, *w(p + "intermediate_query.dense")))
        hidden = layer_norm(
            F.linear(ffn, *w(p + "output_query.dense")) + hidden, p + "output_query.LayerNorm"
        )
    return hidden


def test_official_keys_load_strictly_and_outputs_equal_bert(tiny_bundle, tiny_decode_cfg):
    cfg = tiny_decode_cfg.model
    official = _official_qformer_state(tiny_bundle)
    weights = {k: v for k, v in official.items() if not k.endswith("position_ids")}  # a skipped buffer
    qformer = build_qformer(
        cfg.qformer_hidden_size,
        cfg.qformer_num_heads,
        cfg.qformer_intermediate_size,
        cfg.qformer_num_layers,
        encoder_width=official[f"{_PREFIX}bert.encoder.layer.0.crossattention.self.key.weight"].shape[1],
    ).eval()
    # strict=True: every official tensor has a home under the renamed key and nothing is left over
    qformer.load_state_dict({module_name(k)[len(_PREFIX) :]: v for k, v in weights.items()}, strict=True)

    gen = torch.Generator().manual_seed(0)
    queries = torch.randn(3, 1, cfg.qformer_hidden_size, generator=gen)
    audio = torch.randn(3, 17, qformer.config.encoder_hidden_size, generator=gen)
    padded = torch.ones(3, 17, dtype=torch.long)
    padded[1, 9:] = 0  # row 1 has 9 real frames, row 2 has 2, row 0 is unpadded
    padded[2, 2:] = 0
    for mask in (None, padded):
        with torch.no_grad():
            got = qformer(
                query_embeds=queries, encoder_hidden_states=audio, encoder_attention_mask=mask
            ).last_hidden_state
            want = _bert_reference(
                weights, queries, audio, mask, cfg.qformer_num_heads, cfg.qformer_num_layers
            )
        assert got.shape == want.shape == (3, 1, cfg.qformer_hidden_size)
        assert (got - want).abs().max().item() == 0.0, "padded" if mask is not None else "no mask"
    # the padding mask really acts: the padded rows' output changes without it
    with torch.no_grad():
        unmasked = qformer(query_embeds=queries, encoder_hidden_states=audio).last_hidden_state
        masked = qformer(
            query_embeds=queries, encoder_hidden_states=audio, encoder_attention_mask=padded
        ).last_hidden_state
    assert torch.equal(unmasked[0], masked[0]) and not torch.equal(unmasked[2], masked[2])


def test_the_key_map_is_a_bijection_over_the_official_keys(tiny_bundle, shared_tiny_model):
    official = set(_official_qformer_state(tiny_bundle)) - {f"{_PREFIX}bert.embeddings.position_ids"}
    modules = {n for n, _ in shared_tiny_model.named_parameters() if n.startswith(_PREFIX)}
    assert {module_name(k) for k in official} == modules
    assert {official_name(n) for n in modules} == official
    assert all(official_name(module_name(k)) == k for k in official)
    # names outside the Q-Former pass through unchanged, both ways
    for name in ("speech_llama_proj.weight", "beats.encoder.layers.0.self_attn.k_proj.weight"):
        assert module_name(name) == official_name(name) == name


@pytest.mark.parametrize(
    ("official", "module"),
    [
        ("speech_Qformer.bert.embeddings.LayerNorm.bias", "speech_Qformer.layernorm.bias"),
        (
            "speech_Qformer.bert.encoder.layer.1.attention.self.value.weight",
            "speech_Qformer.encoder.layer.1.attention.attention.value.weight",
        ),
        (
            "speech_Qformer.bert.encoder.layer.0.crossattention.output.LayerNorm.weight",
            "speech_Qformer.encoder.layer.0.crossattention.output.LayerNorm.weight",
        ),
    ],
)
def test_the_three_renames(official, module):
    assert module_name(official) == module
    assert official_name(module) == official
