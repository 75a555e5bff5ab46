"""Tiny on-disk Qwen2-Audio and Audio Flamingo 3 folders: the hub layout at toy sizes, built in seconds.

The real folders (Qwen/Qwen2-Audio-7B(-Instruct), nvidia/audio-flamingo-3-hf) cannot be downloaded here, so
tests use folders written by ``save_pretrained`` of the same transformers classes, with random weights::

    OUT/model/   config.json, model.safetensors, generation_config.json, preprocessor_config.json,
                 processor_config.json, tokenizer.json, tokenizer_config.json, chat_template.jinja
    OUT/prompts/ train_prompt.json (no instruction, AHAMask style)
    OUT/data/    the SALMONN tiny bundle's synthetic clips and manifests (:mod:`ahamask.models.tiny`)
    OUT/config.yaml, OUT/decode_config.yaml   ``model.arch`` set, paths inside OUT

The tokenizer is a small byte-level BPE trained here with Qwen2's pre-tokeniser, plus the special tokens the
processors read (``<|im_start|>``, ``<|im_end|>``, ``<|endoftext|>``, and ``<|audio_bos|>``, ``<|AUDIO|>``,
``<|audio_eos|>`` for Qwen2-Audio, ``<sound>`` for AF3), appended after the BPE vocabulary as in Qwen's.

Sizes: the encoders take ``chunk_seconds`` (default 4 s) windows instead of 30 s, so their
``max_source_positions`` is ``chunk_seconds * 50`` (the encoder needs exactly ``2 * max_source_positions``
mel frames, 100 per second) and the feature extractor's ``chunk_length`` is ``chunk_seconds``; one audio
token still covers 40 ms. AF3's ``max_audio_len`` is 20 windows, as the real 600 s / 30 s.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "TinyHFSpec",
    "QWEN2_AUDIO_CHAT_TEMPLATE",
    "AF3_CHAT_TEMPLATE",
    "train_qwen_style_tokenizer",
    "make_tiny_qwen2_audio_bundle",
    "make_tiny_audio_flamingo3_bundle",
]

#: Qwen2-Audio-7B-Instruct's template (transformers keeps the same text as ``default_chat_template``).
QWEN2_AUDIO_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant."
    "<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if 'audio' in content or 'audio_url' in content or content['type'] == 'audio' %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: A template rendering what transformers' AF3 processor test pins for audio-flamingo-3-hf: the default
#: system turn, then ``<sound>`` before the user's text (``<|im_start|>user\n<sound>What ...?<|im_end|>``).
AF3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant."
    "<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' %}<sound>{% endif %}{% endfor %}"
    "{% for content in message['content'] %}{% if content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]
_QWEN2_AUDIO_TOKENS = [*_CHAT_TOKENS, "<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"]
_AF3_TOKENS = [*_CHAT_TOKENS, "<sound>"]


@dataclass
class TinyHFSpec:
    """Sizes of a tiny transformers-native bundle (AF3 defaults to 4 query heads over 2 KV heads)."""

    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None
    hidden_size: int = 64
    intermediate_size: int = 128
    bpe_vocab: int = 600
    encoder_d_model: int = 32
    encoder_layers: int = 2
    encoder_heads: int = 2
    n_mels: int = 128
    chunk_seconds: int = 4
    seed: int = 0


def train_qwen_style_tokenizer(special_tokens: list[str], bpe_vocab: int = 600):
    """A ``Qwen2Tokenizer`` (byte-level BPE, Qwen2's pre-tokeniser) trained on the tiny corpus.

    ``<|endoftext|>`` is id 0 (unk, eos and pad, as in Qwen's tokenizer); ``special_tokens`` follow the BPE
    vocabulary.
    """
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    from .tiny import DEFAULT_CORPUS

    bpe = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_vocab,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    bpe.train_from_iterator(DEFAULT_CORPUS * 4, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": list(special_tokens)})
    return tokenizer


def _text_config(spec: TinyHFSpec, tokenizer, n_kv_heads: int):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.n_layers,
        num_attention_heads=spec.n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _encoder_kwargs(spec: TinyHFSpec) -> dict:
    # 100 mel frames per second, conv stride 2: max_source_positions = 50 per second of the chunk.
    return {
        "num_mel_bins": spec.n_mels,
        "encoder_layers": spec.encoder_layers,
        "encoder_attention_heads": spec.encoder_heads,
        "encoder_ffn_dim": spec.encoder_d_model * 2,
        "d_model": spec.encoder_d_model,
        "max_source_positions": spec.chunk_seconds * 50,
    }


def _save_model(folder: Path, model, processor, seed: int) -> None:
    """Random weights, the processor, and a separate preprocessor_config.json as the hub folders have."""
    from transformers import AutoProcessor

    from .loading import quiet_loading

    with quiet_loading():
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        processor.feature_extractor.save_pretrained(folder)
    AutoProcessor.from_pretrained(str(folder), local_files_only=True)  # the folder must load as written


def _write_qwen2_audio(folder: Path, spec: TinyHFSpec) -> None:
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioEncoderConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    tokenizer = train_qwen_style_tokenizer(_QWEN2_AUDIO_TOKENS, spec.bpe_vocab)
    extractor = WhisperFeatureExtractor(feature_size=spec.n_mels, chunk_length=spec.chunk_seconds)
    processor = Qwen2AudioProcessor(extractor, tokenizer, chat_template=QWEN2_AUDIO_CHAT_TEMPLATE)
    config = Qwen2AudioConfig(
        audio_config=Qwen2AudioEncoderConfig(**_encoder_kwargs(spec)).to_dict(),
        text_config=_text_config(spec, tokenizer, spec.n_kv_heads or spec.n_heads).to_dict(),
        audio_token_id=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )
    torch.manual_seed(spec.seed)
    _save_model(folder, Qwen2AudioForConditionalGeneration(config), processor, spec.seed)


def _write_audio_flamingo3(folder: Path, spec: TinyHFSpec) -> None:
    from transformers import (
        AudioFlamingo3Config,
        AudioFlamingo3EncoderConfig,
        AudioFlamingo3ForConditionalGeneration,
        AudioFlamingo3Processor,
        WhisperFeatureExtractor,
    )

    tokenizer = train_qwen_style_tokenizer(_AF3_TOKENS, spec.bpe_vocab)
    tokenizer.eos_token = "<|im_end|>"  # Qwen2.5-Instruct's tokenizer ends turns (and generation) there
    extractor = WhisperFeatureExtractor(feature_size=spec.n_mels, chunk_length=spec.chunk_seconds)
    processor = AudioFlamingo3Processor(
        extractor, tokenizer, chat_template=AF3_CHAT_TEMPLATE, max_audio_len=20 * spec.chunk_seconds
    )
    config = AudioFlamingo3Config(
        audio_config=AudioFlamingo3EncoderConfig(**_encoder_kwargs(spec)).to_dict(),
        text_config=_text_config(spec, tokenizer, spec.n_kv_heads or max(spec.n_heads // 2, 1)).to_dict(),
        audio_token_id=tokenizer.convert_tokens_to_ids("<sound>"),
    )
    torch.manual_seed(spec.seed)
    _save_model(folder, AudioFlamingo3ForConditionalGeneration(config), processor, spec.seed)


def _model_section(out: Path, arch: str, variant: str) -> dict:
    folder = str(out / "model")
    return {
        "arch": arch,
        "model_path": folder,
        # SALMONN's two required keys; the dataset reads the 30 s (here: 4 s) chunk from whisper_path.
        "llama_path": folder,
        "whisper_path": folder,
        "variant": variant,
        "prompt_path": str(out / "prompts" / "train_prompt.json"),
        "max_txt_len": 300,
        "use_gumbel": True,
        "gumbel_hard": True,
    }


def _write_configs(out: Path, arch: str, variant: str, spec: TinyHFSpec) -> None:
    """The SALMONN tiny bundle's configs (same run and generate sections), with this model section."""
    from omegaconf import OmegaConf

    from . import tiny

    manifests = tiny._write_data(out / "data", spec.seed)
    tiny._write_configs(out, tiny.TinySpec(seed=spec.seed), "", manifests)
    model = _model_section(out, arch, variant)
    for name, extra in (("config.yaml", {}), ("decode_config.yaml", {"shuffle_mask": False})):
        cfg = OmegaConf.to_container(OmegaConf.load(out / name))
        cfg["model"] = {**model, **extra, **({"weight_mask_path": None} if extra else {})}
        if "datasets" in cfg:
            cfg["datasets"]["whisper_path"] = model["whisper_path"]
        OmegaConf.save(OmegaConf.create(cfg), out / name)


def _make_bundle(
    out: str | Path, arch: str, variant: str, writer, spec: TinyHFSpec | None, overrides
) -> Path:
    spec = spec or TinyHFSpec()
    for key, value in overrides.items():
        if not hasattr(spec, key):
            raise TypeError(f"tiny {arch} bundle: unknown size {key!r}")
        setattr(spec, key, value)
    out = Path(os.path.abspath(out))
    for sub in ("model", "prompts", "data", "exp"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    writer(out / "model", spec)
    prompts = {
        "gender_recognition": ["<Speech><SpeechHere></Speech> "],
        "asr": ["<Speech><SpeechHere></Speech> "],
    }
    (out / "prompts" / "train_prompt.json").write_text(json.dumps(prompts, indent=2))
    _write_configs(out, arch, variant, spec)
    (out / "tiny_spec.json").write_text(json.dumps({"arch": arch, **asdict(spec)}, indent=2))
    logger.info("tiny %s bundle written to %s", arch, out)
    return out


def make_tiny_qwen2_audio_bundle(
    out: str | Path, spec: TinyHFSpec | None = None, variant: str = "instruct", **overrides
) -> Path:
    """Write a tiny Qwen2-Audio bundle (``variant``: ``instruct`` or ``base``, the config's ``model.variant``).

    Example:
        >>> bundle = make_tiny_qwen2_audio_bundle(tmp_path)
        >>> model = build_backbone(load_decode_config(bundle / "decode_config.yaml").model)
    """
    return _make_bundle(out, "qwen2_audio", variant, _write_qwen2_audio, spec, overrides)


def make_tiny_audio_flamingo3_bundle(out: str | Path, spec: TinyHFSpec | None = None, **overrides) -> Path:
    """Write a tiny Audio Flamingo 3 bundle (grouped-query LLM: 4 query heads over 2 KV heads by default)."""
    return _make_bundle(out, "audio_flamingo3", "instruct", _write_audio_flamingo3, spec, overrides)
