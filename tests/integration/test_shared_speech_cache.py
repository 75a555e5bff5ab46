"""One speech cache for training (on by default), the instruction sweep and evaluation.

The front end is frozen in all three, so a clip's speech embeddings are computed once: across training
epochs, across the N conditions (instructions x masks) of a sweep, and across evaluate.py runs sharing
``speech_cache_dir``. Encoder work is counted by patching ``SALMONN.encode_speech``.
"""

from __future__ import annotations

import json

import pytest
import torch

from ahamask.config import load_decode_config, load_train_config
from ahamask.data.dataset import SALMONNDataset
from ahamask.evaluation.decode import decode_dataset
from ahamask.evaluation.evaluator import evaluate
from ahamask.evaluation.sweep import run_sweep
from ahamask.masking.hooks import head_mask
from ahamask.models.salmonn import SALMONN
from ahamask.models.speech_cache import SpeechEmbeddingCache
from ahamask.training.trainer import MaskTrainer

pytestmark = pytest.mark.slow  # each test decodes or trains the tiny bundle (2-3 s)

INSTRUCTIONS = ["Describe the speech.", "Is the speaker male or female?", "What is the gender?"]


@pytest.fixture()
def encoded_rows(monkeypatch) -> list[int]:
    """Rows (clips) passed to SALMONN.encode_speech, one list entry per call."""
    calls: list[int] = []
    real = SALMONN.encode_speech

    def counting(self, spectrogram, raw_wav=None, padding_mask=None):
        calls.append(int(raw_wav.shape[0] if raw_wav is not None else spectrogram.shape[0]))
        return real(self, spectrogram, raw_wav, padding_mask)

    monkeypatch.setattr(SALMONN, "encode_speech", counting)
    return calls


def _masks(model: SALMONN) -> dict[str, torch.Tensor]:
    """Two different 0/1 masks for the tiny model (2 layers x 4 heads, FFN entries on)."""
    first = torch.ones(model.n_layers, model.n_heads + 1)
    first[0, 1] = first[1, 3] = 0.0
    second = torch.ones(model.n_layers, model.n_heads + 1)
    second[1, :2] = 0.0
    return {"first": first.reshape(-1), "second": second.reshape(-1)}


def test_training_caches_by_default_and_trains_the_same_mask(tiny_bundle, tmp_path):
    masks, caches = {}, {}
    for name, extra in (("default", []), ("off", ["run.cache_speech_embeds=false"])):
        cfg = load_train_config(
            tiny_bundle / "config.yaml",
            [
                f"run.output_dir={tmp_path / name}",
                "run.job_id=j",
                "run.iters_per_epoch=2",
                "run.optims.max_epoch=2",
                "run.mask_init_mean=0.3",
                "run.optims.init_lr=0.1",
                *extra,
            ],
        )
        trainer = MaskTrainer(cfg)
        trainer.setup()
        trainer.train()
        trainer.cleanup()
        masks[name], caches[name] = trainer.mask.tensor.detach().clone(), trainer.speech_cache
    assert caches["off"] is None and caches["default"] is not None
    assert caches["default"].hits > 0 and caches["default"].misses == 6  # 4 training + 2 validation clips
    assert torch.equal(masks["default"], masks["off"])
    assert not torch.allclose(masks["default"], torch.full_like(masks["default"], 0.3), atol=0.05)


@pytest.mark.parametrize("features", ["clip", "device"])
def test_a_sweep_of_n_conditions_encodes_each_clip_once(tiny_model, tiny_decode_cfg, encoded_rows, features):
    dataset = SALMONNDataset(
        tiny_decode_cfg.test_data_path, tiny_decode_cfg.model.whisper_path, features=features
    )
    model = tiny_model.requires_grad_(False)
    masks = _masks(model)
    cache = SpeechEmbeddingCache(model)
    report = run_sweep(
        model, dataset, INSTRUCTIONS, masks, tiny_decode_cfg.generate, batch_size=2, speech_cache=cache
    )
    n_conditions = len(report["instructions"]) + len(report["masks"])
    assert n_conditions == 5
    assert sum(encoded_rows) == len(dataset) == 4  # 4 clips, once each: not 5 conditions x 4
    # Another condition decoded through the same cache (an evaluation of a third mask) encodes nothing.
    before = len(encoded_rows)
    third = torch.ones(model.mask_size)
    third[0] = 0.0
    with head_mask(model.decoder, third):
        cached = decode_dataset(
            model,
            dataset,
            generate_cfg=tiny_decode_cfg.generate,
            batch_size=2,
            progress=False,
            speech_cache=cache,
        )
    assert len(encoded_rows) == before and cache.misses == 4
    with head_mask(model.decoder, third):
        direct = decode_dataset(
            model, dataset, generate_cfg=tiny_decode_cfg.generate, batch_size=2, progress=False
        )
    assert [r["output"] for r in cached] == [r["output"] for r in direct]
    # The sweep's answers are those of decoding every condition from scratch.
    for name, weights in masks.items():
        with head_mask(model.decoder, weights):
            fresh = decode_dataset(
                model, dataset, generate_cfg=tiny_decode_cfg.generate, batch_size=2, progress=False
            )
        run = next(r for r in report["masks"] if r["mask"] == name)
        assert run["outputs"] == [r["output"] for r in fresh]


def test_evaluate_runs_sharing_speech_cache_dir_encode_once(tiny_bundle, tmp_path, encoded_rows):
    def run(out: str, *extra: str) -> dict:
        cfg = load_decode_config(
            tiny_bundle / "decode_config.yaml", [f"output_path={tmp_path / out}", *extra]
        )
        return json.loads(evaluate(cfg).read_text())

    plain = run("plain.json")
    plain_rows = sum(encoded_rows)
    cache_dir = f"speech_cache_dir={tmp_path / 'cache'}"
    first = run("first.json", cache_dir)
    second = run("second.json", cache_dir)
    assert plain_rows == 4 and sum(encoded_rows) == 2 * plain_rows  # the second cached run encoded nothing
    assert first["prediction"] == plain["prediction"] == second["prediction"]
