"""The demo's stages in order, each reused on a re-run when its inputs have not changed.

``exp/demo/`` (or another folder) ends up holding::

    world/          the synthetic world (audio, manifests, prompt files)           stage 1
    base_init/      the randomly initialised tiny bundle (tokenizer trained here)  stage 2
    base/           the trained base model as a bundle (llama/, whisper/, salmonn.pth, configs)
    masks/          <task>.yaml configs and <task>/checkpoint_0.pth masks          stage 3
    eval/           <task>/<condition>.json prediction files and results.json      stage 4
    report.md, report.json, mask_<task>.png, masks.png, mask_iou.png              stage 5

A stage is reused when its ``stage.json`` marker (written last) carries the fingerprint of its settings and
of the stages before it; ``force=True`` reruns everything. The report is always rewritten (seconds).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import load_decode_config
from ..masking.checkpoint import load_mask
from ..synth import WorldInfo, build_world, load_world
from ..utils.environment import environment_record
from ..utils.io import atomic_write_json
from .base_model import build_initial_bundle, train_base_model
from .masks import DEFAULT_TEMPLATE, MASK_SEED, mask_checkpoint, mask_seconds, train_mask
from .report import results_table, text_table, write_report
from .settings import DemoSettings, fingerprint, marker_holds
from .sweep import run_sweep

logger = logging.getLogger(__name__)

__all__ = ["DemoResult", "run_demo", "prepare_seed", "train_seed_mask", "STAGES"]

STAGES = ("world", "base model", "masks", "evaluation", "report")
_MARKER = "stage.json"


@dataclass
class DemoResult:
    """What a demo run produced.

    Attributes:
        out_dir: the demo folder.
        report: the report.json content.
        table: the results table as plain text.
        stage_seconds: seconds spent per stage in this run (0 for a reused stage).
        reused: the stages taken from an earlier run.
    """

    out_dir: Path
    report: dict[str, Any]
    table: str
    stage_seconds: dict[str, float]
    reused: list[str]


def _mark(folder: Path, fp: str, seconds: float) -> None:
    atomic_write_json({"fingerprint": fp, "seconds": round(seconds, 1)}, folder / _MARKER)


class _Stages:
    """Runs named stages with timing, logging and reuse bookkeeping."""

    def __init__(self, force: bool) -> None:
        self.force = force
        self.seconds: dict[str, float] = {}  # spent in this run
        self.computed_in: dict[str, float] = {}  # what each stage took when it was computed (maybe earlier)
        self.reused: list[str] = []

    def run(
        self,
        name: str,
        folder: Path,
        fp: str,
        work: Callable[[], Any],
        reload: Callable[[], Any],
        cost: Callable[[], float] | None = None,
    ) -> Any:
        """Runs ``work`` (or ``reload`` when the stage is reusable); ``cost`` gives the compute seconds of a
        stage whose pieces ran elsewhere (the masks trained by the scheduler's workers)."""
        number = STAGES.index(name) + 1
        if not self.force and marker_holds(folder / _MARKER, fp):
            logger.info(
                "stage %d/%d: %s: reusing %s (pass --force to redo)", number, len(STAGES), name, folder
            )
            self.seconds[name] = 0.0
            self.computed_in[name] = json.loads((folder / _MARKER).read_text(encoding="utf-8")).get(
                "seconds", 0.0
            )
            self.reused.append(name)
            return reload()
        logger.info("stage %d/%d: %s ...", number, len(STAGES), name)
        started = time.perf_counter()
        result = work()
        self.seconds[name] = time.perf_counter() - started
        spent = cost() if cost is not None else self.seconds[name]
        self.computed_in[name] = round(spent, 1)
        _mark(folder, fp, spent)
        logger.info("stage %d/%d: %s done in %.0f s", number, len(STAGES), name, self.seconds[name])
        return result


def _build_world(folder: Path, settings: DemoSettings) -> WorldInfo:
    # The demo owns this folder: a world of other settings or one cut short by an interruption is removed.
    _clear(folder)
    return build_world(
        folder,
        seed=settings.seed,
        n_train=settings.n_train,
        n_valid=settings.n_valid,
        n_test=settings.n_test,
        tasks=settings.tasks,
    )


def _clear(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)


def run_demo(
    out_dir: str | Path = "exp/demo",
    settings: DemoSettings | None = None,
    force: bool = False,
    progress: bool = True,
    template: Path = DEFAULT_TEMPLATE,
) -> DemoResult:
    """Runs the whole experiment: world, base model, masks, evaluation, report.

    Args:
        out_dir: the demo folder (created).
        settings: what to run (default: the ``full`` preset).
        force: redo every stage even when its outputs exist.
        progress: show progress bars.
        template: the mask config template (configs/demo_mask.yaml).

    Returns:
        The :class:`DemoResult`; the report is also on disk under ``out_dir``.

    Raises:
        ValueError / ConfigError: bad settings or template (the key is named).
        FileNotFoundError: the template is missing.
    """
    settings = settings or DemoSettings()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages = _Stages(force)
    world = _world_stage(stages, out, settings)
    base_summary, base_fp = _base_stage(stages, out, settings, world, progress)
    masks, masks_fp = _mask_stage(stages, out, settings, world, base_fp, template, force)
    results = _evaluation_stage(stages, out, settings, world, masks, masks_fp, progress)
    report = _report_stage(stages, out, settings, results, masks, base_summary)
    return DemoResult(out, report, text_table(results_table(results)), stages.seconds, stages.reused)


def _world_fingerprint(settings: DemoSettings) -> str:
    return fingerprint(
        "world", settings.seed, settings.n_train, settings.n_valid, settings.n_test, list(settings.tasks)
    )


def _base_fingerprint(settings: DemoSettings) -> str:
    return fingerprint("base", _world_fingerprint(settings), asdict(settings.model), asdict(settings.base))


def _world_stage(stages: _Stages, out: Path, settings: DemoSettings) -> WorldInfo:
    """Stage 1: the synthetic world in ``out/world``."""
    world_dir = out / "world"
    world_fp = _world_fingerprint(settings)
    world = stages.run(
        "world", world_dir, world_fp, lambda: _build_world(world_dir, settings), lambda: load_world(world_dir)
    )
    return world


def _base_stage(
    stages: _Stages, out: Path, settings: DemoSettings, world: WorldInfo, progress: bool
) -> tuple[dict[str, Any], str]:
    """Stage 2: the trained base model in ``out/base``; returns its training summary and fingerprint."""
    init_dir, base_dir = out / "base_init", out / "base"
    base_fp = _base_fingerprint(settings)

    def train_base() -> dict[str, Any]:
        _clear(init_dir)
        build_initial_bundle(world, init_dir, settings.model, seed=settings.seed)
        return train_base_model(world, init_dir, base_dir, settings.base, progress=progress)

    base_summary = stages.run(
        "base model",
        base_dir,
        base_fp,
        train_base,
        lambda: json.loads((base_dir / "base_training.json").read_text(encoding="utf-8")),
    )
    return base_summary, base_fp


def _mask_stage(
    stages: _Stages,
    out: Path,
    settings: DemoSettings,
    world: WorldInfo,
    base_fp: str,
    template: Path,
    force: bool,
) -> tuple[dict[str, torch.Tensor], str]:
    """Stage 3: one trained mask per task in ``out/masks``; returns task -> logits and the fingerprint.

    Each task's mask is reused on its own (its ``masks/<task>/stage.json``), so masks trained beforehand by
    :func:`train_seed_mask` in other processes are only collected here.
    """
    base_dir, mask_dir = out / "base", out / "masks"
    masks_fp = _masks_fingerprint(settings, base_fp, template)

    def train_all() -> dict[str, torch.Tensor]:
        if force:
            _clear(mask_dir)
        mask_dir.mkdir(parents=True, exist_ok=True)
        return {
            task: train_mask(
                task,
                world,
                base_dir,
                mask_dir,
                settings.masks,
                seed=MASK_SEED,
                template=template,
                fingerprint=fingerprint(masks_fp, task),
            )
            for task in settings.tasks
        }

    masks = stages.run(
        "masks",
        mask_dir,
        masks_fp,
        train_all,
        lambda: {t: load_mask(mask_checkpoint(mask_dir, t)).values for t in settings.tasks},
        cost=lambda: sum(mask_seconds(mask_dir, t) for t in settings.tasks),
    )
    return masks, masks_fp


def _masks_fingerprint(settings: DemoSettings, base_fp: str, template: Path) -> str:
    """What every mask of a seed depends on: the base model, the mask settings, the template, the tasks."""
    template_hash = hashlib.sha256(Path(template).read_bytes()).hexdigest()[:16]
    return fingerprint(
        "masks", base_fp, asdict(settings.masks), template_hash, list(settings.tasks), MASK_SEED
    )


def prepare_seed(out_dir: str | Path, settings: DemoSettings, force: bool = False) -> None:
    """Stages 1-2 alone (world and base model), for a scheduler that trains the masks elsewhere."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages = _Stages(force)
    world = _world_stage(stages, out, settings)
    _base_stage(stages, out, settings, world, progress=False)


def train_seed_mask(
    out_dir: str | Path, settings: DemoSettings, task: str, template: Path = DEFAULT_TEMPLATE
) -> None:
    """One task's mask of a prepared seed folder, marked so that :func:`run_demo` reuses it.

    The masks of one seed are independent of each other (each trains on the frozen base model with its
    own generators), so a scheduler may train them in any order, in any process.
    """
    out = Path(out_dir)
    world = load_world(out / "world")
    base_fp = _base_fingerprint(settings)
    masks_fp = _masks_fingerprint(settings, base_fp, template)
    train_mask(
        task,
        world,
        out / "base",
        out / "masks",
        settings.masks,
        seed=MASK_SEED,
        template=template,
        fingerprint=fingerprint(masks_fp, task),
    )


def _evaluation_stage(
    stages: _Stages,
    out: Path,
    settings: DemoSettings,
    world: WorldInfo,
    masks: dict[str, torch.Tensor],
    masks_fp: str,
    progress: bool,
) -> dict[str, Any]:
    """Stage 4: every condition of every task decoded and scored into ``out/eval``; returns the results."""
    base_dir, eval_dir = out / "base", out / "eval"
    eval_fp = fingerprint(
        "evaluation",
        masks_fp,
        settings.evaluation.n_instructions,
        list(settings.evaluation.random_seeds),
        settings.n_test,
    )
    decode_cfg = load_decode_config(base_dir / "decode_config.yaml")

    def evaluate_all() -> dict[str, Any]:
        from ..models.salmonn import SALMONN  # only this stage needs the model itself

        _clear(eval_dir)
        torch.manual_seed(settings.seed)
        model = SALMONN.from_config(decode_cfg.model).eval()
        results = run_sweep(
            model,
            world,
            settings.tasks,
            masks,
            decode_cfg.generate,
            eval_dir,
            n_instructions=settings.evaluation.n_instructions,
            random_seeds=settings.evaluation.random_seeds,
            batch_size=settings.evaluation.batch_size,
            progress=progress,
        )
        atomic_write_json(results, eval_dir / "results.json")
        return results

    return stages.run(
        "evaluation",
        eval_dir,
        eval_fp,
        evaluate_all,
        lambda: json.loads((eval_dir / "results.json").read_text(encoding="utf-8")),
    )


def _report_stage(
    stages: _Stages,
    out: Path,
    settings: DemoSettings,
    results: dict[str, Any],
    masks: dict[str, torch.Tensor],
    base_summary: dict[str, Any],
) -> dict[str, Any]:
    """Stage 5 (always run): report.md / report.json and pictures, then timings.json; returns the report."""
    logger.info("stage %d/%d: report ...", len(STAGES), len(STAGES))
    started = time.perf_counter()
    geometry = json.loads((out / "base" / "llama" / "config.json").read_text(encoding="utf-8"))
    n_layers, n_heads = geometry["num_hidden_layers"], geometry["num_attention_heads"]
    stages.seconds["report"] = 0.0
    # report.json holds only what the computation determines (no wall-clock times), so two runs on the same
    # machine and versions give byte-identical files; times go to timings.json.
    context = {
        "settings": settings.to_json(),
        "environment": environment_record("bf16 autocast" if base_summary.get("bf16") else "float32"),
        "parameters": base_summary.get("parameters"),
        "base_training": {k: v for k, v in base_summary.items() if k != "seconds"},
    }
    report = write_report(out, results, masks, n_layers, n_heads, context)
    stages.seconds["report"] = time.perf_counter() - started
    timings = {
        "stage_seconds_when_computed": stages.computed_in,
        "seconds_this_run": {k: round(v, 1) for k, v in stages.seconds.items()},
        "reused_stages": stages.reused,
    }
    atomic_write_json(timings, out / "timings.json")
    return report
