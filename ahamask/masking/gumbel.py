"""Gumbel-sigmoid relaxation of binary head gates.

AHAMask learns one logit per attention head (plus one per FFN block) and turns it into a gate in [0, 1]
during training by adding noise and squashing with a temperature. The official code uses a *left-tail*
Gumbel noise, ``log(E)`` with ``E ~ Exp(1)``, not the symmetric logistic noise of the textbook
binary-concrete relaxation; both are offered here so results can be compared, with the official one as
the default.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["NOISE_KINDS", "gumbel_noise_like", "gumbel_sigmoid"]

#: Accepted values of the ``noise`` argument.
NOISE_KINDS = ("left", "logistic", "none")


def gumbel_noise_like(
    logits: Tensor, noise: str = "left", generator: torch.Generator | None = None
) -> Tensor:
    """Draws one noise value per element of ``logits``.

    The noise is kept separate from :func:`gumbel_sigmoid` so tests and analyses can check its
    distribution directly instead of inverting a sigmoid.

    Args:
        logits: Tensor of any shape, e.g. [n_layers, n_heads + 1]; only its shape, dtype and device are used.
        noise: ``"left"``: ``log(E)``, ``E ~ Exp(1)`` (mean -0.5772, variance pi^2/6; the official
            choice). ``"logistic"``: ``log(U) - log(1 - U)``, ``U ~ Uniform(0, 1)`` (mean 0, variance
            pi^2/3). ``"none"``: zeros.
        generator: Optional random generator on the same device as ``logits``, for reproducible draws.

    Returns:
        Tensor with the shape, dtype and device of ``logits``.

    Raises:
        ValueError: If ``noise`` is not one of :data:`NOISE_KINDS`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> gumbel_noise_like(torch.zeros(2, 3), "left", g).shape
        torch.Size([2, 3])
    """
    if noise == "left":
        # Exp(1) samples from torch's own sampler; the log of an Exp(1) variable is the left-tail
        # (negated) standard Gumbel that the official gumbel_sigmoid adds.
        exp = torch.empty_like(logits, memory_format=torch.contiguous_format).exponential_(
            generator=generator
        )
        return exp.log()
    if noise == "logistic":
        uniform = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
        # torch.rand may return exactly 0, whose log is -inf; clamping to the smallest normal number
        # keeps every draw finite without visibly changing the distribution.
        uniform = uniform.clamp_(min=torch.finfo(logits.dtype).tiny)
        return uniform.log() - torch.log1p(-uniform)
    if noise == "none":
        return torch.zeros_like(logits)
    raise ValueError(f"gumbel noise: unknown kind {noise!r}; expected one of {', '.join(NOISE_KINDS)}")


def gumbel_sigmoid(
    logits: Tensor,
    tau: float,
    hard: bool = True,
    threshold: float = 0.5,
    noise: str = "left",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Samples relaxed (or straight-through binary) gates from logits.

    Computes ``y = sigmoid((logits + noise) / tau)``. With ``hard=True`` the forward value is
    ``1.0`` where ``y > threshold`` and ``0.0`` elsewhere, while the gradient is that of ``y``
    (straight-through estimator), as in the official training.

    Args:
        logits: Gate logits of any shape, e.g. [n_layers * (n_heads + 1)] or [n_layers, n_heads + 1].
        tau: Temperature, > 0; large values give gates near 0.5, small values near-binary gates.
        hard: If True, return exact 0/1 values with straight-through gradients.
        threshold: Binarisation threshold on ``y`` (strict ``>``, like the official code).
        noise: Noise kind, see :func:`gumbel_noise_like` (``"left"`` is the official one).
        generator: Optional random generator on the device of ``logits``.

    Returns:
        Tensor with the shape and dtype of ``logits``: values in (0, 1) when soft, exactly 0 or 1 when hard.

    Raises:
        ValueError: If ``tau`` is not a positive finite number or ``noise`` is unknown.

    Example:
        >>> logits = torch.zeros(2, 5, requires_grad=True)
        >>> gates = gumbel_sigmoid(logits, tau=1.0, generator=torch.Generator().manual_seed(0))
        >>> bool(((gates == 0) | (gates == 1)).all())
        True
    """
    tau = float(tau)
    if not tau > 0.0 or tau == float("inf"):
        raise ValueError(f"gumbel_sigmoid: tau must be a positive finite number, got {tau}")
    soft = ((logits + gumbel_noise_like(logits, noise, generator)) / tau).sigmoid()
    if not hard:
        return soft
    hard_values = (soft > threshold).to(soft.dtype)
    # Written as hard + (soft - soft.detach()) rather than the official hard - soft.detach() + soft:
    # same gradient (identity through soft), but the forward value is exactly 0 or 1 for any
    # threshold, since soft - soft.detach() is exactly zero in floating point.
    return hard_values + (soft - soft.detach())
