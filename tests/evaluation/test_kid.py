"""KID: the unbiased polynomial-kernel MMD² against an explicit double sum, and its behaviour on samples."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ibq_hf.evaluation.kid import kernel_inception_distance, polynomial_mmd2_unbiased


def _explicit_mmd2(x, y):
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(a, b) for a in x for b in y) / (m * n)
    return xx + yy - 2 * xy


def test_matches_the_explicit_double_sum():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 4)), rng.normal(0.5, 1.0, size=(5, 4))
    assert polynomial_mmd2_unbiased(x, y) == pytest.approx(_explicit_mmd2(x, y), rel=1e-12)
    # Full-size subsets are permutations of the sets: every subset gives the same value.
    out = kernel_inception_distance(x, x[::-1].copy(), subset_size=100, num_subsets=3)
    assert out["subset_size"] == 6 and out["kid_std"] == pytest.approx(0.0, abs=1e-12)
    assert out["kid"] == pytest.approx(_explicit_mmd2(x, x[::-1]), rel=1e-12)


def test_unbiased_near_zero_for_one_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    same = kernel_inception_distance(a, b, subset_size=100, num_subsets=50, seed=0)
    shifted = kernel_inception_distance(a, b + 0.5, subset_size=100, num_subsets=50, seed=0)
    assert abs(same["kid"]) < 3 * same["kid_std"]
    assert shifted["kid"] > 10 * max(same["kid_std"], 1e-12)
    assert kernel_inception_distance(a, b, 100, 5, seed=3) == kernel_inception_distance(a, b, 100, 5, seed=3)
    with pytest.raises(ValueError, match="at least 2"):
        polynomial_mmd2_unbiased(a[:1], b)
