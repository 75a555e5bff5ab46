"""AHAMask training: learn a head mask on a frozen SALMONN, as the official runner does, but resumable.

What matches the official code: the only trainable tensor is the mask-logit vector (``L*(H+1)``, N(4, 0.02));
SALMONN is frozen and in eval mode; each step repeats the logits over the batch, samples a (hard) Gumbel-
sigmoid, and minimises ``CE + norm_lambda * mean_batch(sum(weights))``; tau decays linearly then stays; AdamW
with warm-up + cosine; iteration-based epochs over an endless loader; ``checkpoint_<epoch>.pth`` in the
released format and a ``log.json`` per run.

What is added: exact resume from any checkpoint the trainer writes (every step checkpoint, every epoch
checkpoint): the mask, optimizer, scheduler, scaler, loader position, the epoch's running statistics and
every random stream (owned by the trainer, see :mod:`ahamask.training.randomness`) are saved, and a step
checkpoint written at an epoch's last step resumes into that epoch's validation and epoch checkpoint. Also:
step checkpoints (``run.save_every_steps``), atomic writes (a killed write's temporary file is removed at the
next start), retention (``run.keep_last_checkpoints``), one job folder per run (never shared by two runs), a
stop with the step and batch ids on a non-finite loss, Ctrl-C with the checkpoint to resume from, device
``auto``/``npu``, and deterministic validation (the binarised mask instead of one Gumbel draw).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import re
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..config import TrainConfig, to_yaml
from ..data.dataset import SALMONNDataset
from ..masking.gumbel import gumbel_sigmoid
from ..masking.hooks import HeadMaskHooks
from ..masking.mask import HeadMask, binarize, mask_stats
from ..masking.settings import MaskConfig
from ..models.backbone import build_backbone
from ..utils import distributed as dist_utils
from ..utils.io import atomic_torch_save
from ..utils.logging import JsonlLogger, MultiLogger, TensorBoardLogger, log_rank_zero
from ..utils.seed import capture_rng_state, restore_rng_state, set_seed
from .artifacts import log_mask_image, plot_training_curves, write_mask_folder
from .loader import CyclingLoader
from .optim import build_grad_scaler, build_optimizer
from .randomness import RunRandomness
from .resume import ResumeError, check_resume_geometry, read_resume_file
from .schedules import LinearWarmupCosineLRScheduler, tau_at

logger = logging.getLogger(__name__)

__all__ = ["MaskTrainer", "NonFiniteLossError", "TrainingInterrupted", "train"]

# The hidden temporary files of ahamask.utils.io.atomic_open: ".<name>.<32 hex>.tmp".
_STALE_TMP = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")
_STAT_KEYS = ("loss", "ce", "normalizer", "lr", "tau", "active_heads")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the batch."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message names the step reached and the checkpoint to resume from."""


class MaskTrainer:
    """Trains one AHAMask: ``setup()`` -> ``train()`` -> ``cleanup()``.

    Args:
        cfg: the validated training config.
        resume: checkpoint to continue from (overrides ``run.resume``).
        inputs_checked: :func:`ahamask.preflight.check_train_inputs` already ran (train.py runs it before
            importing torch); otherwise setup runs it before the model is built.
    """

    def __init__(self, cfg: TrainConfig, resume: str | None = None, inputs_checked: bool = False) -> None:
        self.cfg = cfg
        self.mask_cfg = MaskConfig.from_train_config(cfg)  # the one reader of the mask keys
        self.inputs_checked = inputs_checked
        self.resume_key = "--resume" if resume else "run.resume"
        self.resume_path = Path(resume or cfg.run.resume) if (resume or cfg.run.resume) else None
        self.resume_state: dict[str, Any] | None = None
        self.global_step = 0
        self.start_epoch = 0
        self.start_iter = 0
        self.epoch_totals: dict[str, float] = {}
        self.epoch_count = 0
        self.last_checkpoint: Path | None = None
        self.metrics: MultiLogger | None = None

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Build everything, cheapest checks first: the resume file is read before the model loads."""
        run = self.cfg.run
        if self.resume_path is not None:
            self.resume_state = read_resume_file(self.resume_path, self.resume_key)
        if not self.inputs_checked:  # train.py checks before importing torch; Python callers get it here
            from ..preflight import check_train_inputs

            check_train_inputs(self.cfg)
        self.dist = dist_utils.setup_processes(run.use_distributed, run.device)
        self.device = self.dist.device
        set_seed(run.seed, self.dist.rank)  # for third-party code; the trainer's own draws use self.random
        self.random = RunRandomness(run.seed, self.dist.rank, self.device)
        self._setup_output_dir()
        self._setup_model()
        self._setup_data()
        self._setup_optimization()
        self._setup_logging()
        if self.resume_state is not None:
            self._restore(self.resume_state)

    def _resumes_a_run(self) -> bool:
        return self.resume_state is not None and self.resume_state.get("trainer") is not None

    def _setup_output_dir(self) -> None:
        """One folder per run: an existing one only when resuming from a checkpoint inside it."""
        chosen: str | None = None
        if self.dist.is_main:
            chosen = str(self._choose_output_dir())
        if self.dist.world_size > 1:
            chosen = dist_utils.all_gather_object(chosen)[0]  # every rank writes under rank 0's choice
        self.output_dir = Path(chosen)
        if self.dist.is_main and self._resumes_a_run():
            stale = [p for p in self.output_dir.iterdir() if p.is_file() and _STALE_TMP.match(p.name)]
            for path in stale:
                path.unlink()
            if stale:
                log_rank_zero(
                    logger, "removed %d temporary file(s) of an interrupted checkpoint write", len(stale)
                )

    def _choose_output_dir(self) -> Path:
        run = self.cfg.run
        base = Path(run.output_dir)
        resume_dir = self.resume_path.parent.resolve() if self._resumes_a_run() else None
        if run.job_id:
            folder = base / run.job_id
            if folder.exists() and any(folder.iterdir()) and folder.resolve() != resume_dir:
                raise ValueError(
                    f"run.job_id: {folder} already holds a run; resume it with --resume {folder}/<checkpoint>.pth "
                    "or choose another run.job_id"
                )
            folder.mkdir(parents=True, exist_ok=True)
            return folder
        if resume_dir is not None:
            return resume_dir  # continue in the run's own folder
        # A fresh default id, to the second; a clash (two runs started in the same second) gets a suffix.
        stamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
        for suffix in ["", *(f"-{i}" for i in range(1, 1000))]:
            folder = base / f"{stamp}{suffix}"
            try:
                folder.mkdir(parents=True, exist_ok=False)
                return folder
            except FileExistsError:
                continue
        raise ValueError(f"run.output_dir: cannot create a new job folder under {base}")

    def _setup_model(self) -> None:
        run = self.cfg.run
        # The official train.py copies run.norm_lambda into the model config; the model never reads it and
        # the trainer reads run.norm_lambda, so there is one copy.
        self.model = build_backbone(self.cfg.model, device=self.device)
        self.model.requires_grad_(False)
        self.model.eval()  # dropout off in every module, as the official (lm_model.eval())
        geometry = self.model.geometry
        if self.resume_state is not None:
            check_resume_geometry(self.resume_state, self.resume_path, geometry.n_layers, geometry.n_heads)
        # Hooks attached once for the run; each step sets its gates (HeadMaskHooks.set_weights).
        self.mask_hooks = HeadMaskHooks(self.model.decoder, apply_ffn=self.mask_cfg.apply_ffn)
        self.mask = HeadMask(
            geometry.n_layers,
            geometry.n_heads,
            self.mask_cfg.init_mean,
            self.mask_cfg.init_std,
            generator=RunRandomness.mask_init(run.seed),
        ).to(self.device)
        # Everything before the LLM is frozen, so with run.cache_speech_embeds each clip is encoded once.
        self.speech_cache = None
        if run.cache_speech_embeds:
            from ..models.speech_cache import SpeechEmbeddingCache

            # The front end is frozen and in eval mode; on disk too when run.speech_cache_dir is set.
            self.speech_cache = SpeechEmbeddingCache(self.model, directory=run.speech_cache_dir or None)
        if self.dist.world_size > 1:
            torch.distributed.broadcast(self.mask.tensor.data, src=0)  # every rank starts from rank 0's init

    def _setup_data(self) -> None:
        run, data = self.cfg.run, self.cfg.datasets
        whisper = data.whisper_path or self.cfg.model.front_end_path()
        options = {"skip_bad_entries": data.skip_bad_entries, "resampler": data.resampler}
        self.train_set = SALMONNDataset(data.train_ann_path, whisper, **options)
        self.valid_set = (
            SALMONNDataset(data.valid_ann_path, whisper, **options) if data.valid_ann_path else None
        )
        self.loader = CyclingLoader(
            self.train_set,
            run.batch_size_train,
            seed=run.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            num_workers=run.num_workers,
        )
        self.iters_per_epoch = len(self.loader) if run.epoch_based else run.iters_per_epoch
        self.total_steps = run.optims.max_epoch * self.iters_per_epoch

    def _setup_optimization(self) -> None:
        optims = self.cfg.run.optims
        self.optimizer = build_optimizer(
            self.mask.named_parameters(), optims.init_lr, optims.weight_decay, optims.beta2
        )
        self.scheduler = LinearWarmupCosineLRScheduler(
            self.optimizer,
            max_epoch=optims.max_epoch,
            iters_per_epoch=self.iters_per_epoch,
            min_lr=optims.min_lr,
            init_lr=optims.init_lr,
            warmup_steps=optims.warmup_steps,
            warmup_start_lr=optims.warmup_start_lr,
        )
        self.scaler = build_grad_scaler(self.device, self.cfg.run.amp)

    def _setup_logging(self) -> None:
        if not self.dist.is_main:
            return
        self.metrics = MultiLogger(
            [TensorBoardLogger(self.output_dir), JsonlLogger(self.output_dir / "steps.jsonl")]
        )
        if not self._resumes_a_run():  # a resumed run continues the files of the run it resumes
            (self.output_dir / "config.yaml").write_text(to_yaml(self.cfg))
            self._append_log_json(
                json.dumps(OmegaConf.to_container(OmegaConf.structured(self.cfg)), indent=4)
            )
        log_rank_zero(
            logger,
            "AHAMask training: %d trainable mask logits (%d layers x (%d heads + 1)); %d frozen SALMONN parameters; "
            "%d steps (%d epochs x %d); output %s",
            self.mask.tensor.numel(),
            self.mask.n_layers,
            self.mask.n_heads,
            sum(p.numel() for p in self.model.parameters()),
            self.total_steps,
            self.cfg.run.optims.max_epoch,
            self.iters_per_epoch,
            self.output_dir,
        )

    # ------------------------------------------------------------------ one step
    def tau(self, step: int) -> float:
        """The Gumbel temperature at a global step (linear decay, then constant)."""
        m = self.mask_cfg
        return tau_at(step, self.total_steps, m.tau_decay_steps, m.tau_begin, m.tau_end)

    def mask_weights(self, batch_size: int, tau: float) -> torch.Tensor:
        """[batch, L*(H+1)] weights from the logits: Gumbel-sigmoid (hard by default) or plain sigmoid."""
        logits = self.mask().unsqueeze(0).repeat(batch_size, 1)
        m = self.mask_cfg
        if m.use_gumbel:
            return gumbel_sigmoid(
                logits, tau, hard=m.gumbel_hard, noise=m.gumbel_noise, generator=self.random.noise
            )
        return torch.sigmoid(logits)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.run.amp and self.device.type in ("cuda", "npu"):
            return torch.autocast(self.device.type, dtype=self.model.autocast_dtype)
        return contextlib.nullcontext()

    def train_step(self, epoch: int, it: int, samples: dict[str, Any]) -> dict[str, float]:
        """Forward, backward and (every ``accum_grad_iters``) an optimizer step; returns the step's stats."""
        run = self.cfg.run
        lr = self.scheduler.step(cur_epoch=epoch, cur_step=it)
        tau = self.tau(self.global_step)
        batch_size = len(samples["id"])
        prompts = self.model.choose_prompts(samples, rng=self.random.prompts)
        with self._autocast():
            weights = self.mask_weights(batch_size, tau)
            normalizer = weights.sum(dim=1).mean()
            embeds = self.speech_cache.get_or_compute(samples) if self.speech_cache is not None else None
            self.mask_hooks.set_weights(weights)
            try:
                out = self.model(samples, prompts=prompts, speech_embeds=embeds)
            finally:
                self.mask_hooks.set_weights(None)  # the graph is kept by the loss, not by the hooks
            ce = out["loss"]
            loss = ce + self.mask_cfg.norm_lambda * normalizer
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite loss {loss.item()} at epoch {epoch} iteration {it} (global step {self.global_step}); "
                f"batch ids: {list(samples['id'])}. Nothing was saved for this step; the last checkpoint is intact."
            )
        scaled = loss / run.accum_grad_iters if run.accum_grad_iters > 1 else loss
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        stepped = (it + 1) % run.accum_grad_iters == 0
        if stepped:
            self._optimizer_step()
        self.global_step += 1
        active = mask_stats(self.mask.tensor.detach(), self.mask.n_layers, self.mask.n_heads).active_heads
        return {
            "loss": loss.item(),
            "ce": ce.item(),
            "normalizer": normalizer.item(),
            "lr": lr,
            "tau": tau,
            "active_heads": active,
            "optimizer_step": stepped,
        }

    def _optimizer_step(self) -> None:
        if self.dist.world_size > 1:  # what DDP does for the mask: average its gradient over ranks
            torch.distributed.all_reduce(self.mask.tensor.grad)
            self.mask.tensor.grad /= self.dist.world_size
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ loops
    def train(self) -> Path:
        """Run every remaining epoch (training, validation, epoch checkpoint); returns the output folder."""
        run = self.cfg.run
        valid: dict[str, float] = {}
        for epoch in range(self.start_epoch, run.optims.max_epoch):
            stats = self.train_epoch(epoch)
            valid = self.validate(epoch) if self.valid_set is not None else {}
            if self.metrics is not None:  # the mask as a picture and active heads per layer, each epoch
                log_mask_image(
                    self.metrics,
                    self.mask.tensor.detach(),
                    self.mask.n_layers,
                    self.mask.n_heads,
                    self.global_step,
                )
            if self.dist.is_main:
                self._append_log_json(
                    json.dumps(
                        {
                            **{f"train_{k}": f"{v:.3f}" for k, v in stats.items()},
                            **{f"valid_{k}": f"{v:.4f}" for k, v in valid.items()},
                        }
                    )
                )
            self.save_checkpoint(
                self.output_dir / f"checkpoint_{epoch}.pth", next_epoch=epoch + 1, next_iter=0
            )
            if self.dist.world_size > 1:
                dist_utils.barrier()
        if self.dist.world_size > 1:
            self._check_ranks_agree()
        if self.dist.is_main:
            self._write_artifacts(valid)
        return self.output_dir

    def _write_artifacts(self, valid: dict[str, float]) -> None:
        """The shareable mask folder (mask.safetensors, mask_config.json, model card) and curves.png."""
        tasks = sorted({str(entry.get("task", "")) for entry in self.train_set.annotation})
        write_mask_folder(
            self.output_dir,
            self.mask.tensor.detach().cpu(),
            self.mask.n_layers,
            self.mask.n_heads,
            base_model=self.cfg.model.llama_path,
            task=", ".join(t for t in tasks if t),
            data=self.cfg.datasets.train_ann_path,
            steps=self.global_step,
            command=" ".join(sys.argv),
            valid_metrics=valid or None,
        )
        try:
            plot_training_curves(self.output_dir / "steps.jsonl", self.output_dir / "curves.png")
        except (FileNotFoundError, ValueError) as exc:  # e.g. a resumed run with nothing left to train
            logger.warning("curves.png not drawn: %s", exc)

    def _check_ranks_agree(self) -> None:
        """Every rank must hold the same mask (gradients are averaged); a mismatch is a bug, not noise."""
        masks = dist_utils.all_gather_object(self.mask.tensor.detach().cpu())
        if not all(torch.equal(masks[0], m) for m in masks[1:]):
            raise RuntimeError("the mask differs between ranks after training")
        log_rank_zero(logger, "mask identical on %d ranks", len(masks))

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """The epoch's remaining iterations; returns the means of the step statistics over the whole epoch."""
        run = self.cfg.run
        first = self.start_iter if epoch == self.start_epoch else 0
        if first == 0:
            self.epoch_totals, self.epoch_count = {}, 0
        bar = tqdm(
            range(first, self.iters_per_epoch),
            desc=f"epoch {epoch}",
            disable=not self.dist.is_main,
            initial=first,
            total=self.iters_per_epoch,
            leave=False,
            dynamic_ncols=True,
        )
        for it in bar:
            samples = next(self.loader)
            stats = self.train_step(epoch, it, samples)
            self.epoch_count += 1
            for key in _STAT_KEYS:
                self.epoch_totals[key] = self.epoch_totals.get(key, 0.0) + float(stats[key])
            if self.metrics is not None and (it + 1) % run.log_freq == 0:
                self.metrics.log_dict(
                    {k: v for k, v in stats.items() if k != "optimizer_step"}, self.global_step
                )
            bar.set_postfix(
                loss=f"{stats['loss']:.3f}", tau=f"{stats['tau']:.2f}", heads=stats["active_heads"]
            )
            every = run.save_every_steps
            if every and stats["optimizer_step"] and self.global_step % every == 0:
                # At the epoch's last step this checkpoint resumes into the epoch's validation (next_iter ==
                # iters_per_epoch), so a run resumed from it writes checkpoint_<epoch>.pth as well.
                self.save_checkpoint(
                    self.output_dir / f"checkpoint_step_{self.global_step}.pth",
                    next_epoch=epoch,
                    next_iter=it + 1,
                )
        bar.close()
        averages = {k: v / max(self.epoch_count, 1) for k, v in self.epoch_totals.items()}
        log_rank_zero(logger, "epoch %d: %s", epoch, ", ".join(f"{k} {v:.4g}" for k, v in averages.items()))
        return averages

    @torch.no_grad()
    def validate(self, epoch: int) -> dict[str, float]:
        """Mean CE of the validation set under the binarised mask (what inference applies)."""
        run = self.cfg.run
        weights = binarize(self.mask.tensor.detach())
        shard = Subset(
            self.valid_set,
            dist_utils.shard_indices(len(self.valid_set), self.dist.rank, self.dist.world_size),
        )
        loader = DataLoader(
            shard,
            batch_size=run.batch_size_eval,
            num_workers=run.num_workers,
            collate_fn=self.valid_set.collater,
            generator=torch.Generator().manual_seed(run.seed),  # not the global generator (see randomness)
        )
        total = torch.zeros(2, dtype=torch.float64, device=self.device)
        prompt = self.model.prompt_for("") if self.cfg.model.prompt_template else None
        self.mask_hooks.set_weights(weights)
        try:
            for index, samples in enumerate(loader):
                if run.max_val_batches and index >= run.max_val_batches:
                    break
                prompts = [prompt] * len(samples["id"]) if prompt else None
                with self._autocast():
                    embeds = (
                        self.speech_cache.get_or_compute(samples) if self.speech_cache is not None else None
                    )
                    out = self.model(samples, prompts=prompts, speech_embeds=embeds)
                total += torch.tensor(
                    [out["loss"].item() * len(samples["id"]), len(samples["id"])], device=self.device
                )
        finally:
            self.mask_hooks.set_weights(None)
        if self.dist.world_size > 1:
            torch.distributed.all_reduce(total)
        loss = (total[0] / total[1]).item() if total[1] else math.nan
        log_rank_zero(logger, "epoch %d: validation loss %.4f", epoch, loss)
        if self.metrics is not None:
            self.metrics.log_dict({"valid_loss": loss}, self.global_step)
        return {"loss": loss}

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: Path, next_epoch: int, next_iter: int) -> Path | None:
        """Write the released-format checkpoint plus everything an exact resume needs, atomically (rank 0).

        Called on every rank: the random streams of all ranks are gathered so each resumes its own.

        Args:
            path: destination.
            next_epoch, next_iter: where a run resumed from this file continues (``next_iter ==
                iters_per_epoch``: the epoch's training is done, its validation and checkpoint are not).
        """
        streams = {"global": capture_rng_state(), "run": self.random.state_dict()}
        rng_states = dist_utils.all_gather_object(streams) if self.dist.world_size > 1 else [streams]
        if not self.dist.is_main:
            return None
        state = {
            "model": {"tensor": self.mask.tensor.detach().cpu().clone()},
            "optimizer": self.optimizer.state_dict(),
            "config": OmegaConf.to_container(OmegaConf.structured(self.cfg)),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "epoch": next_epoch - 1 if next_iter == 0 else next_epoch,
            "trainer": {
                "global_step": self.global_step,
                "next_epoch": next_epoch,
                "next_iter": next_iter,
                "scheduler": self.scheduler.state_dict(),
                "loader": self.loader.state_dict(),
                "rng": rng_states,
                "epoch_totals": dict(self.epoch_totals),
                "epoch_count": self.epoch_count,
                "n_layers": self.mask.n_layers,
                "n_heads": self.mask.n_heads,
            },
        }
        atomic_torch_save(state, path)
        self.last_checkpoint = path
        log_rank_zero(logger, "saved %s", path)
        self._prune_old_checkpoints(path)
        return path

    def _prune_old_checkpoints(self, written: Path) -> None:
        """``run.keep_last_checkpoints`` > 0: keep that many of each kind (epoch / step), newest first."""
        keep = self.cfg.run.keep_last_checkpoints
        if keep <= 0:
            return
        kind = "checkpoint_step_" if written.name.startswith("checkpoint_step_") else "checkpoint_"
        pattern = re.compile(rf"^{kind}(\d+)\.pth$")
        numbered = sorted(
            (int(m.group(1)), p) for p in self.output_dir.iterdir() if (m := pattern.match(p.name))
        )
        for _, path in numbered[:-keep]:
            path.unlink()

    def _restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint (a released mask: its logits at step 0)."""
        path = self.resume_path
        self.mask.load_logits(state["model"]["tensor"])
        if self.dist.world_size > 1:
            torch.distributed.broadcast(self.mask.tensor.data, src=0)
        trainer = state.get("trainer")
        if trainer is None:
            log_rank_zero(logger, "%s has no trainer state: starting from its mask logits at step 0", path)
            return
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scaler and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            self.scheduler.load_state_dict(trainer["scheduler"])
            self.loader.load_state_dict(trainer["loader"])
        except (KeyError, ValueError, TypeError) as exc:
            raise ResumeError(
                f"{self.resume_key}: {path}: optimizer or schedule state does not fit: {exc}"
            ) from None
        self.global_step = int(trainer["global_step"])
        self.start_epoch = int(trainer["next_epoch"])
        self.start_iter = int(trainer["next_iter"])
        self.epoch_totals = {k: float(v) for k, v in trainer.get("epoch_totals", {}).items()}
        self.epoch_count = int(trainer.get("epoch_count", 0))
        self.last_checkpoint = path
        self._restore_streams(trainer["rng"], path)
        log_rank_zero(
            logger,
            "resumed from %s at epoch %d iteration %d (step %d)",
            path,
            self.start_epoch,
            self.start_iter,
            self.global_step,
        )

    def _restore_streams(self, rng_states: list[dict[str, Any]], path: Path) -> None:
        if len(rng_states) == self.dist.world_size:
            streams = rng_states[self.dist.rank]
            restore_rng_state(streams["global"])
            self.random.load_state_dict(streams["run"])
            return
        # Resumed with another world size: each rank's stream cannot be continued; reseed deterministically.
        log_rank_zero(
            logger,
            "%s was saved by %d ranks, resuming on %d: reseeding (the mask will differ from an uninterrupted run)",
            path,
            len(rng_states),
            self.dist.world_size,
            level=logging.WARNING,
        )
        set_seed(self.cfg.run.seed + self.global_step, self.dist.rank)
        self.random = RunRandomness(self.cfg.run.seed + self.global_step, self.dist.rank, self.device)

    def interrupt_message(self) -> str:
        """One line for Ctrl-C: the step reached and the checkpoint to resume from."""
        where = f"at step {self.global_step} of {self.total_steps}"
        if self.last_checkpoint is None:
            return f"{where}; no checkpoint written yet (set run.save_every_steps to save within an epoch)"
        return f"{where}; resume with: --resume {self.last_checkpoint}"

    def _append_log_json(self, line: str) -> None:
        with open(self.output_dir / "log.json", "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def cleanup(self) -> None:
        """Remove the mask hooks; close the metric writers and the process group."""
        if getattr(self, "mask_hooks", None) is not None:
            self.mask_hooks.remove()
        if self.metrics is not None:
            self.metrics.close()
        if self.dist.world_size > 1:
            dist_utils.cleanup()


def train(cfg: TrainConfig, resume: str | None = None, inputs_checked: bool = False) -> Path:
    """Train a mask from a config; returns the run's output folder (``output_dir/<job_id>``).

    Raises:
        TrainingInterrupted: on Ctrl-C, with the step reached and the checkpoint to resume from.
    """
    trainer = MaskTrainer(cfg, resume=resume, inputs_checked=inputs_checked)
    trainer.setup()
    try:
        return trainer.train()
    except KeyboardInterrupt:
        raise TrainingInterrupted(trainer.interrupt_message()) from None
    finally:
        trainer.cleanup()
