"""Cached speech embeddings: equal to computing them, invalidated by new audio or weights, safe on disk."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from ahamask.config import load_train_config
from ahamask.data.dataset import SALMONNDataset
from ahamask.models.speech_cache import SpeechEmbeddingCache, model_fingerprint
from ahamask.training.trainer import MaskTrainer


@pytest.fixture()
def batch(tiny_bundle):
    dataset = SALMONNDataset(tiny_bundle / "data" / "test.json", tiny_bundle / "whisper")
    return next(iter(DataLoader(dataset, batch_size=4, collate_fn=dataset.collater)))


def frozen(model):
    return model.requires_grad_(False).eval()


def rows(samples, index):
    """The batch restricted to ``index`` (what a smaller batch of the same clips looks like)."""
    pick = torch.tensor(index)
    out = dict(samples)
    for key in ("spectrogram", "raw_wav", "padding_mask"):
        out[key] = samples[key][pick]
    return out


def test_cached_training_run_equals_the_uncached_run(tiny_bundle, tmp_path):
    masks, caches = {}, {}
    for cached in (False, True):
        cfg = load_train_config(
            tiny_bundle / "config.yaml",
            [
                f"run.output_dir={tmp_path / str(cached)}",
                "run.job_id=j",
                f"run.cache_speech_embeds={cached}",
                "run.iters_per_epoch=2",
                "run.optims.max_epoch=3",
                "run.mask_init_mean=0.3",
                "run.optims.init_lr=0.1",
            ],
        )
        trainer = MaskTrainer(cfg)
        trainer.setup()
        trainer.train()
        trainer.cleanup()
        masks[cached] = trainer.mask.tensor.detach().clone()
        caches[cached] = trainer.speech_cache
    assert caches[False] is None
    # 4 training clips + 2 validation clips computed once; epochs 1 and 2 (8 clips each) and 2 more
    # validations (2 clips each) are served from the cache.
    assert (caches[True].misses, caches[True].hits) == (6, 12)
    assert torch.equal(masks[True], masks[False])
    assert not torch.allclose(masks[True], torch.full_like(masks[True], 0.3), atol=0.05)  # the mask did train


def test_a_batch_with_a_missing_clip_is_encoded_whole(tiny_model, batch):
    model = frozen(tiny_model)
    cache = SpeechEmbeddingCache(model)
    first = cache.get_or_compute(rows(batch, [2, 0]))
    assert (cache.hits, cache.misses) == (0, 2)
    full = cache.get_or_compute(batch)  # clips 1 and 3 are new: all four are encoded together
    assert (cache.hits, cache.misses) == (0, 4)
    again = cache.get_or_compute(batch)
    assert (cache.hits, cache.misses) == (4, 4) and len(cache) == 4
    with torch.no_grad():
        direct = model.encode_speech(batch["spectrogram"], batch["raw_wav"], batch["padding_mask"])
    assert full.shape == (4, 11, 64)  # 4 s chunk -> 200 frames -> 11 windows of 17, one query each
    assert torch.equal(full, direct) and torch.equal(again, direct)
    # Encoded in a batch of 2, clips 2 and 0 differ from the batch-of-4 result by float rounding only.
    assert torch.allclose(first, direct[[2, 0]], atol=1e-5)
    assert cache.hit_rate == pytest.approx(0.5)


def test_new_audio_gets_a_new_key(tiny_model, batch):
    cache = SpeechEmbeddingCache(frozen(tiny_model))
    keys = cache.sample_keys(batch)
    assert len(set(keys)) == 4
    changed = dict(batch, spectrogram=batch["spectrogram"].clone())
    changed["spectrogram"][1, 0, 0] += 1e-3
    new_keys = cache.sample_keys(changed)
    assert new_keys[0] == keys[0] and new_keys[1] != keys[1]


def test_new_weights_or_checkpoint_path_change_the_fingerprint(tiny_model):
    model = frozen(tiny_model)
    before = model_fingerprint(model)
    assert model_fingerprint(model) == before  # deterministic
    with torch.no_grad():
        model.speech_Qformer.encoder.layer[0].output_query.dense.weight[0, 0] += 1e-4
    changed = model_fingerprint(model)
    assert changed != before
    model.cfg = replace(model.cfg, ckpt=model.cfg.ckpt + ".other")
    assert model_fingerprint(model) not in (before, changed)


def test_disk_entries_are_reused_by_the_same_model_only(tiny_model, batch, tmp_path):
    model = frozen(tiny_model)
    first = SpeechEmbeddingCache(model, tmp_path, keep_in_memory=False)
    expected = first.get_or_compute(batch)
    files = sorted(tmp_path.glob("*/*/*.safetensors"))
    assert len(files) == 4 and not list(tmp_path.rglob("*.tmp"))
    again = SpeechEmbeddingCache(model, tmp_path)
    assert torch.equal(again.get_or_compute(batch), expected) and (again.hits, again.misses) == (4, 0)
    with torch.no_grad():
        model.speech_llama_proj.bias.add_(1.0)  # "a new checkpoint"
    other = SpeechEmbeddingCache(model, tmp_path)
    fresh = other.get_or_compute(batch)
    assert (other.hits, other.misses) == (0, 4)
    assert torch.allclose(fresh, expected + 1.0, atol=1e-5)


def test_a_corrupt_disk_entry_is_recomputed(tiny_model, batch, tmp_path, caplog):
    model = frozen(tiny_model)
    expected = SpeechEmbeddingCache(model, tmp_path, keep_in_memory=False).get_or_compute(batch)
    victim = sorted(tmp_path.glob("*/*/*.safetensors"))[0]
    victim.write_bytes(b"not a safetensors file")
    cache = SpeechEmbeddingCache(model, tmp_path)
    with caplog.at_level(logging.WARNING):
        assert torch.equal(cache.get_or_compute(batch), expected)
    assert cache.misses == 1 and victim.name in caplog.text
    assert victim.read_bytes() != b"not a safetensors file"  # rewritten with the recomputed entry


def test_trainable_or_training_mode_front_ends_are_refused(tiny_model, batch):
    with pytest.raises(ValueError, match="ln_speech.weight requires grad"):
        SpeechEmbeddingCache(tiny_model)  # the tiny config trains ln_speech and the Q-Former, as the official
    cache = SpeechEmbeddingCache(frozen(tiny_model))
    tiny_model.speech_Qformer.train()
    with pytest.raises(ValueError, match="speech_Qformer is in training mode"):
        cache.get_or_compute(batch)


class _BeatsStub(nn.Module):
    """Just enough of a SALMONN with BEATs for the cache keys."""

    def __init__(self) -> None:
        super().__init__()
        self.beats = nn.Linear(2, 2)
        self.speech_llama_proj = nn.Linear(2, 2)
        self.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")


def test_with_beats_the_key_follows_the_batch_padding():
    cache = SpeechEmbeddingCache(_BeatsStub())
    wav = torch.randn(2, 16000)
    spectrogram = torch.zeros(2, 80, 100)
    mask = torch.zeros(2, 16000, dtype=torch.bool)
    mask[1, 12000:] = True  # clip 1 is 0.75 s long, padded to its batch's 1 s
    keys = cache.sample_keys({"spectrogram": spectrogram, "raw_wav": wav, "padding_mask": mask})
    longer = torch.nn.functional.pad(wav, (0, 4000))
    longer_mask = torch.nn.functional.pad(mask, (0, 4000), value=True)
    wider = cache.sample_keys({"spectrogram": spectrogram, "raw_wav": longer, "padding_mask": longer_mask})
    assert wider[1] != keys[1]  # same clip, padded further: BEATs sees other input
    noise = wav.clone()
    noise[1, 13000:] = 5.0  # garbage in the padding is not part of the clip
    assert cache.sample_keys({"spectrogram": spectrogram, "raw_wav": noise, "padding_mask": mask}) == keys
