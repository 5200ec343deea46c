"""LPIPS (structure, numerics, weight loading), PatchGAN, hinge / non-saturating losses, LeCam."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ibq_hf.errors import CheckpointKeyError
from ibq_hf.training.losses import (
    LPIPS,
    LPIPS_CHANNELS,
    LeCamRegularizer,
    NLayerDiscriminator,
    hinge_d_loss,
    non_saturating_g_loss,
)

CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
CONV_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)


@pytest.fixture(scope="module")
def lpips() -> LPIPS:
    torch.manual_seed(0)
    return LPIPS.from_pretrained_weights(random_backbone=True).eval()


def _torchvision_vgg16_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with torchvision's vgg16 key names and shapes (random values), classifier included."""
    g = torch.Generator().manual_seed(seed)
    state, in_ch = {}, 3
    for idx, ch in zip(CONV_INDICES, CONV_CHANNELS):
        state[f"features.{idx}.weight"] = torch.randn(ch, in_ch, 3, 3, generator=g) * 0.05
        state[f"features.{idx}.bias"] = torch.randn(ch, generator=g) * 0.01
        in_ch = ch
    state["classifier.0.weight"] = torch.zeros(4, 4)  # ignored
    return state


def _heads_state(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        f"lin{k}.model.1.weight": torch.rand(1, ch, 1, 1, generator=g) for k, ch in enumerate(LPIPS_CHANNELS)
    }


def test_lpips_keys_follow_reference_layout(lpips: LPIPS) -> None:
    keys = set(lpips.state_dict())
    assert {"scaling_layer.shift", "scaling_layer.scale"} <= keys
    convs = {k for k in keys if k.startswith("net.")}
    expected = set(lpips.backbone_keys().values())
    assert convs == expected and len(convs) == 26
    assert "net.slice2.5.weight" in convs and "net.slice5.28.bias" in convs
    assert {f"lin{k}.model.1.weight" for k in range(5)} <= keys
    assert all(not p.requires_grad for p in lpips.parameters())
    n_heads = sum(getattr(lpips, f"lin{k}").model[1].weight.numel() for k in range(5))
    assert n_heads == 1472


def test_lpips_shapes_zero_and_symmetry(lpips: LPIPS) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    y = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    d = lpips(x, y)
    assert d.shape == (2, 1, 1, 1)
    assert (d > 0).all()
    torch.testing.assert_close(lpips(x, x), torch.zeros(2, 1, 1, 1))
    torch.testing.assert_close(lpips(y, x), d)
    with pytest.raises(ValueError, match="equal shape"):
        lpips(x, y[:1])
    with pytest.raises(ValueError, match="16x16"):
        lpips(x[..., :8, :8], y[..., :8, :8])


def test_lpips_gradient_flows_to_inputs_only(lpips: LPIPS) -> None:
    x = (torch.rand(1, 3, 16, 16) * 2 - 1).requires_grad_(True)
    lpips(x, torch.zeros_like(x)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in lpips.parameters())


def test_lpips_first_layer_matches_direct_computation() -> None:
    model = LPIPS()
    model.load_vgg16_state_dict(_torchvision_vgg16_state())
    model.load_heads_state_dict(_heads_state())
    model.eval()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    y = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    vgg, heads = _torchvision_vgg16_state(), _heads_state()
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def relu1_2(img: torch.Tensor) -> torch.Tensor:
        h = F.relu(
            F.conv2d((img - shift) / scale, vgg["features.0.weight"], vgg["features.0.bias"], padding=1)
        )
        return F.relu(F.conv2d(h, vgg["features.2.weight"], vgg["features.2.bias"], padding=1))

    fx, fy = relu1_2(x), relu1_2(y)
    nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    direct = (
        ((nx - ny) ** 2 * heads["lin0.model.1.weight"]).sum(1, keepdim=True).mean(dim=(2, 3), keepdim=True)
    )
    layers = model.layer_distances(x, y)
    torch.testing.assert_close(layers[0], direct, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(model(x, y), sum(layers))


def test_lpips_dropout_active_in_train_mode_only(lpips: LPIPS) -> None:
    x, y = torch.rand(1, 3, 16, 16) * 2 - 1, torch.rand(1, 3, 16, 16) * 2 - 1
    try:
        lpips.train()
        torch.manual_seed(0)
        a = lpips(x, y)
        torch.manual_seed(1)
        b = lpips(x, y)
        assert not torch.allclose(a, b)
    finally:
        lpips.eval()
    assert torch.equal(lpips(x, y), lpips(x, y))


def test_lpips_weight_loading_files_and_strictness(tmp_path: Path) -> None:
    vgg_path, heads_path = tmp_path / "vgg16.pth", tmp_path / "heads.pth"
    torch.save(_torchvision_vgg16_state(), vgg_path)
    torch.save(_heads_state(), heads_path)
    model = LPIPS.from_pretrained_weights(vgg_path=vgg_path, heads_path=heads_path)
    torch.testing.assert_close(
        getattr(model.net.slice3, "12").weight, _torchvision_vgg16_state()["features.12.weight"]
    )
    torch.testing.assert_close(model.lin4.model[1].weight, _heads_state()["lin4.model.1.weight"])

    broken = _torchvision_vgg16_state()
    del broken["features.28.bias"]
    broken["features.30.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointKeyError, match=r"features\.28\.bias") as info:
        LPIPS().load_vgg16_state_dict(broken)
    assert info.value.missing == ["features.28.bias"] and info.value.unexpected == ["features.30.weight"]
    bad_shape = _torchvision_vgg16_state()
    bad_shape["features.0.weight"] = torch.zeros(64, 1, 3, 3)
    with pytest.raises(CheckpointKeyError, match="Mis-shaped"):
        LPIPS().load_vgg16_state_dict(bad_shape)
    heads = _heads_state()
    heads["lin5.model.1.weight"] = torch.zeros(1, 8, 1, 1)
    with pytest.raises(CheckpointKeyError, match="lin5"):
        LPIPS().load_heads_state_dict(heads)


def test_lpips_without_heads_gives_clear_error(tmp_path: Path) -> None:
    vgg_path = tmp_path / "vgg16.pth"
    torch.save(_torchvision_vgg16_state(), vgg_path)
    with pytest.raises(ValueError, match="pip install lpips"):
        LPIPS.from_pretrained_weights(vgg_path=vgg_path)


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
