"""The full SALMONN (Whisper + BEATs) on the ten real LibriSpeech demo files, through the real loading code."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ahamask.config import load_decode_config
from ahamask.data.collate import collate
from ahamask.data.dataset import SALMONNDataset
from ahamask.masking.apply import decoding_mask
from ahamask.masking.checkpoint import load_mask
from ahamask.masking.value import Mask
from ahamask.models.checkpoint import load_salmonn_checkpoint
from ahamask.models.salmonn import SALMONN
from ahamask.models.tiny import make_tiny_bundle
from tests.conftest import REPO, reference_dir


@pytest.fixture(scope="module")
def beats_bundle(tmp_path_factory):
    return make_tiny_bundle(tmp_path_factory.mktemp("beats_bundle"), with_beats=True, chunk_seconds=30)


@pytest.fixture(scope="module")
def beats_model(beats_bundle):
    cfg = load_decode_config(beats_bundle / "decode_config.yaml")
    return SALMONN.from_config(cfg.model).eval()


@pytest.fixture(scope="module")
def demo_batch(beats_bundle):
    reference_dir("demo_wavs")
    dataset = SALMONNDataset(REPO / "data" / "test" / "demo.json", beats_bundle / "whisper")
    return collate([dataset[i] for i in range(len(dataset))])


def test_checkpoint_with_beats_has_ln_audio_and_no_beats_weights(beats_bundle, beats_model):
    state = torch.load(beats_bundle / "salmonn.pth", weights_only=True)["model"]
    assert {"ln_audio.weight", "ln_audio.bias"} <= set(state)
    assert not any(k.startswith("beats.") for k in state)
    assert beats_model.speech_Qformer.config.encoder_hidden_size == 32 + 32  # whisper d_model + BEATs dim


def test_beats_alias_key_is_skipped_by_name(beats_bundle, beats_model, tmp_path):
    # Official SALMONN checkpoints carry layer 1's alias of BEATs' relative position bias.
    state = dict(torch.load(beats_bundle / "salmonn.pth", weights_only=True)["model"])
    state["beats.encoder.layers.1.self_attn.relative_attention_bias.weight"] = torch.zeros(320, 4)
    torch.save({"model": state}, tmp_path / "with_alias.pth")
    report = load_salmonn_checkpoint(beats_model, tmp_path / "with_alias.pth")
    assert "beats.encoder.layers.1.self_attn.relative_attention_bias.weight" in report["skipped"]
    bias = beats_model.beats.encoder.layers[0].self_attn.relative_attention_bias.weight
    assert bias.abs().sum() > 0  # not overwritten by the alias


def test_ten_demo_files_run_through_whisper_and_beats(beats_model, demo_batch):
    assert demo_batch["spectrogram"].shape == (10, 80, 3000)
    with torch.no_grad():
        embeds = beats_model.encode_speech(
            demo_batch["spectrogram"], demo_batch["raw_wav"], demo_batch["padding_mask"]
        )
        silent_beats = beats_model.encode_speech(
            demo_batch["spectrogram"], torch.zeros_like(demo_batch["raw_wav"]), demo_batch["padding_mask"]
        )
    assert embeds.shape == (10, 88, 64)  # 1500 encoder frames -> 88 windows of 17
    assert torch.isfinite(embeds).all()
    assert (embeds - silent_beats).abs().max() > 1e-4  # BEATs features really enter the Q-Former


def test_beats_model_needs_the_waveform(beats_model, demo_batch):
    with pytest.raises(ValueError, match="raw_wav"):
        beats_model.encode_speech(demo_batch["spectrogram"][:1])


def test_generation_with_a_mask_on_the_demo_files(beats_model, demo_batch):
    prompts = [beats_model.prompt_for("")] * 3
    batch = {k: v[:3] for k, v in demo_batch.items()}
    logits = torch.full((beats_model.mask_size,), 2.0)
    logits[0] = -2.0
    with decoding_mask(beats_model.decoder, Mask.from_logits(logits), "hooks"):
        answers = beats_model.generate(batch, {"max_new_tokens": 4, "num_beams": 2}, prompts)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)


def test_a_released_13b_mask_is_refused_by_the_tiny_model(beats_model, demo_batch):
    logits = load_mask(reference_dir("legacy_checkpoints", "gender_librispeech", "checkpoint.pth")).values
    batch = {k: v[:1] for k, v in demo_batch.items()}
    with pytest.raises(ValueError, match=r"1640 entries .* 2 layers x 4 heads"):
        with decoding_mask(beats_model.decoder, Mask.from_logits(logits), "hooks"):
            beats_model.generate(batch, {"max_new_tokens": 2}, [beats_model.prompt_for("")])


def test_beats_path_that_does_not_exist(beats_bundle, tmp_path):
    cfg = load_decode_config(beats_bundle / "decode_config.yaml")
    with pytest.raises(FileNotFoundError, match="nobeats.pt"):
        SALMONN.from_config(dataclasses.replace(cfg.model, beats_path=str(tmp_path / "nobeats.pt")))
