"""The instruction-sensitivity sweep: statistics, one encoder pass for all variants, report, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ahamask.data.dataset import SALMONNDataset
from ahamask.evaluation.decode import decode_dataset
from ahamask.evaluation.sweep import format_sweep, load_instructions, run_sweep, summarize
from ahamask.masking.checkpoint import save_mask
from ahamask.masking.hooks import current_weights, head_mask
from ahamask.models.salmonn import SALMONN
from tests.conftest import run_repo_script

REPO = Path(__file__).resolve().parents[2]
LOGITS = [2.0, -1.0, 2.0, 2.0, 0.5, 2.0, 2.0, -2.0, 2.0, 0.5]  # 6 of 8 heads kept
INSTRUCTIONS = [
    "Describe the speech.",
    "Is the speaker male or female?",
    "What is the gender of the speaker?",
]


@pytest.fixture()
def mask_file(tmp_path) -> Path:
    return save_mask(torch.tensor(LOGITS), tmp_path / "gender_mask" / "checkpoint.pth")


@pytest.fixture()
def test_set(tiny_decode_cfg) -> SALMONNDataset:
    # Four clips, ground truths Male, Female, Male, Female (task gender_recognition).
    return SALMONNDataset(tiny_decode_cfg.test_data_path, tiny_decode_cfg.model.whisper_path)


def test_summarize_on_hand_numbers():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert (s["n"], s["n_missing"], s["mean"], s["min"], s["max"]) == (4, 0, 2.5, 1.0, 4.0)
    assert math.isclose(s["std"], math.sqrt(1.25))  # population: sum of squares 5 / 4
    assert math.isclose(s["std_sample"], math.sqrt(5 / 3))  # sample: 5 / 3
    one = summarize([7.5])
    assert one["std"] == 0.0 and one["std_sample"] is None and one["mean"] == 7.5
    gap = summarize([None, 2.0, 4.0])
    assert (gap["n"], gap["n_missing"], gap["mean"], gap["std"]) == (2, 1, 3.0, 1.0)
    assert math.isclose(gap["std_sample"], math.sqrt(2))
    assert summarize([])["mean"] is None and summarize([None])["n_missing"] == 1
    with pytest.raises(ValueError, match="value 1 is nan"):
        summarize([1.0, float("nan")])


def test_load_instructions_names_the_bad_entry(tmp_path):
    path = tmp_path / "instr.json"
    path.write_text(json.dumps(["transcribe", 3, "what is said?"]))
    with pytest.raises(ValueError, match=r"instr.json: entry 1 is int 3, expected a string"):
        load_instructions(path)
    path.write_text("[]")
    with pytest.raises(ValueError, match="non-empty JSON list"):
        load_instructions(path)
    path.write_text('["a",')
    with pytest.raises(ValueError, match="not valid JSON"):
        load_instructions(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_instructions(tmp_path / "none.json")
    assert load_instructions(REPO / "prompts" / "instructions" / "asr.json")[1] == "transcribe this audio"


def test_sweep_scores_each_variant_and_encodes_once(
    tiny_model, tiny_decode_cfg, test_set, mask_file, monkeypatch
):
    encoder_calls, seen = [], []
    real_encode, real_generate = SALMONN.encode_speech, SALMONN.generate

    def encode(self, *args, **kwargs):
        encoder_calls.append(args[0].shape[0])
        return real_encode(self, *args, **kwargs)

    def generate(self, samples, generate_cfg=None, prompts=None, speech_embeds=None, **kw):
        # The real decode runs; its answers are then replaced by fixed ones per prompt so the scores are known.
        head_weights = current_weights(self.decoder)
        answers = real_generate(
            self, samples, generate_cfg, prompts=prompts, speech_embeds=speech_embeds, **kw
        )
        seen.append((prompts[0], None if head_weights is None else head_weights.tolist(), speech_embeds))
        if "male or female" in prompts[0] or head_weights is not None:
            return list(samples["text"])  # all right
        if "gender" in prompts[0]:
            return ["Male"] * len(answers)  # right for the 2 male clips
        return answers  # the random tiny model: no label found

    monkeypatch.setattr(SALMONN, "encode_speech", encode)
    monkeypatch.setattr(SALMONN, "generate", generate)
    report = run_sweep(
        tiny_model, test_set, INSTRUCTIONS, [mask_file], tiny_decode_cfg.generate, batch_size=2
    )

    assert encoder_calls == [2, 2]  # one pass over the 4 clips, not one per run (4 runs x 2 batches)
    assert len(seen) == 8 and all(embeds is not None and embeds.shape[0] == 2 for _, _, embeds in seen)
    assert (report["task"], report["metric"], report["lower_is_better"], report["n_entries"]) == (
        "gender",
        "accuracy",
        False,
        4,
    )
    assert report["ids"] == ["test_0.wav", "test_1.wav", "test_2.wav", "test_3.wav"]
    runs = report["instructions"]
    assert [r["instruction"] for r in runs] == INSTRUCTIONS
    assert [r["value"] for r in runs] == [0.0, 100.0, 50.0]
    assert runs[1]["outputs"] == ["Male", "Female", "Male", "Female"] and runs[2]["outputs"] == ["Male"] * 4
    assert runs[0]["score"]["details"]["unparsed"] == 4 and runs[2]["score"]["n"] == 4
    assert (
        runs[2]["prompt"]
        == "USER: <Speech><SpeechHere></Speech> What is the gender of the speaker?\nASSISTANT:"
    )
    assert all(r["mask"] is None and r["active_heads"] is None for r in runs)
    s = report["summary"]
    assert (s["n"], s["mean"], s["min"], s["max"], s["best"], s["worst"]) == (3, 50.0, 0.0, 100.0, 1, 0)
    assert math.isclose(s["std"], math.sqrt(5000 / 3))  # population std of 0, 100, 50: 40.82
    (mask_run,) = report["masks"]
    assert (
        mask_run["mask"] == str(mask_file) and mask_run["active_heads"] == 0.75 and mask_run["value"] == 100.0
    )
    assert mask_run["prompt"] == "USER: <Speech><SpeechHere></Speech> \nASSISTANT:"
    assert seen[-1][1] == [1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]  # binarised at 0.5
    table = format_sweep(report).splitlines()
    assert table[0] == "task gender (4 entries), accuracy %: higher is better"
    assert table[-4].split()[-1] == "50.00" and table[-3].split()[-1] == "40.82"
    assert "mask gender_mask/checkpoint.pth (75.0% heads)" in table[-1] and table[-1].endswith("100.00")
    json.dumps(report)  # the report is plain JSON


def test_cached_embeddings_give_the_llm_the_same_input(tiny_model, tiny_decode_cfg, test_set, monkeypatch):
    """Decoding from the cached embeddings feeds the LLM exactly what a plain decode feeds it."""
    inputs = []
    real = tiny_model.llama_model.generate

    def spy(**kwargs):
        inputs.append(kwargs["inputs_embeds"].clone())
        return real(**kwargs)

    monkeypatch.setattr(tiny_model.llama_model, "generate", spy)
    weights = {"m": torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0])}
    report = run_sweep(
        tiny_model, test_set, [INSTRUCTIONS[2]], weights, tiny_decode_cfg.generate, batch_size=2
    )
    swept, inputs[:] = list(inputs), []
    plain = decode_dataset(
        tiny_model,
        test_set,
        generate_cfg=tiny_decode_cfg.generate,
        instruction=INSTRUCTIONS[2],
        batch_size=2,
        progress=False,
    )
    with head_mask(tiny_model.decoder, weights["m"]):
        masked = decode_dataset(
            tiny_model, test_set, generate_cfg=tiny_decode_cfg.generate, batch_size=2, progress=False
        )
    assert len(swept) == len(inputs) == 4
    for a, b in zip(swept, inputs, strict=True):
        assert torch.equal(a, b)
    assert report["instructions"][0]["outputs"] == [r["output"] for r in plain]
    assert report["masks"][0]["outputs"] == [r["output"] for r in masked]


def test_one_task_per_sweep(tiny_model, tiny_decode_cfg, tiny_bundle, tmp_path, monkeypatch):
    data = tiny_bundle / "data"
    manifest = tmp_path / "mixed.json"
    manifest.write_text(
        json.dumps(
            {
                "annotation": [
                    {"path": str(data / "test_0.wav"), "text": "Male", "task": "gender_recognition"},
                    {"path": str(data / "test_1.wav"), "text": "hello world", "task": "asr"},
                ]
            }
        )
    )
    dataset = SALMONNDataset(manifest, tiny_decode_cfg.model.whisper_path)
    calls = []
    monkeypatch.setattr(SALMONN, "encode_speech", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match=r"mixed.json: entries of several tasks \['asr', 'gender'\]"):
        run_sweep(tiny_model, dataset, INSTRUCTIONS, (), tiny_decode_cfg.generate)
    assert calls == []  # refused before any decoding
    with pytest.raises(ValueError, match="no instructions"):
        run_sweep(tiny_model, dataset, [], (), tiny_decode_cfg.generate, task="asr")


@pytest.mark.slow
def test_cli_writes_report_and_table(tiny_bundle, mask_file, tmp_path):
    instructions = tmp_path / "gender.json"
    instructions.write_text(json.dumps(INSTRUCTIONS))
    out = tmp_path / "reports" / "sweep.json"
    proc = run_repo_script(
        [
            str(REPO / "scripts" / "instruction_sweep.py"),
            "-c",
            str(tiny_bundle / "decode_config.yaml"),
            "--instructions",
            str(instructions),
            "--masks",
            str(mask_file),
            "--task",
            "gender",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--options",
            "batch_size_eval=3",
        ],
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "mean over 3 instructions" in proc.stdout and "(75.0% heads)" in proc.stdout
    report = json.loads(out.read_text())
    assert [r["instruction"] for r in report["instructions"]] == INSTRUCTIONS
    assert all(len(r["outputs"]) == 4 and 0.0 <= r["value"] <= 100.0 for r in report["instructions"])
    assert report["summary"]["n"] == 3 and report["masks"][0]["active_heads"] == 0.75
    assert (
        report["config"]["instructions_file"] == str(instructions)
        and report["config"]["generate"]["num_beams"] == 2
    )
    assert not list(out.parent.glob("*.tmp"))
