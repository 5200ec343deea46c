"""The reference AR optimiser setup: nanoGPT parameter groups and the VAR-style lr / weight-decay schedule.

IBQ's ``Net2NetTransformer`` (reference §4.7) sets lr and weight decay at the start of every training step from
the optimizer-step counter ``it``:

* lr factor: linear warm-up from ``wp0 = 0.005`` over ``wp_it`` steps, a constant plateau for the first 5 % of the
  remaining steps, then a linear decay to ``wpe`` at ``max_it - 1``;
* weight decay: a half-cosine from the initial value (0.05) to ``twde`` (constant when ``twde == 0``), written to
  *every* param group (the no-decay group included: the "weight-decay quirk").

The lr factor is a :class:`torch.optim.lr_scheduler.LambdaLR` (so HF ``Trainer`` saves and restores it like any
scheduler); the weight decay is set by :class:`WeightDecayScheduleCallback`, recomputed from ``global_step`` so it
needs no state of its own and resumes exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

WARMUP_START_FACTOR = 0.005  # the reference `wp0`
PLATEAU_FRACTION = 0.05  # lr stays at its peak for the first 5 % of the post-warm-up steps


def warmup_steps_from_epochs(warmup_epochs: float, steps_per_epoch: int) -> int:
    """``wp_it = round(wp · I)``: the reference gives warm-up in epochs (6 for B) of ``I`` optimizer steps."""
    if warmup_epochs < 0 or steps_per_epoch <= 0:
        raise ValueError(
            f"warmup_epochs must be >= 0 and steps_per_epoch > 0, got {warmup_epochs} and {steps_per_epoch}."
        )
    return round(warmup_epochs * steps_per_epoch)


@dataclass(frozen=True)
class VARLRLambda:
    """lr factor f(it) of the reference (a picklable callable, so ``LambdaLR.state_dict`` can hold it).

    f(it) = wp0 + (1 - wp0)·it/wp_it                     for it < wp_it
          = 1                                            for pasd < 0.05
          = wpe + (1 - wpe)·(1 - pasd)/0.95              otherwise,  pasd = (it - wp_it)/(max_it - 1 - wp_it)
    """

    num_warmup_steps: int
    num_training_steps: int
    final_lr_ratio: float = 0.1
    warmup_start_factor: float = WARMUP_START_FACTOR

    def __post_init__(self) -> None:
        _check_schedule(self.num_warmup_steps, self.num_training_steps)
        if not 0.0 <= self.final_lr_ratio <= 1.0:
            raise ValueError(f"final_lr_ratio (wpe) must lie in [0, 1], got {self.final_lr_ratio}.")

    def __call__(self, it: int) -> float:
        wp_it, max_it = self.num_warmup_steps, self.num_training_steps
        if it < wp_it:
            return self.warmup_start_factor + (1 - self.warmup_start_factor) * it / wp_it
        pasd = (it - wp_it) / (max_it - 1 - wp_it)
        if pasd < PLATEAU_FRACTION:
            return 1.0
        return self.final_lr_ratio + (1 - self.final_lr_ratio) * (1 - pasd) / (1 - PLATEAU_FRACTION)


def _check_schedule(num_warmup_steps: int, num_training_steps: int) -> None:
    if num_warmup_steps < 0:
        raise ValueError(f"num_warmup_steps must be >= 0, got {num_warmup_steps}.")
    if num_training_steps - 1 - num_warmup_steps <= 0:
        raise ValueError(
            f"num_training_steps ({num_training_steps}) must exceed num_warmup_steps ({num_warmup_steps}) + 1: "
            "the decay phase divides by max_it - 1 - wp_it."
        )


def var_lr_lambda(num_warmup_steps: int, num_training_steps: int, final_lr_ratio: float = 0.1) -> VARLRLambda:
    """The reference lr factor as a callable ``it -> f(it)`` (see :class:`VARLRLambda`)."""
    return VARLRLambda(num_warmup_steps, num_training_steps, final_lr_ratio)


def get_var_schedule(
    optimizer: torch.optim.Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    final_lr_ratio: float = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` whose lr at optimizer step ``it`` (0-based) is ``base_lr · f(it)``, as in the reference.

    ``num_training_steps`` is ``max_it`` (optimizer steps of the whole run), ``num_warmup_steps`` is ``wp_it``,
    ``final_lr_ratio`` is ``wpe`` (0.1 for B/L, 0.01 for XL/XXL).
    """
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, var_lr_lambda(num_warmup_steps, num_training_steps, final_lr_ratio)
    )


def var_weight_decay(it: int, num_training_steps: int, initial: float = 0.05, final: float = 0.0) -> float:
    """wd(it) = wd_end + (wd0 - wd_end)·(0.5 + 0.5·cos(π·it/(max_it - 1))), wd_end = ``final`` or ``initial`` if 0.

    ``final`` is the reference ``twde`` (0 for B/L/XL, so wd stays 0.05; 0.08 for XXL).
    """
    if num_training_steps < 2:
        raise ValueError(
            f"num_training_steps must be >= 2 for the cosine wd schedule, got {num_training_steps}."
        )
    end = final if final else initial
    return end + (initial - end) * (0.5 + 0.5 * math.cos(math.pi * it / (num_training_steps - 1)))


class WeightDecayScheduleCallback(TrainerCallback):
    """Writes :func:`var_weight_decay` of ``state.global_step`` into param groups at the start of every step.

    ``decay_all_groups=True`` reproduces the reference quirk (every group, biases and norms included, is decayed);
    ``False`` only updates groups whose weight decay is non-zero. The Trainer's optimizer must be reachable as the
    ``optimizer`` callback argument (:class:`~ibq_hf.training.ar_trainer.IBQARTrainer` arranges that).
    """

    def __init__(
        self,
        num_training_steps: int,
        initial: float = 0.05,
        final: float = 0.0,
        decay_all_groups: bool = True,
    ) -> None:
        var_weight_decay(0, num_training_steps, initial, final)  # validates the arguments
        self.num_training_steps = num_training_steps
        self.initial = initial
        self.final = final
        self.decay_all_groups = decay_all_groups

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set the weight decay of step ``step`` and return it."""
        wd = var_weight_decay(step, self.num_training_steps, self.initial, self.final)
        for group in optimizer.param_groups:
            if self.decay_all_groups or group.get("weight_decay", 0.0) > 0:
                group["weight_decay"] = wd
        return wd

    def on_step_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        optimizer: torch.optim.Optimizer | None = None,
        **kwargs: Any,
    ) -> None:
        if optimizer is None:
            raise ValueError(
                "WeightDecayScheduleCallback needs the optimizer; use IBQARTrainer or set "
                "trainer.callback_handler.optimizer."
            )
        self.apply(optimizer, state.global_step)


def ar_param_groups(
    model: nn.Module, weight_decay: float = 0.05, quirk_decay_all: bool = False
) -> list[dict[str, Any]]:
    """nanoGPT groups over trainable parameters: dim ≥ 2 (matrices, embeddings) decayed, dim < 2 not.

    With ``quirk_decay_all=True`` both groups get ``weight_decay``, which is what the reference ends up doing
    (its wd schedule overwrites every group) and what trained the released weights. Empty groups are dropped.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
    params: Iterable[nn.Parameter] = (p for p in model.parameters() if p.requires_grad)
    decay, no_decay = [], []
    for p in params:
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": weight_decay if quirk_decay_all else 0.0},
    ]
    return [g for g in groups if g["params"]]
