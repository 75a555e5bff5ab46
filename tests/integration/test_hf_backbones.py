"""Qwen2-Audio and Audio Flamingo 3 tiny bundles through the real entry points: train.py trains a mask,
evaluate.py decodes with it, scripts/score.py scores, the instruction sweep and the one-shot chat give the
same answers under the mask; a mask of another model's geometry is a one-line error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ahamask.masking.checkpoint import save_mask
from ahamask.models.tiny_hf_audio import make_tiny_audio_flamingo3_bundle, make_tiny_qwen2_audio_bundle

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize("arch", ["qwen2_audio", "audio_flamingo3"])
def test_train_evaluate_score(arch, tmp_path):
    maker = make_tiny_qwen2_audio_bundle if arch == "qwen2_audio" else make_tiny_audio_flamingo3_bundle
    bundle = maker(tmp_path / "bundle")
    trained = _run(str(REPO / "train.py"), "-c", str(bundle / "config.yaml"), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    (run_dir,) = [p for p in (bundle / "exp").iterdir() if p.is_dir()]
    mask = run_dir / "mask.safetensors"
    assert json.loads((run_dir / "mask_config.json").read_text())  # the shareable mask folder
    predictions = tmp_path / "pred.json"
    decoded = _run(
        str(REPO / "evaluate.py"),
        "-c",
        str(bundle / "decode_config.yaml"),
        "--options",
        f"model.weight_mask_path={mask}",
        f"output_path={predictions}",
        cwd=tmp_path,
    )
    assert decoded.returncode == 0, decoded.stderr[-2000:]
    rows = json.loads(predictions.read_text())["prediction"]
    assert [r["ground_truth"] for r in rows] == ["Male", "Female", "Male", "Female"]
    scored = _run(
        str(REPO / "scripts" / "score.py"),
        str(predictions),
        "--manifest",
        str(bundle / "data" / "test.json"),
        "--out",
        str(tmp_path / "scores.json"),
        cwd=tmp_path,
    )
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert (tmp_path / "scores.json").is_file()
    # The instruction sweep (two instructions, then the mask) and the one-shot chat on the same bundle.
    instructions = tmp_path / "instructions.json"
    instructions.write_text(json.dumps(["What is the gender of the speaker?", "Male or female?"]))
    swept = _run(
        str(REPO / "scripts" / "instruction_sweep.py"),
        "-c",
        str(bundle / "decode_config.yaml"),
        "--instructions",
        str(instructions),
        "--masks",
        str(mask),
        "--out",
        str(tmp_path / "sweep.json"),
        cwd=tmp_path,
    )
    assert swept.returncode == 0, swept.stderr[-2000:]
    report = json.loads((tmp_path / "sweep.json").read_text())
    assert len(report["instructions"]) == 2 and len(report["masks"]) == 1
    # The mask run of the sweep decodes what evaluate.py decoded with the same mask.
    assert report["masks"][0]["outputs"] == [r["output"] for r in rows]
    wav = json.loads((bundle / "data" / "test.json").read_text())["annotation"][0]["path"]
    wav = (bundle / "data" / wav) if not Path(wav).is_absolute() else Path(wav)
    chatted = _run(
        str(REPO / "cli_inference.py"),
        "-c",
        str(bundle / "decode_config.yaml"),
        "--options",
        f"model.weight_mask_path={mask}",
        "--wav",
        str(wav),
        cwd=tmp_path,
    )
    assert chatted.returncode == 0, chatted.stderr[-2000:]
    assert chatted.stdout.strip() == rows[0]["output"]  # the chat's answer is evaluate.py's


def test_mask_of_another_model_is_a_one_line_error(tmp_path):
    bundle = make_tiny_qwen2_audio_bundle(tmp_path / "bundle")
    salmonn_13b = save_mask(torch.zeros(40 * 41), tmp_path / "salmonn_13b_mask.pth")
    result = _run(
        str(REPO / "evaluate.py"),
        "-c",
        str(bundle / "decode_config.yaml"),
        "--options",
        f"model.weight_mask_path={salmonn_13b}",
        f"output_path={tmp_path / 'pred.json'}",
        cwd=tmp_path,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "1640" in lines[0] and "10" in lines[0], result.stderr[-2000:]
