"""EMAModel: exact update formula, copy/store/restore, state round trip, strictness."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from ibq_hf.training.ema import EMAModel


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    model[2].bias.requires_grad_(False)  # frozen parameters are not tracked
    return model


def _perturb(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g))


def test_update_formula_is_exact() -> None:
    model = _model()
    ema = EMAModel(model, decay=0.999)
    assert set(ema.shadow) == {"0.weight", "0.bias", "1.weight", "1.bias", "2.weight"}
    expected = {k: v.clone() for k, v in ema.shadow.items()}
    for step in range(3):
        _perturb(model, step)
        ema.step(model)
        params = dict(model.named_parameters())
        for k in expected:
            expected[k] = expected[k] - (1 - 0.999) * (expected[k] - params[k].detach())
    assert ema.num_updates == 3
    for k, v in expected.items():
        assert torch.equal(ema.shadow[k], v), k  # bit-identical: same operations in the same order
    # the average is not the current parameter: the update really lags
    assert not torch.allclose(ema.shadow["0.weight"], model[0].weight)


def test_copy_store_restore() -> None:
    model = _model()
    ema = EMAModel(model, decay=0.5)
    _perturb(model, 1)
    ema.step(model)
    live = {k: v.clone() for k, v in model.state_dict().items()}
    ema.store(model)
    ema.copy_to(model)
    assert torch.equal(model[0].weight, ema.shadow["0.weight"])
    assert torch.equal(model[2].bias, live["2.bias"])  # untracked parameter left alone
    ema.restore(model)
    assert all(torch.equal(v, live[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="store"):
        ema.restore(model)


def test_state_dict_round_trip_and_strictness(tmp_path) -> None:
    model = _model()
    ema = EMAModel(model)
    _perturb(model, 2)
    ema.step(model)
    path = tmp_path / "ema.pt"
    torch.save(ema.state_dict(), path)
    other = EMAModel(_model(seed=5))
    other.load_state_dict(torch.load(path, weights_only=True))
    assert other.num_updates == 1 and other.decay == 0.999
    assert all(torch.equal(other.shadow[k], ema.shadow[k]) for k in ema.shadow)
    # continuing both gives identical results (resume)
    _perturb(model, 3)
    ema.step(model)
    other.step(model)
    assert all(torch.equal(other.shadow[k], ema.shadow[k]) for k in ema.shadow)

    bad = ema.state_dict()
    bad["shadow"] = {k: v for k, v in bad["shadow"].items() if k != "0.bias"}
    with pytest.raises(ValueError, match=r"missing \['0.bias'\]"):
        EMAModel(_model()).load_state_dict(bad)
    with pytest.raises(ValueError, match="lacks"):
        ema.step(nn.Linear(4, 3))
    with pytest.raises(ValueError, match="decay"):
        EMAModel(model, decay=2.0)
