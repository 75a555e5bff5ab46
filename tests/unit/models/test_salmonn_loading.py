"""SALMONN.from_config: the model comes back in eval mode and says what it loads from where."""

from __future__ import annotations

import logging

import torch

from ahamask.data.dataset import SALMONNDataset
from ahamask.models.loading import weights_size
from ahamask.models.salmonn import SALMONN


def test_from_config_is_in_eval_mode_and_deterministic(tiny_decode_cfg, caplog):
    cfg = tiny_decode_cfg
    dataset = SALMONNDataset(cfg.test_data_path, cfg.model.whisper_path)
    batch = dataset.collater([dataset[0], dataset[1]])
    results = []
    for seed in (0, 1):  # different global seeds: dropout, if on, would draw different masks
        torch.manual_seed(seed)
        with caplog.at_level(logging.INFO, logger="ahamask.models"):
            model = SALMONN.from_config(cfg.model)
        # Every submodule, not just the top: LoRA and Q-Former dropouts are what made answers differ.
        assert not any(module.training for module in model.modules())
        prompts = [model.prompt_for("")] * 2
        with torch.no_grad():
            logits = model(batch, prompts=prompts)["logits"]
        answers = model.generate(batch, {"num_beams": 1, "max_new_tokens": 6}, prompts=prompts)
        results.append((logits, answers))
    assert torch.equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1] and all(isinstance(a, str) for a in results[0][1])
    # Loading announces each part with its folder, so a 13B load is not minutes of silence.
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("ahamask.models")]
    assert any(m.startswith(f"loading the LLM from {cfg.model.llama_path} (") for m in messages), messages
    assert any(m.startswith(f"loading the Whisper encoder from {cfg.model.whisper_path}") for m in messages)
    assert sum(m.startswith("SALMONN ready in") for m in messages) == 2


def test_weights_size_counts_weight_files_only(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 2500)
    (tmp_path / "extra.bin").write_bytes(b"\0" * 500)
    (tmp_path / "config.json").write_bytes(b"\0" * 10_000)  # not weights
    assert weights_size(tmp_path) == "3.0 kB"
    assert weights_size(tmp_path / "extra.bin") == "500 B"
    (tmp_path / "big.pth").write_bytes(b"\0" * 2_000_000)
    assert weights_size(tmp_path) == "2.0 MB"
