"""Streaming Gaussian statistics of Inception features and the Fréchet distance (FID).

`FeatureStatistics` keeps only the count, the float64 mean and the float64 centred scatter matrix (Chan et al.'s
pairwise update), so 50k images never sit in memory: per batch it costs one [D, D] matrix product. Its
covariance equals ``np.cov(features, rowvar=False)`` (ddof 1), which the reference uses (§6).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["FeatureStatistics", "frechet_distance"]


class FeatureStatistics:
    """Running mean and covariance of feature rows [N, D] in float64; mergeable across processes."""

    def __init__(self, dim: int = 2048) -> None:
        self.dim = dim
        self.count = 0
        self._mean = np.zeros(dim, dtype=np.float64)
        self._scatter = np.zeros((dim, dim), dtype=np.float64)  # Σ (x − mean)(x − mean)ᵀ

    def update(self, features: torch.Tensor | np.ndarray) -> None:
        """Add a batch of features [N, D]."""
        x = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else features
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"Expected features [N, {self.dim}], got shape {x.shape}.")
        if len(x) == 0:
            return
        mean_b = x.mean(axis=0)
        centred = x - mean_b
        self._merge(len(x), mean_b, centred.T @ centred)

    def _merge(self, n_b: int, mean_b: np.ndarray, scatter_b: np.ndarray) -> None:
        n_a = self.count
        total = n_a + n_b
        delta = mean_b - self._mean
        self._scatter += scatter_b + np.outer(delta, delta) * (n_a * n_b / total)
        self._mean += delta * (n_b / total)
        self.count = total

    def merge(self, other: FeatureStatistics) -> None:
        """Fold in another accumulator (e.g. from another process)."""
        if other.dim != self.dim:
            raise ValueError(f"Cannot merge statistics of dimension {other.dim} into {self.dim}.")
        if other.count:
            self._merge(other.count, other._mean.copy(), other._scatter)

    @property
    def mean(self) -> np.ndarray:
        """[D] float64."""
        return self._mean.copy()

    @property
    def covariance(self) -> np.ndarray:
        """[D, D] float64, unbiased (ddof 1) like ``np.cov(rowvar=False)``."""
        if self.count < 2:
            raise ValueError(f"A covariance needs at least 2 feature vectors, got {self.count}.")
        return self._scatter / (self.count - 1)

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to gather or save (``count``, ``mean``, ``scatter``)."""
        return {"count": np.array(self.count), "mean": self._mean, "scatter": self._scatter}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> FeatureStatistics:
        stats = cls(int(np.asarray(state["mean"]).shape[0]))
        stats.count = int(state["count"])
        stats._mean = np.asarray(state["mean"], dtype=np.float64).copy()
        stats._scatter = np.asarray(state["scatter"], dtype=np.float64).copy()
        return stats

    def save(self, path: str | os.PathLike) -> None:
        """``.npz`` with ``mu`` / ``sigma`` (pytorch-fid's stats keys) plus the exact accumulator state."""
        np.savez(path, mu=self.mean, sigma=self.covariance, **self.state())

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStatistics:
        with np.load(path) as data:
            if "scatter" not in data:
                raise ValueError(
                    f"{path} has no accumulator state (keys {list(data.keys())}); only files written by "
                    "FeatureStatistics.save can be reloaded as statistics. Use frechet_distance(mu, sigma, ...) "
                    "for bare mu/sigma files."
                )
            return cls.from_state({k: data[k] for k in ("count", "mean", "scatter")})

    @classmethod
    def merged(cls, parts: Sequence[FeatureStatistics]) -> FeatureStatistics:
        out = cls(parts[0].dim)
        for part in parts:
            out.merge(part)
        return out


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½), with scipy's ``sqrtm``.

    When the product is singular (``sqrtm`` returns non-finite values) ``eps·I`` is added to both covariances,
    as pytorch-fid does. A complex square root whose diagonal has an imaginary part above 1e-3 means the
    statistics are broken (too few samples for D dimensions, NaNs) and raises instead of returning a number.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise ValueError(
            f"Mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}."
        )
    if not (
        np.isfinite(mu1).all()
        and np.isfinite(mu2).all()
        and np.isfinite(sigma1).all()
        and np.isfinite(sigma2).all()
    ):
        raise ValueError("The FID statistics contain NaN or inf; check the images and the features.")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(
                f"sqrtm(Σ₁Σ₂) has an imaginary component {np.max(np.abs(covmean.imag)):.3g}: the covariances are "
                "degenerate (often far fewer images than feature dimensions). Use more images."
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    import warnings

    from scipy import linalg  # the "eval" extra; imported here so `ibq-hf` works without it

    with warnings.catch_warnings():  # scipy warns about singular products; we handle them ourselves
        warnings.simplefilter("ignore")
        return linalg.sqrtm(matrix)
