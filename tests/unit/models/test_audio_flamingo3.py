"""Audio Flamingo 3: prompts pinned by ids, stop token, 30 s windows (here 4 s), at most 20, and its GQA LLM.

Ids are the tiny bundle's tokenizer (<|endoftext|> 0, <|im_start|> 543, <|im_end|> 544, <sound> 545).
"""

from __future__ import annotations

import pytest
import torch

from ahamask.masking.prune import prune_heads, pruned_plan
from ahamask.models.hf_audio_llm import AudioTooLongError, audio_token_counts

from ..hf_audio_helpers import SYSTEM_PROMPT_IDS, batch_of, gates, load_model, make_bundle, tone

# "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
BEFORE_AUDIO = list(SYSTEM_PROMPT_IDS)
BEFORE_AUDIO += [267, 84, 265, 84, 14, 544, 199, 543, 85, 83, 260, 199]
ASSISTANT = [544, 199, 543, 312, 83, 267, 84, 265, 84, 199]  # "<|im_end|>\n<|im_start|>assistant\n"
INSTRUCTION_IDS = [348, 288, 259, 431, 347, 259, 279, 31]  # "What is the gender of the speaker?"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle("audio_flamingo3", tmp_path_factory.mktemp("af3"))


@pytest.fixture(scope="module")
def model(bundle):
    return load_model(bundle)[0]


def _ids(model, text):
    return model.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_prompts_pinned(model):
    free = model.prompt_for("")
    assert free == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<sound><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert _ids(model, free) == [*BEFORE_AUDIO, 545, *ASSISTANT]
    assert _ids(model, model.prompt_for("What is the gender of the speaker?")) == [
        *BEFORE_AUDIO,
        545,
        *INSTRUCTION_IDS,
        *ASSISTANT,
    ]


def test_stop_token_and_variants(model, bundle):
    assert model.generation_kwargs({})["eos_token_id"] == [544, 0]
    assert model.tokenizer.eos_token == "<|im_end|>"
    with pytest.raises(ValueError, match=r"model.variant: 'base' is not one of \['instruct'\]"):
        load_model(bundle, variant="base")


@pytest.mark.parametrize("seconds,windows", [(3.0, 1), (4.0, 1), (9.3, 3)])
def test_windows_match_the_processor(model, seconds, windows):
    wave = tone(seconds, seed=4)
    assert len(model._windows([wave])[1]) == 1 and model._windows([wave])[1][0] == windows
    prompt = model.prompt_for("")
    proc = model.processor(text=[prompt], audio=[wave.numpy()], return_tensors="pt")
    assert proc["input_features"].shape[0] == windows
    embeds = model.encode_audio(batch_of(wave))
    assert audio_token_counts(embeds) == [int((proc["input_ids"] == 545).sum())]
    inputs, attention, _, _ = model.build_inputs(embeds, [prompt])
    proc = {k: v for k, v in proc.items() if k != "num_audio_tokens"}
    with torch.no_grad():
        diff = (
            model.model(**proc).logits - model.decoder(inputs_embeds=inputs, attention_mask=attention).logits
        )
    assert float(diff.abs().max()) < 1e-5
    assert abs(audio_token_counts(embeds)[0] - seconds / 0.04) <= windows  # 40 ms per token, per window


def test_at_most_twenty_windows(model):
    assert model.max_windows == 20 and model.processor.max_audio_len == 80  # 20 windows of the 4 s chunk
    model.encode_audio(batch_of(tone(80.0)))  # exactly 20 windows: accepted
    with pytest.raises(AudioTooLongError) as err:
        model.encode_audio(batch_of(tone(80.5)))
    assert "\n" not in str(err.value) and "21 windows" in str(err.value) and "at most 20" in str(err.value)


def test_grouped_query_geometry_and_pruning(model):
    geo = model.geometry
    assert (geo.n_layers, geo.n_heads, geo.n_kv_heads, geo.head_dim) == (2, 4, 2, 16)
    pruned = prune_heads(model.decoder, gates(geo, {0: [1], 1: [2, 3]}))
    plan = pruned_plan(pruned)
    assert plan[0].kv_heads == (0, 1) and plan[0].padded == (1,)  # head 1 shares KV head 0 with head 0
    assert plan[1].kv_heads == (0,) and plan[1].query_heads == (0, 1)  # KV head 1's whole group is gone
    assert pruned.model.layers[1].self_attn.k_proj.weight.shape[0] == 16
