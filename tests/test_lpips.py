"""The one LPIPS (ibq_hf.lpips): VGG16 for training and evaluation, AlexNet for evaluation — structure,
numerics against direct computations, strict weight loading, and both users importing this implementation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ibq_hf.errors import CheckpointKeyError
from ibq_hf.evaluation import LPIPSAlex as EvaluationLPIPSAlex
from ibq_hf.evaluation import load_lpips
from ibq_hf.lpips import LPIPS, LPIPS_ALEX_CHANNELS, LPIPS_CHANNELS, LPIPSAlex
from ibq_hf.training import LPIPS as TrainingLPIPS

SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
ALEX_INDICES = (0, 3, 6, 8, 10)


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


# ------------------------------------------------------------------------------------------ AlexNet


def _alexnet_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision ``alexnet`` key names and shapes (random values), classifier included."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for index, shape in zip(
        ALEX_INDICES,
        ((64, 3, 11, 11), (192, 64, 5, 5), (384, 192, 3, 3), (256, 384, 3, 3), (256, 256, 3, 3)),
    ):
        state[f"features.{index}.weight"] = torch.randn(*shape, generator=g) * 0.05
        state[f"features.{index}.bias"] = torch.randn(shape[0], generator=g) * 0.01
    state["classifier.1.weight"] = torch.zeros(4, 4)  # ignored
    return state


def _alex_heads(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g)
        for k, c in enumerate(LPIPS_ALEX_CHANNELS)
    }


def test_alex_matches_direct_computation(tmp_path: Path) -> None:
    """All five taps computed with bare F.conv2d / max_pool2d; forward sums them to [B], without a graph."""
    torch.save(_alexnet_state(), tmp_path / "alexnet.pth")
    torch.save(_alex_heads(), tmp_path / "alex.pth")
    model = LPIPSAlex.from_pretrained_weights(tmp_path / "alexnet.pth", tmp_path / "alex.pth")
    assert not model.training and all(not p.requires_grad for p in model.parameters())
    state, heads = _alexnet_state(), _alex_heads()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    y = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1

    def taps(img: torch.Tensor) -> list[torch.Tensor]:
        h, out = (img - SHIFT) / SCALE, []
        for j, (index, stride, padding) in enumerate(zip(ALEX_INDICES, (4, 1, 1, 1, 1), (2, 2, 1, 1, 1))):
            if j in (1, 2):
                h = F.max_pool2d(h, 3, 2)
            w, b = state[f"features.{index}.weight"], state[f"features.{index}.bias"]
            h = F.relu(F.conv2d(h, w, b, stride=stride, padding=padding))
            out.append(h)
        return out

    direct = torch.zeros(2)
    for k, (fx, fy) in enumerate(zip(taps(x), taps(y))):
        nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        direct += ((nx - ny) ** 2 * heads[f"lin{k}.model.1.weight"]).sum(1).mean(dim=(1, 2))
    d = model(x.requires_grad_(True), y)
    assert d.shape == (2,) and not d.requires_grad
    torch.testing.assert_close(d, direct, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(model(x, x), torch.zeros(2))


def test_alex_loading_is_strict(tmp_path: Path) -> None:
    broken = _alexnet_state()
    del broken["features.10.bias"]
    with pytest.raises(CheckpointKeyError, match=r"features\.10\.bias") as info:
        LPIPSAlex().load_torchvision_alexnet(broken)
    assert info.value.missing == ["features.10.bias"]
    bad_shape = _alexnet_state()
    bad_shape["features.0.weight"] = torch.zeros(64, 1, 11, 11)
    with pytest.raises(CheckpointKeyError, match="Mis-shaped"):
        LPIPSAlex().load_torchvision_alexnet(bad_shape)
    heads = _alex_heads()
    heads.pop("lin4.model.1.weight")
    with pytest.raises(CheckpointKeyError, match="lin4"):
        LPIPSAlex().load_heads(heads)
    torch.save(_alexnet_state(), tmp_path / "alexnet.pth")
    with pytest.raises(ValueError, match="pip install --no-deps lpips"):
        LPIPSAlex.from_pretrained_weights(tmp_path / "alexnet.pth")  # no heads file, no lpips wheel here
    with pytest.raises(ValueError, match="alexnet_path"):
        LPIPSAlex.from_pretrained_weights()


# ------------------------------------------------------------------------------------------ one implementation


def test_training_and_evaluation_use_this_implementation() -> None:
    from ibq_hf.training import losses

    assert TrainingLPIPS is LPIPS
    assert not hasattr(losses, "LPIPS")  # no second copy
    assert EvaluationLPIPSAlex is LPIPSAlex
    vgg = load_lpips("vgg", random_weights=True)
    alex = load_lpips("alex", random_weights=True)
    assert type(vgg) is LPIPS and type(alex) is LPIPSAlex
    # evaluation: deterministic (eval mode, no dropout module at all); training keeps it (see the dropout test)
    assert not vgg.training and not any(isinstance(m, torch.nn.Dropout) for m in vgg.modules())
    assert LPIPS_CHANNELS == (64, 128, 256, 512, 512)
