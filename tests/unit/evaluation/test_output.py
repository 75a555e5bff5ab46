"""A decode run's output: the lock, the .partial progress file, and never replacing someone else's file."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from ahamask.evaluation.output import (
    OutputBusyError,
    OutputChangedError,
    OutputGuard,
    PartialMismatchError,
)

SETTINGS = {"generate": {"num_beams": 4}, "prompt": "", "test_data_sha256": "abc"}


def _records(indices):
    return [{"id": f"{i}.wav", "ground_truth": "t", "output": f"answer {i}", "task": "asr"} for i in indices]


def test_a_second_run_on_the_same_output_stops_naming_the_first(tmp_path):
    first = OutputGuard(tmp_path / "pred.json", SETTINGS)
    first.acquire()
    with pytest.raises(OutputBusyError) as info:
        OutputGuard(tmp_path / "pred.json", SETTINGS).acquire()
    message = str(info.value)
    assert message.startswith(f"output_path: {tmp_path / 'pred.json'} is being written by another run")
    assert f"pid {os.getpid()}" in message and "pred.json.lock" in message
    first.release()
    first.release()  # twice is safe
    OutputGuard(tmp_path / "pred.json", SETTINGS).acquire()  # free again


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, caplog):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    lock = tmp_path / "pred.json.lock"
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "started": "x"}))
    guard = OutputGuard(tmp_path / "pred.json", SETTINGS)
    guard.acquire()
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert any("stale lock" in r.getMessage() for r in caplog.records)


def test_partial_records_survive_and_are_continued(tmp_path):
    out = tmp_path / "pred.json"
    guard = OutputGuard(out, SETTINGS)
    guard.acquire()
    guard.open()
    guard.append([0, 1], _records([0, 1]))
    guard.close()
    guard.release()
    # The process died here: a half-written last line must not cost the complete ones.
    with open(out.with_name("pred.json.partial"), "a", encoding="utf-8") as handle:
        handle.write('{"index": 2, "id": "2.wa')
    again = OutputGuard(out, SETTINGS)
    again.acquire()
    done = again.load_done()
    assert sorted(done) == [0, 1] and done[1]["output"] == "answer 1"
    again.open()
    assert again.kept == 2  # the cut line was dropped, so the next record starts on its own line
    again.append([2], _records([2]))
    assert sorted(again.load_done()) == [0, 1, 2]
    again.finish({"prediction": list(done.values())})
    assert json.loads(out.read_text())["prediction"][0]["output"] == "answer 0"
    assert not list(tmp_path.glob("pred.json.partial*"))


def test_a_partial_file_from_other_settings_is_refused_naming_them(tmp_path):
    out = tmp_path / "pred.json"
    guard = OutputGuard(out, SETTINGS)
    guard.open()
    guard.append([0], _records([0]))
    guard.close()
    other = {**SETTINGS, "generate": {"num_beams": 1}}
    with pytest.raises(PartialMismatchError, match=r"generate.num_beams: 4 -> 1"):
        OutputGuard(out, other).load_done()
    out.with_name("pred.json.partial").write_text("not json\n")
    with pytest.raises(PartialMismatchError, match="not an ahamask partial-output file"):
        OutputGuard(out, SETTINGS).load_done()


def test_an_output_written_by_someone_else_is_not_replaced(tmp_path):
    out = tmp_path / "pred.json"
    out.write_text('{"theirs": true}')
    guard = OutputGuard(out, SETTINGS)
    guard.acquire()
    guard.open()
    guard.append([0], _records([0]))
    out.write_text('{"theirs": "rewritten meanwhile"}')
    with pytest.raises(
        OutputChangedError, match=r"was not replaced; this run's predictions are kept in .*partial"
    ):
        guard.finish({"prediction": []})
    assert json.loads(out.read_text()) == {"theirs": "rewritten meanwhile"}
    assert len(guard.load_done()) == 1
    guard.release()


def test_ranks_keep_their_own_partial_files(tmp_path):
    out = tmp_path / "pred.json"
    for rank in (0, 1):
        guard = OutputGuard(out, SETTINGS, rank=rank, world_size=2)
        guard.open()
        guard.append([rank], _records([rank]))
        guard.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.json.partial-0", "pred.json.partial-1"]
    assert sorted(OutputGuard(out, SETTINGS).load_done()) == [0, 1]  # any rank count may continue
