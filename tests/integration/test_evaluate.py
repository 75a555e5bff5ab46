"""evaluate.py on the tiny bundle: the official output schema, prompts, masks, shuffling, 2-rank merge."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ahamask.config import load_decode_config
from ahamask.evaluation.decode import postprocess
from ahamask.evaluation.evaluator import evaluate
from ahamask.masking.apply import prepare_mask
from ahamask.masking.checkpoint import save_mask
from ahamask.masking.geometry import MaskGeometry
from ahamask.masking.hooks import current_weights
from ahamask.models.salmonn import SALMONN

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def mask_file(tmp_path):
    return save_mask(
        torch.tensor([2.0, -1.0, 2.0, 2.0, 0.5, 2.0, 2.0, -2.0, 2.0, 0.5]), tmp_path / "mask.pth"
    )


def _cfg(bundle, out, *extra):
    return load_decode_config(bundle / "decode_config.yaml", [f"output_path={out}", *extra])


def test_postprocess_is_the_official_clean_up():
    assert postprocess("  Male</s>") == "Male"
    assert postprocess("line one\nline two \n") == "line one line two"
    assert postprocess("a</s> b") == "a</s> b"


def test_output_schema_and_manifest_order(tiny_bundle, tmp_path, mask_file):
    out = evaluate(_cfg(tiny_bundle, tmp_path / "sub" / "pred.json", f"model.weight_mask_path={mask_file}"))
    result = json.loads(out.read_text())
    assert set(result) == {"prompt", "prediction"} and result["prompt"] == ""
    manifest = json.loads((tiny_bundle / "data" / "test.json").read_text())["annotation"]
    assert [p["id"] for p in result["prediction"]] == [e["path"] for e in manifest]
    for pred, entry in zip(result["prediction"], manifest, strict=True):
        assert set(pred) == {"id", "ground_truth", "output"}
        assert pred["ground_truth"] == entry["text"]
        assert pred["output"] == pred["output"].strip() and "\n" not in pred["output"]
    assert not list(out.parent.glob("*.tmp"))


def _captured_prompts(monkeypatch, cfg):
    seen = {}
    original = SALMONN.generate

    def spy(self, samples, generate_cfg=None, prompts=None, **kwargs):
        seen.setdefault("prompts", []).extend(prompts)
        seen.setdefault("weights", []).append(current_weights(self.decoder))  # the mask applied now
        return original(self, samples, generate_cfg, prompts=prompts, **kwargs)

    monkeypatch.setattr(SALMONN, "generate", spy)
    evaluate(cfg)
    return seen


def test_prompt_with_a_mask_has_no_instruction(
    tiny_bundle, tmp_path, mask_file, monkeypatch, shared_tiny_model
):
    seen = _captured_prompts(
        monkeypatch,
        _cfg(
            tiny_bundle, tmp_path / "p.json", f"model.weight_mask_path={mask_file}", "mask_application=hooks"
        ),
    )
    assert set(seen["prompts"]) == {"USER: <Speech><SpeechHere></Speech> \nASSISTANT:"}
    weights = seen["weights"][0]
    assert weights.tolist() == [1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]  # sigmoid >= 0.5
    # The token ids the LLM sees for the part after the speech (dummy-prefix space, lone space, newline byte).
    tok = shared_tiny_model.llama_tokenizer
    pieces = tok.convert_ids_to_tokens(shared_tiny_model._encode_cached("</Speech> \nASSISTANT:"))
    assert pieces[0].startswith("▁") and pieces[pieces.index("<0x0A>") - 1] == "▁"


def test_prompt_without_a_mask_carries_the_instruction(tiny_bundle, tmp_path, monkeypatch):
    cfg = _cfg(tiny_bundle, tmp_path / "p.json", "prompt=  What is the gender of the speaker? ")
    seen = _captured_prompts(monkeypatch, cfg)
    assert set(seen["prompts"]) == {
        "USER: <Speech><SpeechHere></Speech> What is the gender of the speaker?\nASSISTANT:"
    }
    assert seen["weights"][0] is None
    assert json.loads((tmp_path / "p.json").read_text())["prompt"] == "What is the gender of the speaker?"


def test_instruction_with_a_mask_is_warned_about(tiny_bundle, tmp_path, mask_file, caplog):
    with caplog.at_level(logging.WARNING):
        evaluate(
            _cfg(
                tiny_bundle, tmp_path / "p.json", f"model.weight_mask_path={mask_file}", "prompt=Transcribe."
            )
        )
    assert any("no instruction" in r.message for r in caplog.records)


def test_shuffle_mask_keeps_the_head_count(mask_file):
    geometry = MaskGeometry(2, 4, 4, 16)
    plain = prepare_mask(str(mask_file), geometry).values
    shuffled = [prepare_mask(str(mask_file), geometry, shuffle=True, shuffle_seed=s).values for s in range(6)]
    for mask in shuffled:
        assert mask.view(2, 5)[:, :4].sum() == plain.view(2, 5)[:, :4].sum() == 6
    assert any(not torch.equal(m, plain) for m in shuffled)
    per_layer = prepare_mask(
        str(mask_file), geometry, shuffle=True, shuffle_mode="per_layer", shuffle_seed=1
    ).values
    assert per_layer.view(2, 5)[:, :4].sum(1).tolist() == [3.0, 3.0]


def test_wrong_mask_for_the_model_is_a_clear_error(tiny_bundle, tmp_path):
    big = save_mask(torch.zeros(1640), tmp_path / "big.pth")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "evaluate.py"),
            "-c",
            str(tiny_bundle / "decode_config.yaml"),
            "--options",
            f"model.weight_mask_path={big}",
            f"output_path={tmp_path / 'o.json'}",
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "1640 entries" in result.stderr and "2 layers x 4 heads" in result.stderr
    assert not (tmp_path / "o.json").exists()


def test_two_ranks_give_the_same_json_as_one(tiny_bundle, tmp_path, mask_file):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    common = [
        str(REPO / "evaluate.py"),
        "-c",
        str(tiny_bundle / "decode_config.yaml"),
        "--device",
        "cpu",
        "--options",
        f"model.weight_mask_path={mask_file}",
        "batch_size_eval=1",
    ]
    single = subprocess.run(
        [sys.executable, *common, f"output_path={tmp_path / 'one.json'}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    double = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29544",
            *common,
            f"output_path={tmp_path / 'two.json'}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    assert (tmp_path / "one.json").read_text() == (tmp_path / "two.json").read_text()


def test_folded_hooked_and_bucketed_decoding_write_the_same_json(tiny_bundle, tmp_path, mask_file):
    texts = []
    for name, extra in (
        ("fold", []),
        ("hooks", ["mask_application=hooks"]),
        ("bucket", ["bucket_by_length=true"]),
    ):
        out = evaluate(
            _cfg(tiny_bundle, tmp_path / f"{name}.json", f"model.weight_mask_path={mask_file}", *extra)
        )
        texts.append(out.read_text())
    assert texts[0] == texts[1] == texts[2]
    assert len(json.loads(texts[0])["prediction"]) == 4
