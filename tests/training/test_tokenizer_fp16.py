"""``--fp16``: the discriminator step goes through accelerate's loss scaler like the generator's.

accelerate creates no fp16 ``GradScaler`` on CPU, so the tests inject ``torch.amp.GradScaler("cpu")`` into the
trainer's accelerator (what it holds on a GPU) before training.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import TINY_TOKENIZER_CONFIG
from ibq_hf import IBQVQModel
from ibq_hf.training.tokenizer_trainer import (
    IBQTokenizerTrainer,
    IBQTokenizerTrainingArguments,
    build_tokenizer_gan,
)


class _Images(torch.utils.data.Dataset):
    def __init__(self, n: int = 4) -> None:
        self.x = torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.x[i]}


def _collate(rows: list[dict]) -> dict:
    return {"pixel_values": torch.stack([r["pixel_values"] for r in rows])}


def _fp16_trainer(out: Path, scale: float | None) -> IBQTokenizerTrainer:
    args = IBQTokenizerTrainingArguments(
        output_dir=str(out), max_steps=1, per_device_train_batch_size=2, use_cpu=True, fp16=True, report_to=[],
        disable_tqdm=True, save_strategy="no", seed=0, disc_ndf=8, disc_num_layers=2,
    )  # fmt: skip
    torch.manual_seed(0)
    gan = build_tokenizer_gan(IBQVQModel(**TINY_TOKENIZER_CONFIG), args, no_lpips=True)
    trainer = IBQTokenizerTrainer(model=gan, args=args, train_dataset=_Images(), data_collator=_collate)
    assert trainer.accelerator.mixed_precision == "fp16" and trainer.accelerator.scaler is None  # CPU: none
    if scale is not None:
        trainer.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    trainer.create_optimizer()  # both optimisers now, so the test can hook the discriminator's
    return trainer


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def test_fp16_overflow_skips_the_discriminator_step(tmp_path, one_thread):
    trainer = _fp16_trainer(tmp_path, scale=2.0**10)
    d_before, g_before = _params(trainer.gan.discriminator), _params(trainer.gan.generator)
    # Force an overflow in D's gradients only (as an fp16 backward that exceeds 65504 would).
    first = next(trainer.gan.discriminator.parameters())
    first.register_hook(lambda grad: torch.full_like(grad, float("inf")))
    trainer.train()

    d_after = _params(trainer.gan.discriminator)
    assert all(torch.equal(d_before[k], d_after[k]) for k in d_before), "D stepped on inf gradients"
    assert not trainer.disc_optimizer.state  # Adam never ran for D: no moments, no step count
    assert trainer.disc_scheduler.last_epoch == 0  # lr schedule not advanced by the skipped step (as for G)
    # The scaler saw the overflow (scale halved once) and G, whose gradients are finite, still stepped.
    assert trainer.accelerator.scaler.get_scale() == 2.0**9
    g_after = _params(trainer.gan.generator)
    assert any(not torch.equal(g_before[k], g_after[k]) for k in g_before)
    assert all(torch.isfinite(v).all() for v in g_after.values())


@pytest.mark.slow  # two fp16 trainer steps (~2.2 s); default-suite budget
def test_fp16_discriminator_steps_on_unscaled_gradients(tmp_path, one_thread):
    """Without overflow D's optimiser sees the true gradients (divided back by the loss scale)."""

    def d_grads_at_step(out: Path, scale: float | None) -> dict[str, torch.Tensor]:
        trainer = _fp16_trainer(out, scale)
        seen: dict[str, torch.Tensor] = {}

        def record(optimizer, args, kwargs) -> None:
            names = {id(p): k for k, p in trainer.gan.discriminator.named_parameters()}
            for group in optimizer.param_groups:
                seen.update(
                    {names[id(p)]: p.grad.detach().clone() for p in group["params"] if p.grad is not None}
                )

        trainer.disc_optimizer.register_step_pre_hook(record)
        trainer.train()
        assert seen, "the discriminator optimiser did not step"
        return seen

    plain = d_grads_at_step(tmp_path / "plain", scale=None)  # fp16 autocast, no loss scaling
    scaled = d_grads_at_step(tmp_path / "scaled", scale=2.0**12)
    assert plain.keys() == scaled.keys()
    for name in plain:
        torch.testing.assert_close(scaled[name], plain[name], rtol=1e-3, atol=1e-6, msg=name)
