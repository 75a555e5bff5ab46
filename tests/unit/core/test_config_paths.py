"""Relative paths in a config: beside the config file when they exist there, else the working directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ahamask.config import load_decode_config, load_train_config
from ahamask.config_paths import INPUT_PATH_KEYS, OUTPUT_PATH_KEYS, resolve_config_paths, resolve_path

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture()
def bundle_dir(tmp_path: Path) -> Path:
    """A config folder holding llama/, data/train.json and exp/, like a tiny bundle."""
    root = tmp_path / "bundle"
    (root / "llama").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "data" / "train.json").write_text('{"annotation": []}')
    (root / "exp").mkdir()
    return root


@pytest.mark.parametrize(
    ("value", "output", "expected"),
    [
        ("llama", False, "<cfg>/llama"),  # exists beside the config
        ("data/train.json", False, "<cfg>/data/train.json"),
        ("data/missing.json", False, "data/missing.json"),  # not beside: working directory
        ("pretrained/vicuna", False, "pretrained/vicuna"),
        ("", False, ""),
        ("/abs/path", False, "/abs/path"),
        ("exp/run1", True, "<cfg>/exp/run1"),  # output under a folder that exists beside the config
        ("exp/decode.json", True, "<cfg>/exp/decode.json"),
        ("tmp.json", True, "tmp.json"),  # a bare output file name stays in the working directory
        ("out/run1", True, "out/run1"),  # its first folder is not beside the config
        ("exp", True, "<cfg>/exp"),  # an existing output folder beside the config
    ],
)
def test_resolve_path_rule(bundle_dir, value, output, expected):
    got = resolve_path(value, bundle_dir, output=output)
    assert got == expected.replace("<cfg>", str(bundle_dir))


def test_home_is_expanded(bundle_dir):
    assert resolve_path("~/x.pth", bundle_dir) == str(Path.home() / "x.pth")


def test_every_path_key_of_a_bundle_config_resolves_from_another_folder(bundle_dir, tmp_path, monkeypatch):
    # Every input key points at data/train.json, every output under exp/: all must land beside the config.
    node = OmegaConf.create({})
    for key in INPUT_PATH_KEYS + OUTPUT_PATH_KEYS:
        OmegaConf.update(node, key, "exp/out" if key in OUTPUT_PATH_KEYS else "data/train.json", merge=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    resolve_config_paths(node, bundle_dir)
    for key in INPUT_PATH_KEYS:
        assert OmegaConf.select(node, key) == str(bundle_dir / "data" / "train.json"), key
    for key in OUTPUT_PATH_KEYS:
        assert OmegaConf.select(node, key) == str(bundle_dir / "exp" / "out"), key


def test_bare_mask_name_passes_through_even_when_a_folder_has_that_name(bundle_dir):
    (bundle_dir / "gender_librispeech").mkdir()
    node = OmegaConf.create({"model": {"weight_mask_path": "gender_librispeech", "llama_path": "llama"}})
    resolve_config_paths(node, bundle_dir)
    assert node.model.weight_mask_path == "gender_librispeech"
    assert node.model.llama_path == str(bundle_dir / "llama")


def test_missing_and_interpolated_values_are_left_to_the_schema(bundle_dir):
    node = OmegaConf.create(
        {"model": {"llama_path": "???", "whisper_path": "${model.ckpt}", "ckpt": "llama"}}
    )
    resolve_config_paths(node, bundle_dir)
    assert OmegaConf.is_missing(node.model, "llama_path")
    assert OmegaConf.is_interpolation(node.model, "whisper_path")


def _write_bundle_config(bundle_dir: Path) -> Path:
    cfg = bundle_dir / "config.yaml"
    cfg.write_text(
        "model:\n  llama_path: llama\n  whisper_path: llama\n  prompt_path: data/train.json\n"
        "datasets:\n  train_ann_path: data/train.json\n  valid_ann_path: data/train.json\n"
        "run:\n  output_dir: exp\n"
    )
    return cfg


def test_load_train_config_from_another_working_directory(bundle_dir, tmp_path, monkeypatch):
    cfg_path = _write_bundle_config(bundle_dir)
    monkeypatch.chdir(tmp_path)
    cfg = load_train_config(Path("bundle") / "config.yaml")
    assert cfg.model.llama_path == str(bundle_dir / "llama")
    assert cfg.datasets.train_ann_path == str(bundle_dir / "data" / "train.json")
    assert cfg.run.output_dir == str(bundle_dir / "exp")
    # Overrides are typed relative to the shell's folder and are never rewritten.
    cfg = load_train_config(cfg_path, ["model.llama_path=llama", "run.output_dir=exp/x"])
    assert cfg.model.llama_path == "llama" and cfg.run.output_dir == "exp/x"


def test_official_configs_keep_working_directory_paths(tmp_path, monkeypatch):
    for cwd in (REPO, tmp_path):
        monkeypatch.chdir(cwd)
        train = load_train_config(REPO / "configs" / "config.yaml")
        decode = load_decode_config(REPO / "configs" / "decode_config.yaml")
        assert train.model.llama_path == decode.model.llama_path == "pretrained/vicuna-13b-v1.1"
        assert train.model.prompt_path == decode.model.prompt_path == "prompts/train_prompt.json"
        assert train.datasets.train_ann_path == decode.test_data_path == "data/test/demo.json"
        assert train.run.output_dir == "exp/demo_output" and decode.output_path == "tmp.json"
        assert decode.model.weight_mask_path == "legacy_checkpoints/gender_librispeech/checkpoint.pth"
