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

The reference gives warm-up and run length in epochs of ``I`` optimizer steps at global batch 768 and varies them,
``wpe`` and ``twde`` per model size (reference §4.1). :data:`AR_TRAINING_PRESETS` holds those settings per size and
:func:`resolve_ar_schedule` turns them (or explicit overrides) into optimizer steps for any global batch, the same
way for extracted codes (the dataset's length) and for streamed images (a pass size from the dataset's metadata or
given by the user).
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
REFERENCE_GLOBAL_BATCH_SIZE = 768  # every size: devices × per-device batch (reference §4.1)
REFERENCE_LEARNING_RATE = 3e-4  # peak lr at that global batch
DEFAULT_FINAL_LR_RATIO = 0.1  # `wpe` when no size preset applies
DEFAULT_FINAL_WEIGHT_DECAY = 0.0  # `twde` when no size preset applies (0: wd stays constant)


@dataclass(frozen=True)
class ARTrainingPreset:
    """The reference training settings of one AR model size (reference §4.1).

    ``num_train_epochs`` (``max_epochs``), ``warmup_epochs`` (``wp``), ``final_lr_ratio`` (``wpe``) and
    ``final_weight_decay`` (``twde``) are what :func:`resolve_ar_schedule` uses; ``num_devices`` ×
    ``per_device_batch_size`` = 768 is how the reference reached its global batch.
    """

    num_train_epochs: int
    warmup_epochs: float
    final_lr_ratio: float
    final_weight_decay: float
    num_devices: int
    per_device_batch_size: int


# Keyed like ibq_hf.models.configuration_ar.IBQ_AR_PRESETS (the architectures of the same names).
AR_TRAINING_PRESETS: dict[str, ARTrainingPreset] = {
    "B": ARTrainingPreset(300, 6, 0.1, 0.0, num_devices=32, per_device_batch_size=24),
    "L": ARTrainingPreset(350, 7, 0.1, 0.0, num_devices=64, per_device_batch_size=12),
    "XL": ARTrainingPreset(400, 8, 0.01, 0.0, num_devices=64, per_device_batch_size=12),
    "XXL": ARTrainingPreset(450, 9, 0.01, 0.08, num_devices=96, per_device_batch_size=8),
}


def ar_training_preset(name: str | None) -> ARTrainingPreset | None:
    """The reference settings of size ``name`` (``B``/``L``/``XL``/``XXL``, any case); ``None`` for ``None`` or
    ``"custom"``; an unknown name raises."""
    if name is None or name.lower() == "custom":
        return None
    key = name.upper()
    if key not in AR_TRAINING_PRESETS:
        raise ValueError(
            f"Unknown AR size preset {name!r}; choose one of {sorted(AR_TRAINING_PRESETS)} or 'custom'."
        )
    return AR_TRAINING_PRESETS[key]


def ar_training_preset_for_config(config: Any) -> str | None:
    """Name of the size whose width, depth and heads ``config`` has (vocabulary, classes and grid may differ, as
    when the recipe of a size is used on another dataset), else ``None``."""
    from ibq_hf.models.configuration_ar import preset_name

    return preset_name(config, fields=("hidden_size", "num_hidden_layers", "num_attention_heads"))


def global_batch_size(per_device_batch_size: int, world_size: int, gradient_accumulation_steps: int) -> int:
    """Examples per optimizer step over all processes: ``per_device × world × accumulation``."""
    if min(per_device_batch_size, world_size, gradient_accumulation_steps) < 1:
        raise ValueError(
            "per_device_batch_size, world_size and gradient_accumulation_steps must be >= 1, got "
            f"{per_device_batch_size}, {world_size}, {gradient_accumulation_steps}."
        )
    return per_device_batch_size * world_size * gradient_accumulation_steps


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
    """Optimizer steps in one pass over ``num_examples`` at ``global_batch`` examples per step.

    ``ceil(num_examples / global_batch)``: the reference's ``I`` (1,669 for ImageNet's 1,281,166 images at 768)
    and what ``Trainer`` counts for a map-style dataset (per-rank batches ``ceil(ceil(N / world) / per_device)``,
    the last accumulation window counted even when short; nested ceilings equal one ceiling).
    """
    if num_examples < 1 or global_batch < 1:
        raise ValueError(
            f"num_examples and global_batch must be >= 1, got {num_examples} and {global_batch}."
        )
    return math.ceil(num_examples / global_batch)


@dataclass(frozen=True)
class ARSchedule:
    """A resolved AR schedule in optimizer steps (what ``IBQARTrainingArguments`` needs).

    ``steps_per_epoch`` is ``None`` when the pass size is unknown (then nothing here was derived from epochs);
    ``sources`` says where each value came from (``"flag"``, ``"preset B"``, ``"default"``), for the run's log.
    """

    max_steps: int
    warmup_steps: int
    final_lr_ratio: float
    final_weight_decay: float
    steps_per_epoch: int | None
    sources: dict[str, str]

    def describe(self) -> str:
        """One line for the log: every value with its origin."""
        per_epoch = f"{self.steps_per_epoch} steps per epoch" if self.steps_per_epoch else "pass size unknown"
        return (
            f"AR schedule ({per_epoch}): max_steps {self.max_steps} [{self.sources['max_steps']}], warm-up "
            f"{self.warmup_steps} steps [{self.sources['warmup_steps']}], final_lr_ratio {self.final_lr_ratio} "
            f"[{self.sources['final_lr_ratio']}], final_weight_decay {self.final_weight_decay} "
            f"[{self.sources['final_weight_decay']}]"
        )


_PASS_SIZE_HINT = (
    "the number of examples per pass is unknown for this source (a stream has no length and its metadata gives "
    "no split size): pass --examples_per_epoch N"
)


def resolve_ar_schedule(
    preset: str | None,
    *,
    num_examples: int | None,
    global_batch: int,
    num_train_epochs: float | None = None,
    warmup_epochs: float | None = None,
    warmup_steps: float | None = None,
    max_steps: int | None = None,
    final_lr_ratio: float | None = None,
    final_weight_decay: float | None = None,
    default_num_train_epochs: float = 3.0,
) -> ARSchedule:
    """Turn the per-size reference settings and explicit overrides into optimizer steps.

    Every keyword left ``None`` is *not set by the user*: it comes from the size ``preset`` (``B``/``L``/``XL``/
    ``XXL``, :data:`AR_TRAINING_PRESETS`), else from the defaults (no warm-up, ``default_num_train_epochs``
    epochs, ``wpe`` 0.1, ``twde`` 0). An explicit value always wins: ``max_steps`` over epochs, ``warmup_steps`` or
    ``warmup_epochs`` (not both) over the preset's warm-up; ``warmup_steps`` in (0, 1) is a fraction of the run,
    as in ``TrainingArguments``.

    Epochs become steps through :func:`steps_per_epoch` (``num_examples`` per pass at ``global_batch`` =
    per-device × processes × accumulation): warm-up ``round(wp · I)``, total ``ceil(epochs · I)``. Whenever a value
    must be derived from epochs and ``num_examples`` is ``None`` (a stream without metadata), this raises and
    names the flag that supplies the pass size.
    """
    recipe = ar_training_preset(preset)
    origin = f"preset {preset.upper()}" if recipe is not None and preset is not None else "default"
    per_epoch = steps_per_epoch(num_examples, global_batch) if num_examples is not None else None
    sources: dict[str, str] = {}

    def epochs_to_steps(epochs: float, what: str, rounding: Any) -> int:
        if per_epoch is None:
            raise ValueError(
                f"The {what} is given in epochs ({epochs}), but {_PASS_SIZE_HINT} (or give the {what} in steps)."
            )
        return int(rounding(epochs * per_epoch))

    if max_steps is not None and max_steps > 0:
        total, sources["max_steps"] = max_steps, "flag"
    else:
        if num_train_epochs is not None:
            epochs, sources["max_steps"] = num_train_epochs, "flag --num_train_epochs"
        elif recipe is not None:
            epochs, sources["max_steps"] = (
                recipe.num_train_epochs,
                f"{origin}: {recipe.num_train_epochs} epochs",
            )
        else:
            epochs, sources["max_steps"] = (
                default_num_train_epochs,
                f"default: {default_num_train_epochs} epochs",
            )
        if epochs <= 0:
            raise ValueError(f"num_train_epochs must be > 0, got {epochs}.")
        total = epochs_to_steps(epochs, "run length (--num_train_epochs)", math.ceil)

    if warmup_steps is not None and warmup_epochs is not None:
        raise ValueError("Give the warm-up once: --warmup_steps or --warmup_epochs, not both.")
    if warmup_steps is not None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
        # as TrainingArguments: a value in (0, 1) is a fraction of the run
        warmup = (
            int(warmup_steps) if warmup_steps >= 1 or warmup_steps == 0 else math.ceil(total * warmup_steps)
        )
        sources["warmup_steps"] = "flag --warmup_steps"
    elif warmup_epochs is not None or recipe is not None:
        wp = warmup_epochs if warmup_epochs is not None else recipe.warmup_epochs  # type: ignore[union-attr]
        sources["warmup_steps"] = (
            f"flag --warmup_epochs {wp}" if warmup_epochs is not None else f"{origin}: {wp} epochs"
        )
        if wp < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {wp}.")
        warmup = epochs_to_steps(wp, "warm-up (--warmup_epochs)", round)
    else:
        warmup, sources["warmup_steps"] = 0, "default"

    def pick(value: float | None, preset_value: float | None, default: float, key: str) -> float:
        if value is not None:
            sources[key] = "flag"
            return value
        if preset_value is not None:
            sources[key] = origin
            return preset_value
        sources[key] = "default"
        return default

    ratio = pick(final_lr_ratio, recipe and recipe.final_lr_ratio, DEFAULT_FINAL_LR_RATIO, "final_lr_ratio")
    twde = pick(
        final_weight_decay,
        recipe and recipe.final_weight_decay,
        DEFAULT_FINAL_WEIGHT_DECAY,
        "final_weight_decay",
    )
    _check_schedule(warmup, total)
    return ARSchedule(total, warmup, ratio, twde, per_epoch, sources)


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
