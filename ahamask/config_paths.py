"""Where a relative path written in a config file points: beside the config when it is there, else the working directory.

The official code opens every path relative to the working directory, so its configs only work when run
from the repository root (``prompts/train_prompt.json``, ``data/test/demo.json``, ``pretrained/...``). A
config that lives beside its model and data (a tiny bundle, a copied run folder) should work from any
folder too. The rule, applied to the path-valued keys below as written in the YAML file:

* an empty value, an absolute path and ``None`` are kept (``~`` is expanded first);
* an **input** (a file or folder that is read) resolves to ``<config folder>/<path>`` when that exists,
  otherwise it stays relative to the working directory, which keeps the official configs working;
* an **output** (``run.output_dir``, ``run.speech_cache_dir``, ``output_path``) resolves to
  ``<config folder>/<path>`` when it exists there or starts with a folder that exists there
  (``exp`` or ``exp/decode.json`` in a bundle holding ``exp/``); a new bare file name such as the
  official ``tmp.json`` and paths under folders the config folder lacks (``exp/demo_output`` beside
  ``configs/``) stay relative to the working directory;
* a bare mask name in ``model.weight_mask_path`` (no folder, no extension, e.g. ``gender_librispeech``)
  is a name, not a path, and passes through unchanged;
* values given as ``--options`` overrides are not touched: they were typed relative to the shell's folder.

A resolved path is absolute, so the ``config.yaml`` a run saves next to its checkpoints works from anywhere.
Manifests have their own rule for audio paths (the manifest's folder first): see :mod:`ahamask.data.manifest`.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

__all__ = ["INPUT_PATH_KEYS", "OUTPUT_PATH_KEYS", "resolve_path", "resolve_config_paths"]

# Path-valued keys of the training and decoding configs (a key absent from a file is skipped).
INPUT_PATH_KEYS: tuple[str, ...] = (
    "model.llama_path",
    "model.whisper_path",
    "model.beats_path",
    "model.ckpt",
    "model.speech_llama_proj_model",
    "model.prompt_path",
    "model.test_prompt_path",
    "model.weight_mask_path",
    "datasets.train_ann_path",
    "datasets.valid_ann_path",
    "datasets.test_ann_path",
    "datasets.whisper_path",
    "run.resume",
    "test_data_path",
)
OUTPUT_PATH_KEYS: tuple[str, ...] = ("run.output_dir", "run.speech_cache_dir", "output_path")
_MASK_NAME_KEY = "model.weight_mask_path"


def _is_bare_name(value: str) -> bool:
    """``gender_librispeech``: no folder part and no extension, so a mask name rather than a file."""
    path = Path(value)
    return len(path.parts) == 1 and not path.suffix


def resolve_path(value: str, config_dir: str | os.PathLike, output: bool = False) -> str:
    """Resolve one path written in a config file (the rule is in the module docstring).

    Args:
        value: the path as written; ``""`` is returned unchanged.
        config_dir: the folder of the config file.
        output: whether the key names something the run writes (its first folder may suffice).

    Returns:
        An absolute path beside the config, or ``value`` (with ``~`` expanded) when the rule keeps it.

    Example:
        >>> resolve_path("llama", "/data/tiny_bundle")  # when /data/tiny_bundle/llama exists
        '/data/tiny_bundle/llama'
        >>> resolve_path("prompts/train_prompt.json", "configs")  # no configs/prompts/: working directory
        'prompts/train_prompt.json'
    """
    if not value:
        return value
    written = Path(value).expanduser()
    if written.is_absolute():
        return str(written)
    base = Path(os.path.abspath(config_dir))
    beside = (base / written).exists()
    if output and not beside:
        # The run creates the file itself; what must already exist beside the config is its first folder.
        beside = len(written.parts) > 1 and (base / written.parts[0]).is_dir()
    return str(base / written) if beside else str(written)


def resolve_config_paths(node: DictConfig, config_dir: str | os.PathLike) -> DictConfig:
    """Resolve, in place, the path keys of a YAML file loaded with ``OmegaConf.load``.

    Keys that are absent, ``???`` (missing), interpolations (``${...}``) or not strings are left alone, so
    the schema reports them as it would without this step.

    Args:
        node: the loaded YAML, before it is merged onto a schema.
        config_dir: the folder of the YAML file.

    Returns:
        ``node`` itself.
    """
    for key in (*INPUT_PATH_KEYS, *OUTPUT_PATH_KEYS):
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(node, parent_key) if parent_key else node
        if not isinstance(parent, DictConfig) or leaf not in parent:
            continue
        if OmegaConf.is_missing(parent, leaf) or OmegaConf.is_interpolation(parent, leaf):
            continue
        value = parent[leaf]
        if not isinstance(value, str) or (key == _MASK_NAME_KEY and _is_bare_name(value)):
            continue
        parent[leaf] = resolve_path(value, config_dir, output=key in OUTPUT_PATH_KEYS)
    return node
