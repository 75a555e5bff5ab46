"""Contract tests of the head-mask hooks on a peft-wrapped tiny LLaMA."""

from __future__ import annotations

import pytest
import torch

from ahamask.masking.hooks import (
    ablate_heads,
    ahamask_hook_count,
    attach_head_mask,
    decoder_layers,
    head_mask,
    remove_head_hooks,
)
from ahamask.masking.mask import MaskShapeError


@pytest.fixture()
def llm(shared_tiny_model):
    return shared_tiny_model.llama_model


@pytest.fixture()
def ids():
    torch.manual_seed(1)
    return torch.randint(3, 300, (2, 9))


def logits_of(llm, ids, **kwargs):
    with torch.no_grad():
        return llm(input_ids=ids, **kwargs).logits


def full_mask(n_layers=2, n_heads=4, value=1.0):
    return torch.full((n_layers * (n_heads + 1),), value)


def test_masking_a_head_equals_zeroing_its_o_proj_columns(llm, ids):
    layer, head, head_dim = 1, 2, 16
    mask = full_mask()
    mask[layer * 5 + head] = 0.0
    with head_mask(llm, mask, logits=False):
        masked = logits_of(llm, ids)
    o_proj = decoder_layers(llm)[layer].self_attn.o_proj
    saved = o_proj.weight.detach().clone()
    with torch.no_grad():
        o_proj.weight[:, head * head_dim : (head + 1) * head_dim] = 0.0
    try:
        zeroed = logits_of(llm, ids)
    finally:
        with torch.no_grad():
            o_proj.weight.copy_(saved)
    assert torch.allclose(masked, zeroed, atol=1e-5)
    assert not torch.allclose(masked, logits_of(llm, ids), atol=1e-3)


def test_all_ones_mask_and_no_mask_are_bit_identical(llm, ids):
    base = logits_of(llm, ids)
    with head_mask(llm, full_mask(), logits=False):
        assert torch.equal(logits_of(llm, ids), base)
    hooks = attach_head_mask(llm, None)
    try:
        assert torch.equal(logits_of(llm, ids), base)
    finally:
        hooks.remove()


def test_zero_mask_on_one_layer_changes_outputs(llm, ids):
    mask = full_mask()
    mask[0:4] = 0.0  # every head of layer 0
    base = logits_of(llm, ids)
    with head_mask(llm, mask, logits=False):
        changed = logits_of(llm, ids)
    assert (changed - base).abs().max() > 1e-3


def test_ffn_entries_are_ignored_unless_asked(llm, ids):
    mask = full_mask()
    mask[4::5] = 0.0  # every FFN entry
    base = logits_of(llm, ids)
    with head_mask(llm, mask, logits=False):
        assert torch.equal(logits_of(llm, ids), base)
    with head_mask(llm, mask, logits=False, apply_ffn=True):
        assert (logits_of(llm, ids) - base).abs().max() > 1e-3


def test_logits_are_binarised_with_threshold(llm, ids):
    logits = torch.full((10,), 3.0)
    logits[1] = -0.5  # sigmoid < 0.5 -> head 1 of layer 0 off
    binary = full_mask()
    binary[1] = 0.0
    with head_mask(llm, logits, logits=True):
        from_logits = logits_of(llm, ids)
    with head_mask(llm, binary, logits=False):
        from_binary = logits_of(llm, ids)
    assert torch.equal(from_logits, from_binary)
    # prob_threshold 0.99 turns every head with logit 3.0 (p=0.953) off too
    with head_mask(llm, logits, logits=True, prob_threshold=0.99):
        all_off = logits_of(llm, ids)
    assert not torch.allclose(all_off, from_logits)


def test_per_sample_masks_match_single_sample_runs(llm, ids):
    a, b = full_mask(), full_mask()
    a[0:4] = 0.0
    b[5:9] = 0.0
    with head_mask(llm, torch.stack([a, b]), logits=False):
        batched = logits_of(llm, ids)
    for row, mask in enumerate((a, b)):
        with head_mask(llm, mask, logits=False):
            single = logits_of(llm, ids[row : row + 1])
        assert torch.allclose(batched[row], single[0], atol=1e-5)


def test_sdpa_and_eager_agree_under_a_mask(llm, ids):
    mask = full_mask()
    mask[[0, 6, 7]] = 0.0
    base_model = llm.get_base_model()
    with head_mask(llm, mask, logits=False):
        sdpa = logits_of(llm, ids)
        base_model.config._attn_implementation = "eager"
        try:
            eager = logits_of(llm, ids)
        finally:
            base_model.config._attn_implementation = "sdpa"
    assert torch.allclose(sdpa, eager, atol=1e-5)


def test_cached_generation_with_a_mask_equals_uncached(llm, ids):
    mask = full_mask()
    mask[[1, 2, 8]] = 0.0
    with head_mask(llm, mask, logits=False):
        cached = llm.generate(
            input_ids=ids, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0
        )
        uncached = llm.generate(
            input_ids=ids, max_new_tokens=6, do_sample=False, use_cache=False, pad_token_id=0
        )
        masked_logits = logits_of(llm, cached)
    assert torch.equal(cached, uncached)
    # The mask acted at every position of the generated continuation.
    assert not torch.allclose(masked_logits, logits_of(llm, cached), atol=1e-3)


def test_beam_search_expands_per_sample_masks(llm, ids):
    # num_beams == n_heads: a mask that was not expanded would broadcast silently instead of failing.
    a, b = full_mask(), full_mask()
    a[0:4] = 0.0
    b[5:9] = 0.0
    kwargs = dict(max_new_tokens=4, num_beams=4, do_sample=False, pad_token_id=0)
    with head_mask(llm, torch.stack([a, b]), logits=False):
        batched = llm.generate(input_ids=ids, **kwargs)
    for row, mask in enumerate((a, b)):
        with head_mask(llm, mask, logits=False):
            single = llm.generate(input_ids=ids[row : row + 1], **kwargs)
        assert torch.equal(batched[row, : single.shape[1]], single[0])


def test_hooks_are_removed_after_the_block_even_on_error(llm, ids):
    assert ahamask_hook_count(llm) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with head_mask(llm, full_mask(), logits=False):
            assert ahamask_hook_count(llm) == 2
            raise RuntimeError("boom")
    assert ahamask_hook_count(llm) == 0
    hooks = attach_head_mask(llm, full_mask())
    hooks.remove()
    hooks.remove()  # twice is safe
    attach_head_mask(llm, full_mask())
    attach_head_mask(llm, full_mask())
    assert remove_head_hooks(llm) == 2
    assert ahamask_hook_count(llm) == 0


def test_wrong_mask_length_names_both_shapes(llm, ids):
    with pytest.raises(
        MaskShapeError, match=r"1640 entries .*40-layer x 40-head.* 2 layers x 4 heads.* = 10"
    ):
        with head_mask(llm, torch.zeros(1640), logits=False):
            pass
    assert ahamask_hook_count(llm) == 0


def test_ablate_heads(llm, ids):
    mask = full_mask()
    mask[5 + 3] = 0.0
    with head_mask(llm, mask, logits=False):
        expected = logits_of(llm, ids)
    with ablate_heads(llm, [(1, 3)]):
        assert torch.equal(logits_of(llm, ids), expected)
    with pytest.raises(ValueError, match=r"head \(2, 0\) is out of range for 2 layers x 4 heads"):
        with ablate_heads(llm, [(2, 0)]):
            pass
