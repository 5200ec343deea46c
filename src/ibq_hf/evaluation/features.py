"""One pass of the FID Inception over image batches feeding every metric that needs its outputs.

`InceptionFeatureAccumulator` is the accumulator behind FID, Inception Score and precision/recall — in the
runners (`ibq_hf.evaluation.runners`) and in the shipped `evaluate` modules alike — and merges across processes;
`fid_from_accumulators` is the one FID of two of them.
"""

from __future__ import annotations

import numpy as np
import torch

from .fid import FeatureStatistics, frechet_distance
from .inception import FIDInceptionV3
from .inception_score import InceptionScore

__all__ = ["InceptionFeatureAccumulator", "fid_from_accumulators", "images_to_unit_float"]


def images_to_unit_float(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] / [B, 3, H, W] or float [B, 3, H, W] in [0, 1] → float32 [B, 3, H, W] in [0, 1]."""
    x = torch.from_numpy(np.array(images)) if isinstance(images, np.ndarray) else images  # a writable copy
    if x.dim() != 4:
        raise ValueError(f"Expected a batch of images with 4 dimensions, got shape {tuple(x.shape)}.")
    if x.shape[1] != 3 and x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] != 3:
        raise ValueError(f"Expected RGB images [B, 3, H, W] or [B, H, W, 3], got shape {tuple(x.shape)}.")
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if not x.is_floating_point():
        raise ValueError(f"Images must be uint8 (0..255) or float in [0, 1], got dtype {x.dtype}.")
    low, high = float(x.min()), float(x.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(
            f"Float images must lie in [0, 1] for the Inception network, got values in [{low:.3f}, {high:.3f}]; "
            "map [-1, 1] images with (x + 1) / 2."
        )
    return x.float().clamp(0, 1)


class InceptionFeatureAccumulator:
    """Running FID statistics, plus (optionally) the features for precision/recall and softmax rows for IS.

    ``update(images)`` takes uint8 or [0, 1] float batches (see `images_to_unit_float`); images are dropped
    after their features are computed. ``merge(other)`` folds in an accumulator of the same kind (e.g. gathered
    from another process): statistics exactly, kept features and softmax rows appended after this one's.
    """

    def __init__(
        self,
        inception: FIDInceptionV3,
        keep_features: bool = False,
        inception_score: bool = False,
        batch_size: int = 50,
    ) -> None:
        self.inception = inception
        self.stats = FeatureStatistics(inception.num_features)
        self.keep_features = keep_features
        self._features: list[np.ndarray] = []
        self.inception_score = InceptionScore() if (inception_score and inception.has_logits) else None
        self.batch_size = batch_size

    @torch.no_grad()
    def update(self, images: torch.Tensor | np.ndarray) -> None:
        x = images_to_unit_float(images)
        for start in range(0, len(x), self.batch_size):
            out = self.inception(
                x[start : start + self.batch_size], with_logits=self.inception_score is not None
            )
            self.stats.update(out.features)
            if self.keep_features:
                self._features.append(out.features.cpu().numpy().astype(np.float32))
            if self.inception_score is not None and out.logits is not None:
                self.inception_score.update(out.logits)

    def merge(self, other: InceptionFeatureAccumulator) -> None:
        """Fold in ``other`` (same options); its kept features / IS rows come after this accumulator's."""
        if other.keep_features != self.keep_features or (other.inception_score is None) != (
            self.inception_score is None
        ):
            raise ValueError(
                "Cannot merge InceptionFeatureAccumulators built with different keep_features / inception_score."
            )
        self.stats.merge(other.stats)
        self._features.extend(other._features)
        if self.inception_score is not None and other.inception_score is not None:
            self.inception_score.merge(other.inception_score)

    @property
    def count(self) -> int:
        return self.stats.count

    @property
    def features(self) -> np.ndarray:
        """float32 [N, 2048] (only with ``keep_features=True``)."""
        if not self.keep_features:
            raise ValueError("Features were not kept; build the accumulator with keep_features=True.")
        return np.concatenate(self._features) if self._features else np.zeros((0, self.stats.dim), np.float32)


def fid_from_accumulators(
    predictions: InceptionFeatureAccumulator, references: InceptionFeatureAccumulator
) -> float:
    """FID of the predictions' (generated / reconstructed images) statistics against the references' (real)."""
    if predictions.count < 2 or references.count < 2:
        raise ValueError(
            f"FID needs at least 2 predictions and 2 references, got {predictions.count} and {references.count}."
        )
    p, r = predictions.stats, references.stats
    return frechet_distance(p.mean, p.covariance, r.mean, r.covariance)
