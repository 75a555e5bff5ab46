"""make demo at test scale (preset "quick"), and the demo's building blocks on hand-made inputs.

The quick run trains a smaller world's base model, three masks and a short sweep (about a minute on one
thread) and checks the claim the full demo shows: a trained mask switches the frozen model to its task far
better than the empty instruction does, and far better than a random mask of the same size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ahamask.demo import preset, run_demo
from ahamask.demo.masks import mask_config
from ahamask.demo.report import DEFAULT_SHARE, REACH_MARGIN, SWITCH_MARGIN, mask_iou, verdicts
from ahamask.demo.settings import MaskSettings, fingerprint
from ahamask.demo.sweep import CachedClips, conditions_for, score_records, scoring_task
from ahamask.evaluation.metrics import get_metric
from ahamask.masking.mask import mask_stats
from ahamask.synth import build_world

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    started = time.perf_counter()
    result = run_demo(out, preset("quick"), progress=False)
    return result, time.perf_counter() - started


def _gain(verdict: dict) -> tuple[float, float]:
    """Points the mask is better than no instruction and than the random mask (direction-aware)."""
    sign = -1.0 if verdict["metric"] == "wer" else 1.0
    return sign * (verdict["mask"] - verdict["none"]), sign * (verdict["mask"] - verdict["random"])


@pytest.mark.slow
def test_a_trained_mask_switches_the_frozen_model(quick_demo):
    result, _ = quick_demo
    found = result.report["verdicts"]
    assert set(found) == {"asr", "gender", "count"}
    best = max(found, key=lambda t: _gain(found[t])[0])
    over_none, over_random = _gain(found[best])
    # The claim of the full demo, on the task where the quick run shows it most.
    assert over_none >= 40.0, found[best]["sentence"]
    assert over_random >= 40.0, found[best]["sentence"]
    assert found[best]["switches"] and found[best]["beats_random"]


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
    again = run_demo(result.out_dir, preset("quick"), progress=False)
    assert again.reused == ["world", "base model", "masks", "evaluation"]
    assert time.perf_counter() - started < max(20.0, 0.3 * first_seconds)
    assert again.report["results"] == result.report["results"]


@pytest.mark.slow
def test_the_script_prints_the_table(quick_demo):
    result, _ = quick_demo
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "demo.py"),
            "--out",
            str(result.out_dir),
            "--preset",
            "quick",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "reusing" in proc.stderr and "AHAMask" in proc.stdout and "report.md" in proc.stdout


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
    def score(v: float, fmt: float = 0.0) -> dict:
        return {"metrics": {metric: v}, "format": fmt}

    task = {"accuracy": "gender", "wer": "asr", "ifr": "gender_asr"}[metric]
    return {
        "tasks": {
            task: {
                "metrics": [metric],
                "instruction": {"summary": {metric: {"mean": instr}}},
                "none": score(none, none_format),
                "mask": score(mask),
                "random": {"summary": {metric: {"mean": rnd}}},
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
