"""Tau and learning-rate schedules, optimizer grouping and the grad-scaler factory.

Expected numbers are worked out by hand from the official formulas and written out literally.
"""

import warnings

import pytest
import torch

from ahamask.training.optim import build_grad_scaler, build_optimizer, is_no_decay
from ahamask.training.schedules import LinearWarmupCosineLRScheduler, tau_at, tau_decay_end_step

# ---------------------------------------------------------------- tau


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 4.0),
        (15, 2.025),  # 4 - 15/30 * 3.95
        (29, 0.18166666666666667),  # 4 - 29/30 * 3.95: last decaying step, still above tau_end
        (30, 0.05),  # end step int(0.3 * 100) = 30 is already constant
        (99, 0.05),
    ],
)
def test_tau_fractional_decay(step, expected):
    assert tau_at(step, total_steps=100, decay_steps=0.3, tau_begin=4.0, tau_end=0.05) == pytest.approx(
        expected, rel=1e-12
    )


def test_tau_absolute_decay_and_edge_cases():
    # decay_steps >= 1 is a step count: 4 - 25/50 * 3.95 = 2.025, 4 - 49/50 * 3.95 = 0.129.
    assert tau_at(25, 100, 50, 4.0, 0.05) == pytest.approx(2.025)
    assert tau_at(49, 100, 50, 4.0, 0.05) == pytest.approx(0.129)
    assert tau_at(50, 100, 50, 4.0, 0.05) == 0.05
    # decay_steps == 1 means one step (not the whole run), 0 means no decay at all.
    assert tau_at(0, 100, 1, 4.0, 0.05) == 4.0
    assert tau_at(1, 100, 1, 4.0, 0.05) == 0.05
    assert tau_at(0, 100, 0, 4.0, 0.05) == 0.05
    # int(0.3 * 7) = int(2.1) = 2, so step 1 is half-way: 4 - 0.5 * 3.95.
    assert tau_at(1, 7, 0.3, 4.0, 0.05) == pytest.approx(2.025)
    assert tau_at(2, 7, 0.3, 4.0, 0.05) == 0.05


def test_tau_end_step_truncates_like_the_official_runner():
    # 0.29 * 100 is 28.999999999999996 in floating point; the official int() truncates it to 28.
    assert tau_decay_end_step(100, 0.29) == 28
    assert tau_decay_end_step(100, 0.3) == 30
    assert tau_decay_end_step(90000, 0.3) == 27000
    assert tau_decay_end_step(100, 12.9) == 12


def test_tau_rejects_bad_values():
    with pytest.raises(ValueError, match="step must be >= 0"):
        tau_at(-1, 100, 0.3, 4.0, 0.05)
    with pytest.raises(ValueError, match="temperatures must be > 0"):
        tau_at(0, 100, 0.3, 4.0, 0.0)
    with pytest.raises(ValueError, match="decay_steps must be >= 0"):
        tau_at(0, 100, -0.1, 4.0, 0.05)


# ---------------------------------------------------------------- learning rate


def _optimizer(n_groups: int = 2) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))]} for _ in range(n_groups)]
    return torch.optim.AdamW(groups, lr=123.0)


def _scheduler(opt=None, **overrides) -> LinearWarmupCosineLRScheduler:
    kwargs = dict(
        max_epoch=2, iters_per_epoch=20, min_lr=1e-4, init_lr=1e-2, warmup_steps=10, warmup_start_lr=1e-6
    )
    kwargs.update(overrides)
    return LinearWarmupCosineLRScheduler(opt or _optimizer(), **kwargs)


@pytest.mark.parametrize(
    ("epoch", "step", "expected"),
    [
        (0, 0, 1e-6),  # warm-up start
        (0, 5, 5.0005e-3),  # 1e-6 + (1e-2 - 1e-6) * 5/10
        (0, 9, 9.0001e-3),  # 1e-6 + 9.999e-3 * 9/10
        # First cosine step t = 10 of T = 40: 9.9e-3 * 0.5 * (1 + cos(pi/4)) + 1e-4; not init_lr.
        (0, 10, 8.5501785669e-3),
        (1, 0, 5.05e-3),  # t = 20 = T/2: cos = 0, 9.9e-3 / 2 + 1e-4
        (1, 19, 1.1525919802e-4),  # t = 39: 4.95e-3 * (1 - cos(pi/40)) + 1e-4
    ],
)
def test_lr_warmup_then_cosine(epoch, step, expected):
    opt = _optimizer()
    sched = _scheduler(opt)
    assert sched.step(epoch, step) == pytest.approx(expected, rel=1e-9)
    # Every param group gets the same rate.
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([expected, expected], rel=1e-9)


def test_lr_warmup_uses_step_inside_epoch_like_official():
    # warmup_steps 30 > iters_per_epoch 20: at epoch 1, step 5 (t = 25) the official ramp uses 5, not 25.
    official = _scheduler(warmup_steps=30)
    assert official.lr_at(1, 5) == pytest.approx(1e-6 + 9.999e-3 * 5 / 30, rel=1e-12)  # 1.6675e-3
    fixed = _scheduler(warmup_steps=30, global_warmup=True)
    assert fixed.lr_at(1, 5) == pytest.approx(8.3335e-3, rel=1e-9)  # 1e-6 + 9.999e-3 * 25/30


def test_lr_without_warmup_ramp():
    # warmup_start_lr = -1 means "start at init_lr"; warmup_steps = 0 starts straight on the cosine at init_lr.
    ramp_off = _scheduler(warmup_start_lr=-1)
    assert ramp_off.lr_at(0, 0) == 1e-2
    assert ramp_off.lr_at(0, 5) == 1e-2
    assert _scheduler(warmup_steps=0).lr_at(0, 0) == pytest.approx(1e-2, rel=1e-12)


def test_lr_scheduler_state_roundtrip(tmp_path, caplog):
    sched = _scheduler()
    sched.step(1, 3)
    path = tmp_path / "sched.pt"
    torch.save(sched.state_dict(), path)
    state = torch.load(path, weights_only=True)

    opt = _optimizer()
    resumed = _scheduler(opt, init_lr=5e-2)  # a changed config is overridden by the checkpoint, loudly
    with caplog.at_level("WARNING"):
        resumed.load_state_dict(state)
    assert "init_lr=0.01" in caplog.text
    assert (resumed.last_epoch, resumed.last_step) == (1, 3)
    assert opt.param_groups[0]["lr"] == pytest.approx(sched.lr_at(1, 3))
    assert resumed.lr_at(1, 10) == sched.lr_at(1, 10)

    with pytest.raises(ValueError, match=r"missing keys \['last_lr'\]"):
        resumed.load_state_dict({k: v for k, v in state.items() if k != "last_lr"})


def test_lr_scheduler_rejects_bad_config():
    with pytest.raises(ValueError, match="iters_per_epoch must be > 0, got 0"):
        _scheduler(iters_per_epoch=0)


# ---------------------------------------------------------------- optimizer


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 3)  # weight decays, bias does not
        self.ln_speech = torch.nn.LayerNorm(3)  # 1-D: no decay
        self.ln_proj = torch.nn.Parameter(torch.ones(3, 3))  # 2-D but "ln" in the name: no decay (official)
        self.mask = torch.nn.Parameter(torch.ones(2, 5))  # a 2-D [L, H+1] mask
        self.frozen = torch.nn.Parameter(torch.ones(3, 3), requires_grad=False)


def test_optimizer_groups_follow_the_official_rule():
    toy = _Toy()
    opt = build_optimizer(toy.named_parameters(), init_lr=1e-2, weight_decay=0.05, beta2=0.98)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(toy.proj.weight), id(toy.mask)}
    expected_no_decay = {id(toy.proj.bias), id(toy.ln_speech.weight), id(toy.ln_speech.bias), id(toy.ln_proj)}
    assert {id(p) for p in no_decay["params"]} == expected_no_decay
    assert decay["betas"] == (0.9, 0.98) and decay["lr"] == 1e-2

    # A 2-D mask named in no_decay_names behaves like the official flat (1-D) mask vector.
    opt2 = build_optimizer(toy.named_parameters(), 1e-2, 0.05, no_decay_names=["mask"])
    assert {id(p) for p in opt2.param_groups[0]["params"]} == {id(toy.proj.weight)}
    assert is_no_decay("tensor", torch.zeros(88))


def test_optimizer_step_applies_decoupled_decay_only_to_group_zero():
    toy = _Toy()
    opt = build_optimizer(toy.named_parameters(), init_lr=1e-2, weight_decay=0.05)
    for p in toy.parameters():
        p.grad = torch.zeros_like(p)
    before_w, before_ln = toy.mask.detach().clone(), toy.ln_proj.detach().clone()
    opt.step()
    # Zero gradient: Adam's update is 0, so only decay acts: p * (1 - lr * wd) = 1 * (1 - 0.01 * 0.05).
    torch.testing.assert_close(toy.mask.detach(), before_w * 0.9995)
    torch.testing.assert_close(toy.ln_proj.detach(), before_ln)


def test_optimizer_errors_name_the_problem():
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(frozen.named_parameters(), 1e-2, 0.05)
    with pytest.raises(ValueError, match=r"\['mask_logits'\]"):
        build_optimizer(_Toy().named_parameters(), 1e-2, 0.05, no_decay_names=["mask_logits"])


def test_grad_scaler_only_for_amp_on_an_accelerator():
    assert build_grad_scaler(torch.device("cpu"), amp=True) is None
    assert build_grad_scaler(torch.device("cuda", 0), amp=False) is None
    with warnings.catch_warnings():
        # Without CUDA torch warns and disables the scaler; here we only check the factory's choice.
        warnings.simplefilter("ignore")
        scaler = build_grad_scaler(torch.device("cuda", 0), amp=True)
    assert isinstance(scaler, torch.amp.GradScaler)
