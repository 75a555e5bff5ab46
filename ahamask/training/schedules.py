"""Temperature and learning-rate schedules of AHAMask training.

Both follow the official runner step for step, so a run with the same config sees the same tau and
learning rate at every iteration:

* tau decays linearly from ``tau_begin`` to ``tau_end`` over the first ``decay_steps`` global steps and
  then stays at ``tau_end``;
* the learning rate warms up linearly, then follows a cosine from ``init_lr`` to ``min_lr`` whose period
  is the *whole* run (``max_epoch * iters_per_epoch``), not the part after warm-up.

The official runner calls the scheduler at the start of every iteration, before the forward pass, so
the learning rate of iteration ``i`` is the value computed for ``i``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["LinearWarmupCosineLRScheduler", "tau_at", "tau_decay_end_step"]


def tau_decay_end_step(total_steps: int, decay_steps: float) -> int:
    """Returns the global step at which tau reaches its final value.

    Args:
        total_steps: Steps in the whole run (``max_epoch * iters_per_epoch``).
        decay_steps: A fraction of ``total_steps`` when < 1, otherwise an absolute step count.

    Returns:
        ``int(decay_steps * total_steps)`` when ``decay_steps < 1``, else ``int(decay_steps)``
        (truncation, as in the official runner).

    Raises:
        ValueError: If ``total_steps`` or ``decay_steps`` is negative.

    Example:
        >>> tau_decay_end_step(1000, 0.3), tau_decay_end_step(1000, 50)
        (300, 50)
    """
    if total_steps < 0:
        raise ValueError(f"tau schedule: total_steps must be >= 0, got {total_steps}")
    if decay_steps < 0:
        raise ValueError(f"tau schedule: decay_steps must be >= 0, got {decay_steps}")
    if decay_steps < 1:
        return int(decay_steps * total_steps)
    return int(decay_steps)


def tau_at(step: int, total_steps: int, decay_steps: float, tau_begin: float, tau_end: float) -> float:
    """Gumbel-sigmoid temperature at a global step.

    Linear from ``tau_begin`` (at step 0) towards ``tau_end``; from the end step on (see
    :func:`tau_decay_end_step`) it is exactly ``tau_end``. So the last decaying step is
    ``end - 1``, whose value is still slightly above ``tau_end``, as in the official runner.

    Args:
        step: Global step, ``epoch * iters_per_epoch + iteration``, counted from 0.
        total_steps: Steps in the whole run.
        decay_steps: Fraction (< 1) of ``total_steps`` or absolute number of steps (>= 1).
        tau_begin: Temperature at step 0, > 0.
        tau_end: Final temperature, > 0.

    Returns:
        The temperature as a float.

    Raises:
        ValueError: If ``step`` is negative or a temperature is not positive.

    Example:
        >>> tau_at(15, total_steps=100, decay_steps=0.3, tau_begin=4.0, tau_end=0.05)
        2.025
    """
    if step < 0:
        raise ValueError(f"tau schedule: step must be >= 0, got {step}")
    if tau_begin <= 0 or tau_end <= 0:
        raise ValueError(
            f"tau schedule: temperatures must be > 0, got tau_begin={tau_begin}, tau_end={tau_end}"
        )
    end = tau_decay_end_step(total_steps, decay_steps)
    # step >= end also covers end == 0 (no decay at all), which avoids a division by zero.
    if step >= end:
        return float(tau_end)
    return float(tau_begin - (step / end) * (tau_begin - tau_end))


class LinearWarmupCosineLRScheduler:
    """Linear warm-up then cosine decay, identical to the official SALMONN/LAVIS scheduler.

    For ``t = cur_epoch * iters_per_epoch + cur_step`` and ``T = max_epoch * iters_per_epoch``:

    * ``t < warmup_steps``: ``lr = min(init_lr, warmup_start_lr + (init_lr - warmup_start_lr) * s /
      max(warmup_steps, 1))``. The official code uses ``s = cur_step`` (the step inside the epoch), so
      when ``warmup_steps > iters_per_epoch`` the warm-up restarts at every epoch boundary. That is the
      default here; pass ``global_warmup=True`` to use ``s = t`` instead.
    * otherwise: ``lr = min_lr + (init_lr - min_lr) * 0.5 * (1 + cos(pi * t / T))``. The cosine starts
      counting at step 0, so right after warm-up the rate is already a little below ``init_lr``.

    Every param group of the optimizer gets the same rate, as in the official code.

    Args:
        optimizer: The optimizer whose param groups are updated.
        max_epoch: Number of epochs in the run, > 0.
        iters_per_epoch: Iterations per epoch, > 0.
        min_lr: Final learning rate of the cosine.
        init_lr: Peak learning rate (end of warm-up, start of the cosine).
        warmup_steps: Warm-up length in iterations; 0 disables warm-up.
        warmup_start_lr: Rate at warm-up step 0; a negative value or None means ``init_lr`` (official
            convention for "no warm-up ramp").
        global_warmup: Use the global step in the warm-up ramp (see above). False matches the official.

    Raises:
        ValueError: If a length is not positive or a rate is negative.

    Example:
        >>> opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))], lr=1.0)
        >>> sched = LinearWarmupCosineLRScheduler(opt, 2, 20, min_lr=1e-4, init_lr=1e-2, warmup_steps=10)
        >>> round(sched.step(cur_epoch=1, cur_step=0), 8)  # half-way through the cosine
        0.00505
    """

    #: Constructor arguments kept in the state dict, in a fixed order.
    _HPARAMS = (
        "max_epoch",
        "iters_per_epoch",
        "min_lr",
        "init_lr",
        "warmup_steps",
        "warmup_start_lr",
        "global_warmup",
    )

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_epoch: int,
        iters_per_epoch: int,
        min_lr: float,
        init_lr: float,
        warmup_steps: int = 0,
        warmup_start_lr: float | None = -1,
        global_warmup: bool = False,
    ) -> None:
        errors = []
        if max_epoch <= 0:
            errors.append(f"max_epoch must be > 0, got {max_epoch}")
        if iters_per_epoch <= 0:
            errors.append(f"iters_per_epoch must be > 0, got {iters_per_epoch}")
        if warmup_steps < 0:
            errors.append(f"warmup_steps must be >= 0, got {warmup_steps}")
        if init_lr < 0 or min_lr < 0:
            errors.append(f"init_lr and min_lr must be >= 0, got init_lr={init_lr}, min_lr={min_lr}")
        if errors:
            raise ValueError("LinearWarmupCosineLRScheduler: " + "; ".join(errors))
        self.optimizer = optimizer
        self.max_epoch = int(max_epoch)
        self.iters_per_epoch = int(iters_per_epoch)
        self.min_lr = float(min_lr)
        self.init_lr = float(init_lr)
        self.warmup_steps = int(warmup_steps)
        use_init = warmup_start_lr is None or warmup_start_lr < 0
        self.warmup_start_lr = self.init_lr if use_init else float(warmup_start_lr)
        self.global_warmup = bool(global_warmup)
        # Position of the last step() call, kept for the state dict; (-1, -1) means "never stepped".
        self.last_epoch = -1
        self.last_step = -1
        self.last_lr: float | None = None

    @property
    def total_steps(self) -> int:
        """Length of the cosine period: ``max_epoch * iters_per_epoch``."""
        return self.max_epoch * self.iters_per_epoch

    def lr_at(self, cur_epoch: int, cur_step: int) -> float:
        """Computes the learning rate for a position without touching the optimizer.

        Args:
            cur_epoch: Epoch index from 0.
            cur_step: Iteration inside the epoch, from 0.

        Returns:
            The learning rate.

        Raises:
            ValueError: If a position is negative.
        """
        if cur_epoch < 0 or cur_step < 0:
            raise ValueError(f"lr schedule: negative position (epoch={cur_epoch}, step={cur_step})")
        global_step = cur_epoch * self.iters_per_epoch + cur_step
        if global_step < self.warmup_steps:
            ramp_step = global_step if self.global_warmup else cur_step
            ramp = (self.init_lr - self.warmup_start_lr) * ramp_step / max(self.warmup_steps, 1)
            return min(self.init_lr, self.warmup_start_lr + ramp)
        cosine = 0.5 * (1.0 + math.cos(math.pi * global_step / self.total_steps))
        return (self.init_lr - self.min_lr) * cosine + self.min_lr

    def step(self, cur_epoch: int, cur_step: int) -> float:
        """Sets the learning rate of every param group for this iteration.

        Call it at the start of each iteration, before the forward pass (official order).

        Args:
            cur_epoch: Epoch index from 0.
            cur_step: Iteration inside the epoch, from 0.

        Returns:
            The learning rate that was set.
        """
        lr = self.lr_at(cur_epoch, cur_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.last_epoch, self.last_step, self.last_lr = int(cur_epoch), int(cur_step), lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        """Returns the hyperparameters and last position as plain Python values.

        The schedule is a pure function of the position, so this is all a resume needs; the values are
        ints, floats and bools only, loadable by ``torch.load(..., weights_only=True)``.
        """
        state: dict[str, Any] = {name: getattr(self, name) for name in self._HPARAMS}
        state.update(last_epoch=self.last_epoch, last_step=self.last_step, last_lr=self.last_lr)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores a state produced by :meth:`state_dict` and re-applies its last learning rate.

        Saved hyperparameters win over the constructor's (like torch's schedulers); each one that
        differs is logged as a warning so an unintended config change on resume is visible.

        Args:
            state_dict: Mapping with exactly the keys written by :meth:`state_dict`.

        Raises:
            ValueError: If keys are missing or unexpected, naming them.
        """
        expected = set(self._HPARAMS) | {"last_epoch", "last_step", "last_lr"}
        missing, unexpected = sorted(expected - state_dict.keys()), sorted(state_dict.keys() - expected)
        if missing or unexpected:
            raise ValueError(f"lr scheduler state: missing keys {missing}, unexpected keys {unexpected}")
        for name in self._HPARAMS:
            if getattr(self, name) != state_dict[name]:
                logger.warning(
                    "lr scheduler resume: %s=%r from the checkpoint replaces %r",
                    name,
                    state_dict[name],
                    getattr(self, name),
                )
            setattr(self, name, state_dict[name])
        self.last_epoch, self.last_step = int(state_dict["last_epoch"]), int(state_dict["last_step"])
        self.last_lr = state_dict["last_lr"]
        if self.last_epoch >= 0:
            self.step(self.last_epoch, self.last_step)
