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


def test_modules_give_exactly_the_accumulators_numbers():
    """One implementation: each module's result equals the accumulators' (as the runners use them) on the same
    images — FID / IS / precision-recall through `evaluate_generation`, the others through their accumulator."""
    from ibq_hf.evaluation import PSNRSSIM, LPIPSMeter, evaluate_generation, load_lpips
    from ibq_hf.models.quantizer import CodebookUsage

    stub = StubInception()
    images = torch.from_numpy(photo_crops(32, 3)).permute(0, 3, 1, 2).float() / 255  # 12 images
    fake, real = images[:7], images[5:]
    runner = evaluate_generation([fake[:4], fake[4:]], [real], stub, precision_recall_k=3, progress=False)
    results = {}
    for name in ("fid", "inception_score", "precision_recall"):
        module = evaluate.load(metric_path(name), inception=stub)
        module.add_batch(predictions=fake[:4], references=None if name == "inception_score" else real)
        results.update(module.compute(predictions=fake[4:]))  # the runner's network batches: equal bits
    assert results["fid"] == runner["fid"]
    assert results["inception_score"] == runner["inception_score"]
    assert results["inception_score_std"] == runner["inception_score_std"]
    assert (results["precision"], results["recall"]) == (runner["precision"], runner["recall"])

    x, y = images[:6] * 2 - 1, images[6:] * 2 - 1
    pixel = PSNRSSIM()
    pixel.update(y, x)  # originals, reconstructions
    assert evaluate.load(metric_path("psnr_ssim")).compute(predictions=x, references=y) == pixel.compute()
    meter = LPIPSMeter(load_lpips("alex", random_weights=True))
    meter.update(x, y)
    lpips = evaluate.load(metric_path("lpips"), net="alex", random_weights=True)
    assert lpips.compute(predictions=x, references=y) == {"lpips": meter.compute(), "count": 6}
    codes = torch.randint(0, 16, (5, 4, 4), generator=torch.Generator().manual_seed(0))
    usage = CodebookUsage(16)
    usage.update(codes)
    module = evaluate.load(metric_path("codebook_usage"), num_embeddings=16).compute(predictions=codes)
    assert module == {**usage.compute(), "num_tokens": 80}


def test_accumulators_merge_across_processes():
    """Two "processes" each accumulating half, merged, give the single-process result."""
    from ibq_hf.evaluation import (
        PSNRSSIM,
        InceptionFeatureAccumulator,
        LPIPSMeter,
        fid_from_accumulators,
        load_lpips,
        precision_recall,
    )

    stub = StubInception()
    images = torch.from_numpy(photo_crops(32, 3)).permute(0, 3, 1, 2).float() / 255
    halves = (images[:5], images[5:])

    def accumulator():
        return InceptionFeatureAccumulator(stub, keep_features=True, inception_score=True)

    whole, parts = accumulator(), [accumulator(), accumulator()]
    for part, half in zip(parts, halves):
        whole.update(half)  # the same network batches, so only the accumulation differs
        part.update(half)
    parts[0].merge(parts[1])
    merged = parts[0]
    reference = accumulator()
    reference.update(images.flip(0))
    assert merged.count == 12
    np.testing.assert_allclose(merged.stats.covariance, whole.stats.covariance, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(merged.features, whole.features)
    assert merged.inception_score.compute() == pytest.approx(whole.inception_score.compute(), rel=1e-6)
    assert fid_from_accumulators(merged, reference) == pytest.approx(
        fid_from_accumulators(whole, reference), rel=1e-9, abs=1e-9
    )
    assert precision_recall(reference.features, merged.features) == precision_recall(
        reference.features, whole.features
    )
    with pytest.raises(ValueError, match="keep_features"):
        merged.merge(InceptionFeatureAccumulator(stub))

    x, y = images * 2 - 1, images.flip(0) * 2 - 1
    model = load_lpips("alex", random_weights=True)
    for make, args in ((PSNRSSIM, ()), (LPIPSMeter, (model,))):
        one, a, b = make(*args), make(*args), make(*args)
        one.update(x, y)
        a.update(x[:5], y[:5])
        b.update(x[5:], y[5:])
        a.merge(b)
        assert a.count == one.count == 12
        assert a.compute() == pytest.approx(one.compute(), rel=1e-12)
