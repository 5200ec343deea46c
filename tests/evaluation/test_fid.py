"""Streaming statistics and the Fréchet distance against direct numpy computations."""

from __future__ import annotations

import numpy as np
import pytest

from ibq_hf.evaluation import FeatureStatistics, frechet_distance


def _numpy_fid(x: np.ndarray, y: np.ndarray) -> float:
    """Independent reference: np.cov and tr((Σ₁Σ₂)^½) = Σ √λ(Σ₁Σ₂) (real, ≥ 0 for PSD products)."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    eig = np.linalg.eigvals(s1 @ s2).real
    return float(
        ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(eig, 0, None)).sum()
    )


def test_streaming_statistics_equal_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(537, 24)) @ rng.normal(size=(24, 24))
    stats = FeatureStatistics(24)
    for start in range(0, len(x), 50):  # uneven last batch
        stats.update(x[start : start + 50])
    assert stats.count == 537
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats.covariance, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-10)
    # merging per-process parts gives the same statistics
    a, b = FeatureStatistics(24), FeatureStatistics(24)
    a.update(x[:100])
    b.update(x[100:])
    merged = FeatureStatistics.merged([a, b])
    np.testing.assert_allclose(merged.covariance, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-10)


def test_statistics_save_load_roundtrip(tmp_path):
    x = np.random.default_rng(1).normal(size=(40, 8))
    stats = FeatureStatistics(8)
    stats.update(x)
    stats.save(tmp_path / "s.npz")
    again = FeatureStatistics.load(tmp_path / "s.npz")
    np.testing.assert_allclose(again.covariance, stats.covariance)
    with np.load(tmp_path / "s.npz") as data:  # pytorch-fid style keys are there too
        np.testing.assert_allclose(data["mu"], x.mean(0))
    np.savez(tmp_path / "bare.npz", mu=x.mean(0), sigma=np.cov(x, rowvar=False))
    with pytest.raises(ValueError, match="accumulator state"):
        FeatureStatistics.load(tmp_path / "bare.npz")


def test_frechet_distance_matches_numpy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(800, 32))
    y = rng.normal(0.3, 1.5, size=(700, 32)) @ rng.normal(size=(32, 32)) * 0.3
    ours = frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert ours == pytest.approx(_numpy_fid(x, y), rel=1e-8)
    assert frechet_distance(
        x.mean(0), np.cov(x, rowvar=False), x.mean(0), np.cov(x, rowvar=False)
    ) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_singular_and_errors():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 64))  # fewer samples than dimensions: singular covariances
    y = rng.normal(size=(5, 64))
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    value = frechet_distance(x.mean(0), s1, y.mean(0), s2)
    assert np.isfinite(value) and value > 0
    with pytest.raises(ValueError, match="Mismatched"):
        frechet_distance(x.mean(0), s1, y.mean(0)[:10], s2[:10, :10])
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(x.mean(0) * np.nan, s1, y.mean(0), s2)
    with pytest.raises(ValueError, match=r"features \[N, 64\]"):
        FeatureStatistics(64).update(np.zeros((3, 10)))
