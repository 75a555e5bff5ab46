"""Mask training end to end on the tiny bundle: gradients, checkpoints, resume after SIGKILL, 2 ranks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ahamask.config import load_train_config
from ahamask.masking.checkpoint import load_mask
from ahamask.masking.hooks import head_mask
from ahamask.training.trainer import MaskTrainer, NonFiniteLossError, train

REPO = Path(__file__).resolve().parents[2]


def _cfg(bundle: Path, out: Path, *extra: str):
    return load_train_config(
        bundle / "config.yaml",
        [
            f"run.output_dir={out}",
            "run.job_id=job",
            "run.iters_per_epoch=4",
            "run.optims.max_epoch=2",
            "run.mask_init_mean=0.3",
            "run.optims.init_lr=0.1",
            *extra,
        ],
    )


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def test_only_the_mask_gets_gradients(tiny_bundle, tmp_path):
    trainer = MaskTrainer(_cfg(tiny_bundle, tmp_path))
    trainer.setup()
    samples = next(trainer.loader)
    weights = trainer.mask_weights(len(samples["id"]), tau=1.0)
    assert set(weights.unique().tolist()) <= {0.0, 1.0}  # hard Gumbel by default
    with head_mask(trainer.model.decoder, weights):
        loss = trainer.model(samples)["loss"] + 1e-4 * weights.sum(1).mean()
    loss.backward()
    assert trainer.mask.tensor.grad is not None and trainer.mask.tensor.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in trainer.model.parameters())
    assert not trainer.model.training and not any(m.training for m in trainer.model.modules())
    trainer.cleanup()


def test_checkpoints_are_in_the_released_format(tiny_bundle, tmp_path):
    out = train(_cfg(tiny_bundle, tmp_path))
    assert sorted(p.name for p in out.glob("checkpoint_*.pth")) == ["checkpoint_0.pth", "checkpoint_1.pth"]
    state = torch.load(out / "checkpoint_1.pth", weights_only=True)
    assert {"model", "optimizer", "config", "scaler", "epoch"} <= set(state)
    assert set(state["model"]) == {"tensor"} and state["model"]["tensor"].shape == (10,)
    assert state["epoch"] == 1 and state["scaler"] is None  # no grad scaler on CPU
    assert torch.equal(load_mask(out / "checkpoint_1.pth").values, state["model"]["tensor"])
    log_lines = (out / "log.json").read_text().strip().splitlines()
    assert '"train_loss"' in log_lines[-1] and '"valid_loss"' in log_lines[-1]
    assert (out / "config.yaml").is_file() and list(out.glob("events.out.tfevents.*"))


def _mean_ce(trainer: MaskTrainer, weights) -> float:
    from torch.utils.data import DataLoader

    loader = DataLoader(trainer.train_set, batch_size=4, collate_fn=trainer.train_set.collater)
    samples = next(iter(loader))
    prompts = [trainer.model.prompt_for("")] * 4
    with torch.no_grad(), head_mask(trainer.model.decoder, weights):
        return trainer.model(samples, prompts=prompts)["loss"].item()


def test_short_training_lowers_the_loss(tiny_bundle, tmp_path):
    cfg = _cfg(
        tiny_bundle, tmp_path, "run.iters_per_epoch=20", "run.optims.max_epoch=1", "run.tau_decay_steps=0.5"
    )
    trainer = MaskTrainer(cfg)
    trainer.setup()
    before = _mean_ce(trainer, torch.ones(10))
    trainer.train()
    after = _mean_ce(trainer, (trainer.mask.tensor.detach() >= 0).float())
    trainer.cleanup()
    assert after < before - 0.02, (before, after)  # 6.061 -> 6.013 on the seeded tiny bundle


def test_non_finite_loss_stops_with_step_and_ids(tiny_bundle, tmp_path, monkeypatch):
    trainer = MaskTrainer(_cfg(tiny_bundle, tmp_path, "run.save_every_steps=1"))
    trainer.setup()
    original = trainer.model.forward

    def poisoned(samples, **kwargs):
        out = original(samples, **kwargs)
        return {**out, "loss": out["loss"] * float("nan")}

    monkeypatch.setattr(trainer.model, "forward", poisoned)
    with pytest.raises(
        NonFiniteLossError, match=r"non-finite loss nan at epoch 0 iteration 0 .*batch ids: \['"
    ):
        trainer.train()
    assert not list(trainer.output_dir.glob("checkpoint_*"))
    trainer.cleanup()


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from ahamask.config import load_train_config
    from ahamask.training.trainer import MaskTrainer
    cfg = load_train_config(sys.argv[1], sys.argv[2:])
    trainer = MaskTrainer(cfg)
    trainer.setup()
    original = trainer.train_step
    def step(epoch, it, samples):
        if trainer.global_step == 5:  # after checkpoint_step_4 was written, mid-epoch 1
            os.kill(os.getpid(), signal.SIGKILL)
        return original(epoch, it, samples)
    trainer.train_step = step
    trainer.train()
    """
)


def test_resume_after_sigkill_ends_with_the_same_mask(tiny_bundle, tmp_path):
    overrides = [
        f"run.output_dir={tmp_path}",
        "run.iters_per_epoch=4",
        "run.optims.max_epoch=2",
        "run.mask_init_mean=0.3",
        "run.optims.init_lr=0.1",
        "run.save_every_steps=2",
    ]
    reference = train(load_train_config(tiny_bundle / "config.yaml", [*overrides, "run.job_id=straight"]))
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(tiny_bundle / "config.yaml"), *overrides, "run.job_id=killed"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    run_dir = tmp_path / "killed"
    assert (run_dir / "checkpoint_step_4.pth").is_file() and not (run_dir / "checkpoint_1.pth").exists()
    assert not list(run_dir.glob("*.tmp"))
    resumed = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "-c",
            str(tiny_bundle / "config.yaml"),
            "--resume",
            str(run_dir / "checkpoint_step_4.pth"),
            "--options",
            *overrides,
            "run.job_id=killed",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    final = load_mask(run_dir / "checkpoint_1.pth").values
    expected = load_mask(reference / "checkpoint_1.pth").values
    assert torch.equal(final, expected)
    assert not torch.equal(final, load_mask(run_dir / "checkpoint_step_4.pth").values)  # training went on


def test_two_gloo_processes_end_with_the_same_mask(tiny_bundle, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29533",
            str(REPO / "train.py"),
            "-c",
            str(tiny_bundle / "config.yaml"),
            "--options",
            f"run.output_dir={tmp_path}",
            "run.job_id=ddp",
            "run.use_distributed=true",
            "run.device=cpu",
            "run.iters_per_epoch=2",
            "run.optims.max_epoch=1",
            "run.batch_size_train=1",
            "run.mask_init_mean=0.3",
            "run.optims.init_lr=0.1",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mask identical on 2 ranks" in result.stderr
    assert (tmp_path / "ddp" / "checkpoint_0.pth").is_file()
    assert not (tmp_path / "ddp" / "checkpoint_0.pth.tmp").exists()


def test_shipped_tiny_configs_train_and_decode(tmp_path, monkeypatch):
    from ahamask.config import load_decode_config
    from ahamask.evaluation.evaluator import evaluate
    from ahamask.models.tiny import make_tiny_bundle

    monkeypatch.chdir(tmp_path)  # the tiny configs point at exp/tiny_bundle relative to the working directory
    make_tiny_bundle(tmp_path / "exp" / "tiny_bundle")
    out = train(load_train_config(REPO / "configs" / "tiny_config.yaml", ["run.job_id=tiny"]))
    assert out == Path("exp/tiny_bundle/exp/tiny")
    decoded = evaluate(
        load_decode_config(
            REPO / "configs" / "tiny_decode_config.yaml",
            [f"model.weight_mask_path={out / 'checkpoint_1.pth'}"],
        )
    )
    assert decoded.is_file()


def test_speech_cache_on_disk_is_reused_by_a_second_run(tiny_bundle, tmp_path):
    cache = tmp_path / "cache"
    extra = ["run.cache_speech_embeds=true", f"run.speech_cache_dir={cache}", "run.optims.max_epoch=1"]
    first = MaskTrainer(_cfg(tiny_bundle, tmp_path / "a", *extra))
    first.setup()
    first.train()
    files = sorted(p.name for p in cache.rglob("*") if p.is_file())
    assert files and first.speech_cache.misses > 0
    second = MaskTrainer(_cfg(tiny_bundle, tmp_path / "b", *extra))
    second.setup()
    second.train()
    assert second.speech_cache.misses == 0 and second.speech_cache.hits > 0  # everything came from disk
    assert torch.equal(first.mask.tensor, second.mask.tensor)  # same seed, same cached embeddings
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == files
