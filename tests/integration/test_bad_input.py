"""Bad input through the real entry points: one stderr line naming the culprit, the right exit code, no
traceback, no file changed, and nothing heavy loaded first.

The command-line cases run the root scripts in a subprocess and fail before torch is imported, so each costs
well under a second; the decode cases that need a model (Ctrl-C, a late failure, a busy output) run
``evaluate`` in-process on the session's tiny model.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ahamask.config import load_decode_config
from ahamask.evaluation.evaluator import evaluate
from ahamask.evaluation.output import OutputGuard, decode_fingerprint
from ahamask.models.salmonn import SALMONN
from ahamask.utils.errors import run_cli

REPO = Path(__file__).resolve().parents[2]

# Runs a root script as `python script.py ...` would, then says on stdout whether torch was imported.
RUNNER = """
import runpy, sys
sys.argv = sys.argv[1:]
code = 0
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    code = exc.code
print("torch imported" if "torch" in sys.modules else "torch not imported")
sys.exit(code)
"""


def _cli(script: str, *args: str, debug: bool = False):
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, str(REPO / script), *args, *(["--debug"] if debug else [])],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
    )
    result.seconds = time.perf_counter() - start
    return result


def _digest(folder: Path) -> dict[str, str]:
    """Content hash of every file under ``folder``: a run that fails must leave all of them as they were."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _assert_one_line(result, code: int, *fragments: str, torch_loaded: bool = False) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "weights_only=False" not in result.stderr
    assert lines and lines[-1].startswith(("error: ", "interrupted: ")), lines
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])
    assert "loading the LLM" not in result.stderr  # the error came before the model
    assert result.stdout.strip().endswith("torch imported" if torch_loaded else "torch not imported")
    return lines[-1]


# ------------------------------------------------------------------ command line, before torch
@pytest.mark.slow  # several subprocesses / decodes of about 0.3 s each
def test_help_and_config_errors_answer_before_torch(tiny_bundle):
    before = _digest(tiny_bundle)
    cfg = str(tiny_bundle / "decode_config.yaml")
    for script in ("train.py", "evaluate.py", "cli_inference.py"):
        result = _cli(script, "--help")
        assert result.returncode == 0 and "--debug" in result.stdout
        assert result.stdout.strip().endswith("torch not imported")
    line = _assert_one_line(
        _cli("evaluate.py", "-c", cfg, "--options", "generate.num_beams=0", "generate.top_p=2"),
        2,
        "generate.num_beams: 0 must be >= 1",
        "generate.top_p: 2.0",
    )
    assert line.startswith(f"error: {cfg}: ")
    _assert_one_line(
        _cli("train.py", "-c", str(tiny_bundle / "config.yaml"), "--options", "run.optims.warmup_steps=-5"),
        2,
        "run.optims.warmup_steps: -5 must be >= 0",
    )
    _assert_one_line(
        _cli("cli_inference.py", "-c", cfg, "--options", "generate.max_new_tokens=0"), 2, "max_new_tokens"
    )
    _assert_one_line(_cli("evaluate.py", "-c", cfg, "--device", "gpu"), 2, "--device: 'gpu' is not a device")
    assert _digest(tiny_bundle) == before


def test_debug_shows_the_traceback(tiny_bundle):
    result = _cli(
        "evaluate.py",
        "-c",
        str(tiny_bundle / "decode_config.yaml"),
        "--options",
        "num_workers=-1",
        debug=True,
    )
    assert result.returncode == 1 and "Traceback" in result.stderr and "num_workers: -1" in result.stderr


@pytest.mark.slow  # several subprocesses / decodes of about 0.3 s each
def test_the_output_never_overwrites_an_input(tiny_bundle):
    before = _digest(tiny_bundle)
    cfg = str(tiny_bundle / "decode_config.yaml")
    manifest = tiny_bundle / "data" / "test.json"
    _assert_one_line(
        _cli("evaluate.py", "-c", cfg, "--options", f"output_path={manifest}"),
        2,
        "output_path",
        "test_data_path",
    )
    _assert_one_line(
        _cli("evaluate.py", "-c", cfg, "--options", f"output_path={tiny_bundle / 'data' / 'test_1.wav'}"),
        1,
        "output_path",
        "audio file of the manifest",
    )
    _assert_one_line(_cli("evaluate.py", "-c", cfg, "--options", f"output_path={cfg}"), 1, "the config file")
    assert _digest(tiny_bundle) == before


@pytest.mark.slow  # several subprocesses / decodes of about 0.3 s each
def test_an_unusable_output_location_fails_before_decoding(tiny_bundle, tmp_path):
    cfg = str(tiny_bundle / "decode_config.yaml")
    (tmp_path / "file").write_text("keep me")
    cases = [
        (str(tmp_path), "is a directory"),
        (str(tmp_path / "file" / "pred.json"), "is a file"),
    ]
    for value, fragment in cases:
        _assert_one_line(
            _cli("evaluate.py", "-c", cfg, "--options", f"output_path={value}"), 1, "output_path: ", fragment
        )
    _assert_one_line(_cli("evaluate.py", "-c", cfg, "--options", "output_path="), 2, "output_path: empty")
    assert (tmp_path / "file").read_text() == "keep me"


@pytest.mark.slow  # several subprocesses / decodes of about 0.3 s each
def test_a_bad_audio_file_is_found_before_the_model_loads(tiny_bundle, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio" * 100)
    entries = [{"path": str(tiny_bundle / "data" / f"test_{i}.wav"), "text": "x"} for i in range(3)]
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"annotation": [*entries, {"path": str(bad), "text": "x"}]}))
    out = tmp_path / "pred.json"
    _assert_one_line(
        _cli(
            "evaluate.py",
            "-c",
            str(tiny_bundle / "decode_config.yaml"),
            "--options",
            f"test_data_path={manifest}",
            f"output_path={out}",
            "num_workers=2",
        ),
        1,
        "test_data_path: ",
        "entry 3",
        "bad.wav",
    )
    train = tiny_bundle / "config.yaml"
    _assert_one_line(
        _cli(
            "train.py",
            "-c",
            str(train),
            "--options",
            f"datasets.train_ann_path={manifest}",
            f"run.output_dir={tmp_path / 'exp'}",
        ),
        1,
        "datasets.train_ann_path: ",
        "entry 3",
    )
    assert not out.exists() and not (tmp_path / "exp").exists()


@pytest.mark.slow
def test_a_mask_that_holds_code_is_refused_by_the_chat(tiny_bundle, tmp_path):
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo must never run",))

    torch.save({"model": {"tensor": Payload()}}, tmp_path / "mask.pth")
    result = _cli(
        "cli_inference.py",
        "-c",
        str(tiny_bundle / "decode_config.yaml"),
        "--options",
        f"model.weight_mask_path={tmp_path / 'mask.pth'}",
    )
    _assert_one_line(result, 1, "model.weight_mask_path: ", "mask.pth", "posix.system", torch_loaded=True)
    assert "must never run" not in result.stdout


# ------------------------------------------------------------------ decoding that fails late
@pytest.fixture()
def shared_model(monkeypatch, shared_tiny_model):
    """evaluate() gets the session's tiny model instead of loading one (the loading is not under test)."""
    calls = {"generate": 0}
    original = SALMONN.generate

    def counting(self, *args, **kwargs):
        calls["generate"] += 1
        if calls.get("fail_at") == calls["generate"]:
            raise calls["error"]
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SALMONN, "from_config", classmethod(lambda cls, cfg, device="cpu": shared_tiny_model))
    monkeypatch.setattr(SALMONN, "generate", counting)
    return calls


def _decode(cfg) -> int:
    """evaluate() behind the entry points' error boundary: the exit code, and the one line on stderr."""
    return run_cli(lambda: evaluate(cfg) and 0)


def _cfg(bundle: Path, out: Path, *extra: str):
    return load_decode_config(
        bundle / "decode_config.yaml", [f"output_path={out}", "batch_size_eval=2", *extra]
    )


@pytest.mark.slow  # several subprocesses / decodes of about 0.3 s each
def test_ctrl_c_keeps_what_was_decoded_and_a_rerun_continues(tiny_bundle, tmp_path, shared_model, capsys):
    clean = evaluate(_cfg(tiny_bundle, tmp_path / "clean.json")).read_text()
    out = tmp_path / "pred.json"
    shared_model.update(generate=0, fail_at=2, error=KeyboardInterrupt())
    assert _decode(_cfg(tiny_bundle, out)) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (
        f"interrupted: kept 2 of 4 decoded entries in {out}.partial; run the same command again to continue from there"
    )
    assert not out.exists() and not Path(f"{out}.lock").exists()
    shared_model.update(generate=0, fail_at=None)
    evaluate(_cfg(tiny_bundle, out))
    assert shared_model["generate"] == 1  # only the second batch was decoded again
    assert out.read_text() == clean and not Path(f"{out}.partial").exists()


def test_a_late_audio_failure_in_a_worker_is_one_line_and_resumable(
    tiny_bundle, tmp_path, shared_model, capsys
):
    # A clip whose header is fine but whose samples are not: only decoding finds it, in a worker process.
    clip = tmp_path / "late.wav"
    wave = np.sin(np.arange(16000) / 10.0).astype("float32")
    sf.write(clip, np.where(np.arange(16000) == 100, np.nan, wave), 16000, subtype="FLOAT")
    entries = [{"path": str(tiny_bundle / "data" / f"test_{i}.wav"), "text": "x"} for i in range(3)]
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"annotation": [*entries, {"path": str(clip), "text": "x"}]}))
    out = tmp_path / "pred.json"
    cfg = _cfg(tiny_bundle, out, f"test_data_path={manifest}", "num_workers=2")
    assert _decode(cfg) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        f"error: {manifest}: entry 3 (path '{clip}'): audio file {clip} has 1 non-finite"
    )
    assert err[-1].endswith(
        f"(kept 2 of 4 decoded entries in {out}.partial; run the same command again to continue from there)"
    )
    assert "DataLoader worker" not in "\n".join(err) and "Traceback" not in "\n".join(err)
    sf.write(clip, wave, 16000, subtype="FLOAT")  # the user repairs the file; the manifest is unchanged
    shared_model["generate"] = 0
    assert _decode(cfg) == 0
    assert shared_model["generate"] == 1
    assert len(json.loads(out.read_text())["prediction"]) == 4


def test_a_busy_output_is_refused_before_the_model_loads(tiny_bundle, tmp_path, monkeypatch):
    out = tmp_path / "pred.json"
    out.write_text('{"from": "the other run"}')
    cfg = _cfg(tiny_bundle, out)
    other = OutputGuard(out, decode_fingerprint(cfg))
    other.acquire()  # another run (this process stands in for it) holds the output

    def refuse(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(SALMONN, "from_config", classmethod(refuse))
    with pytest.raises(ValueError, match="is being written by another run"):
        evaluate(cfg)
    other.release()
    assert json.loads(out.read_text()) == {"from": "the other run"}
