"""PatchGAN, hinge / non-saturating losses, LeCam (LPIPS, shared with evaluation: tests/test_lpips.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ibq_hf.training.losses import (
    LeCamRegularizer,
    NLayerDiscriminator,
    hinge_d_loss,
    non_saturating_g_loss,
)

# ------------------------------------------------------------------------------------------ PatchGAN


def test_discriminator_layout_params_and_output_shape() -> None:
    torch.manual_seed(0)
    disc = NLayerDiscriminator()
    assert sum(p.numel() for p in disc.parameters()) == 2_765_633
    conv_keys = sorted({k.split(".")[1] for k in disc.state_dict()}, key=int)
    assert conv_keys == ["0", "2", "3", "5", "6", "8", "9", "11"]
    assert disc.main[0].bias is not None and disc.main[2].bias is None and disc.main[11].bias is not None
    assert disc(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    assert disc(torch.zeros(2, 3, 32, 32)).shape == (2, 1, 2, 2)


def test_discriminator_init_statistics() -> None:
    torch.manual_seed(0)
    disc = NLayerDiscriminator()
    w = disc.main[8].weight  # 2M values
    assert abs(float(w.detach().mean())) < 1e-3 and abs(float(w.detach().std()) - 0.02) < 1e-3
    bn = disc.main[9]
    assert (
        abs(float(bn.weight.detach().mean()) - 1.0) < 5e-3
        and abs(float(bn.weight.detach().std()) - 0.02) < 5e-3
    )
    assert torch.equal(bn.bias, torch.zeros(512))


# ------------------------------------------------------------------------------------------ losses


def test_hinge_and_non_saturating_against_formulas() -> None:
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(3, 1, 4, 5, generator=g) * 2, torch.randn(3, 1, 4, 5, generator=g) * 2
    expected_d = 0.5 * (torch.clamp(1 - real, min=0).mean() + torch.clamp(1 + fake, min=0).mean())
    torch.testing.assert_close(hinge_d_loss(real, fake), expected_d)
    m = fake.mean(dim=(1, 2, 3))
    expected_g = torch.log1p(torch.exp(-m)).mean()
    torch.testing.assert_close(non_saturating_g_loss(fake), expected_g)
    # patch-averaging happens before the softplus: differs from averaging softplus over patches
    assert not torch.allclose(non_saturating_g_loss(fake), F.softplus(-fake).mean())
    bce = F.binary_cross_entropy_with_logits(m, torch.ones_like(m))
    torch.testing.assert_close(non_saturating_g_loss(fake), bce)


def test_lecam_ema_update_then_regulariser() -> None:
    lecam = LeCamRegularizer()
    assert {k for k, _ in lecam.named_buffers()} == {"ema_real", "ema_fake"}
    g = torch.Generator().manual_seed(0)
    ema_r = ema_f = 0.0
    for _ in range(3):
        real, fake = torch.randn(2, 1, 3, 3, generator=g) + 1, torch.randn(2, 1, 3, 3, generator=g) - 1
        reg = lecam(real, fake)
        ema_r = ema_r * 0.999 + float(real.mean()) * 0.001
        ema_f = ema_f * 0.999 + float(fake.mean()) * 0.001
        expected = torch.relu(real - ema_f).pow(2).mean() + torch.relu(ema_r - fake).pow(2).mean()
        torch.testing.assert_close(reg, expected)
    assert abs(float(lecam.ema_real) - ema_r) < 1e-7 and abs(float(lecam.ema_fake) - ema_f) < 1e-7

    lecam.eval()  # no update in eval mode
    before = lecam.state_dict()
    lecam(real, fake)
    assert all(torch.equal(before[k], v) for k, v in lecam.state_dict().items())
    restored = LeCamRegularizer()
    restored.load_state_dict(before)  # checkpointed with the module
    assert torch.equal(restored.ema_real, lecam.ema_real)


def test_lecam_gradient_reaches_logits_not_ema() -> None:
    lecam = LeCamRegularizer(init=0.5)
    real = torch.tensor([1.0, 0.2], requires_grad=True)
    fake = torch.tensor([-1.0, 0.7], requires_grad=True)
    lecam(real, fake, update=False).backward()
    # d/dreal relu(real - 0.5)^2 / 2 = (real - 0.5) where positive; d/dfake -relu(0.5 - fake) ... / 2
    torch.testing.assert_close(real.grad, torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(fake.grad, torch.tensor([-1.5, 0.0]))
    with pytest.raises(ValueError, match="decay"):
        LeCamRegularizer(decay=1.5)
