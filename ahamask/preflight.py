"""Pre-flight checks: every input and output of a run, checked before the model is loaded.

A run that fails after loading a 13B model, or after decoding every entry, wastes minutes to hours and
may lose its results. So each entry point checks its whole input first, cheapest checks first:

1. files and folders the config names (present, of the right kind, readable), the output location
   (creatable, writable, not a folder, not any input file), each manifest's schema and every audio file's
   header (the fast path of ``scripts/check_manifest.py --quick``). None of this imports torch.
2. only when all of that passed: the files torch reads, opened weights-only without building anything: the
   mask (finite, with the geometry of the LLM in ``model.llama_path/config.json``), the SALMONN checkpoint
   (its key set and the shapes the config decides), BEATs and the projection checkpoint, and ``.bin``
   weights in the model folders (which transformers unpickles).

Every problem found in a stage is reported in one line, each part naming its config key and file.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .config import DecodeConfig, ModelConfig, TrainConfig
from .data.manifest import ManifestError, scan_manifest

logger = logging.getLogger(__name__)

__all__ = [
    "PreflightError",
    "check_chat_inputs",
    "check_decode_inputs",
    "check_train_inputs",
    "llm_geometry",
    "output_dir_problem",
    "output_file_problem",
]

# Top-level modules of SALMONN whose parameters an official checkpoint may hold.
_CKPT_PREFIXES = (
    "speech_encoder.",
    "beats.",
    "llama_model.",
    "speech_Qformer.",
    "speech_query_tokens",
    "speech_llama_proj.",
    "ln_speech.",
    "ln_audio.",
)
# Files whose names end like this are unpickled by transformers when a folder has no safetensors.
_PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth")
# Longest file name most file systems accept, in bytes.
_NAME_MAX = 255


class PreflightError(ValueError):
    """An input or output of a run is unusable; one line naming each config key, file and expected form."""


# ---------------------------------------------------------------------------------------------------------
# Files and folders


def _input_file(key: str, value: str | None, what: str) -> str | None:
    """Why ``value`` (the config key's file) cannot be read, or None."""
    if not value:
        return f"{key}: empty; expected {what}"
    path = Path(value).expanduser()
    if path.is_dir():
        return f"{key}: {value} is a directory; expected {what}"
    if not path.is_file():
        return f"{key}: no such file: {value}"
    if not os.access(path, os.R_OK):
        return f"{key}: {value} is not readable (permission denied)"
    return None


def _input_dir(key: str, value: str | None, what: str, need: Iterable[str] = ()) -> str | None:
    """Why ``value`` is not a usable folder holding ``need`` (each an alternative list joined by '|'), or None."""
    if not value:
        return f"{key}: empty; expected {what}"
    path = Path(value).expanduser()
    if not path.exists():
        return f"{key}: no such directory: {value}"
    if not path.is_dir():
        return f"{key}: {value} is a file; expected {what}"
    for names in need:
        options = names.split("|")
        if not any((path / name).is_file() for name in options):
            return f"{key}: {value} has no {' or '.join(options)}; expected {what}"
    return None


def _creatable(key: str, folder: Path) -> str | None:
    """Why ``folder`` cannot be created or written in, judged from its nearest existing ancestor."""
    ancestor = folder
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{key}: cannot create the folder {folder}: {ancestor} is a file"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{key}: cannot write in {ancestor} (permission denied)"
    return None


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare where they would be
        return os.path.realpath(a) == os.path.realpath(b)


def output_file_problem(
    key: str, value: str | None, inputs: Mapping[str, str | None] | None = None, audio: Iterable[str] = ()
) -> str | None:
    """Why the run cannot write its output file at ``value``, or None.

    Args:
        key: the config key, e.g. ``output_path``.
        value: the path as configured.
        inputs: ``{config key: path}`` of every input file; the output must be none of them.
        audio: resolved audio paths of the manifest (compared by absolute path).

    Returns:
        One line naming the key, the path and what is wrong, or None when the output can be written.

    Example:
        >>> output_file_problem("output_path", "data/test.json", {"test_data_path": "data/test.json"})
        'output_path: data/test.json is test_data_path; writing there would destroy that input'
    """
    if not value or not str(value).strip():
        return f"{key}: empty; expected the path of a file to write (e.g. exp/pred.json)"
    text = str(value)
    path = Path(text).expanduser()
    # The run also writes <name>.partial and <name>.lock beside the output; checked first, as the file
    # system refuses to even look up a name that is too long.
    if len(path.name.encode()) + len(".partial") > _NAME_MAX:
        return f"{key}: the file name {path.name[:40]}... is too long (at most {_NAME_MAX - 8} bytes)"
    if any(len(part.encode()) > _NAME_MAX for part in path.parent.parts):
        return f"{key}: {text[:60]}... has a folder name longer than {_NAME_MAX} bytes"
    if path.is_dir() or text.endswith(("/", os.sep)):
        return f"{key}: {text} is a directory; expected a file path inside it (e.g. {text.rstrip('/')}/pred.json)"
    for input_key, input_path in (inputs or {}).items():
        if input_path and _same_file(str(path), str(Path(input_path).expanduser())):
            return f"{key}: {text} is {input_key}; writing there would destroy that input"
    absolute = os.path.abspath(path)
    if any(os.path.abspath(p) == absolute for p in audio):
        return f"{key}: {text} is an audio file of the manifest; writing there would destroy it"
    if os.path.lexists(path) and not path.is_file():
        return f"{key}: {text} exists and is not a regular file"
    return _creatable(key, path.parent)


def output_dir_problem(key: str, value: str | None) -> str | None:
    """Why the run cannot create or write in the folder ``value``, or None."""
    if not value or not str(value).strip():
        return f"{key}: empty; expected a folder to write in"
    path = Path(value).expanduser()
    if any(len(part.encode()) > _NAME_MAX for part in path.parts):
        return f"{key}: {str(value)[:60]}... has a folder name longer than {_NAME_MAX} bytes"
    if os.path.lexists(path) and not path.is_dir():
        return f"{key}: {value} is a file; expected a folder"
    return _creatable(key, path)


# ---------------------------------------------------------------------------------------------------------
# Manifests


def _manifest_problem(
    key: str, value: str | None, skip_bad_entries: bool = False
) -> tuple[str | None, list[str]]:
    """Check a manifest's schema and every audio header; returns (problem or None, resolved audio paths)."""
    problem = _input_file(key, value, "a JSON manifest file")
    if problem:
        return problem, []
    try:
        scan = scan_manifest(value, check_audio=True, quick=True)
    except (FileNotFoundError, ManifestError) as exc:
        return f"{key}: {exc}", []
    audio = [p for _, entry in scan.entries for p in (entry["path"], *entry["expand_wav"])]
    if not scan.entries and not scan.issues:
        return f"{key}: {value} has no entries", []
    if scan.issues and not (skip_bad_entries and scan.entries):
        more = len(scan.issues) - 1
        suffix = f" (and {more} more bad entries; list them with scripts/check_manifest.py)" if more else ""
        hint = "" if skip_bad_entries else "; or set datasets.skip_bad_entries: true to drop bad entries"
        return f"{key}: {scan.issues[0]}{suffix}{hint if key.startswith('datasets.') else ''}", audio
    return None, audio


# ---------------------------------------------------------------------------------------------------------
# Model folders


def llm_geometry(llama_path: str | os.PathLike) -> tuple[int, int, int]:
    """``(n_layers, n_heads, hidden_size)`` of the LLM, read from its ``config.json`` without any weights.

    Raises:
        PreflightError: no readable ``config.json`` or one without the LLaMA sizes.

    Example:
        >>> llm_geometry("pretrained/vicuna-13b-v1.1")  # doctest: +SKIP
        (40, 40, 5120)
    """
    path = Path(llama_path) / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PreflightError(f"model.llama_path: cannot read {path} ({' '.join(str(exc).split())})") from None
    raw = raw.get("text_config", raw) if isinstance(raw, dict) else raw
    try:
        return int(raw["num_hidden_layers"]), int(raw["num_attention_heads"]), int(raw["hidden_size"])
    except (KeyError, TypeError, ValueError):
        raise PreflightError(
            f"model.llama_path: {path} lacks num_hidden_layers / num_attention_heads / hidden_size "
            "(expected a LLaMA config)"
        ) from None


def _weights_problem(key: str, folder: str) -> tuple[str | None, list[Path]]:
    """Whether a model folder has weights; returns the pickled files transformers would unpickle."""
    path = Path(folder).expanduser()
    if list(path.glob("*.safetensors")):
        return None, []
    pickled = sorted(p for pattern in _PICKLED_WEIGHTS for p in path.glob(pattern))
    if not pickled:
        return f"{key}: {folder} has no weights (*.safetensors or pytorch_model*.bin)", []
    return None, pickled


def _hf_model_problems(model: ModelConfig) -> tuple[list[str], list]:
    """The one model folder of a transformers-native backbone (Qwen2-Audio, Audio Flamingo 3)."""
    problem = _input_dir(
        "model.model_path",
        model.model_path,
        f"a local {model.arch} transformers folder",
        need=("config.json", "preprocessor_config.json"),
    )
    if problem is not None:
        return [problem], []
    problem, pickled = _weights_problem("model.model_path", model.model_path)
    return [problem], [("model.model_path", p) for p in pickled]


def _model_file_problems(model: ModelConfig, whisper_key: str, whisper_path: str) -> tuple[list[str], list]:
    """The model section's files and folders; returns (problems, (key, path) pairs torch must open)."""
    problems: list[str | None] = []
    torch_files: list[tuple[str, Path]] = []
    if model.arch != "salmonn":  # a transformers-native backbone: one folder holds everything
        return _hf_model_problems(model)
    problems.append(
        _input_dir(
            "model.llama_path",
            model.llama_path,
            "a local LLaMA/Vicuna folder",
            need=("config.json", "tokenizer.model|tokenizer.json"),
        )
    )
    if problems[-1] is None:
        problem, pickled = _weights_problem("model.llama_path", model.llama_path)
        problems.append(problem)
        torch_files += [("model.llama_path", p) for p in pickled]
        try:
            llm_geometry(model.llama_path)
        except PreflightError as exc:
            problems.append(str(exc))
    problems.append(
        _input_dir(
            whisper_key,
            whisper_path,
            "a local Whisper folder",
            need=("config.json", "preprocessor_config.json"),
        )
    )
    if problems[-1] is None:
        problem, pickled = _weights_problem(whisper_key, whisper_path)
        problems.append(problem)
        torch_files += [(whisper_key, p) for p in pickled]
    for key, what in (
        ("beats_path", "a BEATs checkpoint (.pt)"),
        ("ckpt", "a SALMONN checkpoint (.pth)"),
        ("speech_llama_proj_model", "a checkpoint holding speech_llama_proj"),
    ):
        value = getattr(model, key)
        if value:
            problem = _input_file(f"model.{key}", value, what)
            problems.append(problem)
            if problem is None and key != "ckpt":  # the SALMONN checkpoint gets its own, closer look
                torch_files.append((f"model.{key}", Path(value)))
    if model.prompt_path:
        problem = _input_file("model.prompt_path", model.prompt_path, "a JSON prompt file")
        if problem is None:
            from .models.prompts import PromptError, load_prompt_file

            try:
                load_prompt_file(model.prompt_path, model.prompt_template)
            except PromptError as exc:
                problem = f"model.prompt_path: {exc}"
        problems.append(problem)
    return [p for p in problems if p], torch_files


# ---------------------------------------------------------------------------------------------------------
# Files torch opens (torch is imported here, after every cheaper check passed)


def _load_weights_only(path: Path) -> Any:
    """``torch.load(weights_only=True)``; memory-mapped when the file is a zip archive, so nothing is copied."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))


def _torch_file_problem(key: str, path: Path) -> tuple[str | None, Any]:
    from .utils.errors import describe_torch_load_error

    try:
        return None, _load_weights_only(path)
    except Exception as exc:  # unpickling fails in many types: all mean "not a safe weights file"
        return f"{key}: {path} cannot be loaded: {describe_torch_load_error(exc)}", None


def _mask_problem(key: str, path: str, n_layers: int, n_heads: int) -> str | None:
    """A mask file that is unreadable, non-finite or made for another geometry, as one line."""
    from .masking.checkpoint import load_mask
    from .utils.errors import one_line

    try:
        # With the model's geometry, a mask whose sidecar states another one names the dimension.
        load_mask(path, n_layers=n_layers, n_heads=n_heads)
    except (ValueError, OSError) as exc:  # MaskFileError, MaskShapeError
        return f"{key}: {one_line(exc)}"
    return None


def _ckpt_problem(model: ModelConfig, hidden_size: int) -> str | None:
    """The cheap part of the SALMONN checkpoint check: its key set and the shapes the config decides.

    The full check (every trainable key present, every shape) runs when the model loads it; this one needs
    no model and catches the usual mistakes: a foreign file, LoRA or BEATs settings that do not match.
    """
    import torch

    key, path = "model.ckpt", Path(model.ckpt)
    problem, ckpt = _torch_file_problem(key, path)
    if problem:
        return problem
    state = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        return f"{key}: {path} is not a SALMONN checkpoint (expected a dict with a 'model' state dict)"
    unexpected = sorted(k for k in state if not str(k).startswith(_CKPT_PREFIXES))
    if unexpected:
        shown = ", ".join(map(str, unexpected[:5])) + (" ..." if len(unexpected) > 5 else "")
        many = f"{len(unexpected)} keys that are" if len(unexpected) > 1 else "a key that is"
        return f"{key}: {path} has {many} no SALMONN parameter: {shown}"
    not_tensors = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        return f"{key}: {path}: entries that are not tensors: {', '.join(not_tensors[:5])}"
    lora_a = [v for k, v in state.items() if "lora_A" in k]
    if model.lora and not lora_a:
        return f"{key}: {path} has no LoRA weights but model.lora is true (set model.lora: false?)"
    if not model.lora and lora_a:
        return f"{key}: {path} holds LoRA weights but model.lora is false"
    if model.lora and lora_a[0].shape[0] != model.lora_rank:
        return f"{key}: {path} has LoRA rank {lora_a[0].shape[0]} but model.lora_rank is {model.lora_rank}"
    has_audio = any(str(k).startswith("ln_audio.") for k in state)
    if has_audio and not model.beats_path:
        return f"{key}: {path} was trained with BEATs (ln_audio.*) but model.beats_path is empty"
    if model.beats_path and not has_audio:
        return f"{key}: {path} has no ln_audio.* (trained without BEATs) but model.beats_path is set"
    queries = state.get("speech_query_tokens")
    want = (model.num_speech_query_token, model.qformer_hidden_size)
    if queries is not None and tuple(queries.shape[-2:]) != want:
        return (
            f"{key}: {path}: speech_query_tokens is {tuple(queries.shape)} but model.num_speech_query_token and "
            f"model.qformer_hidden_size give (1, {want[0]}, {want[1]})"
        )
    proj = state.get("speech_llama_proj.weight")
    if proj is not None and tuple(proj.shape) != (hidden_size, model.qformer_hidden_size):
        return (
            f"{key}: {path}: speech_llama_proj.weight is {tuple(proj.shape)} but the LLM (hidden size "
            f"{hidden_size}) and model.qformer_hidden_size need ({hidden_size}, {model.qformer_hidden_size})"
        )
    return None


def _raise(problems: Iterable[str | None]) -> None:
    found = [p for p in problems if p]
    if found:
        raise PreflightError("; ".join(found))


def _torch_checks(model: ModelConfig, torch_files: list[tuple[str, Path]], mask: str | None) -> None:
    """Stage 2: the files torch opens, each weights-only; raises once with every problem."""
    problems = [_torch_file_problem(key, path)[0] for key, path in torch_files]
    try:
        n_layers, n_heads, hidden = llm_geometry(
            model.llama_path if model.arch == "salmonn" else model.model_path
        )
    except PreflightError:
        if model.arch == "salmonn":
            raise
        # A backbone whose folder does not state the LLM sizes: the mask is checked once the model is built.
        n_layers = n_heads = hidden = None
    if model.ckpt and hidden is not None:
        problems.append(_ckpt_problem(model, hidden))
    if mask and n_layers is not None:
        problems.append(_mask_problem("model.weight_mask_path", mask, n_layers, n_heads))
    _raise(problems)


# ---------------------------------------------------------------------------------------------------------
# Entry points


def _mask_path(model: ModelConfig) -> tuple[str | None, str | None]:
    """(path to check, problem) for ``model.weight_mask_path``."""
    from .masking.names import MaskFileError, resolve_mask_path

    if not model.weight_mask_path:
        return None, None
    try:
        # A released name (gender_librispeech) or a mask folder stands for one file; check that file.
        value = str(resolve_mask_path(model.weight_mask_path))
    except MaskFileError as exc:
        return None, f"model.weight_mask_path: {exc}"
    problem = _input_file("model.weight_mask_path", value, "a mask file (.pth or .safetensors)")
    return (None, problem) if problem else (value, None)


def check_decode_inputs(cfg: DecodeConfig, config_path: str | os.PathLike | None = None) -> None:
    """Check everything ``evaluate.py`` reads and writes, before torch or the model is loaded.

    Args:
        cfg: the loaded decode config.
        config_path: the YAML it came from (the output must not overwrite it either).

    Raises:
        PreflightError: one line listing every problem, each naming its config key and file.

    Example:
        >>> check_decode_inputs(load_decode_config("configs/decode_config.yaml"))  # doctest: +SKIP
    """
    problems, torch_files = _model_file_problems(cfg.model, "model.whisper_path", cfg.model.whisper_path)
    manifest_problem, audio = _manifest_problem("test_data_path", cfg.test_data_path)
    problems.append(manifest_problem)
    mask, mask_problem = _mask_path(cfg.model)
    problems.append(mask_problem)
    inputs = {
        "the config file": str(config_path) if config_path else None,
        "test_data_path": cfg.test_data_path,
        "model.weight_mask_path": cfg.model.weight_mask_path,
        "model.ckpt": cfg.model.ckpt,
        "model.beats_path": cfg.model.beats_path,
        "model.speech_llama_proj_model": cfg.model.speech_llama_proj_model,
        "model.prompt_path": cfg.model.prompt_path,
    }
    if cfg.steering_path:
        problems.append(_input_file("steering_path", cfg.steering_path, "a steering file (.safetensors)"))
    problems.append(output_file_problem("output_path", cfg.output_path, inputs, audio))
    cache_dir = getattr(cfg, "speech_cache_dir", "")
    if cache_dir:
        problems.append(output_dir_problem("speech_cache_dir", cache_dir))
    _raise(problems)
    _torch_checks(cfg.model, torch_files, mask)


def check_chat_inputs(cfg: DecodeConfig) -> None:
    """Check the model files and mask ``cli_inference.py`` loads (it reads no manifest and writes nothing)."""
    problems, torch_files = _model_file_problems(cfg.model, "model.whisper_path", cfg.model.whisper_path)
    mask, mask_problem = _mask_path(cfg.model)
    problems.append(mask_problem)
    if cfg.steering_path:
        problems.append(_input_file("steering_path", cfg.steering_path, "a steering file (.safetensors)"))
    _raise(problems)
    _torch_checks(cfg.model, torch_files, mask)


def check_train_inputs(cfg: TrainConfig) -> None:
    """Check everything ``train.py`` reads and the folders it writes, before torch or the model is loaded.

    ``--resume`` / ``run.resume`` is checked by the trainer, which knows its format.

    Raises:
        PreflightError: one line listing every problem, each naming its config key and file.
    """
    data, run = cfg.datasets, cfg.run
    whisper_key = "datasets.whisper_path" if data.whisper_path else "model.whisper_path"
    problems, torch_files = _model_file_problems(
        cfg.model, whisper_key, data.whisper_path or cfg.model.whisper_path
    )
    problems.append(
        _manifest_problem("datasets.train_ann_path", data.train_ann_path, data.skip_bad_entries)[0]
    )
    if data.valid_ann_path:
        problems.append(
            _manifest_problem("datasets.valid_ann_path", data.valid_ann_path, data.skip_bad_entries)[0]
        )
    problems.append(output_dir_problem("run.output_dir", run.output_dir))
    if run.cache_speech_embeds and run.speech_cache_dir:
        problems.append(output_dir_problem("run.speech_cache_dir", run.speech_cache_dir))
    _raise(problems)
    _torch_checks(cfg.model, torch_files, None)
