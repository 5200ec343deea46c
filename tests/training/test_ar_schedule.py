"""The VAR lr / wd schedule and the AdamW groups against the reference formulas (§4.7) at hand-picked steps."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ibq_hf.training.ar_schedule import (
    VARLRLambda,
    WeightDecayScheduleCallback,
    ar_param_groups,
    get_var_schedule,
    var_weight_decay,
    warmup_steps_from_epochs,
)


def test_lr_factor_at_hand_picked_steps():
    # wp_it = 10, max_it = 111 → decay denominator max_it - 1 - wp_it = 100, plateau while pasd < 0.05.
    f = VARLRLambda(num_warmup_steps=10, num_training_steps=111, final_lr_ratio=0.1)
    assert f(0) == pytest.approx(0.005)
    assert f(5) == pytest.approx(0.005 + 0.995 * 0.5)
    assert f(9) == pytest.approx(0.005 + 0.995 * 0.9)
    assert f(10) == 1.0  # pasd = 0
    assert f(14) == 1.0  # pasd = 0.04
    assert f(15) == pytest.approx(0.1 + 0.9 * 0.95 / 0.95)  # pasd = 0.05: decay starts (still 1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5 / 0.95)  # pasd = 0.5
    assert f(110) == pytest.approx(0.1)  # last step reaches wpe
    assert f(35) < f(34)


def test_lr_factor_without_warmup_and_errors():
    f = VARLRLambda(num_warmup_steps=0, num_training_steps=21, final_lr_ratio=0.01)
    assert f(0) == 1.0
    assert f(20) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="must exceed"):
        VARLRLambda(num_warmup_steps=10, num_training_steps=11)
    with pytest.raises(ValueError, match="wpe"):
        VARLRLambda(num_warmup_steps=0, num_training_steps=10, final_lr_ratio=1.5)
    assert warmup_steps_from_epochs(6, 1669) == 10014


def test_lambdalr_sets_base_lr_times_factor_and_round_trips():
    p = nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.AdamW([p], lr=3e-4)
    sched = get_var_schedule(opt, num_warmup_steps=4, num_training_steps=25, final_lr_ratio=0.1)
    f = VARLRLambda(4, 25, 0.1)
    lrs = []
    for _ in range(25):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([3e-4 * f(it) for it in range(25)])
    state = sched.state_dict()
    opt2 = torch.optim.AdamW([p], lr=3e-4)
    sched2 = get_var_schedule(opt2, 4, 25, 0.1)
    sched2.load_state_dict(state)
    assert sched2.last_epoch == sched.last_epoch


def test_weight_decay_cosine():
    assert var_weight_decay(0, 101, 0.05, 0.08) == pytest.approx(0.05)
    assert var_weight_decay(50, 101, 0.05, 0.08) == pytest.approx(0.065)
    assert var_weight_decay(100, 101, 0.05, 0.08) == pytest.approx(0.08)
    assert var_weight_decay(25, 101, 0.05, 0.08) == pytest.approx(
        0.08 + (0.05 - 0.08) * (0.5 + 0.5 * math.cos(math.pi * 0.25))
    )
    # twde = 0 keeps it constant (B / L / XL).
    assert [var_weight_decay(i, 101, 0.05, 0.0) for i in (0, 37, 100)] == pytest.approx([0.05] * 3)


def _model() -> nn.Module:
    return nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 4), nn.LayerNorm(4))


def test_param_groups_nanogpt_and_quirk():
    model = _model()
    groups = ar_param_groups(model, 0.05, quirk_decay_all=False)
    decay, no_decay = groups
    assert all(p.dim() >= 2 for p in decay["params"]) and len(decay["params"]) == 2
    assert all(p.dim() < 2 for p in no_decay["params"]) and len(no_decay["params"]) == 3
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.05, 0.0)
    quirk = ar_param_groups(model, 0.05, quirk_decay_all=True)
    assert [g["weight_decay"] for g in quirk] == [0.05, 0.05]
    model[2].weight.requires_grad_(False)
    assert sum(len(g["params"]) for g in ar_param_groups(model, 0.05)) == 4
    with pytest.raises(ValueError, match="weight_decay"):
        ar_param_groups(model, -1.0)


def test_weight_decay_callback_quirk_flag():
    opt = torch.optim.AdamW(ar_param_groups(_model(), 0.05, quirk_decay_all=False), lr=1e-3)
    WeightDecayScheduleCallback(11, 0.05, 0.08, decay_all_groups=False).apply(opt, 10)
    assert [g["weight_decay"] for g in opt.param_groups] == [pytest.approx(0.08), 0.0]
    WeightDecayScheduleCallback(11, 0.05, 0.08, decay_all_groups=True).apply(opt, 5)
    assert [g["weight_decay"] for g in opt.param_groups] == [pytest.approx(0.065)] * 2
