"""The VAR lr / wd schedule and the AdamW groups against the reference formulas (§4.7) at hand-picked steps."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ibq_hf.training.ar_schedule import (
    AR_TRAINING_PRESETS,
    VARLRLambda,
    WeightDecayScheduleCallback,
    ar_param_groups,
    ar_training_preset_for_config,
    get_var_schedule,
    global_batch_size,
    resolve_ar_schedule,
    steps_per_epoch,
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


# ---- per-size presets and epochs → steps (reference §4.1, §4.7) ----------------------------------------------

IMAGENET_TRAIN = 1_281_166  # the reference's train split (one file filtered out)


@pytest.mark.parametrize(
    ("size", "epochs", "warmup_epochs", "wpe", "twde"),
    [
        ("B", 300, 6, 0.1, 0.0),
        ("L", 350, 7, 0.1, 0.0),
        ("XL", 400, 8, 0.01, 0.0),
        ("XXL", 450, 9, 0.01, 0.08),
    ],
)
def test_presets_give_the_reference_schedule_in_steps(size, epochs, warmup_epochs, wpe, twde):
    schedule = resolve_ar_schedule(size, num_examples=IMAGENET_TRAIN, global_batch=768)
    assert schedule.steps_per_epoch == 1669  # the reference's I
    assert schedule.max_steps == epochs * 1669  # 500.7k / 584.2k / 667.6k / 751.1k
    assert schedule.warmup_steps == round(warmup_epochs * 1669)  # 10.0k / 11.7k / 13.4k / 15.0k
    assert (schedule.final_lr_ratio, schedule.final_weight_decay) == (wpe, twde)
    assert set(schedule.sources.values()) == {f"preset {size}", f"preset {size}: {epochs} epochs",
                                              f"preset {size}: {warmup_epochs} epochs"}  # fmt: skip
    # The same global batch reached by accumulation (8 GPUs × 24 × 4) gives the same steps.
    accumulated = resolve_ar_schedule(
        size, num_examples=IMAGENET_TRAIN, global_batch=global_batch_size(24, 8, 4)
    )
    assert (accumulated.max_steps, accumulated.warmup_steps) == (schedule.max_steps, schedule.warmup_steps)


def test_explicit_values_override_the_preset():
    n = IMAGENET_TRAIN
    assert (
        resolve_ar_schedule("xl", num_examples=n, global_batch=768, final_lr_ratio=0.1).final_lr_ratio == 0.1
    )
    assert (
        resolve_ar_schedule(
            "XXL", num_examples=n, global_batch=768, final_weight_decay=0.0
        ).final_weight_decay
        == 0
    )
    s = resolve_ar_schedule("B", num_examples=n, global_batch=768, warmup_steps=100, num_train_epochs=10)
    assert (s.warmup_steps, s.max_steps) == (100, 16690)
    s = resolve_ar_schedule("B", num_examples=n, global_batch=768, warmup_epochs=1, max_steps=50_000)
    assert (s.warmup_steps, s.max_steps) == (1669, 50_000)
    assert resolve_ar_schedule("B", num_examples=n, global_batch=768, warmup_steps=0.1).warmup_steps == 50070
    # At another global batch the epochs stay epochs: a quarter of the batch, four times the steps.
    s = resolve_ar_schedule("B", num_examples=n, global_batch=192)
    assert (s.steps_per_epoch, s.warmup_steps, s.max_steps) == (6673, 40038, 2001900)
    with pytest.raises(ValueError, match="not both"):
        resolve_ar_schedule("B", num_examples=n, global_batch=768, warmup_steps=10, warmup_epochs=1)
    with pytest.raises(ValueError, match="preset"):
        resolve_ar_schedule("XXXL", num_examples=n, global_batch=768)


def test_custom_defaults_and_unknown_pass_size():
    s = resolve_ar_schedule("custom", num_examples=100, global_batch=8)
    assert (s.max_steps, s.warmup_steps, s.final_lr_ratio, s.final_weight_decay) == (39, 0, 0.1, 0.0)
    # A stream without a known pass size: fine in steps, an error that names the flag as soon as epochs are needed.
    s = resolve_ar_schedule(None, num_examples=None, global_batch=8, max_steps=100, warmup_steps=5)
    assert (s.max_steps, s.warmup_steps, s.steps_per_epoch) == (100, 5, None)
    for kwargs in ({"max_steps": 100, "warmup_epochs": 1}, {"warmup_steps": 5}):
        with pytest.raises(ValueError, match="--examples_per_epoch"):
            resolve_ar_schedule(None, num_examples=None, global_batch=8, **kwargs)
    with pytest.raises(ValueError, match="--examples_per_epoch"):  # the preset's warm-up is in epochs
        resolve_ar_schedule("B", num_examples=None, global_batch=8, max_steps=100)


@pytest.mark.parametrize(
    ("examples", "per_device", "accumulation"), [(37, 4, 1), (37, 4, 3), (40, 8, 5), (9, 2, 2)]
)
def test_steps_per_epoch_is_what_trainer_counts(tmp_path, examples, per_device, accumulation):
    """The schedule's epoch (ceil(N / global batch)) is Trainer's epoch for a map-style dataset."""
    from ibq_hf import IBQARConfig, IBQARForImageGeneration
    from ibq_hf.training.ar_trainer import ARCodesCollator, IBQARTrainer, IBQARTrainingArguments

    config = IBQARConfig(vocab_size=8, num_classes=2, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         grid_size=2, multiple_of=32)  # fmt: skip
    args = IBQARTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=per_device, gradient_accumulation_steps=accumulation,
        use_cpu=True, report_to=[],
    )  # fmt: skip
    rows = [{"input_ids": [0, 1, 2, 3], "label": 0}] * examples
    trainer = IBQARTrainer(
        model=IBQARForImageGeneration(config), args=args, train_dataset=rows, data_collator=ARCodesCollator(4)
    )
    batches = len(trainer.get_train_dataloader())
    trainer_steps = batches // accumulation + int(
        batches % accumulation > 0
    )  # Trainer's num_update_steps_per_epoch
    assert steps_per_epoch(examples, global_batch_size(per_device, 1, accumulation)) == trainer_steps


def test_trainer_takes_wpe_and_twde_from_the_model_size(tmp_path):
    """IBQARTrainingArguments leaves wpe / twde unset: the trainer uses the size's (XL/XXL 0.01, XXL twde 0.08)."""
    from ibq_hf import IBQARConfig, IBQARForImageGeneration
    from ibq_hf.models.configuration_ar import IBQ_AR_PRESETS
    from ibq_hf.training.ar_trainer import IBQARTrainer, IBQARTrainingArguments

    config = IBQARConfig(vocab_size=8, num_classes=2, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         grid_size=2, multiple_of=32)  # fmt: skip
    args = IBQARTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    assert (args.final_lr_ratio, args.final_weight_decay) == (None, None)
    trainer = IBQARTrainer(model=IBQARForImageGeneration(config), args=args)
    assert trainer.schedule_ends() == (0.1, 0.0)  # not a released size
    for size, expected in {"B": (0.1, 0.0), "L": (0.1, 0.0), "XL": (0.01, 0.0), "XXL": (0.01, 0.08)}.items():
        shape = {
            k: IBQ_AR_PRESETS[size][k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads")
        }
        trainer.model.config.update(
            shape
        )  # the size's shape on the config (building the model would be slow)
        assert ar_training_preset_for_config(trainer.model.config) == size
        assert trainer.schedule_ends() == expected
    trainer.args.final_lr_ratio, trainer.args.final_weight_decay = 0.5, 0.0  # explicit values win
    assert trainer.schedule_ends() == (0.5, 0.0)
    assert AR_TRAINING_PRESETS["XXL"].num_devices * AR_TRAINING_PRESETS["XXL"].per_device_batch_size == 768
