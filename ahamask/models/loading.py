"""Loading the pretrained parts of SALMONN from local checkpoint folders (never from a hub).

``llama_path`` is a transformers LLaMA/Vicuna folder (``config.json``, weights, ``tokenizer.model``);
``whisper_path`` a transformers Whisper folder (weights and ``preprocessor_config.json``). Paths are used as
local folders only (``local_files_only``), so a typo gives a clear error instead of a hub download attempt.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ..config import ModelConfig
from ..utils.logging import quiet_third_party_warnings

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence transformers' per-file "Loading weights" bars while a model loads (restored after)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


__all__ = [
    "PAD_TOKEN",
    "quiet_loading",
    "load_tokenizer",
    "load_llm",
    "load_whisper_encoder",
    "llm_dtype_for",
    "require_dir",
    "weights_size",
]

PAD_TOKEN = "[PAD]"


def require_dir(path: str, key: str) -> Path:
    """Return ``path`` as a folder, or raise naming the config key."""
    if not path:
        raise FileNotFoundError(f"model.{key} is empty: set it to a local checkpoint folder")
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"model.{key}: no such directory: {path}")
    return folder


def weights_size(path: str | Path) -> str:
    """Size of a checkpoint file, or of the weight files in a folder, for the "loading ..." log lines.

    A 13B LLM takes minutes to load; saying how much is being read tells the user what to expect.

    Example:
        >>> weights_size("pretrained/vicuna-13b-v1.1")
        '26.0 GB'
    """
    path = Path(path)
    if path.is_file():
        total = path.stat().st_size
    else:
        suffixes = (".safetensors", ".bin", ".pt", ".pth")
        total = sum(f.stat().st_size for f in path.glob("*") if f.is_file() and f.suffix in suffixes)
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if total >= scale:
            return f"{total / scale:.1f} {unit}"
    return f"{total} B"


def load_tokenizer(llama_path: str):
    """The LLaMA tokenizer with the official changes: a ``[PAD]`` token and right padding.

    transformers 5 pads LLaMA on the left by default; the official training code relies on right padding.
    """
    from transformers import AutoTokenizer

    folder = require_dir(llama_path, "llama_path")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError(f"model.llama_path: the tokenizer in {llama_path} has no BOS/EOS token")
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    tokenizer.padding_side = "right"
    return tokenizer


def llm_dtype_for(spec: str, device: torch.device) -> torch.dtype:
    """``auto``: float16 on an accelerator (as the official), float32 on CPU (fp16 matmuls fail or crawl there)."""
    if spec == "auto":
        return torch.float32 if device.type == "cpu" else torch.float16
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[spec]


def _resize_with_mean_row(model: nn.Module, vocab: int) -> None:
    """Grow the embeddings to the tokenizer size; new rows = mean of the old rows.

    transformers would initialise the ``[PAD]`` rows randomly at every load (the official behaviour), and the
    ``lm_head`` row enters every softmax, so results would change from load to load. The mean row is
    deterministic and keeps the new logit near the average one.
    """
    old = model.get_input_embeddings().weight.shape[0]
    if vocab <= old:
        return
    model.resize_token_embeddings(vocab, mean_resizing=False)
    with torch.no_grad():
        for matrix in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            matrix[old:] = matrix[:old].float().mean(dim=0).to(matrix.dtype)


def load_llm(cfg: ModelConfig, tokenizer, device: torch.device) -> nn.Module:
    """LLaMA from ``cfg.llama_path``, frozen, resized for ``[PAD]``, wrapped with LoRA when ``cfg.lora``."""
    from transformers import AutoModelForCausalLM

    folder = require_dir(cfg.llama_path, "llama_path")
    dtype = llm_dtype_for(cfg.llm_dtype, device)
    # transformers' per-shard bars are off (quiet_loading): this line says what loads, from where, how much.
    logger.info(
        "loading the LLM from %s (%s of weights, as %s for %s)",
        folder,
        weights_size(folder),
        str(dtype).removeprefix("torch."),
        device,
    )
    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=dtype, local_files_only=True, attn_implementation=cfg.attn_implementation
        )
    _resize_with_mean_row(model, len(tokenizer))
    model.requires_grad_(False)
    if cfg.lora:
        from peft import LoraConfig, TaskType, get_peft_model

        lora_cfg = LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            inference_mode=False,
            r=cfg.lora_rank,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
        )
        # peft reads transformers' deprecated `is_gradient_checkpointing`: hidden here too, so library users
        # (not only the entry points, through setup_logging) get no warning they cannot act on.
        with warnings.catch_warnings():
            quiet_third_party_warnings()
            model = get_peft_model(model, lora_cfg)
        # LoRA weights stay in float32 as in the official set-up, whatever the base dtype.
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.data = param.data.float()
    return model


def load_whisper_encoder(whisper_path: str) -> nn.Module:
    """The encoder of a transformers Whisper checkpoint folder (the decoder is dropped)."""
    from transformers import WhisperModel

    folder = require_dir(whisper_path, "whisper_path")
    logger.info("loading the Whisper encoder from %s (%s of weights)", folder, weights_size(folder))
    with quiet_loading():
        whisper = WhisperModel.from_pretrained(str(folder), local_files_only=True)
    encoder = whisper.get_encoder()
    del whisper
    return encoder
