"""The shipped `evaluate` modules load offline from the package and agree with the library."""

from __future__ import annotations

import os

import evaluate
import numpy as np
import pytest
import torch
from evaluation_helpers import StubInception, inception_or_skip, photo_crops

from ibq_hf.evaluation import (
    METRICS,
    InceptionLogitsUnavailableError,
    WeightsUnavailableError,
    frechet_distance,
    metric_path,
    psnr_ssim,
)


@pytest.fixture
def fid_inception():
    return inception_or_skip()


def test_every_module_ships_as_package_data():
    for name in METRICS:
        assert os.path.isfile(os.path.join(metric_path(name), f"{name}.py"))
    with pytest.raises(ValueError, match="shipped evaluate modules"):
        metric_path("bleu")


def test_psnr_ssim_and_usage_modules():
    originals = photo_crops(48, 1)
    recons = np.clip(
        originals.astype(int) + np.random.default_rng(0).integers(-9, 9, originals.shape), 0, 255
    ).astype(np.uint8)
    metric = evaluate.load(metric_path("psnr_ssim"))
    metric.add_batch(predictions=recons[:2], references=originals[:2])
    metric.add_batch(predictions=list(recons[2:]), references=list(originals[2:]))
    result = metric.compute()
    psnr, ssim = psnr_ssim(originals, recons)
    assert result["count"] == 4
    assert result["psnr"] == pytest.approx(psnr.mean()) and result["ssim"] == pytest.approx(ssim.mean())

    usage = evaluate.load(metric_path("codebook_usage"), num_embeddings=8)
    usage.add_batch(predictions=np.array([[0, 1], [1, 2]]))
    usage.add(prediction=7)
    out = usage.compute()
    assert out["used"] == 4 and out["utilization"] == 0.5 and out["num_tokens"] == 5
    assert usage.compute(predictions=np.arange(8))["perplexity"] == pytest.approx(8.0)  # state was reset
    with pytest.raises(ValueError, match="num_embeddings"):
        evaluate.load(metric_path("codebook_usage"))


def test_fid_module_roundtrip(tmp_path, monkeypatch):
    """add_batch streams features (stand-in network: fast); same sets → 0, against the library otherwise."""
    stub = StubInception()
    images = torch.from_numpy(photo_crops(32, 2)).permute(0, 3, 1, 2).float() / 255
    metric = evaluate.load(metric_path("fid"), inception=stub)
    metric.add_batch(predictions=images[:4], references=images[4:])
    metric.add_batch(predictions=images[4:], references=images[:4])  # the same sets overall
    result = metric.compute()
    assert result["num_predictions"] == 8 and abs(result["fid"]) < 1e-6
    uint8 = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    got = metric.compute(predictions=list(uint8[:4]), references=uint8[4:])["fid"]  # PIL-like list and array
    a, b = (
        stub(torch.from_numpy(u).permute(0, 3, 1, 2).float() / 255).features.double().numpy()
        for u in (uint8[:4], uint8[4:])
    )
    assert got == pytest.approx(
        frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)), rel=1e-6
    )
    pr = evaluate.load(metric_path("precision_recall"), inception=stub).compute(
        predictions=images, references=images
    )
    assert pr == {"precision": 1.0, "recall": 1.0}
    score = evaluate.load(metric_path("inception_score"), inception=stub).compute(predictions=images)
    assert 1.0 <= score["inception_score"] <= 10.0


def test_unavailable_metrics_raise(fid_inception, tmp_path, monkeypatch):
    with pytest.raises(InceptionLogitsUnavailableError, match="pt_inception"):
        evaluate.load(metric_path("inception_score"), inception=fid_inception)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match=r"vgg16-397923af\.pth"):
        evaluate.load(metric_path("lpips"), net="vgg")
    lpips = evaluate.load(metric_path("lpips"), net="alex", random_weights=True)  # plumbing only
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert lpips.compute(predictions=x, references=x)["lpips"] == pytest.approx(0.0, abs=1e-7)


@pytest.mark.slow  # a 2048×2048 sqrtm: 0.5-3 min on 2 CPU cores
def test_fid_module_with_real_weights(fid_inception):
    images = torch.from_numpy(photo_crops(32, 1)).permute(0, 3, 1, 2).float() / 255
    metric = evaluate.load(metric_path("fid"), inception=fid_inception)
    result = metric.compute(predictions=images, references=images)
    assert abs(result["fid"]) < 1e-2
