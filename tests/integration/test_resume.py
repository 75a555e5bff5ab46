"""Exact resume: from every checkpoint a run writes, from a run killed mid-write, and refusals of bad files.

The property under test: a run resumed from ANY checkpoint the trainer writes ends with a mask
``torch.equal`` to the uninterrupted run's, writes every epoch checkpoint that run writes from that point on
(the final one included), and runs every validation it runs (the log.json epoch lines are identical).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ahamask.config import load_train_config
from ahamask.masking.checkpoint import load_mask
from ahamask.training.resume import ResumeError
from ahamask.training.trainer import MaskTrainer, TrainingInterrupted, train

REPO = Path(__file__).resolve().parents[2]
# 2 epochs x 3 iterations, a checkpoint after every step: 6 step checkpoints + 2 epoch checkpoints.
OVERRIDES = [
    "run.iters_per_epoch=3",
    "run.optims.max_epoch=2",
    "run.mask_init_mean=0.3",
    "run.optims.init_lr=0.1",
    "run.save_every_steps=1",
]


def _cfg(bundle: Path, out: Path, *extra: str):
    return load_train_config(bundle / "config.yaml", [f"run.output_dir={out}", *OVERRIDES, *extra])


def _epoch_lines(run_dir: Path) -> list[dict]:
    """log.json's per-epoch lines (the first entry is the config; a resumed run appends epoch lines only)."""
    if not (run_dir / "log.json").exists():
        return []
    text = (run_dir / "log.json").read_text()
    decoder, entries, index = json.JSONDecoder(), [], 0
    while index < len(text):
        obj, end = decoder.raw_decode(text, index)
        entries.append(obj)
        index = end
        while index < len(text) and text[index].isspace():
            index += 1
    return [e for e in entries if "train_loss" in e]


@pytest.fixture(scope="module")
def reference(tiny_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    return train(_cfg(tiny_bundle, out, "run.job_id=straight"))


def test_the_reference_run_writes_and_validates_every_epoch(reference):
    names = sorted(p.name for p in reference.glob("checkpoint_*.pth"))
    assert names == ["checkpoint_0.pth", "checkpoint_1.pth"] + [
        f"checkpoint_step_{i}.pth" for i in range(1, 7)
    ]
    lines = _epoch_lines(reference)
    assert len(lines) == 2 and all("valid_loss" in line for line in lines)


def state_epoch(path: Path) -> int | None:
    """The epoch of an epoch checkpoint's name (None for a step checkpoint)."""
    return None if "step" in path.stem else int(path.stem.split("_")[1])


def _every_checkpoint(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("checkpoint_*.pth"))


def test_resume_from_every_checkpoint_gives_the_identical_run(tiny_bundle, reference, tmp_path):
    expected_mask = load_mask(reference / "checkpoint_1.pth").values
    expected_lines = _epoch_lines(reference)
    checkpoints = _every_checkpoint(reference)
    assert len(checkpoints) == 8
    for source in checkpoints:
        state = torch.load(source, weights_only=True)["trainer"]
        run_dir = tmp_path / source.stem
        run_dir.mkdir()
        shutil.copy(source, run_dir / source.name)
        # The first epoch still to finish: its epoch checkpoint and all later ones must be written again.
        first_epoch = state["next_epoch"]
        out = train(_cfg(tiny_bundle, tmp_path), resume=str(run_dir / source.name))
        assert out == run_dir  # a resumed run continues in its own folder
        assert torch.equal(load_mask(out / "checkpoint_1.pth").values, expected_mask), source.name
        written = sorted(p.name for p in out.glob("checkpoint_?.pth") if p.name != source.name)
        assert written == [f"checkpoint_{e}.pth" for e in range(first_epoch, 2) if e != state_epoch(source)]
        # Every validation of the remaining epochs ran, with identical numbers and identical epoch means.
        assert _epoch_lines(out) == expected_lines[first_epoch:], source.name


def test_a_step_checkpoint_at_an_epochs_last_step_resumes_into_its_validation(reference):
    state = torch.load(reference / "checkpoint_step_3.pth", weights_only=True)["trainer"]
    assert (state["next_epoch"], state["next_iter"]) == (0, 3)  # epoch 0 trained, not yet validated
    state = torch.load(reference / "checkpoint_0.pth", weights_only=True)["trainer"]
    assert (state["next_epoch"], state["next_iter"]) == (1, 0)


KILL_DURING_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from ahamask.config import load_train_config
    from ahamask.training.trainer import train
    original = torch.save
    def save(obj, handle, *args, **kwargs):
        if "checkpoint_step_4" in getattr(handle, "name", ""):
            handle.write(b"PK\\x03\\x04 half a checkpoint")
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return original(obj, handle, *args, **kwargs)
    torch.save = save
    train(load_train_config(sys.argv[1], sys.argv[2:]))
    """
)


def test_a_run_killed_during_a_checkpoint_write_resumes_exactly(tiny_bundle, reference, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    overrides = [f"run.output_dir={tmp_path}", *OVERRIDES, "run.job_id=killed"]
    killed = subprocess.run(
        [sys.executable, "-c", KILL_DURING_WRITE, str(tiny_bundle / "config.yaml"), *overrides],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run_dir = tmp_path / "killed"
    stale = [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    assert len(stale) == 1 and stale[0].startswith(".checkpoint_step_4.pth.")
    assert not (run_dir / "checkpoint_step_4.pth").exists()  # the destination never holds half a file
    out = train(
        _cfg(tiny_bundle, tmp_path, "run.job_id=killed"), resume=str(run_dir / "checkpoint_step_3.pth")
    )
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # removed at the next start
    assert torch.equal(
        load_mask(out / "checkpoint_1.pth").values, load_mask(reference / "checkpoint_1.pth").values
    )


def _bad_files(tmp_path: Path, reference: Path) -> dict[str, Path]:
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((reference / "checkpoint_0.pth").read_bytes()[:300])
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"w": torch.zeros(3)}}, foreign)
    wrong_model = tmp_path / "wrong_model.pth"
    torch.save({"model": {"tensor": torch.zeros(41 * 40)}}, wrong_model)
    code = tmp_path / "code.pth"
    torch.save({"model": {"tensor": torch.zeros(10)}, "hook": Path("x")}, code)  # a pickled Python object
    return {"truncated": truncated, "foreign": foreign, "wrong_model": wrong_model, "code": code}


@pytest.mark.parametrize("kind", ["truncated", "foreign", "wrong_model", "code", "missing", "directory"])
def test_a_bad_resume_file_is_one_line_naming_it(tiny_bundle, reference, tmp_path, kind):
    files = _bad_files(tmp_path, reference)
    files["missing"] = tmp_path / "nope.pth"
    files["directory"] = tmp_path
    path = files[kind]
    trainer = MaskTrainer(_cfg(tiny_bundle, tmp_path / "out"), resume=str(path))
    with pytest.raises(ResumeError) as caught:
        trainer.setup()
    message = str(caught.value)
    assert str(path) in message and "\n" not in message and "weights_only=False" not in message
    if kind == "wrong_model":
        assert "1640 mask logits" in message and "2 layers x (4 heads + 1) = 10" in message
    if kind != "wrong_model":  # every other refusal comes before the model is built
        assert not hasattr(trainer, "model")


def test_a_job_folder_is_only_reused_by_a_resume(tiny_bundle, reference, tmp_path):
    cfg = _cfg(tiny_bundle, reference.parent, "run.job_id=straight")
    with pytest.raises(ValueError, match=r"run.job_id: .*straight already holds a run"):
        MaskTrainer(cfg).setup()
    # Two runs with the default id started in the same second get two folders.
    first, second = MaskTrainer(_cfg(tiny_bundle, tmp_path)), MaskTrainer(_cfg(tiny_bundle, tmp_path))
    first.setup()
    second.setup()
    assert first.output_dir != second.output_dir and first.output_dir.parent == second.output_dir.parent
    first.cleanup()
    second.cleanup()


def test_ctrl_c_names_the_step_and_the_checkpoint(tiny_bundle, tmp_path, monkeypatch):
    trainer = MaskTrainer(_cfg(tiny_bundle, tmp_path, "run.job_id=interrupted"))
    trainer.setup()
    original = trainer.train_step

    def step(epoch, it, samples):
        if trainer.global_step == 2:
            raise KeyboardInterrupt
        return original(epoch, it, samples)

    monkeypatch.setattr(trainer, "train_step", step)
    monkeypatch.setattr(MaskTrainer, "setup", lambda self: None)
    monkeypatch.setattr("ahamask.training.trainer.MaskTrainer", lambda cfg, **kwargs: trainer)
    with pytest.raises(TrainingInterrupted) as caught:
        train(trainer.cfg)
    assert str(caught.value) == (
        f"at step 2 of 6; resume with: --resume {tmp_path / 'interrupted' / 'checkpoint_step_2.pth'}"
    )


def test_keep_last_checkpoints_keeps_the_newest(tiny_bundle, tmp_path):
    out = train(_cfg(tiny_bundle, tmp_path, "run.job_id=kept", "run.keep_last_checkpoints=2"))
    names = sorted(p.name for p in out.glob("checkpoint_*.pth"))
    assert names == ["checkpoint_0.pth", "checkpoint_1.pth", "checkpoint_step_5.pth", "checkpoint_step_6.pth"]


def test_several_processes_with_use_distributed_false_stop_with_the_key(tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    trainer = MaskTrainer(_cfg(tiny_bundle, tmp_path, "run.job_id=two", "run.use_distributed=false"))
    with pytest.raises(ValueError, match=r"^run.use_distributed: false, but this process is rank 0 of 2"):
        trainer.setup()
    assert not (tmp_path / "two").exists()


INTERRUPTER = textwrap.dedent(
    """
    import os, signal, sys
    # A shell's background job starts with SIGINT ignored, and Python then installs no KeyboardInterrupt
    # handler; a terminal's Ctrl-C reaches a foreground process that has one.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from ahamask.training import trainer as module
    from ahamask.training.cli import entry
    original = module.MaskTrainer.train_step
    def step(self, epoch, it, samples):
        if self.global_step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends
        return original(self, epoch, it, samples)
    module.MaskTrainer.train_step = step
    sys.exit(entry(sys.argv[1:]))
    """
)


def test_ctrl_c_in_train_py_is_one_line_with_the_resume_argument(tiny_bundle, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    argv = ["-c", str(tiny_bundle / "config.yaml"), "--options", f"run.output_dir={tmp_path}", *OVERRIDES]
    proc = subprocess.run(
        [sys.executable, "-c", INTERRUPTER, *argv, "run.job_id=ctrl_c"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert (
        last
        == f"interrupted: at step 2 of 6; resume with: --resume {tmp_path / 'ctrl_c' / 'checkpoint_step_2.pth'}"
    )
