"""Shared helpers for the Qwen2-Audio / Audio Flamingo 3 backbone tests (tiny bundles, batches, hand masks)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from ahamask.config import load_decode_config
from ahamask.models.backbone import build_backbone
from ahamask.models.tiny_hf_audio import make_tiny_audio_flamingo3_bundle, make_tiny_qwen2_audio_bundle

MAKERS = {"qwen2_audio": make_tiny_qwen2_audio_bundle, "audio_flamingo3": make_tiny_audio_flamingo3_bundle}


# The tiny tokenizer's ids of "<|im_start|>system\nYou are a helpful assistant." (both chat templates start so).
SYSTEM_PROMPT_IDS = (
    543,
    83,
    89,
    410,
    69,
    77,
    199,
    57,
    284,
    221,
    291,
    69,
    328,
    425,
    76,
    80,
    70,
    85,
    76,
    221,
    312,
    83,
)


def make_bundle(arch: str, out: Path, **kwargs) -> Path:
    return MAKERS[arch](out, **kwargs)


def load_model(bundle: Path, **overrides):
    """The bundle's backbone, with ``model.<key>=value`` overrides (e.g. attn_implementation='eager')."""
    cfg = load_decode_config(bundle / "decode_config.yaml", [f"model.{k}={v}" for k, v in overrides.items()])
    return build_backbone(cfg.model), cfg


def tone(seconds: float, f0: float = 150.0, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    wave = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.01 * rng.standard_normal(t.size)
    return torch.from_numpy(wave.astype(np.float32))


def batch_of(*waves: torch.Tensor, texts: list[str] | None = None) -> dict:
    """A collated batch as ``SALMONNDataset.collater`` gives it (zero-padded raw_wav, padding_mask True on pad)."""
    raw = torch.nn.utils.rnn.pad_sequence(list(waves), batch_first=True)
    lengths = torch.tensor([len(w) for w in waves])
    padding = torch.arange(raw.shape[1])[None, :] >= lengths[:, None]
    n = len(waves)
    return {
        "spectrogram": None,
        "raw_wav": raw,
        "padding_mask": padding,
        "text": texts or [("Male", "Female")[i % 2] for i in range(n)],
        "task": ["gender_recognition"] * n,
        "Q": [""] * n,
        "id": [f"clip{i}" for i in range(n)],
    }


def gates(geometry, dropped: dict[int, list[int]]) -> torch.Tensor:
    """A released-layout 0/1 mask ``[L*(H+1)]`` with the listed heads of each layer off."""
    grid = torch.ones(geometry.n_layers, geometry.n_heads + 1)
    for layer, heads in dropped.items():
        grid[layer, heads] = 0.0
    return grid.reshape(-1)


@contextlib.contextmanager
def zeroed_by_hand(decoder, dropped: dict[int, list[int]], head_dim: int):
    """Zero the masked heads' ``o_proj`` input columns directly (the reference the mask paths must equal)."""
    layers = decoder.model.layers
    saved = {layer: layers[layer].self_attn.o_proj.weight.detach().clone() for layer in dropped}
    try:
        with torch.no_grad():
            for layer, heads in dropped.items():
                for head in heads:
                    layers[layer].self_attn.o_proj.weight[:, head * head_dim : (head + 1) * head_dim] = 0.0
        yield
    finally:
        with torch.no_grad():
            for layer, weight in saved.items():
                layers[layer].self_attn.o_proj.weight.copy_(weight)


def decode(
    model, batch, *, num_beams: int = 1, use_cache: bool = True, max_new_tokens: int = 6, decoder=None
):
    """Sequences and per-step scores of a decode straight through ``decoder.generate(inputs_embeds=...)``."""
    inputs = model.prompt_inputs(model.encode_audio(batch), [model.prompt_for("")] * len(batch["text"]))
    kwargs = model.generation_kwargs({"num_beams": num_beams, "max_new_tokens": max_new_tokens})
    kwargs["min_new_tokens"] = max_new_tokens  # full length, so every step's scores are compared
    with torch.no_grad():
        out = (decoder or model.decoder).generate(
            inputs_embeds=inputs.embeds,
            attention_mask=inputs.attention_mask,
            use_cache=use_cache,
            return_dict_in_generate=True,
            output_scores=True,
            **kwargs,
        )
    return out.sequences, torch.stack(out.scores)
