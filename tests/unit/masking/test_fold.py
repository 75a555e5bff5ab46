"""Folded masks: the o_proj columns of masked heads are zeroed inside the block and restored bit for bit."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ahamask.masking.fold import FoldError, fold_head_mask, head_columns, head_keep_grid
from ahamask.masking.hooks import ahamask_hook_count, decoder_layers, head_mask
from ahamask.masking.mask import MaskShapeError

# Layer 0 drops heads 1 and 3, layer 1 drops head 0; FFN entries (every 5th) are kept.
MASK = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])


def tiny_llama(n_kv_heads: int = 4, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=120,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=n_kv_heads,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, changed


@pytest.fixture()
def ids():
    torch.manual_seed(3)
    return torch.randint(1, 120, (2, 10))


def test_masked_columns_are_zero_inside_and_restored_exactly_after(ids):
    model = tiny_llama()
    before = state_of(model)
    o_proj = decoder_layers(model)[0].self_attn.o_proj
    with fold_head_mask(model, MASK) as n_masked:
        assert n_masked == 3
        cols = head_columns([1, 3], 8)
        assert o_proj.weight[:, cols].abs().sum() == 0
        kept = head_columns([0, 2], 8)
        assert torch.equal(o_proj.weight[:, kept], before["model.layers.0.self_attn.o_proj.weight"][:, kept])
        assert ahamask_hook_count(model) == 0  # folding adds no hooks
    assert_same_state(model, before)


def test_weights_are_restored_after_an_exception():
    model = tiny_llama()
    before = state_of(model)
    with pytest.raises(RuntimeError, match="boom"):
        with fold_head_mask(model, MASK):
            raise RuntimeError("boom")
    assert_same_state(model, before)


def test_nested_folds_restore_in_order():
    model = tiny_llama()
    before = state_of(model)
    other = torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    with fold_head_mask(model, MASK):
        with fold_head_mask(model, other):
            w = decoder_layers(model)[0].self_attn.o_proj.weight
            assert w[:, head_columns([0, 1, 3], 8)].abs().sum() == 0  # union of both masks
        assert decoder_layers(model)[0].self_attn.o_proj.weight[:, :8].abs().sum() > 0  # inner one undone
    assert_same_state(model, before)


@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_logits_and_greedy_scores_equal_the_hook_path(ids, n_kv_heads):
    model = tiny_llama(n_kv_heads)
    attention = torch.ones_like(ids)
    attention[0, :3] = 0  # left padding, as SALMONN generates
    with torch.no_grad():
        plain = model(ids, attention_mask=attention).logits
        with head_mask(model, MASK, logits=False):
            hooked = model(ids, attention_mask=attention).logits
            hooked_gen = model.generate(
                ids,
                attention_mask=attention,
                max_new_tokens=6,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
            )
        with fold_head_mask(model, MASK):
            folded = model(ids, attention_mask=attention).logits
            folded_gen = model.generate(
                ids,
                attention_mask=attention,
                max_new_tokens=6,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
            )
    assert torch.allclose(folded, hooked, atol=1e-5)
    assert not torch.allclose(folded, plain, atol=1e-3)  # the mask does change the model
    assert torch.equal(folded_gen.sequences, hooked_gen.sequences)
    for a, b in zip(folded_gen.scores, hooked_gen.scores, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_salmonn_logits_and_generation_equal_the_hook_path(tiny_model, tiny_bundle):
    from torch.utils.data import DataLoader

    from ahamask.data.dataset import SALMONNDataset

    dataset = SALMONNDataset(tiny_bundle / "data" / "test.json", tiny_bundle / "whisper")
    samples = next(iter(DataLoader(dataset, batch_size=2, collate_fn=dataset.collater)))
    prompts = [tiny_model.prompt_for("")] * 2
    greedy = {"max_new_tokens": 6, "num_beams": 1}
    before = state_of(tiny_model)
    with torch.no_grad():
        with head_mask(tiny_model.decoder, MASK):
            hooked = tiny_model(samples, prompts=prompts)["logits"]
            hooked_text = tiny_model.generate(samples, greedy, prompts=prompts)
        with fold_head_mask(tiny_model, MASK):  # a SALMONN: its llama_model is folded (LoRA on q/v only)
            folded = tiny_model(samples, prompts=prompts)["logits"]
            folded_text = tiny_model.generate(samples, greedy, prompts=prompts)
    assert torch.allclose(folded, hooked, atol=1e-5)
    assert folded_text == hooked_text
    assert_same_state(tiny_model, before)


def test_lora_on_o_proj_is_folded_too(ids):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=["o_proj", "q_proj"]))
    model.eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)  # a trained adapter: without this LoRA would be the identity
    before = state_of(model)
    with torch.no_grad():
        with head_mask(model, MASK, logits=False):
            hooked = model(ids).logits
        with fold_head_mask(model, MASK):
            folded = model(ids).logits
    assert torch.allclose(folded, hooked, atol=1e-5)
    assert_same_state(model, before)


def test_ffn_gate_is_folded_when_asked(ids):
    model = tiny_llama()
    mask = MASK.clone()
    mask[4] = 0.0  # layer 0's FFN gate
    with torch.no_grad():
        with head_mask(model, mask, logits=False, apply_ffn=True):
            hooked = model(ids).logits
        with fold_head_mask(model, mask, apply_ffn=True):
            folded = model(ids).logits
        with fold_head_mask(model, mask):  # the official default: FFN entries are not applied
            heads_only = model(ids).logits
    assert torch.allclose(folded, hooked, atol=1e-5)
    assert not torch.allclose(heads_only, folded, atol=1e-3)


def test_all_mask_layouts_give_the_same_heads():
    grid = head_keep_grid(MASK, 2, 4)
    assert grid.tolist() == [[True, False, True, False], [False, True, True, True]]
    assert torch.equal(head_keep_grid(MASK.reshape(2, 5), 2, 4), grid)
    assert torch.equal(head_keep_grid(MASK.reshape(2, 5)[:, :4].bool(), 2, 4), grid)
    assert torch.equal(head_keep_grid(MASK.repeat(3, 1), 2, 4), grid)


def test_soft_per_sample_and_misshapen_masks_are_refused():
    soft = MASK.clone()
    soft[6] = 0.7
    with pytest.raises(FoldError, match=r"layer 1, column 1\) is 0.7"):
        head_keep_grid(soft, 2, 4)
    rows = MASK.repeat(3, 1)
    rows[2, 0] = 0.0
    with pytest.raises(FoldError, match=r"rows \[2\]"):
        head_keep_grid(rows, 2, 4)
    with pytest.raises(MaskShapeError, match="2 layers x 4 heads"):
        head_keep_grid(torch.ones(12), 2, 4)
    model = tiny_llama()
    before = state_of(model)
    with pytest.raises(FoldError):
        with fold_head_mask(model, soft):
            pass
    assert_same_state(model, before)
