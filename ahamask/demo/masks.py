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
from typing import Any

import torch
from omegaconf import OmegaConf

from ..config import load_train_config
from ..masking.checkpoint import load_mask
from ..synth import WorldInfo
from ..utils.io import atomic_write_json, atomic_write_text
from .settings import MaskSettings, marker_holds

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TEMPLATE",
    "fill_mask_config",
    "train_from_config",
    "mask_config",
    "train_mask",
    "mask_checkpoint",
    "mask_seconds",
    "MASK_SEED",
]

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
    base_cfg = OmegaConf.load(base / "config.yaml")
    return fill_mask_config(
        template,
        {k: base_cfg.model[k] for k in _BUNDLE_MODEL_KEYS if k in base_cfg.model},
        prompt_path=world.prompt_files["ahamask_train_prompt"],
        train_manifest=world.manifests["train"][task],
        valid_manifest=world.manifests["valid"][task],
        out_dir=out_dir,
        job_id=task,
        settings=settings,
        seed=seed,
    )


def fill_mask_config(
    template: Path,
    model_keys: dict[str, Any],
    prompt_path: Path,
    train_manifest: Path,
    valid_manifest: Path,
    out_dir: Path,
    job_id: str,
    settings: MaskSettings,
    seed: int,
    run_overrides: dict[str, Any] | None = None,
) -> Path:
    """Fills a mask-config template (``configs/demo_mask.yaml``, ``configs/mini_mask.yaml``), writes it to
    ``out_dir/<job_id>.yaml`` and checks that it loads.

    Args:
        template: the template (its ``???`` values are the ones filled here).
        model_keys: ``model`` keys taken from the trained model (paths, sizes); ``whisper_path`` also
            becomes ``datasets.whisper_path``.
        prompt_path: the no-instruction prompt file (``model.prompt_path``).
        train_manifest, valid_manifest: the task's manifests.
        out_dir, job_id: the run goes to ``out_dir/<job_id>/``.
        settings: steps, batch size, learning rate and schedule.
        seed: ``run.seed``.
        run_overrides: further ``run`` keys (e.g. ``speech_cache_dir``).

    Raises:
        FileNotFoundError: if the template is missing.
        ConfigError: if the filled config does not validate (names the key).
    """
    if not template.is_file():
        raise FileNotFoundError(f"mask config template: no such file: {template}")
    cfg = OmegaConf.load(template)
    for key, value in model_keys.items():
        cfg.model[key] = value
    cfg.model.prompt_path = str(Path(prompt_path).resolve())
    cfg.datasets.train_ann_path = str(Path(train_manifest).resolve())
    cfg.datasets.valid_ann_path = str(Path(valid_manifest).resolve())
    cfg.datasets.whisper_path = cfg.model.whisper_path
    run = cfg.run
    run.seed = seed
    run.output_dir = str(out_dir.resolve())
    run.job_id = job_id
    run.iters_per_epoch = settings.steps
    run.optims.max_epoch = 1
    run.batch_size_train = settings.batch_size
    run.max_val_batches = settings.valid_batches
    run.tau_decay_steps = settings.tau_decay
    run.mask_init_mean = settings.init_mean
    run.optims.init_lr = settings.lr
    run.optims.warmup_steps = settings.warmup_steps
    for key, value in (run_overrides or {}).items():
        run[key] = value
    path = out_dir / f"{job_id}.yaml"
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
    marker = out_dir / task / "stage.json"
    if fingerprint is not None and marker_holds(marker, fingerprint):
        return load_mask(mask_checkpoint(out_dir, task)).values
    started = time.perf_counter()
    logits = train_from_config(
        mask_config(task, world, base, out_dir, settings, seed, template), out_dir / task
    )
    seconds = round(time.perf_counter() - started, 1)
    atomic_write_json({"fingerprint": fingerprint, "seconds": seconds}, marker)
    return logits


def train_from_config(path: Path, run_dir: Path) -> torch.Tensor:
    """Runs train.py's trainer on a written mask config from scratch and returns the final mask logits.

    Only the final checkpoint (``run_dir/checkpoint_0.pth``) is read, but a rerun must not resume from a stale
    one: ``run_dir`` is removed first.
    """
    from ..training.trainer import train

    if run_dir.exists():
        shutil.rmtree(run_dir)
    train(load_train_config(path))
    return load_mask(run_dir / "checkpoint_0.pth").values


def mask_seconds(out_dir: Path, task: str) -> float:
    """Seconds the training of ``task``'s mask took (from its marker; 0 if it has none)."""
    try:
        return float(json.loads((out_dir / task / "stage.json").read_text(encoding="utf-8"))["seconds"])
    except (OSError, KeyError, ValueError):
        return 0.0
