"""Improved precision and recall (Kynkäänniemi et al. 2019) on Inception features, as ADM's evaluator.

Each set's manifold is the union of balls around its points whose radius is the distance to the k-th nearest
neighbour (k = 3, the point itself excluded). Precision: share of samples inside the reference manifold;
recall: share of references inside the sample manifold. Distances are squared Euclidean, computed in blocks of
``batch_size`` rows in float32 (ADM uses float16 on GPU), so memory is O(batch_size · N).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["manifold_radii", "precision_recall"]


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.pow(2).sum(1, keepdim=True) - 2 * a @ b.T + b.pow(2).sum(1)[None]).clamp_min_(0)


def manifold_radii(features: np.ndarray | torch.Tensor, k: int = 3, batch_size: int = 10000) -> torch.Tensor:
    """[N] squared distance of each point to its k-th nearest other point."""
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    if len(x) <= k:
        raise ValueError(f"Need more than k={k} feature vectors for the k-NN manifold, got {len(x)}.")
    radii = torch.empty(len(x))
    for start in range(0, len(x), batch_size):
        d = _squared_distances(x[start : start + batch_size], x)
        radii[start : start + batch_size] = d.kthvalue(k + 1, dim=1).values  # the 1st is the point itself (0)
    return radii


def _coverage(points: torch.Tensor, manifold: torch.Tensor, radii: torch.Tensor, batch_size: int) -> float:
    inside = 0
    for start in range(0, len(points), batch_size):
        d = _squared_distances(points[start : start + batch_size], manifold)
        inside += int((d <= radii[None]).any(dim=1).sum())
    return inside / len(points)


def precision_recall(
    reference_features: np.ndarray | torch.Tensor,
    sample_features: np.ndarray | torch.Tensor,
    k: int = 3,
    batch_size: int = 10000,
) -> dict[str, float]:
    """``{"precision", "recall"}`` of samples [M, D] against references [N, D]."""
    ref = torch.as_tensor(np.asarray(reference_features), dtype=torch.float32)
    sam = torch.as_tensor(np.asarray(sample_features), dtype=torch.float32)
    if ref.dim() != 2 or sam.dim() != 2 or ref.shape[1] != sam.shape[1]:
        raise ValueError(
            f"Expected features [N, D] and [M, D], got {tuple(ref.shape)} and {tuple(sam.shape)}."
        )
    ref_radii = manifold_radii(ref, k, batch_size)
    sam_radii = manifold_radii(sam, k, batch_size)
    return {
        "precision": _coverage(sam, ref, ref_radii, batch_size),
        "recall": _coverage(ref, sam, sam_radii, batch_size),
    }
