"""Qwen2-Audio: prompts (Instruct chat template, Base prefix) pinned by ids, stop tokens, encoder frame rules.

Ids are the tiny bundle's tokenizer (special tokens: <|endoftext|> 0, <|im_start|> 543, <|im_end|> 544,
<|audio_bos|> 545, <|AUDIO|> 546, <|audio_eos|> 547); the text around them is the real template's.
"""

from __future__ import annotations

import json

import pytest
import torch

from ahamask.models.hf_audio_llm import AudioTooLongError, audio_token_counts
from ahamask.models.qwen2_audio import BASE_AUDIO_PREFIX, encoder_token_counts

from ..hf_audio_helpers import SYSTEM_PROMPT_IDS, batch_of, load_model, make_bundle, tone

SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
# "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nAudio 1: <|audio_bos|>"
BEFORE_AUDIO = list(SYSTEM_PROMPT_IDS)
BEFORE_AUDIO += [
    267,
    84,
    265,
    84,
    14,
    544,
    199,
    543,
    85,
    83,
    260,
    199,
    33,
    85,
    68,
    73,
    79,
    221,
    17,
    26,
    221,
    545,
]
ASSISTANT = [543, 312, 83, 267, 84, 265, 84, 199]  # "<|im_start|>assistant\n"
INSTRUCTION = "What is the gender of the speaker?"
INSTRUCTION_IDS = [348, 288, 259, 431, 347, 259, 279, 31]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle("qwen2_audio", tmp_path_factory.mktemp("qwen2_audio"))


@pytest.fixture(scope="module")
def instruct(bundle):
    return load_model(bundle)[0]


@pytest.fixture(scope="module")
def base(bundle):
    return load_model(bundle, variant="base")[0]


def _ids(model, text):
    return model.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_instruct_prompts_pinned(instruct):
    free = instruct.prompt_for("")
    assert free == SYSTEM + "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n<|im_end|>\n" + (
        "<|im_start|>assistant\n"
    )
    assert _ids(instruct, free) == [*BEFORE_AUDIO, 546, 547, 199, 544, 199, *ASSISTANT]
    asked = instruct.prompt_for(INSTRUCTION)
    assert _ids(instruct, asked) == [*BEFORE_AUDIO, 546, 547, 199, *INSTRUCTION_IDS, 544, 199, *ASSISTANT]


def test_base_prompts_pinned(base):
    assert base.prompt_for("") == BASE_AUDIO_PREFIX == "<|audio_bos|><|AUDIO|><|audio_eos|>"
    assert _ids(base, base.prompt_for("")) == [545, 546, 547]
    assert _ids(base, base.prompt_for(" " + INSTRUCTION)) == [545, 546, 547, *INSTRUCTION_IDS]


def test_stop_tokens(instruct, base):
    assert instruct.generation_kwargs({})["eos_token_id"] == [544, 0]  # <|im_end|>, then <|endoftext|>
    assert base.generation_kwargs({})["eos_token_id"] == [0]
    batch = batch_of(tone(1.2))
    for model, stop in ((instruct, 544), (base, 0)):
        free = model.generate(batch, {"num_beams": 1, "max_new_tokens": 4})
        assert free[0] != ""  # without the stop token the tiny model runs to max_new_tokens
        bump = model.decoder.lm_head.register_forward_hook(
            lambda m, a, out, s=stop: out.index_add(
                -1, torch.tensor([s]), torch.full((*out.shape[:-1], 1), 1e4)
            )
        )
        try:
            assert model.generate(batch, {"num_beams": 1, "max_new_tokens": 4}) == [""]
        finally:
            bump.remove()
    labels = base(batch_of(tone(1.2), texts=["Male"]))["labels"][0]
    assert labels[labels != -100].tolist()[-1] == 0  # Base targets end at <|endoftext|>


def test_frame_rules_match_the_processor(instruct):
    """1 token per 40 ms; the encoder gets exactly 2 * max_source_positions frames (400 for a 4 s chunk)."""
    assert encoder_token_counts(torch.tensor([3000]))[1].item() == 750  # the real 30 s window
    extractor = instruct.feature_extractor
    assert extractor.nb_max_frames == 2 * instruct.model.config.audio_config.max_source_positions == 400
    for seconds in (1.0, 1.37, 2.5, 4.0):
        wave = tone(seconds)
        proc = instruct.processor(text=[instruct.prompt_for("")], audio=[wave.numpy()], return_tensors="pt")
        expected = int((proc["input_ids"] == 546).sum())
        assert audio_token_counts(instruct.encode_audio(batch_of(wave))) == [expected]
        assert abs(expected - seconds / 0.04) <= 1
    times = instruct.audio_token_times(3)
    assert torch.allclose(times, torch.tensor([[0.0, 0.04], [0.04, 0.08], [0.08, 0.12]]))


def test_too_long_audio_is_one_line_error(instruct):
    with pytest.raises(AudioTooLongError) as err:
        instruct.encode_audio(batch_of(tone(4.5)))
    assert "\n" not in str(err.value) and "4.50 s" in str(err.value) and "4 s window" in str(err.value)


def test_chunk_that_does_not_fit_the_encoder_fails_at_load(bundle, tmp_path):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(bundle / "model", folder)
    for name in ("preprocessor_config.json", "processor_config.json"):
        data = json.loads((folder / name).read_text())
        section = data.get("feature_extractor", data)
        section.update(chunk_length=5, n_samples=80000, nb_max_frames=500)
        (folder / name).write_text(json.dumps(data))
    with pytest.raises(ValueError) as err:
        load_model(bundle, model_path=str(folder))
    message = str(err.value)
    assert "\n" not in message and "500 mel frames" in message and "exactly 400" in message


def test_unknown_variant_and_missing_folder(bundle, tmp_path):
    with pytest.raises(ValueError, match=r"model.variant: 'chat' is not one of \['instruct', 'base'\]"):
        load_model(bundle, variant="chat")
    with pytest.raises(FileNotFoundError, match="model.model_path: no such directory"):
        load_model(bundle, model_path=str(tmp_path / "nowhere"))


def test_prompt_file_entries_become_instruction_free_prompts(instruct):
    prompts = instruct.choose_prompts({"task": ["gender_recognition", "asr"], "Q": ["", ""]})
    assert prompts == [instruct.prompt_for("")] * 2
