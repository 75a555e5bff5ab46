"""Manifests: schema, defaults, path resolution, one-line errors, validation and check_manifest.py."""

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ahamask.data.manifest import ManifestError, ManifestIssue, load_manifest, validate_manifest

REPO = Path(__file__).resolve().parents[3]


def write_wav(path: Path, seconds: float = 1.0, sr: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    return path


def write_manifest(path: Path, entries, raw: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(raw if raw is not None else json.dumps({"annotation": entries}))
    return path


def test_defaults_extra_keys_and_id(tmp_path):
    write_wav(tmp_path / "a.wav")
    manifest = write_manifest(
        tmp_path / "m.json",
        [
            {"path": "a.wav", "text": "hello", "labels": {"first": 3}},
            {"path": "a.wav", "text": "Male", "task": "gender_recognition", "Q": "Who speaks?"},
        ],
    )
    first, second = load_manifest(manifest)
    assert first["task"] == "asr" and first["Q"] == "" and first["expand_wav"] == []
    assert first["labels"] == {"first": 3}
    assert first["id"] == "a.wav" and first["path"] == str(tmp_path / "a.wav")
    assert (second["task"], second["Q"], second["text"]) == ("gender_recognition", "Who speaks?", "Male")


def test_relative_path_prefers_manifest_folder_then_cwd(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    write_wav(tmp_path / "lists" / "both.wav")
    write_wav(cwd / "both.wav")
    write_wav(cwd / "only_cwd.wav")
    write_wav(tmp_path / "lists" / "x.wav")
    manifest = write_manifest(
        tmp_path / "lists" / "m.json",
        [
            {"path": "both.wav", "text": "", "expand_wav": ["only_cwd.wav", "x.wav"]},
            {"path": "only_cwd.wav", "text": ""},
            {"path": "missing.wav", "text": ""},
            {"path": str(cwd / "both.wav"), "text": ""},
        ],
    )
    monkeypatch.chdir(cwd)
    entries = load_manifest(manifest)
    assert entries[0]["path"] == str(tmp_path / "lists" / "both.wav")
    assert entries[0]["expand_wav"] == [str(cwd / "only_cwd.wav"), str(tmp_path / "lists" / "x.wav")]
    assert entries[1]["path"] == str(cwd / "only_cwd.wav")
    # Found nowhere: the manifest-relative candidate is kept so the later error shows where it was expected.
    assert entries[2]["path"] == str(tmp_path / "lists" / "missing.wav")
    assert entries[3]["path"] == str(cwd / "both.wav")


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [
        ('{"annotation": [', r"bad\.json: not valid JSON \(line 1, column 17"),
        ('{"entries": []}', r'bad\.json: expected a JSON object with an "annotation" list'),
        ('[{"path": "a.wav"}]', r'bad\.json: expected a JSON object with an "annotation" list'),
        ('{"annotation": {"path": "a.wav"}}', r'bad\.json: "annotation" must be a list, got dict'),
    ],
)
def test_unusable_manifest_file(tmp_path, raw, pattern):
    manifest = write_manifest(tmp_path / "bad.json", None, raw=raw)
    with pytest.raises(ManifestError, match=pattern):
        load_manifest(manifest)


def test_missing_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.json: no such manifest file"):
        load_manifest(tmp_path / "nope.json")


@pytest.mark.parametrize(
    ("entry", "pattern"),
    [
        ("a.wav", r"entry 1: entry is a str, expected an object with keys \['path', 'text'\]"),
        ({"text": "hi"}, r"entry 1: missing key 'path'"),
        ({"path": "a.wav"}, r"entry 1 \(path 'a.wav'\): missing key 'text'"),
        ({"path": "a.wav", "text": 7}, r"entry 1 \(path 'a.wav'\): 'text' must be a string, got int 7"),
        ({"path": "", "text": ""}, r"entry 1 \(path ''\): 'path' must be a non-empty string"),
        ({"path": "a.wav", "text": "", "Q": None}, r"entry 1 \(path 'a.wav'\): 'Q' must be a string"),
        (
            {"path": "a.wav", "text": "", "expand_wav": "b.wav"},
            r"entry 1 \(path 'a.wav'\): 'expand_wav' must be a list of non-empty path strings, got 'b.wav'",
        ),
    ],
)
def test_bad_entry_names_manifest_index_and_key(tmp_path, entry, pattern):
    manifest = write_manifest(tmp_path / "bad.json", [{"path": "ok.wav", "text": ""}, entry])
    with pytest.raises(ManifestError, match=r"bad\.json: " + pattern) as info:
        load_manifest(manifest)
    assert "\n" not in str(info.value)


def test_load_manifest_counts_further_bad_entries(tmp_path):
    manifest = write_manifest(tmp_path / "m.json", [{"text": ""}, {"path": "a.wav"}, {"path": 3, "text": ""}])
    with pytest.raises(ManifestError, match=r"entry 0: missing key 'path' \(and 2 more bad entries") as info:
        load_manifest(manifest)
    assert [issue.index for issue in info.value.issues] == [0, 1, 2]


def test_validate_manifest_collects_every_bad_entry(tmp_path):
    good = write_wav(tmp_path / "good.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    # Keep the 44-byte header and 10000 of the 32000 data bytes.
    (tmp_path / "cut.wav").write_bytes(good.read_bytes()[:10044])
    nan = np.ones(16000, dtype=np.float32)
    nan[5] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    manifest = write_manifest(
        tmp_path / "m.json",
        [
            {"path": "good.wav", "text": "fine"},
            {"text": "no path"},
            {"path": "gone.wav", "text": ""},
            {"path": "empty.wav", "text": ""},
            {"path": "cut.wav", "text": ""},
            {"path": "nan.wav", "text": ""},
            {"path": "good.wav", "text": "", "expand_wav": ["gone_too.wav"]},
            {"path": "good.wav", "text": "fine again", "expand_wav": ["good.wav"]},
        ],
    )
    issues = validate_manifest(manifest)
    assert [issue.index for issue in issues] == [1, 2, 3, 4, 5, 6]
    assert all(isinstance(issue, ManifestIssue) and issue.manifest == str(manifest) for issue in issues)
    text = [str(issue) for issue in issues]
    assert text[0].endswith("entry 1: missing key 'path'")
    assert f"entry 2 (path 'gone.wav'): no such audio file: {tmp_path / 'gone.wav'}" in text[1]
    assert "manifest's folder, then the working directory" in text[1]
    assert "empty (0 bytes)" in text[2] and "empty.wav" in text[2]
    assert "truncated audio file" in text[3] and "lacks 22000 bytes" in text[3]
    assert "1 non-finite samples (first at sample 5)" in text[4]
    assert "entry 6 (path 'good.wav'): no such audio file" in text[5] and "gone_too.wav" in text[5]
    # Without audio checks only the schema problem remains.
    assert [issue.index for issue in validate_manifest(manifest, check_audio=False)] == [1]


def test_validate_manifest_reports_unusable_file_as_one_issue(tmp_path):
    manifest = write_manifest(tmp_path / "bad.json", None, raw="not json")
    (issue,) = validate_manifest(manifest)
    assert issue.index is None and str(issue).startswith(f"{manifest}: not valid JSON (line 1, column 1")
    (missing,) = validate_manifest(tmp_path / "nope.json")
    assert str(missing) == f"{tmp_path / 'nope.json'}: no such manifest file"


SCRIPT = REPO / "scripts" / "check_manifest.py"


def test_check_manifest_script_exit_codes(tmp_path, capsys):
    write_wav(tmp_path / "a.wav")
    good = write_manifest(tmp_path / "good.json", [{"path": "a.wav", "text": ""}])
    bad = write_manifest(
        tmp_path / "bad.json", [{"path": "a.wav", "text": ""}, {"path": "b.wav", "text": ""}]
    )
    # One real process for the exit status; the other cases run in-process.
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    failed = subprocess.run(
        [sys.executable, str(SCRIPT), str(good), str(bad)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert failed.returncode == 1, failed.stderr
    lines = failed.stdout.strip().splitlines()
    assert lines[0] == f"{good}: ok"
    assert lines[1].startswith(f"{bad}: entry 1 (path 'b.wav'): no such audio file")
    assert lines[2] == f"{bad}: 1 bad entries"

    main = runpy.run_path(str(SCRIPT))["main"]
    assert main([str(good)]) == 0
    assert capsys.readouterr().out.strip() == f"{good}: ok"
    assert main(["--no-audio", str(bad)]) == 0
    assert main([str(tmp_path / "nope.json")]) == 1
    assert "nope.json: no such manifest file" in capsys.readouterr().out


def test_manifest_module_loads_without_torch():
    # Scorers and check_manifest.py read manifests; importing torch would cost them seconds.
    code = "import sys, ahamask.data.manifest; sys.exit('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=60).returncode == 0
