"""Typed run configuration: the official YAML keys, checked against dataclass schemas.

The official code reads its YAML with ``OmegaConf`` into an untyped dict, so a misspelt key is silently
ignored and the default is used. Here the YAML is merged key by key onto ``OmegaConf.structured`` schemas:
every unknown key, wrong type and missing value is collected and reported at once, naming the key and the
file. The official ``configs/config.yaml`` and ``configs/decode_config.yaml`` load unchanged.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config_paths import resolve_config_paths

__all__ = [
    "ConfigError",
    "ModelConfig",
    "DatasetsConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "GenerateConfig",
    "DecodeConfig",
    "load_config",
    "load_train_config",
    "load_decode_config",
    "parse_overrides",
]


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the file and every bad key."""


logger = logging.getLogger(__name__)

# While load_config runs, each section's __post_init__ adds its problems here instead of raising, so one
# error lists the problems of every section (not only those of the first section that fails).
_collected: ContextVar[list[str] | None] = ContextVar("ahamask_config_problems", default=None)

# numpy seeds must fit in 32 bits; the trainer adds the rank to the seed.
_MAX_SEED = 2**32 - 1025
# The device forms ahamask.utils.device.resolve_device accepts (checked here without importing torch).
_DEVICE_RE = re.compile(r"^(auto|cpu|(cuda|npu)(:\d+)?)$")


def _report(errors: list[str]) -> None:
    """Raise a section's problems, or hand them to the running :func:`load_config` to report all at once."""
    if not errors:
        return
    sink = _collected.get()
    if sink is None:
        raise ConfigError("; ".join(errors))
    sink.extend(errors)


def device_problem(key: str, value: str) -> list[str]:
    """``[one line]`` when ``value`` is not a device form ``resolve_device`` accepts, else ``[]`` (no torch)."""
    if _DEVICE_RE.match(str(value).strip().lower()):
        return []
    return [f"{key}: {value!r} is not a device; expected auto, cpu, cuda, cuda:<i>, npu or npu:<i>"]


def _seed_problem(key: str, value: int) -> list[str]:
    if 0 <= value <= _MAX_SEED:
        return []
    return [f"{key}: {value} must be in [0, {_MAX_SEED}] (numpy seeds are 32-bit)"]


@dataclass
class ModelConfig:
    """The ``model:`` section (official SALMONN keys plus a few ahamask extensions)."""

    # Which backbone (ahamask.models.backbone.BACKBONES); the official configs have no key: SALMONN.
    arch: str = "salmonn"
    # A transformers model folder (Qwen2-Audio, Audio Flamingo 3); SALMONN reads llama_path/whisper_path.
    model_path: str = ""
    # Required for SALMONN (checked in __post_init__); other archs read everything from model_path.
    llama_path: str = ""
    whisper_path: str = ""
    beats_path: str = ""
    ckpt: str = ""
    freeze_whisper: bool = True
    freeze_beats: bool = True
    # Window-level Q-Former.
    use_speech_Qformer: bool = True
    freeze_speech_QFormer: bool = False
    window_level_Qformer: bool = True
    num_speech_query_token: int = 1
    second_per_window: float = 0.333333
    second_stride: float = 0.333333
    speech_llama_proj_model: str = ""
    freeze_speech_llama_proj: bool = False
    # LoRA (peft's default LLaMA targets: q_proj and v_proj).
    lora: bool = True
    lora_rank: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    # Prompts.
    multi_prompt: bool = False
    prompt_template: str = ""
    prompt_path: str = ""
    test_prompt_path: str = ""
    max_txt_len: int = 128
    end_sym: str = "</s>"
    # Accepted for compatibility; 8-bit loading needs bitsandbytes and a GPU.
    low_resource: bool = False
    device_8bit: int = 0
    autocast_dtype: str = "float16"
    # Mask training (official keys).
    use_gumbel: bool = True
    gumbel_hard: bool = True
    norm_lambda: float = 1e-4
    # Decoding with a mask (official decode-config keys).
    weight_mask_path: str | None = None
    shuffle_mask: bool = False
    # --- ahamask extensions (absent from the official configs; defaults reproduce the official model) ---
    # Q-Former width: the official one is BERT-base (768 wide, 12 heads, 3072 FFN, 2 layers).
    qformer_hidden_size: int = 768
    qformer_num_heads: int = 12
    qformer_intermediate_size: int = 3072
    qformer_num_layers: int = 2
    # Gumbel noise: "left" (official left-tail, log(Exp(1))) or "logistic" (symmetric).
    gumbel_noise: str = "left"
    # Multiply each layer's FFN output by the mask's last entry (the official never applies it).
    apply_ffn_mask: bool = False
    # Random-mask ablation: "global" keeps the total head count, "per_layer" each layer's count.
    shuffle_mask_mode: str = "global"
    shuffle_mask_seed: int = 0
    # LLM weight dtype: "auto" = float16 on an accelerator, float32 on CPU (the official fails on CPU).
    llm_dtype: str = "auto"
    # Attention implementation for the LLM ("sdpa" or "eager").
    attn_implementation: str = "sdpa"
    # transformers-native backbones (qwen2_audio, audio_flamingo3)
    # "instruct": the model's chat template (answers end at <|im_end|>); "base": Qwen2-Audio-Base's plain
    # "<|audio_bos|><|AUDIO|><|audio_eos|>" prefix (answers end at <|endoftext|>).
    variant: str = "instruct"

    def front_end_path(self) -> str:
        """The folder whose ``preprocessor_config.json`` gives the audio front end (dataset chunk length)."""
        return self.whisper_path or self.model_path

    def __post_init__(self) -> None:
        errors = []
        if self.autocast_dtype not in ("float16", "bfloat16"):
            errors.append(f"model.autocast_dtype: {self.autocast_dtype!r} is not 'float16' or 'bfloat16'")
        if self.gumbel_noise not in ("left", "logistic"):
            errors.append(f"model.gumbel_noise: {self.gumbel_noise!r} is not 'left' or 'logistic'")
        if self.shuffle_mask_mode not in ("global", "per_layer"):
            errors.append(
                f"model.shuffle_mask_mode: {self.shuffle_mask_mode!r} is not 'global' or 'per_layer'"
            )
        if self.llm_dtype not in ("auto", "float32", "float16", "bfloat16"):
            errors.append(f"model.llm_dtype: {self.llm_dtype!r} is not auto/float32/float16/bfloat16")
        if self.prompt_template and self.prompt_template.count("{}") != 1:
            errors.append(f"model.prompt_template: {self.prompt_template!r} must contain exactly one '{{}}'")
        sizes = ("num_speech_query_token", "max_txt_len", "qformer_hidden_size", "qformer_num_heads")
        for key in (*sizes, "qformer_intermediate_size", "qformer_num_layers"):
            if getattr(self, key) < 1:
                errors.append(f"model.{key}: {getattr(self, key)} must be >= 1")
        if self.qformer_num_heads >= 1 and self.qformer_hidden_size % self.qformer_num_heads:
            errors.append("model.qformer_hidden_size must be a multiple of model.qformer_num_heads")
        for key in ("second_per_window", "second_stride"):
            if not getattr(self, key) > 0:
                errors.append(f"model.{key}: {getattr(self, key)} must be > 0 (seconds)")
        if self.lora:
            if self.lora_rank < 1:
                errors.append(f"model.lora_rank: {self.lora_rank} must be >= 1 (or set model.lora: false)")
            if not self.lora_alpha > 0:
                errors.append(f"model.lora_alpha: {self.lora_alpha} must be > 0")
            if not 0 <= self.lora_dropout < 1:
                errors.append(f"model.lora_dropout: {self.lora_dropout} must be in [0, 1)")
        if not self.norm_lambda >= 0:
            errors.append(f"model.norm_lambda: {self.norm_lambda} must be >= 0")
        errors += _seed_problem("model.shuffle_mask_seed", self.shuffle_mask_seed)
        if self.low_resource:
            errors.append(
                "model.low_resource: 8-bit loading (bitsandbytes) is not supported; use llm_dtype float16"
            )
        if not self.use_speech_Qformer:
            errors.append(
                "model.use_speech_Qformer: only the Q-Former aligner exists (as in the official code)"
            )
        _report(errors)


@dataclass
class DatasetsConfig:
    """The ``datasets:`` section."""

    train_ann_path: str = ""
    valid_ann_path: str = ""
    test_ann_path: str = ""
    whisper_path: str = ""
    # Drop manifest entries whose audio is bad (reported once) instead of stopping.
    skip_bad_entries: bool = False
    # Audio not at 16 kHz: "torchaudio_sinc" (the official torchaudio.transforms.Resample kernel, reproduced)
    # or "soxr" (ahamask's earlier choice; features differ by up to ~0.09 in log-mel).
    resampler: str = "torchaudio_sinc"

    def __post_init__(self) -> None:
        _report(_resampler_problem("datasets.resampler", self.resampler))


@dataclass
class OptimConfig:
    """``run.optims``: AdamW with linear warm-up then cosine decay (official defaults)."""

    max_epoch: int = 30
    warmup_steps: int = 3000
    warmup_start_lr: float = 1e-6
    init_lr: float = 1e-2
    min_lr: float = 1e-4
    weight_decay: float = 0.05
    beta2: float = 0.999


@dataclass
class RunConfig:
    """The ``run:`` section (official keys plus resume / checkpointing extensions)."""

    seed: int = 42
    output_dir: str = "exp/demo_output"
    evaluate: bool = False
    log_freq: int = 5
    epoch_based: bool = False
    iters_per_epoch: int = 3000
    accum_grad_iters: int = 1
    batch_size_train: int = 8
    batch_size_eval: int = 8
    num_workers: int = 8
    device: str = "auto"
    use_distributed: bool = True
    amp: bool = True
    world_size: int = 1
    dist_url: str = "env://"
    tau_decay_steps: float = 0.3
    tau_temp_begin: float = 4.0
    tau_temp_end: float = 0.05
    norm_lambda: float = 1e-4
    optims: OptimConfig = field(default_factory=OptimConfig)
    # --- ahamask extensions ---
    job_id: str = ""
    resume: str = ""
    save_every_steps: int = 0
    # Keep only the newest N epoch checkpoints and the newest N step checkpoints (0: keep all, as the official).
    keep_last_checkpoints: int = 0
    mask_init_mean: float = 4.0
    mask_init_std: float = 0.02
    # On by default: mask training freezes everything before the LLM, so each clip is encoded once and later
    # epochs reuse its embeddings (identical mask; about 0.9 MB per clip for SALMONN-13B in fp16, held in
    # memory: set false, or speech_cache_dir, for very large training sets).
    cache_speech_embeds: bool = True
    # With cache_speech_embeds: also keep the embeddings on disk here, reused by later runs on the same
    # audio and model (entries are keyed by audio content and a fingerprint of the frozen front end).
    speech_cache_dir: str = ""
    max_val_batches: int = 0

    def __post_init__(self) -> None:
        errors = []
        for key in ("iters_per_epoch", "accum_grad_iters", "batch_size_train", "batch_size_eval", "log_freq"):
            if getattr(self, key) < 1:
                errors.append(f"run.{key}: {getattr(self, key)} must be >= 1")
        if self.tau_decay_steps < 0:
            errors.append(f"run.tau_decay_steps: {self.tau_decay_steps} must be >= 0")
        if self.tau_temp_begin <= 0 or self.tau_temp_end <= 0:
            errors.append("run.tau_temp_begin / run.tau_temp_end must be > 0")
        if self.optims.max_epoch < 1:
            errors.append(f"run.optims.max_epoch: {self.optims.max_epoch} must be >= 1")
        # Counts where 0 means "off" or "in the main process"; a negative value has no meaning.
        zero_means = {"num_workers": "main process", "save_every_steps": "off", "max_val_batches": "all"}
        for key, meaning in zero_means.items():
            if getattr(self, key) < 0:
                errors.append(f"run.{key}: {getattr(self, key)} must be >= 0 (0: {meaning})")
        optims = self.optims
        if optims.warmup_steps < 0:
            errors.append(f"run.optims.warmup_steps: {optims.warmup_steps} must be >= 0 (0: no warm-up)")
        if not optims.init_lr > 0:
            errors.append(f"run.optims.init_lr: {optims.init_lr} must be > 0")
        for key in ("warmup_start_lr", "min_lr", "weight_decay"):
            if not getattr(optims, key) >= 0:
                errors.append(f"run.optims.{key}: {getattr(optims, key)} must be >= 0")
        if optims.min_lr > optims.init_lr > 0:
            errors.append(f"run.optims.min_lr: {optims.min_lr} must be <= run.optims.init_lr")
        if not 0 <= optims.beta2 < 1:
            errors.append(f"run.optims.beta2: {optims.beta2} must be in [0, 1)")
        if not self.norm_lambda >= 0:
            errors.append(f"run.norm_lambda: {self.norm_lambda} must be >= 0")
        if not self.mask_init_std >= 0:
            errors.append(f"run.mask_init_std: {self.mask_init_std} must be >= 0")
        if self.world_size < 1:
            errors.append(f"run.world_size: {self.world_size} must be >= 1")
        errors += _seed_problem("run.seed", self.seed)
        errors += device_problem("run.device", self.device)
        _report(errors)


@dataclass
class TrainConfig:
    """A training YAML: ``model``, ``datasets`` and ``run``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    datasets: DatasetsConfig = field(default_factory=DatasetsConfig)
    run: RunConfig = field(default_factory=RunConfig)


@dataclass
class GenerateConfig:
    """``generate:``: the official generation keys and their defaults in the decode config."""

    max_new_tokens: int = 200
    num_beams: int = 4
    do_sample: bool = False
    min_length: int = 1
    temperature: float = 1.0
    top_p: float = 0.9
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    # --- ahamask extensions ---
    # Beam scoring: "transformers" (the installed transformers' beam search) or "official" (transformers
    # 4.28's, as the paper ran it: the dummy BOS counted in lengths, 4.28's early-stop rule).
    beam_scoring: str = "transformers"
    # "per_sample" decodes every sample to its own </s>; "official_row0" reproduces the official defect
    # (the whole batch stops when row 0 ends), for comparisons only.
    stop_rule: str = "per_sample"

    def __post_init__(self) -> None:
        errors = []
        if self.beam_scoring not in ("transformers", "official"):
            errors.append(f"generate.beam_scoring: {self.beam_scoring!r} is not 'transformers' or 'official'")
        if self.stop_rule not in ("per_sample", "official_row0"):
            errors.append(f"generate.stop_rule: {self.stop_rule!r} is not 'per_sample' or 'official_row0'")
        beams = self.num_beams > 1
        if beams and self.beam_scoring == "official" and self.do_sample:
            errors.append(
                "generate.beam_scoring: 'official' is beam search without sampling (set do_sample: false)"
            )
        if beams and self.stop_rule == "official_row0" and self.beam_scoring != "official":
            errors.append(
                "generate.stop_rule: 'official_row0' with num_beams > 1 needs beam_scoring: official"
            )
        _report(errors)


@dataclass
class DecodeConfig:
    """A decoding YAML (evaluate.py, cli_inference.py)."""

    batch_size_eval: int = 4
    num_workers: int = 0
    test_data_path: str = ""
    output_path: str = "tmp.json"
    prompt: str = ""
    prob_threshold: float = 0.5
    device: str = "auto"
    seed: int = 42
    # --- ahamask extensions ---
    # How a binary mask is applied while decoding: "fold" zeroes the masked heads' o_proj columns for the
    # run (zero cost, identical outputs), "hooks" multiplies head outputs in forward pre-hooks, "prune"
    # removes the masked heads, "auto" prunes where that measured faster than folding (sparse masks, see
    # ahamask.masking.apply.choose_application) and folds otherwise.
    mask_application: str = "auto"
    # Decode in length-sorted batches with batched Whisper features (single process; same answers without
    # BEATs, whose features depend on the batch padding).
    bucket_by_length: bool = False
    # Keep the speech embeddings on disk here (keyed by audio content and the front end's weights): a later
    # evaluate.py or instruction sweep on the same audio and model skips the encoders (e.g. ten masks, one
    # test set: it is encoded once). "" keeps nothing.
    speech_cache_dir: str = ""
    # As datasets.resampler of the training config: "torchaudio_sinc" (official) or "soxr".
    resampler: str = "torchaudio_sinc"
    # Decode with a steering file added to the residual stream (ahamask.analysis.steering): an
    # audio-silence direction (scripts/find_audio_heads.py) scaled by beta, or instruction-contrast vectors
    # (scripts/steering_vectors.py build) scaled by alpha; steering_strength is that beta / alpha.
    steering_path: str = ""
    steering_strength: float = 1.0
    model: ModelConfig = field(default_factory=ModelConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)

    def __post_init__(self) -> None:
        errors = []
        if self.mask_application not in ("auto", "fold", "hooks", "prune"):
            errors.append(f"mask_application: {self.mask_application!r} is not auto, fold, hooks or prune")
        if not 0.0 < self.prob_threshold < 1.0:
            errors.append(f"prob_threshold: {self.prob_threshold} must be in (0, 1)")
        if self.batch_size_eval < 1:
            errors.append(f"batch_size_eval: {self.batch_size_eval} must be >= 1")
        if self.num_workers < 0:
            errors.append(f"num_workers: {self.num_workers} must be >= 0 (0 reads audio in the main process)")
        if not self.output_path.strip():
            errors.append("output_path: empty; set it to the prediction file to write (e.g. exp/pred.json)")
        elif self.test_data_path and os.path.normpath(self.output_path) == os.path.normpath(
            self.test_data_path
        ):
            errors.append(f"output_path: {self.output_path!r} is test_data_path (it would be overwritten)")
        errors += _seed_problem("seed", self.seed)
        errors += device_problem("device", self.device)
        errors += generate_problems(self.generate)
        errors += _resampler_problem("resampler", self.resampler)
        _report(errors)


def _resampler_problem(key: str, value: str) -> list[str]:
    choices = ("torchaudio_sinc", "soxr")  # ahamask.data.audio.RESAMPLERS (not imported: no numpy here)
    return [] if value in choices else [f"{key}: {value!r} is not one of {', '.join(choices)}"]


def generate_problems(gen: GenerateConfig) -> list[str]:
    """The ``generate`` values transformers' ``generate`` would reject or silently misuse, one line each.

    transformers checks these only once decoding starts (``num_beams=0`` even ends in a ZeroDivisionError),
    so they are checked here, with the key named, before any model is loaded.
    """
    errors = []
    if gen.max_new_tokens < 1:
        errors.append(f"generate.max_new_tokens: {gen.max_new_tokens} must be >= 1")
    if gen.num_beams < 1:
        errors.append(f"generate.num_beams: {gen.num_beams} must be >= 1 (1: greedy or plain sampling)")
    if gen.min_length < 0:
        errors.append(f"generate.min_length: {gen.min_length} must be >= 0")
    elif gen.max_new_tokens >= 1 and gen.min_length - 1 > gen.max_new_tokens:
        # min_length counts a dummy BOS as in transformers 4.28, hence the 1.
        errors.append(
            f"generate.min_length: {gen.min_length} asks for more tokens than generate.max_new_tokens "
            f"({gen.max_new_tokens}) allows; expected min_length <= max_new_tokens + 1"
        )
    if not 0 < gen.top_p <= 1:
        errors.append(f"generate.top_p: {gen.top_p} must be in (0, 1]")
    if gen.do_sample and not gen.temperature > 0:
        errors.append(f"generate.temperature: {gen.temperature} must be > 0 when sampling (do_sample: true)")
    elif not gen.temperature >= 0:
        errors.append(f"generate.temperature: {gen.temperature} must be >= 0")
    if not gen.repetition_penalty > 0:
        errors.append(f"generate.repetition_penalty: {gen.repetition_penalty} must be > 0 (1.0: no penalty)")
    if gen.length_penalty != gen.length_penalty or abs(gen.length_penalty) == float("inf"):
        errors.append(f"generate.length_penalty: {gen.length_penalty} must be a finite number")
    return errors


T = TypeVar("T")


def parse_overrides(tokens: Sequence[str] | None) -> list[tuple[str, str]]:
    """Turn ``--options`` tokens into ``(key, value)`` pairs.

    Accepts ``key=value`` tokens and the official alternating form ``key value``; both may be mixed.

    Raises:
        ConfigError: a key without a value.
    """
    pairs: list[tuple[str, str]] = []
    items = list(tokens or [])
    i = 0
    while i < len(items):
        token = items[i]
        if token.startswith("--"):
            raise ConfigError(f"override {token!r}: flags are not overrides; write key=value")
        if "=" in token:
            key, value = token.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(items):
                raise ConfigError(f"override {token!r} has no value (write {token}=VALUE)")
            key, value = token, items[i + 1]
            i += 2
        pairs.append((key.strip(), value))
    return pairs


def _flatten(node: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Yield ``(dotted_key, leaf_value)`` for a loaded YAML tree (lists count as leaves)."""
    if isinstance(node, DictConfig):
        if not len(node) and prefix:
            yield prefix, {}
        for key in node.keys():
            child = node._get_node(key)
            if OmegaConf.is_missing(node, key):
                value = MISSING  # "???" in a template: reported below as a missing value
            else:
                value = child if isinstance(child, (DictConfig, ListConfig)) else node[key]
            yield from _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, node


def _suggest(schema_node: Any, key: str) -> str:
    """A 'did you mean' hint for an unknown key, from the keys the schema has at that level."""
    parent, _, leaf = key.rpartition(".")
    try:
        node = OmegaConf.select(schema_node, parent) if parent else schema_node
        options = list(node.keys()) if isinstance(node, DictConfig) else []
    except OmegaConfBaseException:
        options = []
    close = difflib.get_close_matches(leaf, options, n=1)
    return f" (did you mean {parent + '.' if parent else ''}{close[0]}?)" if close else ""


def load_config(
    path: str | Path | None,
    schema: type[T],
    overrides: Sequence[str] | None = None,
) -> T:
    """Load a YAML file onto a dataclass schema, apply overrides, and validate everything at once.

    Args:
        path: YAML file (``None`` uses the schema defaults only).
        schema: one of the config dataclasses, e.g. ``TrainConfig``.
        overrides: ``--options`` tokens (``key=value`` or alternating ``key value``).

    Returns:
        The validated dataclass instance.

    Raises:
        ConfigError: naming the file and every unknown key, bad type, missing value or failed check.

    Example:
        >>> cfg = load_config("configs/config.yaml", TrainConfig, ["run.seed=1"])
    """
    source = str(path) if path is not None else "<defaults>"
    base = OmegaConf.structured(schema)
    entries = _file_entries(path, source) if path is not None else []
    for key, value in parse_overrides(overrides):
        parsed = OmegaConf.from_dotlist([f"{key}={value}"])
        entries.append((key, OmegaConf.select(parsed, key), "--options"))
    errors = _merge_entries(base, entries)
    given = {key for key, _, _ in entries}
    missing = sorted(OmegaConf.missing_keys(base) | (_arch_paths_missing(base) - given))
    errors += [f"{key}: missing mandatory value" for key in missing]
    if missing:  # the section checks below cannot run without every value
        raise ConfigError(f"{source}: " + "; ".join(errors))
    cfg, check_errors = _to_checked_object(base)
    errors += check_errors
    if errors:
        raise ConfigError(f"{source}: " + "; ".join(errors))
    _warn_no_effect(cfg)
    return cfg


def _file_entries(path: str | Path, source: str) -> list[tuple[str, Any, str]]:
    """The ``(dotted_key, value, origin)`` leaves of a YAML file, its relative paths resolved beside it.

    Raises:
        ConfigError: a missing file, invalid YAML, or a top level that is not a mapping (these stop the
            load at once: nothing else can be checked without the file).
    """
    if not Path(path).is_file():
        raise ConfigError(f"{source}: no such config file")
    try:
        loaded = OmegaConf.load(path)
    except Exception as exc:  # yaml errors come in several classes
        raise ConfigError(f"{source}: not valid YAML ({_yaml_reason(exc)})") from exc
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    # Relative paths in the file may point beside it (rule: ahamask/config_paths.py); overrides may not.
    resolve_config_paths(loaded, Path(path).parent)
    return [(k, v, source) for k, v in _flatten(loaded)]


def _merge_entries(base: DictConfig, entries: list[tuple[str, Any, str]]) -> list[str]:
    """Merges every entry into ``base`` in order and returns the problems (unknown keys with a 'did you
    mean', bad types) instead of stopping at the first, so that all are reported at once."""
    errors: list[str] = []
    for key, value, origin in entries:
        try:
            try:
                OmegaConf.update(base, key, value, merge=True)
            except OmegaConfBaseException:
                if value is not None:
                    raise
                # An empty value (``key:`` in YAML, ``key=`` on the command line) means "" for a string key.
                OmegaConf.update(base, key, "", merge=True)
        except OmegaConfBaseException as exc:
            reason = str(exc).splitlines()[0]
            if "not in" in reason or "Key" in reason and "not" in reason:
                reason = "unknown key" + _suggest(base, key)
            errors.append(f"{key}: {reason} [{origin}]")
    return errors


def _to_checked_object(base: DictConfig) -> tuple[Any, list[str]]:
    """Builds the dataclass with each ``__post_init__`` check's problems collected, so every section's are
    reported at once (keys rejected earlier keep their defaults here, which pass); returns it and them."""
    errors: list[str] = []
    cfg = None
    token = _collected.set([])
    try:
        cfg = OmegaConf.to_object(base)
        errors += _collected.get() or []
    except ConfigError as exc:  # a check called outside the collecting protocol
        errors.append(str(exc))
    except OmegaConfBaseException as exc:
        errors.append(str(exc).splitlines()[0])
    finally:
        _collected.reset(token)
    return cfg, errors


def _arch_paths_missing(base: DictConfig) -> set[str]:
    """The model folders the chosen ``model.arch`` needs but the config leaves empty (SALMONN: its LLaMA
    and Whisper folders, as the official configs require; the transformers-native backbones: model_path).

    Only keys the config does not mention count as missing: one set to "" is reported by the preflight
    check (``model.llama_path: empty``) with every other problem of the run.
    """
    model = base.get("model") if "model" in base else None
    if model is None or OmegaConf.is_missing(model, "arch"):
        return set()
    needed = ("llama_path", "whisper_path") if model.arch == "salmonn" else ("model_path",)
    return {f"model.{key}" for key in needed if not OmegaConf.is_missing(model, key) and not model[key]}


def _yaml_reason(exc: Exception) -> str:
    """A YAML parse error in one line: what is wrong and where (PyYAML's text spans three or four lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " ".join(str(exc).split())


# Official keys that must load (official configs use them) but change nothing in ahamask, and why.
_NO_EFFECT: dict[str, str] = {
    "run.evaluate": "decoding is its own command here (evaluate.py)",
    "run.dist_url": "torchrun's environment (env://) sets up the process group",
    "run.world_size": "the process count comes from torchrun --nproc_per_node",
    "model.device_8bit": "8-bit loading is not supported (model.low_resource)",
    "model.test_prompt_path": "evaluate.py takes its instruction from the prompt key",
}
_warned: set[str] = set()


def _warn_no_effect(cfg: Any) -> None:
    """One warning line (once per process, rank 0) for each accepted official key set to a value that does nothing."""
    lines = []
    for key, reason in _NO_EFFECT.items():
        section, _, leaf = key.partition(".")
        node = getattr(cfg, section, None)
        if node is None or not hasattr(node, leaf):
            continue
        default = getattr(type(node), leaf)  # a dataclass keeps plain defaults as class attributes
        value = getattr(node, leaf)
        if value != default:
            lines.append(f"{key}: {value!r} has no effect: {reason}")
    if isinstance(cfg, TrainConfig) and cfg.model.norm_lambda != cfg.run.norm_lambda:
        default = ModelConfig.norm_lambda
        if cfg.model.norm_lambda != default:
            lines.append(
                f"model.norm_lambda: {cfg.model.norm_lambda} has no effect: "
                f"training uses run.norm_lambda ({cfg.run.norm_lambda})"
            )
    if os.environ.get("RANK", "0") != "0":
        return
    for line in lines:
        if line not in _warned:
            _warned.add(line)
            logger.warning("%s", line)


def load_train_config(path: str | Path, overrides: Sequence[str] | None = None) -> TrainConfig:
    """Load a training YAML (``model``, ``datasets``, ``run``)."""
    return load_config(path, TrainConfig, overrides)


def load_decode_config(path: str | Path, overrides: Sequence[str] | None = None) -> DecodeConfig:
    """Load a decoding YAML (evaluate.py / cli_inference.py keys)."""
    return load_config(path, DecodeConfig, overrides)


def to_yaml(cfg: Any) -> str:
    """Render a config dataclass as YAML (saved next to checkpoints for reproducibility)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
