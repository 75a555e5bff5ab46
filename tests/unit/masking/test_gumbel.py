"""Gumbel-sigmoid: values, straight-through gradients and the noise distributions."""

import math

import pytest
import torch

from ahamask.masking.gumbel import gumbel_noise_like, gumbel_sigmoid

EULER_GAMMA = 0.5772156649
N_SAMPLES = 200_000


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_no_noise_is_plain_sigmoid_with_temperature():
    # sigmoid(0) = 0.5, sigmoid(ln 3) = 3/4, and ln 9 / 2 = ln 3.
    logits = torch.tensor([0.0, math.log(3.0)])
    soft = gumbel_sigmoid(logits, tau=1.0, hard=False, noise="none")
    torch.testing.assert_close(soft, torch.tensor([0.5, 0.75]))
    soft_t2 = gumbel_sigmoid(torch.tensor([math.log(9.0)]), tau=2.0, hard=False, noise="none")
    torch.testing.assert_close(soft_t2, torch.tensor([0.75]))
    # The threshold is strict: exactly 0.5 stays 0, as in the official `y_soft > threshold`.
    hard = gumbel_sigmoid(logits, tau=1.0, hard=True, noise="none")
    assert hard.tolist() == [0.0, 1.0]
    assert gumbel_sigmoid(logits, 1.0, hard=True, threshold=0.8, noise="none").tolist() == [0.0, 0.0]


def test_soft_sample_adds_the_noise_drawn_by_the_same_generator():
    logits = torch.tensor([[-2.0, 0.5, 3.0], [1.0, 0.0, -0.25]])
    noise = gumbel_noise_like(logits, "left", _gen(7))
    expected = torch.sigmoid((logits + noise) / 0.5)
    torch.testing.assert_close(gumbel_sigmoid(logits, 0.5, hard=False, generator=_gen(7)), expected)


@pytest.mark.parametrize("noise", ["left", "logistic"])
@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.9])
def test_hard_values_are_exactly_zero_or_one(noise, threshold):
    logits = torch.randn(4, 6, 33, generator=_gen(1)) * 3
    hard = gumbel_sigmoid(
        logits.requires_grad_(), 2.0, hard=True, threshold=threshold, noise=noise, generator=_gen(2)
    )
    assert hard.shape == logits.shape
    assert bool(((hard == 0.0) | (hard == 1.0)).all())
    # Both values occur, so the check above is not trivially satisfied.
    assert 0 < int(hard.sum()) < hard.numel()
    soft = gumbel_sigmoid(logits.detach(), 2.0, hard=False, noise=noise, generator=_gen(2))
    assert torch.equal(hard.detach(), (soft > threshold).float())


def test_hard_gradient_equals_soft_gradient_for_the_same_noise():
    base = torch.randn(40, 17, generator=_gen(3))
    weights = torch.randn(40, 17, generator=_gen(4))
    grads = []
    for hard in (False, True):
        logits = base.clone().requires_grad_()
        gates = gumbel_sigmoid(logits, tau=0.7, hard=hard, generator=_gen(5))
        (gates * weights).sum().backward()
        grads.append(logits.grad)
    soft_grad, hard_grad = grads
    assert soft_grad.abs().sum() > 0
    assert torch.equal(soft_grad, hard_grad)


def test_left_tail_noise_matches_log_of_exponential():
    noise = gumbel_noise_like(torch.zeros(N_SAMPLES, dtype=torch.float64), "left", _gen(11))
    # log(Exp(1)): mean -gamma = -0.5772, variance pi^2/6 = 1.6449; 5-sigma tolerances for 200k samples.
    assert noise.mean().item() == pytest.approx(-EULER_GAMMA, abs=0.015)
    assert noise.var().item() == pytest.approx(math.pi**2 / 6, abs=0.04)
    # Left tail: the long tail is negative, so the skewness is negative (-1.14 for this distribution).
    centred = noise - noise.mean()
    skew = (centred**3).mean() / centred.pow(2).mean() ** 1.5
    assert skew.item() == pytest.approx(-1.1395, abs=0.1)


def test_logistic_noise_is_symmetric():
    noise = gumbel_noise_like(torch.zeros(N_SAMPLES, dtype=torch.float64), "logistic", _gen(12))
    # Logistic(0, 1): mean 0, variance pi^2/3 = 3.2899.
    assert noise.mean().item() == pytest.approx(0.0, abs=0.02)
    assert noise.var().item() == pytest.approx(math.pi**2 / 3, abs=0.07)
    assert torch.isfinite(noise).all()


def test_hard_gate_open_rate_at_zero_logit():
    # P(gate = 1 | logit 0) = P(log E > 0) = P(E > 1) = exp(-1) = 0.3679 for the left-tail noise,
    # and 0.5 for the symmetric logistic noise.
    zeros = torch.zeros(N_SAMPLES)
    left = gumbel_sigmoid(zeros, 1.0, hard=True, noise="left", generator=_gen(13)).mean().item()
    logistic = gumbel_sigmoid(zeros, 1.0, hard=True, noise="logistic", generator=_gen(14)).mean().item()
    assert left == pytest.approx(math.exp(-1.0), abs=0.005)
    assert logistic == pytest.approx(0.5, abs=0.005)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="tau must be a positive"):
        gumbel_sigmoid(torch.zeros(3), tau=0.0)
    with pytest.raises(ValueError, match="unknown kind 'gauss'"):
        gumbel_sigmoid(torch.zeros(3), tau=1.0, noise="gauss")
