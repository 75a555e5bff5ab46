"""make demo-real end to end on the tiny stand-in: masks through train.py's trainer, every condition decoded,
the report written; a rerun reuses the masks and gives the same report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ahamask.demo.settings import MaskSettings
from ahamask.mini.demo_real import DemoRealSettings, run_demo_real
from ahamask.mini.setup import build_mini_model, load_mini_config
from ahamask.mini.training import CHECKPOINT_NAME, train_connector
from ahamask.models.tiny import make_tiny_bundle

from .stand_in import chatml_llm, fake_world, fake_world_info

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini_demo")
    chatml_llm(root / "llm")
    shutil.copytree(make_tiny_bundle(root / "bundle") / "whisper", root / "whisper")
    cfg = OmegaConf.load(REPO / "configs" / "mini_salmonn.yaml")
    cfg.model.update(
        {
            "llama_path": "llm",
            "whisper_path": "whisper",
            "qformer_hidden_size": 16,
            "qformer_num_heads": 2,
            "qformer_intermediate_size": 32,
            "qformer_num_layers": 1,
        }
    )
    cfg.train.update({"steps": 2, "batch_size": 2, "warmup": 1, "valid_every": 2, "valid_clips": 2})
    (root / "mini.yaml").write_text(OmegaConf.to_yaml(cfg))
    fake_world(root / "world")
    mini = load_mini_config(root / "mini.yaml", root)
    model = build_mini_model(mini.model, seed=0)
    train_connector(model, mini.model, mini.train, root / "world", fake_world_info(), root / "run", False)
    return root, mini


def _settings() -> DemoRealSettings:
    return DemoRealSettings(
        mask_seeds=(42, 43),
        masks=MaskSettings(steps=2, batch_size=2, warmup_steps=1),
        n_test=3,
        n_instructions=2,
        max_new_tokens=4,
        jobs=1,
    )


def test_demo_real_runs_every_condition_and_reuses_masks(trained, tmp_path):
    root, mini = trained
    ckpt = root / "run" / CHECKPOINT_NAME
    report = run_demo_real(tmp_path / "demo", ckpt, mini, root / "world", fake_world_info(), _settings())
    assert set(report["tasks"]) == {"asr", "gender", "rate"}
    for task, entry in report["tasks"].items():
        assert len(entry["instruction"]["strict"]["values"]) == 2
        assert len(entry["mask"]["strict"]["values"]) == 2 and len(entry["random"]["strict"]["values"]) == 2
        assert len(entry["active_heads"]) == 2
        for seed in (42, 43):
            config = tmp_path / "demo" / "masks" / f"{task}_seed{seed}.yaml"
            assert OmegaConf.load(config).run.seed == seed  # `python train.py -c` reruns it as it is
            assert (tmp_path / "demo" / "masks" / f"{task}_seed{seed}" / "checkpoint_0.pth").is_file()
            assert (tmp_path / "demo" / "eval" / task / f"mask_seed{seed}.json").is_file()
    assert tuple(report["settings"]["geometry"]) == (2, 4)
    text = (tmp_path / "demo" / "report.md").read_text()
    assert "## Strict scoring" in text and "## Verdicts (strict)" in text
    assert (tmp_path / "demo" / "masks.png").is_file()
    # The rerun trains nothing (every mask's marker holds) and reports the same numbers.
    marker = tmp_path / "demo" / "masks" / "gender_seed42" / "stage.json"
    before = marker.read_bytes()
    again = run_demo_real(tmp_path / "demo", ckpt, mini, root / "world", fake_world_info(), _settings())
    assert marker.read_bytes() == before

    def strip(r):
        return json.dumps({k: v for k, v in r.items() if k not in ("seconds", "environment")}, sort_keys=True)

    assert strip(again) == strip(report)


def test_missing_checkpoint_is_one_line_before_any_load(trained, tmp_path):
    root, mini = trained
    with pytest.raises(FileNotFoundError, match="mini checkpoint: no such file"):
        run_demo_real(tmp_path, root / "nope.pth", mini, root / "world", fake_world_info(), _settings())
