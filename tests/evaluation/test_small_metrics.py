"""Inception Score, precision/recall, codebook usage and LPIPS plumbing against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ibq_hf.evaluation import (
    LPIPSAlex,
    LPIPSMeter,
    WeightsUnavailableError,
    inception_score,
    load_lpips,
    manifold_radii,
    precision_recall,
)
from ibq_hf.models.quantizer import CodebookUsage


def test_inception_score_known_values():
    eye = np.eye(10)
    assert inception_score(eye)[0] == pytest.approx(10.0)  # confident and diverse: IS = #classes
    assert inception_score(np.tile(eye[:1], (10, 1)))[0] == pytest.approx(1.0)  # one class only
    assert inception_score(np.full((6, 10), 0.1))[0] == pytest.approx(1.0)  # no confidence
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5) * 0.3, size=12)
    marginal = p.mean(0)
    direct = np.exp(np.mean([np.sum(row * (np.log(row) - np.log(marginal))) for row in p]))
    assert inception_score(p)[0] == pytest.approx(direct, rel=1e-10)
    mean, std = inception_score(p, split_size=4)  # 3 splits
    parts = [inception_score(p[i : i + 4])[0] for i in (0, 4, 8)]
    assert mean == pytest.approx(np.mean(parts)) and std == pytest.approx(np.std(parts))


def _brute_force_pr(ref: np.ndarray, sam: np.ndarray, k: int) -> tuple[float, float]:
    def radii(x):
        d = ((x[:, None] - x[None]) ** 2).sum(-1)
        return np.sort(d, axis=1)[:, k]

    def inside(points, manifold, r):
        d = ((points[:, None] - manifold[None]) ** 2).sum(-1)
        return float(np.mean((d <= r[None]).any(1)))

    return inside(sam, ref, radii(ref)), inside(ref, sam, radii(sam))


def test_precision_recall_against_brute_force():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(70, 6))
    sam = rng.normal(0.7, 0.6, size=(50, 6))
    result = precision_recall(ref, sam, k=3, batch_size=16)  # several row blocks
    precision, recall = _brute_force_pr(ref, sam, 3)
    assert result["precision"] == pytest.approx(precision) and result["recall"] == pytest.approx(recall)
    assert 0 < result["precision"] < 1 and 0 < result["recall"] < 1
    same = precision_recall(ref, ref, k=3)
    assert same == {"precision": 1.0, "recall": 1.0}
    far = precision_recall(ref, ref + 100.0, k=3)
    assert far == {"precision": 0.0, "recall": 0.0}
    np.testing.assert_allclose(
        manifold_radii(ref, 3).numpy(), np.sort(((ref[:, None] - ref[None]) ** 2).sum(-1), 1)[:, 3], rtol=1e-4
    )
    with pytest.raises(ValueError, match="more than k"):
        manifold_radii(ref[:3], 3)


def test_codebook_usage_on_known_index_sets():
    usage = CodebookUsage(8)
    usage.update(torch.tensor([[0, 1], [1, 2]]))
    out = usage.compute()
    assert out["used"] == 3 and out["utilization"] == 3 / 8
    assert out["perplexity"] == pytest.approx(2**1.5)  # p = (1/4, 1/2, 1/4): entropy 1.5 bits
    uniform = CodebookUsage(16)
    uniform.update(torch.arange(16).repeat(3))
    assert uniform.compute()["perplexity"] == pytest.approx(16.0) and uniform.compute()["utilization"] == 1.0


def test_lpips_unavailable_without_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    for net in ("vgg", "alex"):
        with pytest.raises(WeightsUnavailableError, match=r"torch\.hub cache"):
            load_lpips(net)
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "backbone.pth")
    with pytest.raises(WeightsUnavailableError, match="heads"):
        load_lpips("alex", backbone_path=tmp_path / "backbone.pth")
    with pytest.raises(ValueError, match="'vgg' or 'alex'"):
        load_lpips("squeeze")


def test_lpips_alex_loads_torchvision_layout(tmp_path):
    """A torchvision-keyed AlexNet file and lpips-keyed heads load by key; identical images give 0."""
    torch.manual_seed(0)
    reference = LPIPSAlex()
    indices = (0, 3, 6, 8, 10)
    backbone = {
        f"features.{i}.{p}": getattr(reference.convs[j], p).detach().clone()
        for j, i in enumerate(indices)
        for p in ("weight", "bias")
    }
    backbone["classifier.1.weight"] = torch.zeros(4096, 9216)
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 192, 384, 256, 256))}
    torch.save(backbone, tmp_path / "alexnet.pth")
    torch.save(heads, tmp_path / "alex.pth")
    model = load_lpips("alex", backbone_path=tmp_path / "alexnet.pth", heads_path=tmp_path / "alex.pth")
    torch.testing.assert_close(model.convs[2].weight, reference.convs[2].weight)
    torch.testing.assert_close(model.lins[4].weight, heads["lin4.model.1.weight"])
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    meter = LPIPSMeter(model)
    meter.update(x, x)
    assert meter.compute() == pytest.approx(0.0, abs=1e-7)
    d = model(x, y)
    assert d.shape == (2,) and (d > 0).all()
    vgg = load_lpips("vgg", random_weights=True)  # plumbing only: random backbone
    assert vgg(x, y).reshape(-1).shape == (2,)
