"""The shipped prompts/train_prompt.json and test_prompt.json: the official roles, with no instruction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ahamask.config import load_decode_config, load_train_config
from ahamask.models.prompts import SPEECH_PREFIX, load_prompt_file

REPO = Path(__file__).resolve().parents[3]
# Tasks whose prompt carries the entry's question ("Q") after the speech, as in the official file.
QUESTION_TASKS = {"QA", "inference_QA", "gender_QA"}


def _weight_overrides(bundle: Path) -> list[str]:
    """Only the weight paths of the official configs, pointed at a tiny bundle."""
    return [
        f"model.llama_path={bundle / 'llama'}",
        f"model.whisper_path={bundle / 'whisper'}",
        "model.beats_path=",
        f"model.ckpt={bundle / 'salmonn.pth'}",
    ]


@pytest.mark.parametrize("name", ["config.yaml", "decode_config.yaml"])
def test_official_configs_find_the_shipped_prompt_files(name, tiny_bundle, monkeypatch):
    monkeypatch.chdir(REPO)  # the official configs' relative paths are relative to the repository root
    loader = load_decode_config if name.startswith("decode") else load_train_config
    cfg = loader(REPO / "configs" / name, _weight_overrides(tiny_bundle))
    assert Path(cfg.model.llama_path).is_dir() and Path(cfg.model.ckpt).is_file()
    train = load_prompt_file(cfg.model.prompt_path, cfg.model.prompt_template)
    assert Path(cfg.model.test_prompt_path).is_file()
    # The official example manifest's task has a prompt, and that prompt is the bare speech slot.
    tasks = {
        e.get("task", "asr") for e in json.loads((REPO / "data/test/demo.json").read_text())["annotation"]
    }
    for task in tasks:
        assert train[task] == ["USER: <Speech><SpeechHere></Speech> \nASSISTANT:"]


def test_every_prompt_is_instruction_free():
    train = json.loads((REPO / "prompts" / "train_prompt.json").read_text())
    test = json.loads((REPO / "prompts" / "test_prompt.json").read_text())
    assert len(train) >= 20 and len(test) >= 20
    for task, prompts in train.items():
        expected = SPEECH_PREFIX + ("{}" if task in QUESTION_TASKS else "")
        assert prompts == [expected], task
    # The official test file maps each task to one string (not a list); QA takes no question there either.
    assert all(prompt == SPEECH_PREFIX for prompt in test.values()), test
    assert {"asr", "gender_recognition", "emotion_recognition", "QA"} <= set(train) & set(test)
