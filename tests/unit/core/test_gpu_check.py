"""scripts/gpu_check.py --dry-run: every step of the GPU check runs on the CPU and passes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_dry_run_passes_every_check(tiny_bundle, capsys):
    gpu_check = _load()
    assert gpu_check.main(["--dry-run", "--bundle", str(tiny_bundle)]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": " in line)
    for path in ("fold", "hooks", "prune"):
        assert lines[f"decode_ids_equal_cpu_fp32_{path}"] == "True"
        assert float(lines[f"decode_fp16_tokens_per_s_{path}"]) > 0
    for dtype in ("float16", "bfloat16"):
        assert float(lines[f"train_loss_rel_diff_{dtype}"]) <= gpu_check.AMP_TOLERANCE[dtype]
    assert float(lines["llama13b_fold_tokens_per_s"]) > 0 and lines["result"] == "ok"


def test_a_failed_check_makes_the_exit_code_non_zero(capsys):
    gpu_check = _load()
    gpu_check.report("decode_ids_equal_cpu_fp32_fold", False, ok=False)
    assert gpu_check.failures == ["decode_ids_equal_cpu_fp32_fold"]
    assert capsys.readouterr().out == "decode_ids_equal_cpu_fp32_fold: False FAIL\n"
