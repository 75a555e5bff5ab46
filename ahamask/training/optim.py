"""Optimizer and gradient-scaler construction with the official SALMONN/AHAMask conventions."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable

import torch

logger = logging.getLogger(__name__)

__all__ = ["build_grad_scaler", "build_optimizer", "is_no_decay"]

# Substrings that exempt a parameter from weight decay in the official rule. Matched anywhere in the
# name, so e.g. "ln_speech.weight" and "speech_llama_proj.bias" qualify; kept as-is to match training.
_NO_DECAY_SUBSTRINGS = ("bias", "ln", "bn")


def is_no_decay(name: str, param: torch.Tensor) -> bool:
    """Official rule deciding whether a parameter is exempt from weight decay.

    A parameter gets no decay when it has fewer than 2 dimensions (norm weights, biases, the official
    flat mask vector) or its name contains ``"bias"``, ``"ln"`` or ``"bn"`` as a substring.

    Args:
        name: Fully qualified parameter name.
        param: The parameter.

    Returns:
        True when the parameter belongs in the weight-decay-free group.

    Example:
        >>> is_no_decay("proj.weight", torch.zeros(2, 2)), is_no_decay("ln_audio.weight", torch.zeros(2))
        (False, True)
    """
    return param.ndim < 2 or any(token in name for token in _NO_DECAY_SUBSTRINGS)


def build_optimizer(
    params_named: Iterable[tuple[str, torch.nn.Parameter]],
    init_lr: float,
    weight_decay: float,
    beta2: float = 0.999,
    no_decay_names: Collection[str] = (),
) -> torch.optim.AdamW:
    """Builds AdamW with the official two param groups.

    Group 0 holds the parameters that decay (``weight_decay``), group 1 those that do not (see
    :func:`is_no_decay`); both groups always exist, so ``param_groups[0]`` is always the decayed one.
    Frozen parameters (``requires_grad=False``) are skipped.

    Note:
        The official mask is a flat vector of ``n_layers * (n_heads + 1)`` logits, so the ``ndim < 2``
        rule keeps it out of weight decay. A mask stored as a 2-D [n_layers, n_heads + 1] tensor must
        be named in ``no_decay_names`` to get the same treatment.

    Args:
        params_named: ``(name, parameter)`` pairs, e.g. ``model.named_parameters()``.
        init_lr: Initial learning rate (the scheduler overwrites it each step).
        weight_decay: Decoupled weight decay of group 0.
        beta2: Second Adam beta; the first is fixed at 0.9 as in the official code.
        no_decay_names: Exact names forced into the no-decay group in addition to the official rule.

    Returns:
        A ``torch.optim.AdamW`` with betas ``(0.9, beta2)``.

    Raises:
        ValueError: If no parameter is trainable, a name in ``no_decay_names`` is not among the trainable
            parameters, or a hyperparameter is out of range.

    Example:
        >>> model = torch.nn.Linear(4, 2)
        >>> opt = build_optimizer(model.named_parameters(), init_lr=1e-2, weight_decay=0.05)
        >>> [len(g["params"]) for g in opt.param_groups]
        [1, 1]
    """
    if init_lr < 0 or weight_decay < 0 or not 0.0 <= beta2 < 1.0:
        raise ValueError(
            f"optimizer: need init_lr >= 0, weight_decay >= 0, 0 <= beta2 < 1; "
            f"got init_lr={init_lr}, weight_decay={weight_decay}, beta2={beta2}"
        )
    decay, no_decay = _split_decay_groups(params_named, set(no_decay_names))
    groups = [
        {"params": decay, "weight_decay": float(weight_decay)},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=float(init_lr), weight_decay=float(weight_decay), betas=(0.9, beta2))


def _split_decay_groups(
    params_named: Iterable[tuple[str, torch.nn.Parameter]], forced: set[str]
) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """Sorts the trainable parameters into the decayed and the decay-free lists (in their given order)
    and logs the counts; raises on a name in ``forced`` that is not trainable, or on nothing trainable."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    seen: set[str] = set()
    n_trainable = 0
    for name, param in params_named:
        if not param.requires_grad:
            continue
        seen.add(name)
        n_trainable += param.numel()
        if name in forced or is_no_decay(name, param):
            no_decay.append(param)
        else:
            decay.append(param)
    unknown = sorted(forced - seen)
    if unknown:
        raise ValueError(f"optimizer: no_decay_names not among the trainable parameters: {unknown}")
    if not decay and not no_decay:
        raise ValueError("optimizer: no trainable parameters (every parameter has requires_grad=False)")
    logger.info(
        "optimizer: %d trainable parameters (%d tensors with weight decay, %d without)",
        n_trainable,
        len(decay),
        len(no_decay),
    )
    return decay, no_decay


def build_grad_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler | None:
    """Returns a loss scaler for fp16 mixed precision, or None where none is needed.

    The official runner creates a scaler whenever ``amp`` is on; it only makes sense on an
    accelerator, because ahamask runs in float32 on CPU (no autocast there).

    Args:
        device: Training device (see :func:`ahamask.utils.device.resolve_device`).
        amp: Whether mixed precision is enabled in the config.

    Returns:
        ``torch.amp.GradScaler`` for ``amp`` on ``cuda``/``npu``, else None.

    Example:
        >>> build_grad_scaler(torch.device("cpu"), amp=True) is None
        True
    """
    if not amp or device.type not in ("cuda", "npu"):
        return None
    return torch.amp.GradScaler(device.type)
