"""Inception Score from the FID Inception's 1008-way logits, ADM-style (splits of 5,000 in order)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["InceptionScore", "inception_score"]


def inception_score(probabilities: np.ndarray, split_size: int = 5000) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) ‖ p(y))) per contiguous split of ``split_size`` rows → (mean, std) over splits.

    ``probabilities``: softmax outputs [N, C]. ADM's evaluator uses splits of 5,000 and reports the mean.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or len(p) == 0:
        raise ValueError(f"Expected softmax probabilities [N, C] with N > 0, got shape {p.shape}.")
    scores = []
    for start in range(0, len(p), split_size):
        part = p[start : start + split_size]
        marginal = part.mean(axis=0, keepdims=True)
        kl = part * (np.log(np.clip(part, 1e-30, None)) - np.log(np.clip(marginal, 1e-30, None)))
        scores.append(float(np.exp(kl.sum(axis=1).mean())))
    return float(np.mean(scores)), float(np.std(scores))


class InceptionScore:
    """Keeps the softmax rows (float32 [N, 1008], ~4 KB per image — never the images)."""

    def __init__(self, split_size: int = 5000) -> None:
        self.split_size = split_size
        self._parts: list[np.ndarray] = []

    def update(self, logits: torch.Tensor) -> None:
        """logits [B, 1008] from `FIDInceptionV3(..., with_logits=True)`."""
        self._parts.append(torch.softmax(logits.double(), dim=-1).float().cpu().numpy())

    def merge(self, other: InceptionScore) -> None:
        """Append ``other``'s rows after this one's (splits are contiguous, so the order of merges matters)."""
        self._parts.extend(other._parts)

    @property
    def probabilities(self) -> np.ndarray:
        return np.concatenate(self._parts) if self._parts else np.zeros((0, 1008), np.float32)

    def compute(self) -> dict[str, float]:
        mean, std = inception_score(self.probabilities, self.split_size)
        return {"inception_score": mean, "inception_score_std": std}
