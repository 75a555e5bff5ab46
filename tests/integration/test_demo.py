"""make demo at test scale (preset "quick"), and the demo's building blocks on hand-made inputs.

The quick run trains a smaller world's base model, three masks and a short sweep (about a minute on one
thread) and checks the claim the full demo shows: a trained mask switches the frozen model to its task far
better than the empty instruction does, and far better than a random mask of the same size.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import torch

from ahamask.demo import preset, run_demo
from ahamask.demo.masks import mask_config
from ahamask.demo.report import DEFAULT_SHARE, REACH_MARGIN, SWITCH_MARGIN, mask_iou, verdicts
from ahamask.demo.seeds import reachability_rows, run_one, run_seeds, seed_settings, summarize_seeds
from ahamask.demo.settings import MaskSettings, fingerprint
from ahamask.demo.sweep import CachedClips, conditions_for, score_records, scoring_task, strict_metrics
from ahamask.evaluation.metrics import get_metric
from ahamask.masking.mask import mask_stats
from ahamask.synth import build_world

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """Seeds 0 and 1 of the quick preset as `make demo` runs them, and seed 0 again as one whole process.

    `make demo`'s scheduler splits the seeds into pieces (world + base model, each mask, evaluation) over two
    single-threaded workers; meanwhile a third process computes seed 0 from scratch in another folder, in
    one piece, so the determinism test compares two schedules of the same seed. The suite's wall time
    changes with the schedule, not the numbers.
    """
    out, again = tmp_path_factory.mktemp("demo"), tmp_path_factory.mktemp("again")
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        twin = pool.submit(run_one, again / "seed_0", seed_settings(preset("quick"), 0), False, False, 1)
        seeds = run_seeds(out, preset("quick"), seeds=[0, 1], progress=False, jobs=2)
        twin.result()
    return seeds, again


@pytest.fixture(scope="module")
def quick_seeds(quick_runs):
    """Two seeds of the quick preset: each a whole experiment (world, base model, masks, random masks)."""
    return quick_runs[0]


@pytest.fixture(scope="module")
def quick_demo(quick_seeds):
    """Seed 0's single-seed demo, reloaded from its folder (every stage reused)."""
    started = time.perf_counter()
    result = run_demo(
        quick_seeds.out_dir / "asr" / "seed_0", seed_settings(preset("quick"), 0), progress=False
    )
    return result, time.perf_counter() - started


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_a_trained_mask_switches_the_frozen_model_on_every_seed(quick_seeds, seed):
    """The strict-format claim: on each seed, some mask makes the frozen model answer in its task's exact
    format far more often than no instruction and than a random mask of the same size."""
    report = json.loads((quick_seeds.out_dir / "asr" / f"seed_{seed}" / "report.json").read_text())
    found = report["verdicts"]
    assert set(found) == {"asr", "gender", "count"}
    tasks = report["results"]["tasks"]
    best = max((t for t in found if not found[t]["default"]), key=lambda t: tasks[t]["mask"]["format"])
    entry = tasks[best]
    random_format = statistics.fmean(r["format"] for r in entry["random"]["per_seed"])
    assert entry["mask"]["format"] - entry["none"]["format"] >= 40.0, found[best]["sentence"]
    assert entry["mask"]["format"] - random_format >= 40.0, found[best]["sentence"]
    assert found[best]["switches"] and found[best]["beats_random"]


@pytest.mark.slow
def test_the_seeds_report_has_mean_std_cells_with_per_seed_values(quick_seeds):
    report = json.loads((quick_seeds.out_dir / "report.json").read_text())
    (summary,) = report["presets"].values()
    assert summary["seeds"] == [0, 1] and summary["default_task"] == "asr"
    for task, cell in summary["cells"].items():
        for kind in ("strict", "lenient", "format"):
            for condition in ("instruction", "none", "mask", "random"):
                spread = cell[kind][condition]
                assert len(spread["per_seed"]) == 2
                assert spread["mean"] == pytest.approx(statistics.fmean(spread["per_seed"]))
        per_seed_mask = [
            json.loads((quick_seeds.out_dir / "asr" / f"seed_{s}" / "report.json").read_text())["results"][
                "tasks"
            ][task]["mask"]["strict"][cell["metric"]]
            for s in (0, 1)
        ]
        assert cell["strict"]["mask"]["per_seed"] == per_seed_mask
        assert summary["verdicts"][task]["sentence"].endswith("/2.")
    text = (quick_seeds.out_dir / "report.md").read_text()
    assert "## Reachability" in text and "### Strict (exact format)" in text and " ± " in text


@pytest.mark.slow
def test_two_runs_give_byte_identical_reports(quick_demo, quick_runs):
    """Deterministic numerics: no timing-dependent choice, no global-RNG dependence, no times in the report."""
    first, _ = quick_demo
    second = quick_runs[1] / "seed_0"  # the same seed computed from scratch in another process and folder
    assert (second / "report.json").read_bytes() == (first.out_dir / "report.json").read_bytes()
    assert (second / "report.md").read_bytes() == (first.out_dir / "report.md").read_bytes()
    env = json.loads((first.out_dir / "report.json").read_text())["context"]["environment"]
    assert env["precision"] == "float32" and env["torch_threads"] == 1
    assert env["packages"]["transformers"] and env["packages"]["torch"] and env["packages"]["peft"]
    assert set(json.loads((first.out_dir / "timings.json").read_text())) >= {"seconds_this_run"}


@pytest.mark.slow
def test_the_report_holds_the_table_the_masks_and_the_pictures(quick_demo):
    result, _ = quick_demo
    out = result.out_dir
    for name in (
        "report.md",
        "report.json",
        "masks.png",
        "mask_iou.png",
        "mask_asr.png",
        "mask_gender.png",
        "mask_count.png",
    ):
        assert (out / name).is_file(), name
    assert (out / "mask_iou.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "report.json").read_text())
    assert report["context"]["settings"]["name"] == "quick"
    for task, entry in report["results"]["tasks"].items():
        assert len(entry["instruction"]["per_instruction"]) == 3  # the preset's held-out paraphrases
        heads = entry["mask_stats"]["active_heads"]
        assert entry["mask_stats"]["total_heads"] == 64 and report["masks"][task]["active_heads"] == heads
        assert (out / "eval" / task / "mask.json").is_file()
    assert report["mask_iou"]["gender"]["gender"] == 1.0
    text = (out / "report.md").read_text()
    assert "| task | metric | instruction (mean ± std)" in text and "## What it shows" in text
    assert result.table.splitlines()[0].startswith("task")


@pytest.mark.slow
def test_a_rerun_reuses_every_stage_and_gives_the_same_numbers(quick_demo):
    result, first_seconds = quick_demo
    started = time.perf_counter()
    again = run_demo(result.out_dir, seed_settings(preset("quick"), 0), progress=False)
    assert again.reused == ["world", "base model", "masks", "evaluation"]
    assert time.perf_counter() - started < max(20.0, 0.3 * first_seconds)
    assert again.report["results"] == result.report["results"]


@pytest.mark.slow
def test_the_script_prints_the_table(quick_seeds):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "demo.py"),
            "--out",
            str(quick_seeds.out_dir),
            "--preset",
            "quick",
            "--seeds",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "reusing" in proc.stderr and "AHAMask" in proc.stdout and "report.md" in proc.stdout
    assert "seeds" in proc.stdout  # verdicts say on how many seeds they hold
    assert "strict scoring" in proc.stdout and "lenient scoring" in proc.stdout
    assert "Reachability" in proc.stdout and "default: asr" in proc.stdout


# ----------------------------------------------------------------------------- building blocks


def test_mask_iou_counts_shared_heads():
    # 2 layers x 3 heads: logits > 0 keep a head; the FFN entry (every 4th) is ignored.
    a = torch.tensor([5.0, 5.0, -5.0, 5.0, -5.0, -5.0, 5.0, -5.0])  # heads (0,0) (0,1) (1,2)
    b = torch.tensor([-5.0, 5.0, -5.0, -5.0, 5.0, -5.0, 5.0, 5.0])  # heads (0,1) (1,0) (1,2)
    empty = torch.full((8,), -5.0)
    iou = mask_iou({"a": a, "b": b, "e": empty}, n_layers=2, n_heads=3)
    assert iou["a"]["b"] == pytest.approx(2 / 4) and iou["b"]["a"] == iou["a"]["b"]
    assert iou["a"]["a"] == 1.0 and iou["a"]["e"] == 0.0 and iou["e"]["e"] == 1.0


def _fake_results(
    metric: str, instr: float, none: float, mask: float, rnd: float, none_format: float
) -> dict:
    # Strict figures carry the values under test; the lenient ones are deliberately different (verdicts must
    # not read them).
    def score(v: float, fmt: float = 0.0) -> dict:
        return {"metrics": {metric: 50.0}, "strict": {metric: v}, "format": fmt}

    task = {"accuracy": "gender", "wer": "asr", "ifr": "gender_asr"}[metric]
    return {
        "tasks": {
            task: {
                "metrics": [metric],
                "instruction": {"per_instruction": [score(instr - 1.0), score(instr + 1.0)]},
                "none": score(none, none_format),
                "mask": score(mask),
                "random": {"per_seed": [score(rnd)]},
            }
        }
    }


@pytest.mark.parametrize(
    ("metric", "values", "expected", "phrase"),
    [
        (
            "accuracy",
            (98.0, 10.0, 95.0, 9.0, 0.0),
            (False, True, True),
            "switches the model to this task, at",
        ),
        (
            "accuracy",
            (98.0, 10.0, 60.0, 9.0, 0.0),
            (False, False, True),
            "switches the model to this task, below",
        ),
        ("accuracy", (98.0, 96.0, 97.0, 50.0, 96.0), (True, True, False), "already does this task"),
        (
            "wer",
            (10.0, 100.0, 14.0, 100.0, 0.0),
            (False, True, True),
            "at instruction level",
        ),  # lower is better
        ("wer", (10.0, 100.0, 85.0, 100.0, 0.0), (False, False, False), "does not switch"),
        ("ifr", (90.0, 0.0, 15.0, 0.0, 0.0), (False, False, False), "does not switch"),
    ],
)
def test_verdicts_apply_the_stated_margins(metric, values, expected, phrase):
    assert (REACH_MARGIN, SWITCH_MARGIN, DEFAULT_SHARE) == (5.0, 20.0, 50.0)
    (found,) = verdicts(_fake_results(metric, *values)).values()
    assert (found["default"], found["reaches_instruction"], found["switches"]) == expected
    assert phrase in found["sentence"] and f"{values[2]:.1f} with the mask" in found["sentence"]


def test_scoring_uses_the_world_labels_without_touching_the_project_tasks():
    assert scoring_task("asr_gender_json") == "json:asr=asr,gender=demo_gender"
    assert scoring_task("gender_asr") == "demo_gender|asr"
    assert get_metric("gender").options["labels"] == ["male", "female"]  # the project's task is unchanged
    records = [
        {"id": "a", "ground_truth": "low|ba di", "output": "low|ba di"},
        {"id": "b", "ground_truth": "high|ko mu pe", "output": "high|ko mu"},
        {"id": "c", "ground_truth": "low|su", "output": "su"},  # out of format: empty parts
        {"id": "d", "ground_truth": "high|vo ta", "output": "three"},
    ]
    scored = score_records(records, "gender_asr")
    assert scored["metrics"]["ifr"] == pytest.approx(50.0)
    assert scored["metrics"]["accuracy"] == pytest.approx(50.0)
    assert scored["metrics"]["wer"] == pytest.approx(100.0 * 4 / 8)  # 1 deletion + 1 + 2 deletions of 8 words
    assert scored["format"] == pytest.approx(50.0)
    assert scored["performed"] == {"asr": 25.0, "count": 25.0, "gender_asr": 50.0}


def test_conditions_hold_the_held_out_instructions_and_a_same_size_random_mask():
    logits = torch.full((4 * 9,), -3.0)
    logits[[0, 1, 2, 10, 20, 30]] = 3.0  # 6 heads on, one per FFN position excluded by construction
    conds = conditions_for("count", logits, n_layers=4, n_heads=8, n_instructions=2, random_seeds=(0, 1))
    assert [c.name for c in conds] == [
        "instruction_0",
        "instruction_1",
        "none",
        "mask",
        "random_0",
        "random_1",
    ]
    assert conds[0].instruction == "Count how many syllables are in this clip."
    mask_heads = mask_stats(conds[3].head_weights * 20 - 10, 4, 8).active_heads
    for cond in conds[4:]:
        assert mask_stats(cond.head_weights * 20 - 10, 4, 8).active_heads == mask_heads == 6
        assert not torch.equal(cond.head_weights, conds[3].head_weights)


def test_mask_config_fills_the_template_and_loads(tmp_path, tiny_bundle):
    from ahamask.config import load_train_config

    world = build_world(tmp_path / "world", n_train=4, n_valid=2, n_test=2, tasks=("count",))
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.yaml").write_text((tiny_bundle / "config.yaml").read_text())
    path = mask_config(
        "count", world, base, tmp_path / "masks", MaskSettings(steps=7, lr=0.03, init_mean=0.5)
    )
    cfg = load_train_config(path)
    assert cfg.run.iters_per_epoch == 7 and cfg.run.optims.max_epoch == 1 and cfg.run.job_id == "count"
    assert cfg.run.optims.init_lr == 0.03 and cfg.run.mask_init_mean == 0.5 and not cfg.model.lora
    assert cfg.datasets.train_ann_path == str((tmp_path / "world" / "train" / "count.json").resolve())
    assert cfg.model.prompt_path.endswith("ahamask_train_prompt.json")
    assert cfg.model.qformer_hidden_size == 32  # the architecture comes from the base bundle


def test_cached_clips_refuse_a_manifest_of_other_files(tmp_path):
    world = build_world(tmp_path / "w", n_train=2, n_valid=2, n_test=3, tasks=("asr", "gender"))
    clips = CachedClips(
        [{"id": f"wav/test_{i:05d}.wav", "text": "x", "task": "asr", "Q": ""} for i in range(3)]
    )
    relabelled = clips.relabel(world.manifests["test"]["gender"])
    assert [c["task"] for c in relabelled.items] == ["gender"] * 3
    with pytest.raises(ValueError, match="2 entries, expected the same 3 clips"):
        clips.relabel(world.manifests["valid"]["gender"])


def test_settings_are_checked_and_fingerprints_follow_them():
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    with pytest.raises(ValueError, match=r"tasks: unknown \['nope'\]"):
        preset("quick", tasks=("nope",))
    with pytest.raises(ValueError, match="unknown settings"):
        preset("quick", n_clips=3)
    assert fingerprint("a", 1) == fingerprint("a", 1) != fingerprint("a", 2)


def test_strict_scoring_counts_only_the_exact_format():
    """A default output that contains a label is lenient-correct but strict-wrong."""
    records = [
        {"id": "a", "ground_truth": "high", "output": "ba ko mu|high"},  # asr|gender format, label inside
        {"id": "b", "ground_truth": "low", "output": "low"},
        {"id": "c", "ground_truth": "low", "output": "high"},
    ]
    scored = score_records(records, "gender")
    assert scored["strict"] == {"accuracy": pytest.approx(100 / 3)}
    assert scored["format"] == pytest.approx(200 / 3)
    assert scored["metrics"]["accuracy"] > scored["strict"]["accuracy"]  # the lenient parser finds "high"
    asr = [
        {
            "id": "a",
            "ground_truth": "ba di",
            "output": "ba di|low",
        },  # out of the asr format: empty transcript
        {"id": "b", "ground_truth": "ko mu", "output": "ko mu"},
    ]
    assert strict_metrics(asr, "asr") == {"wer": 50.0}
    composite = [
        {"id": "a", "ground_truth": "ba|low", "output": "ba|high"},
        {"id": "b", "ground_truth": "ko|low", "output": "low"},
    ]
    assert strict_metrics(composite, "asr_gender") == {"ifr": 50.0, "wer": 50.0, "accuracy": 0.0}


def _fake_seed_report(mask_value: float, category: str) -> dict:
    def score(v: float) -> dict:
        return {"metrics": {"accuracy": v + 1}, "strict": {"accuracy": v}, "format": v}

    entry = {
        "instruction": {"per_instruction": [score(90.0), score(100.0)]},
        "none": score(10.0),
        "mask": score(mask_value),
        "random": {"per_seed": [score(5.0)]},
        "mask_stats": {"active_heads": 30, "total_heads": 64},
    }
    verdict = {"category": category, "beats_random": category != "not reached"}
    return {"results": {"tasks": {"gender": entry}}, "verdicts": {"gender": verdict}}


def test_seed_summary_means_stds_counts_and_reachability():
    reports = {0: _fake_seed_report(96.0, "instruction level"), 1: _fake_seed_report(60.0, "partly")}
    summary = summarize_seeds(reports, "asr")
    cell = summary["cells"]["gender"]
    assert cell["strict"]["mask"] == {"mean": 78.0, "std": 18.0, "per_seed": [96.0, 60.0]}
    assert cell["lenient"]["mask"]["per_seed"] == [97.0, 61.0]
    assert cell["strict"]["instruction"]["per_seed"] == [95.0, 95.0]
    assert summary["verdicts"]["gender"]["sentence"] == (
        "gender: instruction level on 1/2 seeds, partly on 1/2 seeds; above the random mask on 2/2."
    )
    rows = reachability_rows(
        {"asr": summary, "gender": summarize_seeds({0: _fake_seed_report(5.0, "not reached")}, "gender")}
    )
    assert rows[0] == ["task", "default: asr", "default: gender"]
    assert rows[1][1:] == ["instruction level 1/2, partly 1/2", "not reached 1/1"]
