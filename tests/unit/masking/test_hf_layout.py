"""Every assumption ahamask makes about transformers' and peft's module layout, checked on the installed
versions. A failure here names the attribute that moved: fix ``ahamask/masking/hf_layout.py`` (the only module
that reads them), not the callers."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from ahamask.masking import hf_layout

ARCHS = {
    "llama-mha": (LlamaForCausalLM, LlamaConfig, 4),
    "llama-gqa": (LlamaForCausalLM, LlamaConfig, 2),
    "qwen2-gqa": (Qwen2ForCausalLM, Qwen2Config, 1),
}


def _model(arch: str, attn: str = "eager", lora_targets: tuple[str, ...] = ()) -> torch.nn.Module:
    cls, config_cls, kv = ARCHS[arch]
    torch.manual_seed(0)
    config = config_cls(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv,
        attn_implementation=attn,
    )
    model = cls(config).eval()
    if lora_targets:
        model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=list(lora_targets)))
    return model


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_decoder_layers_are_model_model_layers(arch):
    model = _model(arch)
    assert hf_layout.decoder_layers(model) is model.model.layers, (
        "transformers moved the decoder layers: decoder_layers() no longer finds model.model.layers"
    )
    wrapped = _model(arch, lora_targets=("q_proj", "v_proj"))
    assert hf_layout.decoder_layers(wrapped) is wrapped.base_model.model.model.layers


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_o_proj_input_is_the_heads_concatenated(arch, attn):
    """Zeroing head h's slice of the o_proj input must equal recomputing with that head's query zeroed."""
    model = _model(arch, attn)
    layer = hf_layout.decoder_layers(model)[0]
    n_heads, head_dim = hf_layout.attention_geometry(hf_layout.attention(layer))
    assert (n_heads, head_dim) == (4, 8), (
        "attention modules no longer expose config.num_attention_heads/head_dim"
    )
    seen = {}
    handle = hf_layout.output_projection(layer).register_forward_pre_hook(
        lambda module, args: seen.setdefault("x", args[0])
    )
    ids = torch.randint(0, 64, (1, 5))
    with torch.no_grad():
        model(ids)
    handle.remove()
    assert "x" in seen, "self_attn.o_proj is no longer called with positional input (hooks see nothing)"
    assert seen["x"].shape == (1, 5, n_heads * head_dim), (
        "o_proj input is no longer [batch, pos, heads*head_dim]"
    )
    # Zero the values of KV head 0: exactly the slices of the query heads reading it (heads 0 .. groups-1,
    # in order) become zero and every other slice stays as it was.
    before = seen.pop("x")
    attn_module = hf_layout.attention(layer)
    groups = n_heads // hf_layout.kv_heads(attn_module, n_heads)
    with torch.no_grad():
        attn_module.v_proj.weight[:head_dim] = 0
        if attn_module.v_proj.bias is not None:
            attn_module.v_proj.bias[:head_dim] = 0
        handle = hf_layout.output_projection(layer).register_forward_pre_hook(
            lambda module, args: seen.setdefault("x", args[0])
        )
        model(ids)
        handle.remove()
    after = seen["x"].reshape(1, 5, n_heads, head_dim)
    assert torch.equal(after[:, :, :groups], torch.zeros_like(after[:, :, :groups])), (
        "o_proj input is no longer the per-head outputs concatenated in head order"
    )
    assert torch.allclose(
        after[:, :, groups:], before.reshape(1, 5, n_heads, head_dim)[:, :, groups:], atol=1e-6
    )


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_attention_reads_its_own_query_group_count(arch):
    model = _model(arch)
    attn = hf_layout.attention(hf_layout.decoder_layers(model)[0])
    _, _, kv = ARCHS[arch]
    assert hf_layout.kv_heads(attn, 4) == kv, (
        "config.num_key_value_heads is no longer on the attention module"
    )
    assert getattr(attn, "num_key_value_groups", None) == 4 // kv, (
        "LlamaAttention/Qwen2Attention no longer has num_key_value_groups: pruning cannot set the GQA ratio"
    )


def test_ffn_layout():
    layer = hf_layout.decoder_layers(_model("llama-mha"))[0]
    assert isinstance(hf_layout.feed_forward_output(layer), torch.nn.Linear), "mlp.down_proj moved"
    assert hf_layout.feed_forward(layer) is layer.mlp


def test_peft_lora_layout():
    model = _model("llama-mha", lora_targets=("q_proj", "o_proj"))
    layer = hf_layout.decoder_layers(model)[0]
    o_proj = hf_layout.output_projection(layer)
    base = hf_layout.base_linear(o_proj)
    assert isinstance(base, torch.nn.Linear) and base is not o_proj, (
        "peft LoRA layers no longer keep base_layer"
    )
    a, b = hf_layout.lora_input_linears(o_proj), hf_layout.lora_output_linears(o_proj)
    assert len(a) == 1 and a[0].in_features == 32, "peft LoRA layers no longer keep lora_A as a ModuleDict"
    assert len(b) == 1 and b[0].out_features == 32, "peft LoRA layers no longer keep lora_B as a ModuleDict"
    assert not hf_layout.is_merged(o_proj) and not hf_layout.has_dora(o_proj)
    model.merge_adapter()
    assert hf_layout.is_merged(o_proj), "peft LoRA layers no longer report merged=True after merge_adapter()"
    # A plain Linear is its own base and has no adapters.
    plain = hf_layout.output_projection(hf_layout.decoder_layers(_model("llama-mha"))[0])
    assert hf_layout.base_linear(plain) is plain and hf_layout.lora_input_linears(plain) == []
