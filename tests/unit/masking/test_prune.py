"""Pruned heads: the pruned model computes what the masked model computes, with fewer heads."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ahamask.masking.fold import FoldError
from ahamask.masking.hooks import decoder_layers, head_mask
from ahamask.masking.prune import LayerPlan, plan_pruning, prune_heads, pruned_plan

# 3 layers x 4 heads (+ FFN entry): layer 0 keeps nothing (one zero-output padding head stays so the stock
# attention keeps owning the KV cache), layer 1 keeps heads 0, 2 and 3, layer 2 keeps heads 1 and 2.
MASK = torch.tensor([0.0, 0, 0, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1])


def tiny_llama(n_kv_heads: int, attn: str = "sdpa", bias: bool = False) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=120,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=n_kv_heads,
        pad_token_id=0,
        attention_bias=bias,
        attn_implementation=attn,
    )
    model = LlamaForCausalLM(config).eval()
    if bias:
        with torch.no_grad():
            for layer in decoder_layers(model):
                layer.self_attn.o_proj.bias.normal_(0.0, 0.5)  # nn.Linear starts small; make it matter
    return model


@pytest.fixture()
def inputs():
    torch.manual_seed(3)
    ids = torch.randint(1, 120, (2, 10))
    attention = torch.ones_like(ids)
    attention[0, :3] = 0  # left padding, as SALMONN generates
    return ids, attention


def test_plans_for_mha_and_gqa():
    keep = MASK.reshape(3, 5)[:, :4].bool()
    assert plan_pruning(keep) == [
        LayerPlan(0, (0,), (0,), (0,)),
        LayerPlan(1, (0, 2, 3), (0, 2, 3), ()),
        LayerPlan(2, (1, 2), (1, 2), ()),
    ]
    # Two KV heads of two query heads each: layer 1 keeps 1 of group 0 and 2 of group 1, so group 0 is padded
    # with its masked head 1; layer 2 keeps one head in each group and needs no padding.
    gqa = plan_pruning(keep, n_kv_heads=2)
    assert gqa[1] == LayerPlan(1, (0, 1, 2, 3), (0, 1), (1,)) and gqa[1].groups == 2
    assert gqa[2] == LayerPlan(2, (1, 2), (0, 1), ()) and gqa[2].groups == 1
    # A KV head goes only when its whole group goes.
    drop_group = torch.tensor([[False, False, True, False]])
    assert plan_pruning(drop_group, n_kv_heads=2) == [LayerPlan(0, (2,), (1,), ())]
    assert plan_pruning(drop_group, n_kv_heads=1) == [LayerPlan(0, (2,), (0,), ())]
    with pytest.raises(ValueError, match="not a multiple"):
        plan_pruning(drop_group, n_kv_heads=3)


CASES = [(4, "sdpa", False), (2, "sdpa", False), (1, "sdpa", False), (2, "eager", False), (4, "eager", True)]


@pytest.mark.parametrize(("n_kv_heads", "attn", "bias"), CASES)
def test_pruned_model_equals_masked_model(inputs, n_kv_heads, attn, bias):
    ids, attention = inputs
    model = tiny_llama(n_kv_heads, attn, bias)
    gen = {"max_new_tokens": 6, "do_sample": False, "output_scores": True, "return_dict_in_generate": True}
    with torch.no_grad():
        with head_mask(model, MASK, logits=False):
            masked = model(ids, attention_mask=attention).logits
            masked_gen = model.generate(ids, attention_mask=attention, **gen)
        pruned = prune_heads(model, MASK)
        logits = pruned(ids, attention_mask=attention).logits
        pruned_gen = pruned.generate(ids, attention_mask=attention, **gen)
    assert torch.allclose(logits, masked, atol=1e-5)
    assert torch.equal(pruned_gen.sequences, masked_gen.sequences)
    # Scores of every step: a wrong KV-cache length in the fully masked layer 0 shows up here (about 5e-3 off).
    for a, b in zip(pruned_gen.scores, masked_gen.scores, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    # Layer 0 keeps one zero-output head in the stock attention module; the original is untouched.
    assert type(decoder_layers(pruned)[0].self_attn) is type(decoder_layers(model)[0].self_attn)
    assert decoder_layers(pruned)[0].self_attn.q_proj.weight.shape[0] == 8
    assert decoder_layers(model)[0].self_attn.q_proj.weight.shape[0] == 4 * 8


def test_pruned_sizes_and_parameter_count():
    model = tiny_llama(4)
    pruned = prune_heads(model, MASK)
    layers = decoder_layers(pruned)
    assert layers[1].self_attn.q_proj.weight.shape == (3 * 8, 32)
    assert layers[1].self_attn.o_proj.weight.shape == (32, 3 * 8)
    assert layers[2].self_attn.k_proj.weight.shape == (2 * 8, 32)
    # Each dropped head removes 4 matrices of 8 x 32; 7 of 12 heads are masked, 6 dropped (layer 0 keeps a
    # padding head).
    removed = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in pruned.parameters())
    assert removed == 6 * 4 * 8 * 32
    assert [p.query_heads for p in pruned_plan(pruned)] == [(0,), (0, 2, 3), (1, 2)]
    assert pruned_plan(model) is None


def test_salmonn_with_lora_prunes_to_the_same_answers(tiny_model, tiny_bundle):
    from torch.utils.data import DataLoader

    from ahamask.data.dataset import SALMONNDataset

    mask = torch.tensor([1.0, 0, 1, 0, 1, 0, 1, 1, 0, 1])  # 2 layers x 4 heads of the tiny bundle
    dataset = SALMONNDataset(tiny_bundle / "data" / "test.json", tiny_bundle / "whisper")
    samples = next(iter(DataLoader(dataset, batch_size=2, collate_fn=dataset.collater)))
    prompts = [tiny_model.prompt_for("")] * 2
    q_proj = decoder_layers(tiny_model.llama_model)[0].self_attn.q_proj
    assert q_proj.lora_B["default"].weight.abs().sum() > 0  # a trained LoRA that has to be sliced as well
    with torch.no_grad():
        with head_mask(tiny_model.decoder, mask):
            masked = tiny_model(samples, prompts=prompts)["logits"]
            masked_text = tiny_model.generate(samples, {"max_new_tokens": 6, "num_beams": 2}, prompts=prompts)
        pruned = prune_heads(tiny_model, mask)
        logits = pruned(samples, prompts=prompts)["logits"]
        text = pruned.generate(samples, {"max_new_tokens": 6, "num_beams": 2}, prompts=prompts)
    assert torch.allclose(logits, masked, atol=1e-5)
    assert text == masked_text
    sliced = decoder_layers(pruned.llama_model)[0].self_attn.q_proj
    assert sliced.lora_B["default"].weight.shape == (2 * 16, 8) and sliced.base_layer.weight.shape == (
        2 * 16,
        64,
    )


def test_in_place_pruning_and_refusals():
    model = tiny_llama(2)
    soft = MASK.clone()
    soft[5] = 0.5
    with pytest.raises(FoldError, match="only 0/1 masks"):
        prune_heads(model, soft)
    same = prune_heads(model, MASK, inplace=True)
    assert same is model and pruned_plan(model)[0].padded == (0,)
    with pytest.raises(ValueError, match="already pruned"):
        prune_heads(model, MASK)
