"""PSNR / SSIM exactly as the reference (§6) on scikit-image's photos, against direct skimage calls."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from evaluation_helpers import photo_crops
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ibq_hf.evaluation import PSNRSSIM, psnr_ssim, to_unit_range, truncate_to_uint8
from ibq_hf.evaluation.image_metrics import psnr_uint8


def _degrade(images: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noisy = images.astype(np.float64) / 127.5 - 1 + rng.normal(0, 0.05, images.shape)
    return np.clip(noisy, -1, 1)  # float reconstructions in [-1, 1]


def test_psnr_ssim_match_skimage_on_photos():
    originals = photo_crops(96, 2)
    recons = _degrade(originals, 0)
    psnr, ssim = psnr_ssim(originals, recons)
    for k in range(len(originals)):
        # independent reference: uint8 truncation of (x + 1) / 2 · 255, then skimage with data_range 1
        a = originals[k].astype(np.float64) / 255
        b = (((recons[k] + 1) / 2) * 255).astype(np.uint8).astype(np.float64) / 255
        assert psnr[k] == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), abs=1e-10)
        assert ssim[k] == pytest.approx(
            structural_similarity(a, b, data_range=1.0, channel_axis=-1), abs=1e-10
        )
        mse = np.mean((a - b) ** 2)
        assert psnr[k] == pytest.approx(10 * np.log10(1 / mse), abs=1e-9)
    assert 20 < psnr.mean() < 35 and 0.3 < ssim.mean() < 1


def test_truncation_not_rounding():
    unit = np.array([[[[0.999, 0.5, 0.0]]]])
    assert truncate_to_uint8(unit).tolist() == [[[[254, 127, 0]]]]
    # a 0.999 vs 1.0 difference disappears after truncation only when both truncate to the same level
    x = np.full((1, 16, 16, 3), 200, np.uint8)
    y = torch.full((1, 3, 16, 16), 200.9 / 127.5 - 1)  # 200.9 levels → truncated to 200
    psnr, ssim = psnr_ssim(x, y)
    assert np.isinf(psnr[0]) and ssim[0] == pytest.approx(1.0)


def test_accumulator_layouts_and_errors():
    originals = photo_crops(64, 1)
    recons = _degrade(originals, 1)
    meter = PSNRSSIM()
    meter.update(originals[:3], recons[:3])
    meter.update(
        torch.from_numpy(originals[3:]).permute(0, 3, 1, 2), torch.from_numpy(recons[3:]).permute(0, 3, 1, 2)
    )
    psnr, ssim = psnr_ssim(originals, recons)
    result = meter.compute()
    assert result["count"] == 4
    assert result["psnr"] == pytest.approx(psnr.mean()) and result["ssim"] == pytest.approx(ssim.mean())
    np.testing.assert_allclose(to_unit_range(torch.zeros(1, 3, 2, 2)), 0.5)
    with pytest.raises(ValueError, match="RGB"):
        psnr_ssim(np.zeros((1, 8, 8, 4), np.uint8), np.zeros((1, 8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match="same shape"):
        psnr_ssim(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="before any update"):
        PSNRSSIM().compute()


def test_psnr_uint8_matches_numpy_and_skimage():
    rng = np.random.default_rng(0)
    a = rng.random((32, 32, 3))
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)
    ua, ub = (a * 255).astype(np.uint8), (b * 255).astype(np.uint8)  # truncation, as the reference
    expected = 10 * math.log10(1.0 / np.mean((ua / 255.0 - ub / 255.0) ** 2))
    assert psnr_uint8(a, b) == pytest.approx(expected, rel=1e-12)
    metrics = pytest.importorskip("skimage.metrics")
    assert psnr_uint8(a, b) == pytest.approx(
        metrics.peak_signal_noise_ratio(ua / 255.0, ub / 255.0, data_range=1.0), rel=1e-12
    )
    assert psnr_uint8(a, a) == math.inf
    with pytest.raises(ValueError, match="equal shapes"):
        psnr_uint8(a, b[:16])
