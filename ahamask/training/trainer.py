"""AHAMask training: learn a head mask on a frozen SALMONN, as the official runner does, but resumable.

What matches the official code: the only trainable tensor is the mask-logit vector (``L*(H+1)``, N(4, 0.02));
SALMONN is frozen and in eval mode; each step repeats the logits over the batch, samples a (hard) Gumbel-
sigmoid, and minimises ``CE + norm_lambda * mean_batch(sum(weights))``; tau decays linearly then stays; AdamW
with warm-up + cosine; iteration-based epochs over an endless loader; ``checkpoint_<epoch>.pth`` in the
released format and a ``log.json`` per run.

What is added: resume from any checkpoint (optimizer, scheduler, scaler, loader position, RNG states), step
checkpoints (``run.save_every_steps``), atomic writes, a stop with the step and batch ids on a non-finite
loss, device ``auto``/``npu``, and deterministic validation (the binarised mask instead of one Gumbel draw).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..config import TrainConfig, to_yaml
from ..data.dataset import SALMONNDataset
from ..masking.gumbel import gumbel_sigmoid
from ..masking.mask import HeadMask, binarize, mask_stats
from ..models.salmonn import SALMONN
from ..utils import distributed as dist_utils
from ..utils.device import resolve_device
from ..utils.io import atomic_torch_save
from ..utils.logging import JsonlLogger, MultiLogger, TensorBoardLogger, log_rank_zero
from ..utils.seed import capture_rng_state, restore_rng_state, set_seed
from .loader import CyclingLoader
from .optim import build_grad_scaler, build_optimizer
from .schedules import LinearWarmupCosineLRScheduler, tau_at

logger = logging.getLogger(__name__)

__all__ = ["MaskTrainer", "NonFiniteLossError", "train"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the batch."""


class MaskTrainer:
    """Trains one AHAMask: ``setup()`` -> ``train()`` -> ``cleanup()``.

    Args:
        cfg: the validated training config.
        resume: checkpoint to continue from (overrides ``run.resume``).
    """

    def __init__(self, cfg: TrainConfig, resume: str | None = None) -> None:
        self.cfg = cfg
        self.resume_path = resume or cfg.run.resume or None
        self.global_step = 0
        self.start_epoch = 0
        self.start_iter = 0

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        run = self.cfg.run
        if run.use_distributed:
            self.dist = dist_utils.init_distributed(run.device)
        else:
            device = resolve_device(run.device)
            self.dist = dist_utils.DistInfo(rank=0, world_size=1, local_rank=0, device=device, is_main=True)
        self.device = self.dist.device
        set_seed(run.seed, self.dist.rank)
        job_id = run.job_id or datetime.datetime.now().strftime("%Y%m%d%H%M")
        if self.dist.world_size > 1:
            job_id = dist_utils.all_gather_object(job_id)[0]  # every rank writes under rank 0's job id
        self.output_dir = Path(run.output_dir) / job_id
        if self.dist.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)

        # The official train.py copies run.norm_lambda into the model config; the trainer owns it here.
        model_cfg = replace(self.cfg.model, norm_lambda=run.norm_lambda)
        self.model = SALMONN.from_config(model_cfg, device=self.device)
        self.model.requires_grad_(False)
        self.model.eval()  # dropout off in every SALMONN module, as the official (lm_model.eval())
        self.mask = HeadMask(self.model.n_layers, self.model.n_heads, run.mask_init_mean, run.mask_init_std)
        self.mask.to(self.device)
        # Everything before the LLM is frozen, so with run.cache_speech_embeds each clip is encoded once.
        self.speech_cache = None
        if run.cache_speech_embeds:
            from .speech_cache import SpeechEmbeddingCache

            # The front end is frozen and in eval mode; on disk too when run.speech_cache_dir is set.
            self.speech_cache = SpeechEmbeddingCache(self.model, directory=run.speech_cache_dir or None)
        if self.dist.world_size > 1:
            torch.distributed.broadcast(
                self.mask.tensor.data, src=0
            )  # DDP starts every rank from rank 0's init

        data = self.cfg.datasets
        whisper = data.whisper_path or self.cfg.model.whisper_path
        self.train_set = SALMONNDataset(data.train_ann_path, whisper, skip_bad_entries=data.skip_bad_entries)
        self.valid_set = (
            SALMONNDataset(data.valid_ann_path, whisper, skip_bad_entries=data.skip_bad_entries)
            if data.valid_ann_path
            else None
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
        optims = run.optims
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
        self.scaler = build_grad_scaler(self.device, run.amp)
        self.metrics = None
        if self.dist.is_main:
            self.metrics = MultiLogger(
                [TensorBoardLogger(self.output_dir), JsonlLogger(self.output_dir / "steps.jsonl")]
            )
            (self.output_dir / "config.yaml").write_text(to_yaml(self.cfg))
            self._append_log_json(
                json.dumps(OmegaConf.to_container(OmegaConf.structured(self.cfg)), indent=4)
            )
        total = sum(p.numel() for p in self.model.parameters())
        log_rank_zero(
            logger,
            "AHAMask training: %d trainable mask logits (%d layers x (%d heads + 1)); %d frozen SALMONN parameters; "
            "%d steps (%d epochs x %d); output %s",
            self.mask.tensor.numel(),
            self.model.n_layers,
            self.model.n_heads,
            total,
            self.total_steps,
            optims.max_epoch,
            self.iters_per_epoch,
            self.output_dir,
        )
        if self.resume_path:
            self.load_checkpoint(self.resume_path)

    # ------------------------------------------------------------------ one step
    def tau(self, step: int) -> float:
        run = self.cfg.run
        return tau_at(step, self.total_steps, run.tau_decay_steps, run.tau_temp_begin, run.tau_temp_end)

    def mask_weights(self, batch_size: int, tau: float) -> torch.Tensor:
        """[batch, L*(H+1)] weights from the logits: Gumbel-sigmoid (hard by default) or plain sigmoid."""
        logits = self.mask().unsqueeze(0).repeat(batch_size, 1)
        if self.cfg.model.use_gumbel:
            return gumbel_sigmoid(
                logits, tau, hard=self.cfg.model.gumbel_hard, noise=self.cfg.model.gumbel_noise
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
        with self._autocast():
            weights = self.mask_weights(batch_size, tau)
            normalizer = weights.sum(dim=1).mean()
            embeds = self.speech_cache.get_or_compute(samples) if self.speech_cache is not None else None
            out = self.model(samples, head_weights=weights, speech_embeds=embeds)
            ce = out["loss"]
            loss = ce + run.norm_lambda * normalizer
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite loss {loss.item()} at epoch {epoch} iteration {it} (global step {self.global_step}); "
                f"batch ids: {list(samples['id'])}. Nothing was saved for this step; the last checkpoint is intact."
            )
        scaled = loss / run.accum_grad_iters if run.accum_grad_iters > 1 else loss
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        stepped = (it + 1) % run.accum_grad_iters == 0
        if stepped:
            if self.dist.world_size > 1:  # what DDP does for the mask: average its gradient over ranks
                torch.distributed.all_reduce(self.mask.tensor.grad)
                self.mask.tensor.grad /= self.dist.world_size
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        active = mask_stats(self.mask.tensor.detach(), self.model.n_layers, self.model.n_heads).active_heads
        return {
            "loss": loss.item(),
            "ce": ce.item(),
            "normalizer": normalizer.item(),
            "lr": lr,
            "tau": tau,
            "active_heads": active,
            "optimizer_step": stepped,
        }

    # ------------------------------------------------------------------ loops
    def train(self) -> Path:
        """Run every remaining epoch; returns the output folder."""
        run = self.cfg.run
        for epoch in range(self.start_epoch, run.optims.max_epoch):
            stats = self.train_epoch(epoch)
            valid = self.validate(epoch) if self.valid_set is not None else {}
            if self.dist.is_main:
                self._append_log_json(
                    json.dumps(
                        {
                            **{f"train_{k}": f"{v:.3f}" for k, v in stats.items()},
                            **{f"valid_{k}": f"{v:.4f}" for k, v in valid.items()},
                        }
                    )
                )
            self.save_checkpoint(epoch, self.iters_per_epoch, self.output_dir / f"checkpoint_{epoch}.pth")
            if self.dist.world_size > 1:
                dist_utils.barrier()
        if self.dist.world_size > 1:
            self._check_ranks_agree()
        return self.output_dir

    def _check_ranks_agree(self) -> None:
        """Every rank must hold the same mask (gradients are averaged); a mismatch is a bug, not noise."""
        masks = dist_utils.all_gather_object(self.mask.tensor.detach().cpu())
        if not all(torch.equal(masks[0], m) for m in masks[1:]):
            raise RuntimeError("the mask differs between ranks after training")
        log_rank_zero(logger, "mask identical on %d ranks", len(masks))

    def train_epoch(self, epoch: int) -> dict[str, float]:
        run = self.cfg.run
        first = self.start_iter if epoch == self.start_epoch else 0
        totals: dict[str, float] = {}
        count = 0
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
            count += 1
            for key in ("loss", "ce", "normalizer", "lr", "tau", "active_heads"):
                totals[key] = totals.get(key, 0.0) + float(stats[key])
            if self.metrics is not None and (it + 1) % run.log_freq == 0:
                self.metrics.log_dict(
                    {k: v for k, v in stats.items() if k != "optimizer_step"}, self.global_step
                )
            bar.set_postfix(
                loss=f"{stats['loss']:.3f}", tau=f"{stats['tau']:.2f}", heads=stats["active_heads"]
            )
            every = run.save_every_steps
            if every and stats["optimizer_step"] and self.global_step % every == 0:
                self.save_checkpoint(
                    epoch, it + 1, self.output_dir / f"checkpoint_step_{self.global_step}.pth"
                )
        bar.close()
        averages = {k: v / max(count, 1) for k, v in totals.items()}
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
        )
        total = torch.zeros(2, dtype=torch.float64, device=self.device)
        prompt = self.model.prompt_for("") if self.cfg.model.prompt_template else None
        for index, samples in enumerate(loader):
            if run.max_val_batches and index >= run.max_val_batches:
                break
            prompts = [prompt] * len(samples["id"]) if prompt else None
            with self._autocast():
                embeds = self.speech_cache.get_or_compute(samples) if self.speech_cache is not None else None
                out = self.model(samples, prompts=prompts, head_weights=weights, speech_embeds=embeds)
            total += torch.tensor(
                [out["loss"].item() * len(samples["id"]), len(samples["id"])], device=self.device
            )
        if self.dist.world_size > 1:
            torch.distributed.all_reduce(total)
        loss = (total[0] / total[1]).item() if total[1] else math.nan
        log_rank_zero(logger, "epoch %d: validation loss %.4f", epoch, loss)
        if self.metrics is not None:
            self.metrics.log_dict({"valid_loss": loss}, self.global_step)
        return {"loss": loss}

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, epoch: int, next_iter: int, path: Path) -> Path | None:
        """Write the released-format checkpoint plus everything resume needs, atomically (rank 0).

        Called on every rank: the RNG states of all ranks are gathered so each resumes its own stream.
        """
        rng = capture_rng_state()
        rng_states = dist_utils.all_gather_object(rng) if self.dist.world_size > 1 else [rng]
        if not self.dist.is_main:
            return None
        state = {
            "model": {"tensor": self.mask.tensor.detach().cpu().clone()},
            "optimizer": self.optimizer.state_dict(),
            "config": OmegaConf.to_container(OmegaConf.structured(self.cfg)),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "epoch": epoch,
            "trainer": {
                "global_step": self.global_step,
                "next_epoch": epoch + 1 if next_iter >= self.iters_per_epoch else epoch,
                "next_iter": 0 if next_iter >= self.iters_per_epoch else next_iter,
                "scheduler": self.scheduler.state_dict(),
                "loader": self.loader.state_dict(),
                "rng": rng_states,
                "n_layers": self.model.n_layers,
                "n_heads": self.model.n_heads,
            },
        }
        atomic_torch_save(state, path)
        log_rank_zero(logger, "saved %s", path)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint` (a released mask: logits only)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"run.resume: no such checkpoint: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.mask.load_logits(state["model"]["tensor"])
        trainer = state.get("trainer")
        if trainer is None:
            log_rank_zero(logger, "%s has no trainer state: starting from its mask logits at step 0", path)
            return
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.scheduler.load_state_dict(trainer["scheduler"])
        self.loader.load_state_dict(trainer["loader"])
        self.global_step = int(trainer["global_step"])
        self.start_epoch = int(trainer["next_epoch"])
        self.start_iter = int(trainer["next_iter"])
        rng_states = trainer["rng"]
        if len(rng_states) == self.dist.world_size:
            restore_rng_state(rng_states[self.dist.rank])
        else:  # resumed with another world size: reseed deterministically instead
            log_rank_zero(
                logger,
                "%s was saved by %d ranks, resuming on %d: reseeding",
                path,
                len(rng_states),
                self.dist.world_size,
                level=logging.WARNING,
            )
            set_seed(self.cfg.run.seed + self.global_step, self.dist.rank)
        log_rank_zero(
            logger,
            "resumed from %s at epoch %d iteration %d (step %d)",
            path,
            self.start_epoch,
            self.start_iter,
            self.global_step,
        )

    def _append_log_json(self, line: str) -> None:
        with open(self.output_dir / "log.json", "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def cleanup(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        if self.dist.world_size > 1:
            dist_utils.cleanup()


def train(cfg: TrainConfig, resume: str | None = None) -> Path:
    """Train a mask from a config; returns the run's output folder (``output_dir/<job_id>``)."""
    trainer = MaskTrainer(cfg, resume=resume)
    trainer.setup()
    try:
        return trainer.train()
    finally:
        trainer.cleanup()
