"""cli_inference.py and ahamask.inference.chat on the tiny bundle: the question sequence, masks, errors, exit."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ahamask.config import load_decode_config
from ahamask.data.dataset import SALMONNDataset
from ahamask.evaluation.decode import decode_dataset
from ahamask.inference.chat import (
    GOODBYE,
    PROMPT_QUESTION,
    WAV_QUESTION,
    chat,
    history_path,
    line_history,
    main,
)
from ahamask.masking.apply import decoding_mask
from ahamask.masking.checkpoint import save_mask
from ahamask.masking.hooks import current_weights
from ahamask.masking.value import Mask
from ahamask.models.salmonn import SALMONN
from tests.conftest import run_repo_script

REPO = Path(__file__).resolve().parents[3]
DEMO_WAVS = REPO / ".." / "shared" / "reference" / "demo_wavs"
# Heads (layer, head) 0,1 and 1,2 are off: 6 of 8 heads and 8 of 10 entries (FFN gates on) remain.
LOGITS = [2.0, -1.0, 2.0, 2.0, 0.5, 2.0, 2.0, -2.0, 2.0, 0.5]
NO_INSTRUCTION = "USER: <Speech><SpeechHere></Speech> \nASSISTANT:"


@pytest.fixture()
def mask_file(tmp_path) -> Path:
    return save_mask(torch.tensor(LOGITS), tmp_path / "mask.pth")


@pytest.fixture()
def wav(tmp_path) -> Path:
    """A real LibriSpeech utterance when the reference data is beside the repo, else 1.5 s of a 120 Hz tone."""
    if DEMO_WAVS.is_dir() and sorted(DEMO_WAVS.glob("*.flac")):
        return sorted(DEMO_WAVS.glob("*.flac"))[0]
    path = tmp_path / "tone.wav"
    t = np.arange(24000) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 120 * t)).astype(np.float32), 16000)
    return path


def _cfg(bundle: Path, *overrides: str):
    return load_decode_config(bundle / "decode_config.yaml", list(overrides))


class _Script:
    """A fake ``input``: replays answers, records each question, ends with EOF (Ctrl-D) or a given exception."""

    def __init__(self, lines: list[str], end: type[BaseException] = EOFError) -> None:
        self.lines, self.end, self.questions = list(lines), end, []

    def __call__(self, question: str) -> str:
        self.questions.append(question)
        if not self.lines:
            raise self.end()
        return self.lines.pop(0)


@pytest.fixture()
def generate_spy(monkeypatch):
    """Record the prompts, head weights and batches SALMONN.generate gets (the real method still runs)."""
    calls = []
    original = SALMONN.generate

    def spy(self, samples, generate_cfg=None, prompts=None, **kwargs):
        head_weights = current_weights(self.decoder)  # the mask applied to this call
        weights = None if head_weights is None else head_weights.tolist()
        calls.append((list(prompts), weights, samples))
        return original(self, samples, generate_cfg, prompts=prompts, **kwargs)

    monkeypatch.setattr(SALMONN, "generate", spy)
    return calls


def test_session_asks_for_a_prompt_only_without_a_mask(tiny_bundle, mask_file, wav, tmp_path, generate_spy):
    script = _Script(
        [
            str(wav),  # mask on: answered without a prompt question
            str(tmp_path / "missing.wav"),  # bad path: one error line, the loop goes on
            ":nomask",
            f'"{wav}"',  # quoted as terminals paste it
            "  What is the gender of the speaker? ",
            f":mask {mask_file}",
            str(wav),
        ]
    )
    out: list[str] = []
    code = chat(_cfg(tiny_bundle, f"model.weight_mask_path={mask_file}"), input_fn=script, output=out.append)

    assert code == 0 and out[-1] == GOODBYE
    w, p = WAV_QUESTION, PROMPT_QUESTION
    assert script.questions == [w, w, w, w, p, w, w, w]  # the last wav question got EOF
    assert out[0].startswith(f"Using weight mask from {mask_file}")
    assert "75.0% of attention heads are active (6/8)" in out[0] and "80.0% of all 10 entries" in out[0]
    errors = [line for line in out if line.startswith("error:")]
    assert errors == [f"error: no such audio file: {tmp_path / 'missing.wav'}"]
    assert out.count("Output:") == 3
    binary = [1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    assert [call[:2] for call in generate_spy] == [
        ([NO_INSTRUCTION], binary),
        (["USER: <Speech><SpeechHere></Speech> What is the gender of the speaker?\nASSISTANT:"], None),
        ([NO_INSTRUCTION], binary),
    ]
    # The same audio under the same mask gives the same answer before and after the switch.
    answers = [out[i + 1] for i, line in enumerate(out) if line == "Output:"]
    assert answers[0] == answers[2]


def test_answer_equals_what_evaluate_writes(tiny_bundle, mask_file, shared_tiny_model, generate_spy):
    """The one-file front end (prepare_audio + collate) gives evaluate.py's batch, hence its answer."""
    cfg = _cfg(tiny_bundle, f"model.weight_mask_path={mask_file}")
    dataset = SALMONNDataset(cfg.test_data_path, cfg.model.whisper_path)
    with decoding_mask(shared_tiny_model.decoder, Mask.from_logits(torch.tensor(LOGITS)), "hooks"):
        expected = decode_dataset(
            shared_tiny_model, dataset, generate_cfg=cfg.generate, batch_size=1, progress=False
        )
    for index in (0, 1):
        out: list[str] = []
        notes: list[str] = []
        assert chat(cfg, wav=dataset.annotation[index]["path"], output=out.append, info=notes.append) == 0
        assert out == [expected[index]["output"]]  # one-shot: the answer alone on the output channel
        assert len(notes) == 1 and "of attention heads are active (6/8)" in notes[0]
        from_dataset, from_chat = generate_spy[index][2], generate_spy[-1][2]
        assert generate_spy[index][:2] == generate_spy[-1][:2]  # same prompt and mask
        for key in ("spectrogram", "raw_wav", "padding_mask"):
            assert torch.equal(from_dataset[key], from_chat[key]), key
        assert from_chat["raw_wav"].shape[1] == len(sf.read(dataset.annotation[index]["path"])[0])


@pytest.mark.parametrize("end", [EOFError, KeyboardInterrupt])
def test_ctrl_d_and_ctrl_c_end_cleanly(tiny_bundle, end):
    script = _Script([], end=end)
    out: list[str] = []
    assert chat(_cfg(tiny_bundle), input_fn=script, output=out.append) == 0
    assert out[0].startswith("Not using a weight mask") and out[-1] == GOODBYE
    assert script.questions == [WAV_QUESTION]


def test_ctrl_c_at_the_prompt_question_also_ends(tiny_bundle, wav):
    script = _Script([str(wav)], end=KeyboardInterrupt)
    out: list[str] = []
    assert chat(_cfg(tiny_bundle), input_fn=script, output=out.append) == 0
    assert script.questions == [WAV_QUESTION, PROMPT_QUESTION] and out[-1] == GOODBYE


def test_commands_bad_audio_and_bad_masks(tiny_bundle, mask_file, tmp_path):
    garbage = tmp_path / "noise.wav"
    garbage.write_bytes(b"RIFF not really a wave file")
    foreign = save_mask(torch.zeros(3 * 5), tmp_path / "other_model.pth")  # 3 layers x 4 heads
    script = _Script(
        [
            str(garbage),
            ":mask",
            f":mask {tmp_path / 'none.pth'}",
            f":mask {foreign}",
            ":help",
            ":what",
            ":nomask",
            ":nomask",
            "!quit",
            "never read",
        ]
    )
    out: list[str] = []
    code = chat(_cfg(tiny_bundle, f"model.weight_mask_path={mask_file}"), input_fn=script, output=out.append)
    assert code == 0 and out[-1] == GOODBYE and script.lines == ["never read"]
    errors = [line for line in out if line.startswith(("error:", "usage:", "unknown"))]
    assert errors[0].startswith(f"error: cannot decode audio file {garbage}")
    assert errors[1] == "usage: :mask PATH"
    assert errors[2] == f"error: {tmp_path / 'none.pth'}: no such mask file (still using {mask_file})"
    assert errors[3].startswith(f"error: {foreign}: has 15 entries") and "2 layers x 4 heads" in errors[3]
    assert errors[3].endswith(f"(still using {mask_file})")
    assert errors[4] == "unknown command ':what' (type :help)"
    assert any(":nomask" in line and ":mask PATH" in line for line in out)  # the help text
    assert all("\n" not in e for e in errors)
    assert PROMPT_QUESTION not in script.questions  # ':nomask' came last: no wav was asked about after it


def test_one_shot_bad_audio_exits_1_and_prompt_defaults(tiny_bundle, wav, mask_file, tmp_path, generate_spy):
    out: list[str] = []
    notes: list[str] = []
    assert chat(_cfg(tiny_bundle), wav=str(tmp_path / "gone.flac"), output=out.append, info=notes.append) == 1
    assert out == [] and notes[-1] == f"error: no such audio file: {tmp_path / 'gone.flac'}"
    # Without a mask the config's prompt is the instruction; with a mask, none unless --prompt is given.
    assert (
        chat(_cfg(tiny_bundle, "prompt=Describe it."), wav=str(wav), output=out.append, info=notes.append)
        == 0
    )
    cfg = _cfg(tiny_bundle, f"model.weight_mask_path={mask_file}", "prompt=Describe it.")
    assert chat(cfg, wav=str(wav), output=out.append, info=notes.append) == 0
    assert chat(cfg, wav=str(wav), prompt="Gender?", output=out.append, info=notes.append) == 0
    assert len(out) == 3  # one answer per successful call, nothing else
    assert [call[0][0] for call in generate_spy] == [
        "USER: <Speech><SpeechHere></Speech> Describe it.\nASSISTANT:",
        NO_INSTRUCTION,
        "USER: <Speech><SpeechHere></Speech> Gender?\nASSISTANT:",
    ]
    assert any(line.startswith("note: the mask was trained with no instruction") for line in notes)


def test_main_reports_bad_input_in_one_line(tiny_bundle, tmp_path, capsys):
    def args(**kw):
        base = {
            "cfg_path": str(tiny_bundle / "decode_config.yaml"),
            "options": [],
            "device": "cpu",
            "wav": None,
            "prompt": None,
        }
        return argparse.Namespace(**{**base, **kw})

    assert main(args(prompt="hi")) == 2
    assert main(args(options=[f"model.weight_mask_path={tmp_path / 'x.pth'}"])) == 2
    assert main(args(options=["prob_threshold=2"])) == 2
    assert main(args(device="cuda:99", wav="x.wav")) == 2
    # Besides the errors, standard error only has the model-loading records (what loads from where).
    lines = capsys.readouterr().err.strip().splitlines()
    err = [
        line for line in lines if not re.match(r"\d{4}-\d\d-\d\d [\d:,]+ \[INFO\] ahamask\.models\.", line)
    ]
    assert err[0] == "error: --prompt needs --wav (in a session the prompt is asked for)"
    assert err[1] == f"error: {tmp_path / 'x.pth'}: no such mask file"
    assert err[2].startswith("error: ") and "prob_threshold" in err[2]
    assert err[3].startswith("error: device: 'cuda:99'") and len(err) == 4


@pytest.mark.slow
def test_cli_one_shot_subprocess(tiny_bundle, mask_file, wav):
    cfg = _cfg(tiny_bundle, f"model.weight_mask_path={mask_file}")
    expected: list[str] = []
    chat(cfg, wav=str(wav), output=expected.append, info=lambda line: None)
    proc = run_repo_script(
        [
            str(REPO / "cli_inference.py"),
            "-c",
            str(tiny_bundle / "decode_config.yaml"),
            "--device",
            "cpu",
            "--wav",
            str(wav),
            "--options",
            f"model.weight_mask_path={mask_file}",
        ],
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    # Only the answer on standard output (so it can be piped); the mask line goes to standard error.
    assert proc.stdout.splitlines() == expected and len(expected) == 1
    assert "75.0% of attention heads are active (6/8)" in proc.stderr
    assert "Warning" not in proc.stderr  # no third-party deprecation noise


def test_history_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("AHAMASK_HISTORY", raising=False)
    assert history_path() == Path.home() / ".ahamask_history"
    monkeypatch.setenv("AHAMASK_HISTORY", str(tmp_path / "h.txt"))
    assert history_path() == tmp_path / "h.txt"
    monkeypatch.setenv("AHAMASK_HISTORY", "")
    assert history_path() is None


def test_line_history_saves_and_restores_typed_lines(tmp_path):
    readline = pytest.importorskip("readline")
    path = tmp_path / "sub" / "history"
    readline.clear_history()
    with line_history(path) as rl:
        assert rl is readline
        rl.add_history("/data/a.wav")
        rl.add_history(":mask m.pth")
    assert path.is_file()  # written on exit, its folder created
    readline.clear_history()
    with line_history(path):
        recalled = [readline.get_history_item(i) for i in range(1, readline.get_current_history_length() + 1)]
    assert recalled[-2:] == ["/data/a.wav", ":mask m.pth"]
    readline.clear_history()


def test_line_history_without_readline_or_path(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "readline", None)  # import readline now raises ImportError
    with line_history(tmp_path / "h") as rl:
        assert rl is None
    assert not (tmp_path / "h").exists()
    monkeypatch.undo()
    with line_history(None) as rl:
        assert rl is None
