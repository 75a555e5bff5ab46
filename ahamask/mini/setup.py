"""The mini SALMONN's config file, model construction and the committed export of a trained run.

``configs/mini_salmonn.yaml`` has three sections: ``model`` (official SALMONN keys plus ahamask's Q-Former
sizes; paths relative to the repository root), ``world`` (the espeak-ng world's seed and split sizes) and
``train`` (:class:`ahamask.mini.training.MiniTrainSettings`). Unknown keys fail with one line naming them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from ..config import ConfigError, ModelConfig
from ..models.salmonn import model_config_from
from ..utils.environment import environment_record
from ..utils.io import atomic_write_json
from .training import CHECKPOINT_NAME, MiniTrainSettings

__all__ = ["MiniConfig", "build_mini_model", "export_run", "load_mini_config", "mini_model_config"]

# The folder (relative to the repository root) holding the committed connector + LoRA.
EXPORT_DIR = Path("checkpoints") / "mini_salmonn"


@dataclass
class MiniConfig:
    """A parsed ``configs/mini_salmonn.yaml``."""

    model: ModelConfig
    world_seed: int
    world_splits: dict[str, int]
    train: MiniTrainSettings


def _resolve(path: str, root: Path) -> str:
    return str(path if not path or Path(path).is_absolute() else (root / path).resolve())


def load_mini_config(path: str | Path, root: str | Path) -> MiniConfig:
    """Reads the mini config; relative model paths are taken from ``root`` (the repository).

    Raises:
        ConfigError: a missing section, an unknown key or a bad value (one line naming it).
    """
    raw = OmegaConf.to_container(OmegaConf.load(str(path)), resolve=True)
    if not isinstance(raw, dict) or set(raw) != {"model", "world", "train"}:
        raise ConfigError(f"{path}: expected the sections model, world and train")
    model = dict(raw["model"])
    for key in ("llama_path", "whisper_path", "beats_path", "ckpt"):
        if key in model:
            model[key] = _resolve(model[key], Path(root))
    known = {f.name for f in fields(MiniTrainSettings)}
    unknown = sorted(set(raw["train"]) - known)
    if unknown:
        raise ConfigError(f"{path}: train.{unknown[0]} is not a key (keys: {sorted(known)})")
    world = raw["world"]
    if set(world) != {"seed", "splits"} or not {"train", "valid", "test"} <= set(world["splits"]):
        raise ConfigError(f"{path}: world needs seed and splits with train, valid and test")
    return MiniConfig(
        model=model_config_from(model),
        world_seed=int(world["seed"]),
        world_splits={k: int(v) for k, v in world["splits"].items()},
        train=MiniTrainSettings(**raw["train"]),
    )


def build_mini_model(cfg: ModelConfig, seed: int, device: str = "cpu") -> Any:
    """The SALMONN of ``cfg`` with its new parts (Q-Former, queries, projection, LoRA) initialised from
    ``torch.manual_seed(seed)``: the same seed gives the same initial model on any machine."""
    from ..models.salmonn import SALMONN

    torch.manual_seed(seed)
    return SALMONN.from_config(cfg, device=device)


def mini_model_config(cfg: ModelConfig, checkpoint: str | Path) -> ModelConfig:
    """``cfg`` with ``ckpt`` set: the trained mini model as mask training and evaluation load it."""
    return model_config_from({**OmegaConf.to_container(OmegaConf.structured(cfg)), "ckpt": str(checkpoint)})


def export_run(run: Path, out: Path, config: Path, command: str, world_info: dict[str, Any]) -> Path:
    """Copies a finished run's checkpoint and record into ``out`` (the folder that is committed).

    ``out`` gets ``salmonn_mini.pth``, ``training.json``, ``mini_salmonn.yaml`` and ``provenance.json`` (the
    command, the package versions, the espeak-ng version and the world's settings).
    """
    out.mkdir(parents=True, exist_ok=True)
    for name in (CHECKPOINT_NAME, "training.json"):
        shutil.copy2(run / name, out / name)
    shutil.copy2(config, out / "mini_salmonn.yaml")
    training = json.loads((run / "training.json").read_text(encoding="utf-8"))
    atomic_write_json(
        {
            "command": command,
            "environment": environment_record("float32"),
            "world": world_info["settings"],
            "final_valid": training["final_valid"],
        },
        out / "provenance.json",
    )
    return out
