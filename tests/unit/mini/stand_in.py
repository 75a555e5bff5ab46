"""A tiny stand-in for the mini SALMONN's parts: a ChatML LLaMA with grouped-query attention and a world of
noise clips labelled like the espeak-ng world (no espeak-ng, no download)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ahamask.synth.audio import write_wav

WORDS = [
    "user",
    "assistant",
    "male",
    "female",
    "fast",
    "slow",
    "the",
    "dog",
    "cat",
    "sees",
    "Male",
    "Female",
    "Fast",
    "Slow",
]
SPLITS = {"train": 6, "valid": 2, "test": 3}
TASKS = ("asr", "gender", "rate")


def chatml_llm(folder: Path) -> None:
    """A 2-layer LLaMA (4 query heads over 2 KV heads) with a word-level ChatML tokenizer: BOS
    ``<|im_start|>``, EOS ``<|im_end|>``, as SmolLM2-135M-Instruct's."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(WORDS)}
    vocab |= {"<|im_start|>": len(vocab), "<|im_end|>": len(vocab) + 1, "<unk>": len(vocab) + 2}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<unk>"
    )
    tok.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=vocab["<|im_start|>"],
        eos_token_id=vocab["<|im_end|>"],
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)


def fake_world(root: Path) -> None:
    """Noise clips with the mini world's labels and manifests (``<split>_<task>.json``)."""
    rng = np.random.default_rng(0)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    for split, n in SPLITS.items():
        rows = []
        for i in range(n):
            rel = f"audio/{split}_{i}.wav"
            write_wav(root / rel, (0.1 * rng.standard_normal(16000)).astype(np.float32))
            labels = {
                "asr": "the dog sees",
                "gender": ["Male", "Female"][i % 2],
                "rate": ["Fast", "Slow"][i % 2],
            }
            rows.append((rel, labels))
        for task in TASKS:
            entries = [
                {"path": p, "text": lab[task], "task": task, "Q": "", "labels": lab} for p, lab in rows
            ]
            (root / f"{split}_{task}.json").write_text(json.dumps({"annotation": entries}))


def fake_world_info() -> dict:
    """What build_speech_world would return for :func:`fake_world`."""
    manifests = {s: {t: f"{s}_{t}.json" for t in TASKS} for s in SPLITS}
    return {"manifests": manifests, "settings": {"seed": 0, "espeak_ng": "none (noise stand-in)"}}
