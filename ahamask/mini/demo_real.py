"""``make demo-real``: AHAMask on the frozen mini SALMONN (real pretrained Whisper-base and SmolLM2-135M-Instruct).

Stages, each in ``exp/mini/demo_real`` (or another folder):

1. the espeak-ng world (reused from the mini model's training when it is there: same seed, same clips);
2. one mask per task and mask seed, trained with train.py's trainer from ``configs/mini_mask.yaml``
   (270 head logits: 30 layers x (9 heads + FFN gate), grouped-query attention with 3 KV heads); a mask's
   ``stage.json`` marker (its config's digest) lets a rerun reuse it;
3. decoding of the test clips under the demo's conditions (held-out paraphrases, no instruction, each seed's
   mask, a random mask of the same density per seed), strict and lenient scoring;
4. ``report.md`` / ``report.json`` (mean +- std over the mask seeds) and one picture per mask.

The jobs of stages 2 and 3 run over ``jobs`` single-threaded processes; every job owns its seeds, so the
results do not depend on how the jobs are scheduled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ..demo.masks import fill_mask_config, train_from_config
from ..demo.settings import MaskSettings, marker_holds
from ..utils.environment import environment_record
from ..utils.io import atomic_write_json, atomic_write_text
from .setup import MiniConfig, mini_model_config
from .world import MINI_TASKS

logger = logging.getLogger(__name__)

__all__ = ["DemoRealSettings", "llm_geometry", "run_demo_real"]

_REPO = Path(__file__).resolve().parents[2]
_NO_INSTRUCTION = "<Speech><SpeechHere></Speech> "


@dataclass
class DemoRealSettings:
    """What ``make demo-real`` runs.

    Attributes:
        mask_seeds: ``run.seed`` of each task's masks (42 is the official config's).
        masks: mask training settings (steps, batch size, learning rate; the template's schedule).
        n_test: test clips decoded per condition.
        n_instructions: held-out paraphrases per task.
        max_new_tokens: decoding length (the longest transcript is ~12 tokens).
        jobs: worker processes (one thread each).
    """

    mask_seeds: tuple[int, ...] = (42, 43, 44)
    masks: MaskSettings = field(
        default_factory=lambda: MaskSettings(steps=100, batch_size=4, lr=0.1, warmup_steps=10)
    )
    n_test: int = 48
    n_instructions: int = 3
    max_new_tokens: int = 20
    jobs: int = 2
    tasks: tuple[str, ...] = MINI_TASKS
    geometry: tuple[int, int] = (0, 0)  # (layers, heads): read from the LLM's config by run_demo_real


def _worker_setup() -> None:
    import torch

    torch.set_num_threads(1)
    from ..utils.logging import setup_logging

    setup_logging("WARNING")


def _mask_job(config: str, run_dir: str, fingerprint: str) -> tuple[str, list[float], float]:
    """Trains one mask (or reuses it) in a worker; returns its run folder, logits and training seconds."""
    from ..masking.checkpoint import load_mask

    run = Path(run_dir)
    marker = run / "stage.json"
    if marker_holds(marker, fingerprint):
        seconds = json.loads(marker.read_text(encoding="utf-8"))["seconds"]
        return run_dir, load_mask(run / "checkpoint_0.pth").values.tolist(), seconds
    started = time.perf_counter()
    logits = train_from_config(Path(config), run)
    seconds = round(time.perf_counter() - started, 1)
    atomic_write_json({"fingerprint": fingerprint, "seconds": seconds}, marker)
    return run_dir, logits.tolist(), seconds


def _decode_worker(
    model_cfg: Any, manifests: dict[str, str], plans: list, out_dir: str, max_new: int
) -> dict:
    from ..models.salmonn import SALMONN
    from .evaluate import decode_job

    model = SALMONN.from_config(model_cfg)
    generate = {"max_new_tokens": max_new, "num_beams": 1, "do_sample": False}
    return decode_job(model, {t: Path(p) for t, p in manifests.items()}, plans, Path(out_dir), generate)


def _subset_manifests(
    world: Path, info: dict[str, Any], out: Path, split: str, n: int, tasks: Sequence[str]
) -> dict[str, str]:
    """The first ``n`` clips of a split for each task, with absolute audio paths (``out/<split>_<task>.json``).

    The test subset is what every condition decodes; the mask-training subset is one epoch of mask training
    (steps x batch size clips), the same clips for every task, so the shared speech cache encodes each once.
    """
    paths = {}
    for task in tasks:
        entries = json.loads((world / info["manifests"][split][task]).read_text(encoding="utf-8"))[
            "annotation"
        ]
        if len(entries) < n:
            raise ValueError(f"{world / info['manifests'][split][task]}: {len(entries)} clips, {n} needed")
        rows = [{**e, "path": str((world / e["path"]).resolve())} for e in entries[:n]]
        path = out / f"{split}_{task}.json"
        atomic_write_text(json.dumps({"annotation": rows}, ensure_ascii=False) + "\n", path)
        paths[task] = str(path)
    return paths


def _mask_configs(
    model_cfg: Any, world: Path, info: dict[str, Any], out: Path, settings: DemoRealSettings
) -> list[tuple[str, int, Path]]:
    prompt = out / "ahamask_train_prompt.json"
    atomic_write_json({t: [_NO_INSTRUCTION] for t in settings.tasks}, prompt)
    keys = {
        k: getattr(model_cfg, k)
        for k in (
            "llama_path", "whisper_path", "ckpt", "qformer_hidden_size", "qformer_num_heads",
            "qformer_intermediate_size", "qformer_num_layers", "lora_rank", "lora_alpha",
        )
    }  # fmt: skip
    n_train = settings.masks.steps * settings.masks.batch_size
    train = _subset_manifests(world, info, out, "train", n_train, settings.tasks)
    jobs = []
    for task in settings.tasks:
        for seed in settings.mask_seeds:
            path = fill_mask_config(
                _REPO / "configs" / "mini_mask.yaml",
                keys,
                prompt_path=prompt,
                train_manifest=Path(train[task]),
                valid_manifest=world / info["manifests"]["valid"][task],
                out_dir=out / "masks",
                job_id=f"{task}_seed{seed}",
                settings=settings.masks,
                seed=seed,
                run_overrides={"speech_cache_dir": str((out / "speech_cache").resolve())},
            )
            jobs.append((task, seed, path))
    return jobs


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def run_demo_real(
    out: str | Path,
    checkpoint: str | Path,
    cfg: MiniConfig,
    world: str | Path,
    world_info: dict[str, Any],
    settings: DemoRealSettings | None = None,
) -> dict[str, Any]:
    """Trains the masks, decodes every condition and writes the report (``out/report.json``, ``report.md``).

    Args:
        out: the demo folder.
        checkpoint: the trained mini model (``salmonn_mini.pth``).
        cfg: the mini config (:func:`ahamask.mini.setup.load_mini_config`).
        world, world_info: the espeak-ng world and its ``world.json`` content
            (:func:`ahamask.mini.world.build_speech_world`).
        settings: what to run.

    Returns:
        The report.

    Raises:
        FileNotFoundError: the checkpoint or a small model is missing (one line naming it), before any model
            loads.
    """
    from ..models.loading import require_dir

    settings = settings or DemoRealSettings()
    out, world, checkpoint = Path(out), Path(world), Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(
            f"mini checkpoint: no such file: {checkpoint} (scripts/train_mini_salmonn.py)"
        )
    require_dir(cfg.model.llama_path, "model.llama_path")
    require_dir(cfg.model.whisper_path, "model.whisper_path")
    model_cfg = mini_model_config(cfg.model, checkpoint.resolve())
    settings.geometry = llm_geometry(model_cfg)
    started = time.perf_counter()
    (out / "masks").mkdir(parents=True, exist_ok=True)
    manifests = _subset_manifests(world, world_info, out, "test", settings.n_test, settings.tasks)
    mask_jobs = _mask_configs(model_cfg, world, world_info, out, settings)
    context = get_context("spawn")
    with ProcessPoolExecutor(settings.jobs, mp_context=context, initializer=_worker_setup) as pool:
        futures = [
            pool.submit(_mask_job, str(path), str(out / "masks" / path.stem), _digest(path, checkpoint))
            for _, _, path in mask_jobs
        ]
        trained = [f.result() for f in futures]
        mask_seconds = time.perf_counter() - started
        masks = {(t, s): r[1] for (t, s, _), r in zip(mask_jobs, trained, strict=True)}
        results = _evaluate(pool, model_cfg, manifests, masks, out, settings)
    report = _report(results, masks, trained, settings, world_info, started, mask_seconds)
    from .report import write_demo_real_report

    write_demo_real_report(report, masks, out, *settings.geometry)
    return report


def _evaluate(
    pool: Any, model_cfg: Any, manifests: dict, masks: dict, out: Path, settings: DemoRealSettings
) -> dict:
    """Decode jobs: the shared conditions (instructions, none) and, per mask seed, its mask and random mask."""
    import torch

    from ..demo.sweep import conditions_for
    from .world import HELDOUT_INSTRUCTIONS

    n_layers, n_heads = settings.geometry
    shared, per_seed = [], {s: [] for s in settings.mask_seeds}
    for task in settings.tasks:
        held_out = HELDOUT_INSTRUCTIONS[task]  # the espeak-ng world's paraphrases, not the synthetic world's
        for cond in conditions_for(task, None, n_layers, n_heads, settings.n_instructions, (), held_out):
            shared.append((task, cond))
        for seed in settings.mask_seeds:
            logits = torch.tensor(masks[(task, seed)])
            for cond in conditions_for(task, logits, n_layers, n_heads, 0, (seed,), held_out):
                if cond.kind in ("mask", "random"):
                    per_seed[seed].append((task, _renamed(cond, seed)))
    groups = [shared] + [per_seed[s] for s in settings.mask_seeds]
    futures = [
        pool.submit(_decode_worker, model_cfg, manifests, g, str(out / "eval"), settings.max_new_tokens)
        for g in groups
    ]
    merged: dict[str, dict[str, Any]] = {}
    for f in futures:
        for task, scores in f.result().items():
            merged.setdefault(task, {}).update(scores)
    return merged


def llm_geometry(model_cfg: Any) -> tuple[int, int]:
    """(layers, query heads) of the mini model's LLM, from its ``config.json`` (no weights loaded)."""
    from transformers import AutoConfig

    llm = AutoConfig.from_pretrained(model_cfg.llama_path, local_files_only=True)
    return llm.num_hidden_layers, llm.num_attention_heads


def _renamed(cond: Any, seed: int) -> Any:
    from dataclasses import replace

    name = "mask" if cond.kind == "mask" else "random"
    return replace(cond, name=f"{name}_seed{seed}")


def _spread(values: Sequence[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
        "values": list(values),
    }


def _cell(scores: Sequence[dict[str, Any]], kind: str) -> dict[str, Any]:
    """mean +- std of a metric over conditions (``kind``: "strict", "metrics" or "format")."""
    if kind == "format":
        return _spread([s["format"] for s in scores])
    (metric,) = scores[0][kind]
    return {"metric": metric, **_spread([s[kind][metric] for s in scores])}


def _report(
    results: dict,
    masks: dict,
    trained: list,
    settings: DemoRealSettings,
    info: dict,
    started: float,
    mask_s: float,
) -> dict[str, Any]:
    import torch

    from ..masking.mask import mask_stats

    n_layers, n_heads = settings.geometry
    tasks: dict[str, Any] = {}
    for task in settings.tasks:
        scores = results[task]
        groups = {
            "instruction": [v for k, v in scores.items() if k.startswith("instruction_")],
            "none": [scores["none"]],
            "mask": [scores[f"mask_seed{s}"] for s in settings.mask_seeds],
            "random": [scores[f"random_seed{s}"] for s in settings.mask_seeds],
        }
        tasks[task] = {
            cond: {kind: _cell(group, kind) for kind in ("strict", "metrics", "format")}
            for cond, group in groups.items()
        }
        tasks[task]["performed_with_mask"] = [g["performed"] for g in groups["mask"]]
        tasks[task]["examples"] = {c: g[0]["examples"] for c, g in groups.items()}
        tasks[task]["active_heads"] = [  # mask_stats thresholds the logits itself
            mask_stats(torch.tensor(masks[(task, s)]), n_layers, n_heads).active_heads
            for s in settings.mask_seeds
        ]
    return {
        "tasks": tasks,
        "settings": asdict(settings),
        "world": info["settings"],
        "n_test": settings.n_test,
        "seconds": {
            "total": round(time.perf_counter() - started, 1),
            "masks_stage": round(mask_s, 1),
            "per_mask": [t[2] for t in trained],
        },
        "environment": environment_record("float32"),
    }
