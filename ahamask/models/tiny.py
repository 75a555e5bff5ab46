"""Tiny on-disk SALMONN bundles: the real file formats at toy sizes, built locally in seconds.

The real checkpoints (Vicuna-13B, whisper-large-v2, BEATs, salmonn_v1.pth) cannot be downloaded here, so
tests and demos use bundles with the same layout, loaded through the same code paths::

    OUT/llama/            transformers LLaMA folder + sentencepiece tokenizer.model (bos=1, eos=2, byte fallback)
    OUT/whisper/          transformers Whisper folder + preprocessor_config.json (short chunk allowed)
    OUT/beats.pt          optional: {'cfg': ..., 'model': ...} in the official BEATs format
    OUT/salmonn.pth       {'model': state_dict} with official key names (LoRA B non-zero)
    OUT/prompts/          train_prompt.json (no instruction, AHAMask style)
    OUT/data/             a few synthetic wavs and train/valid/test manifests
    OUT/config.yaml       training config in the official key layout, paths pointing inside OUT
    OUT/decode_config.yaml
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["TinySpec", "make_tiny_bundle", "train_tiny_tokenizer", "DEFAULT_CORPUS"]

DEFAULT_CORPUS = [
    "USER: <Speech><SpeechHere></Speech> Recognize the speech and give me the transcription.",
    "ASSISTANT: The speaker is male. The speaker is female.",
    "What is the gender of the speaker? Male Female male female",
    "Describe the speech. Translate the speech into Chinese. What emotion does the speaker convey?",
    "Is the speaker happy, sad, angry or neutral? yes no",
    "he hoped there would be stew for dinner turnips and carrots and bruised potatoes",
    "stuff it into you his belly counselled him",
    "after early nightfall the yellow lamps would light up here and there the squalid quarter",
    "hello world this is a tiny tokenizer for tests of the ahamask toolkit",
    '{"asr": "hello world", "gender": "male"} | json ASR GR',
    "the quick brown fox jumps over the lazy dog 0 1 2 3 4 5 6 7 8 9",
]


@dataclass
class TinySpec:
    """Sizes of a tiny bundle (defaults: a 2-layer, 4-head LLaMA with d=64)."""

    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None
    hidden_size: int = 64
    intermediate_size: int = 128
    vocab_size: int = 420
    whisper_d_model: int = 32
    whisper_layers: int = 1
    whisper_heads: int = 2
    n_mels: int = 80
    chunk_seconds: int = 4
    qformer_hidden_size: int = 32
    qformer_num_heads: int = 4
    qformer_intermediate_size: int = 64
    qformer_num_layers: int = 2
    with_beats: bool = False
    lora_rank: int = 8
    lora_alpha: int = 32
    second_per_window: float = 0.333333
    seed: int = 0
    extra_corpus: list[str] = field(default_factory=list)


def train_tiny_tokenizer(corpus: list[str], vocab_size: int) -> bytes:
    """Train a LLaMA-style sentencepiece BPE model (bos=1, eos=2, unk=0, byte fallback, dummy prefix).

    Newlines are removed from the training text so that ``\\n`` is encoded through byte fallback as
    ``<0x0A>``, as in LLaMA's own tokenizer.
    """
    import sentencepiece as spm

    lines = [line.replace("\n", " ") for line in corpus if line.strip()]
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines * 4),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type="bpe",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    return buffer.getvalue()


def _write_llama(folder: Path, spec: TinySpec) -> int:
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    model_bytes = train_tiny_tokenizer(DEFAULT_CORPUS + list(spec.extra_corpus), spec.vocab_size)
    (folder / "tokenizer.model").write_bytes(model_bytes)
    import sentencepiece as spm

    vocab = spm.SentencePieceProcessor(model_proto=model_bytes).vocab_size()
    # The keys of Vicuna's tokenizer_config.json / special_tokens_map.json.
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "LlamaTokenizer",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "add_bos_token": True,
                "add_eos_token": False,
                "clean_up_tokenization_spaces": False,
                "model_max_length": 2048,
            },
            indent=2,
        )
    )
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, indent=2)
    )
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.n_layers,
        num_attention_heads=spec.n_heads,
        num_key_value_heads=spec.n_kv_heads or spec.n_heads,
        max_position_embeddings=2048,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(spec.seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    return vocab


def _write_whisper(folder: Path, spec: TinySpec) -> None:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    folder.mkdir(parents=True, exist_ok=True)
    # 100 mel frames/s, two conv strides of 1 and 2 -> 50 encoder positions per second, as the real model.
    config = WhisperConfig(
        vocab_size=64,
        num_mel_bins=spec.n_mels,
        encoder_layers=spec.whisper_layers,
        encoder_attention_heads=spec.whisper_heads,
        decoder_layers=1,
        decoder_attention_heads=spec.whisper_heads,
        d_model=spec.whisper_d_model,
        encoder_ffn_dim=spec.whisper_d_model * 2,
        decoder_ffn_dim=spec.whisper_d_model * 2,
        max_source_positions=spec.chunk_seconds * 50,
        max_target_positions=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        suppress_tokens=[],
        begin_suppress_tokens=[],
    )
    torch.manual_seed(spec.seed + 1)
    WhisperModel(config).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=spec.n_mels, chunk_length=spec.chunk_seconds).save_pretrained(folder)


def _write_data(folder: Path, seed: int) -> dict[str, str]:
    """Four short synthetic clips per split: low tones labelled Male, high tones Female."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    manifests = {}
    for split, count in (("train", 4), ("valid", 2), ("test", 4)):
        entries = []
        for i in range(count):
            female = i % 2 == 1
            f0 = rng.uniform(190, 260) if female else rng.uniform(95, 140)
            seconds = rng.uniform(1.0, 2.5)
            t = np.arange(int(16000 * seconds)) / 16000
            wav = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.01 * rng.standard_normal(t.size)
            name = f"{split}_{i}.wav"
            sf.write(folder / name, wav.astype(np.float32), 16000, subtype="PCM_16")
            entries.append(
                {"path": name, "text": "Female" if female else "Male", "task": "gender_recognition"}
            )
        path = folder / f"{split}.json"
        path.write_text(json.dumps({"annotation": entries}, indent=2))
        manifests[split] = str(path)
    return manifests


def _model_section(out: Path, spec: TinySpec, beats_path: str) -> dict:
    return {
        "llama_path": str(out / "llama"),
        "whisper_path": str(out / "whisper"),
        "beats_path": beats_path,
        "ckpt": str(out / "salmonn.pth"),
        "freeze_whisper": True,
        "freeze_beats": True,
        "use_speech_Qformer": True,
        "freeze_speech_QFormer": False,
        "window_level_Qformer": True,
        "num_speech_query_token": 1,
        "second_per_window": spec.second_per_window,
        "second_stride": spec.second_per_window,
        "speech_llama_proj_model": "",
        "freeze_speech_llama_proj": False,
        "lora": True,
        "lora_rank": spec.lora_rank,
        "lora_alpha": spec.lora_alpha,
        "lora_dropout": 0.1,
        "multi_prompt": True,
        "prompt_template": "USER: {}\nASSISTANT:",
        "prompt_path": str(out / "prompts" / "train_prompt.json"),
        "test_prompt_path": "",
        "max_txt_len": 300,
        "end_sym": "</s>",
        "autocast_dtype": "float16",
        "use_gumbel": True,
        "gumbel_hard": True,
        "qformer_hidden_size": spec.qformer_hidden_size,
        "qformer_num_heads": spec.qformer_num_heads,
        "qformer_intermediate_size": spec.qformer_intermediate_size,
        "qformer_num_layers": spec.qformer_num_layers,
    }


def _write_configs(out: Path, spec: TinySpec, beats_path: str, manifests: dict[str, str]) -> None:
    """Writes the bundle's ``config.yaml`` (mask training) and ``decode_config.yaml``, one model section."""
    from omegaconf import OmegaConf

    model = _model_section(out, spec, beats_path)
    OmegaConf.save(OmegaConf.create(_train_config(out, model, manifests)), out / "config.yaml")
    OmegaConf.save(OmegaConf.create(_decode_config(out, model, manifests)), out / "decode_config.yaml")


def _train_config(out: Path, model: dict[str, Any], manifests: dict[str, str]) -> dict[str, Any]:
    """The training config: a CPU run of 2 epochs x 2 steps of batch 2 (seconds on a laptop)."""
    return {
        "model": model,
        "datasets": {
            "train_ann_path": manifests["train"],
            "valid_ann_path": manifests["valid"],
            "test_ann_path": manifests["test"],
            "whisper_path": str(out / "whisper"),
        },
        "run": {
            "seed": 42,
            "output_dir": str(out / "exp"),
            "evaluate": False,
            "log_freq": 1,
            "epoch_based": False,
            "iters_per_epoch": 2,
            "accum_grad_iters": 1,
            "batch_size_train": 2,
            "batch_size_eval": 2,
            "num_workers": 0,
            "device": "cpu",
            "use_distributed": False,
            "amp": False,
            "world_size": 1,
            "dist_url": "env://",
            "tau_decay_steps": 0.3,
            "tau_temp_begin": 4.0,
            "tau_temp_end": 0.05,
            "norm_lambda": 1e-4,
            "optims": {
                "max_epoch": 2,
                "warmup_steps": 1,
                "warmup_start_lr": 1e-6,
                "init_lr": 5e-2,
                "min_lr": 1e-4,
                "weight_decay": 0.05,
                "beta2": 0.999,
            },
        },
    }


def _decode_config(out: Path, model: dict[str, Any], manifests: dict[str, str]) -> dict[str, Any]:
    """The decode config: the test manifest, no mask, beam 2 over at most 8 new tokens."""
    return {
        "batch_size_eval": 2,
        "num_workers": 0,
        "test_data_path": manifests["test"],
        "output_path": str(out / "exp" / "decode.json"),
        "prompt": "",
        "prob_threshold": 0.5,
        "device": "cpu",
        "model": {**model, "shuffle_mask": False, "weight_mask_path": None},
        "generate": {
            "max_new_tokens": 8,
            "num_beams": 2,
            "do_sample": False,
            "min_length": 1,
            "temperature": 1.0,
            "top_p": 0.9,
            "repetition_penalty": 1.0,
            "length_penalty": 1.0,
        },
    }


def _write_salmonn_checkpoint(out: Path, spec: TinySpec) -> None:
    """Random SALMONN weights in the official checkpoint layout, including its known extra buffers."""
    from ..config import load_decode_config
    from .salmonn import SALMONN

    cfg = load_decode_config(out / "decode_config.yaml", ["model.ckpt="])
    torch.manual_seed(spec.seed + 2)
    model = SALMONN.from_config(cfg.model)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero (LoRA = identity); a trained one is not
                param.normal_(0.0, 0.05)
    state = model.trainable_state_dict()
    # The official checkpoints also carry these buffers; the loader must account for them by name.
    head_dim = spec.hidden_size // spec.n_heads
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    for layer in range(spec.n_layers):
        state[f"llama_model.base_model.model.model.layers.{layer}.self_attn.rotary_emb.inv_freq"] = inv_freq
    state["speech_Qformer.bert.embeddings.position_ids"] = torch.arange(512).unsqueeze(0)
    torch.save({"model": state}, out / "salmonn.pth")


def make_tiny_bundle(out: str | Path, spec: TinySpec | None = None, **overrides) -> Path:
    """Write a complete tiny SALMONN bundle to ``out`` (see the module docstring for the layout).

    Args:
        out: destination folder (created; existing files are overwritten).
        spec: sizes; keyword ``overrides`` replace single fields, e.g. ``n_heads=8``.

    Returns:
        ``out`` as a Path. Load it with ``load_decode_config(out / "decode_config.yaml")``.

    Example:
        >>> bundle = make_tiny_bundle(tmp_path, with_beats=True)
    """
    spec = spec or TinySpec()
    for key, value in overrides.items():
        if not hasattr(spec, key):
            raise TypeError(f"make_tiny_bundle: unknown size {key!r}")
        setattr(spec, key, value)
    # Absolute paths in the configs, so the bundle's own configs work from any working directory.
    out = Path(os.path.abspath(out))
    for sub in ("prompts", "data", "exp"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    from .loading import quiet_loading

    with quiet_loading():  # transformers' "Writing model shards" bars say nothing at this size
        _write_llama(out / "llama", spec)
        _write_whisper(out / "whisper", spec)
    beats_path = ""
    if spec.with_beats:
        from .tiny_beats import make_tiny_beats_checkpoint

        beats_path = str(make_tiny_beats_checkpoint(out / "beats.pt", seed=spec.seed + 3))
    prompts = {
        "gender_recognition": ["<Speech><SpeechHere></Speech> "],
        "asr": ["<Speech><SpeechHere></Speech> "],
    }
    (out / "prompts" / "train_prompt.json").write_text(json.dumps(prompts, indent=2))
    manifests = _write_data(out / "data", spec.seed)
    _write_configs(out, spec, beats_path, manifests)
    _write_salmonn_checkpoint(out, spec)
    (out / "tiny_spec.json").write_text(json.dumps(asdict(spec), indent=2))
    logger.info("tiny bundle written to %s", out)
    return out
