"""PSNR and SSIM exactly as the reference evaluation (§6), accumulated over batches.

Per image: map to [0, 1], quantise with ``uint8(255·x)`` (truncation, not rounding), divide by 255, then
``peak_signal_noise_ratio(data_range=1)`` (computed with numpy: `psnr_uint8`) and skimage's
``structural_similarity(data_range=1, channel_axis=-1)``
(7×7 uniform window). The reference averages per batch and then over batches; with equal batches that is the
per-image mean reported here.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..image_processing import to_uint8

__all__ = ["PSNRSSIM", "psnr_ssim", "psnr_uint8", "to_unit_range", "truncate_to_uint8"]


def to_unit_range(
    images: torch.Tensor | np.ndarray, value_range: tuple[float, float] = (-1.0, 1.0)
) -> np.ndarray:
    """[B, 3, H, W] tensor or [B, H, W, 3] array in ``value_range`` → float64 [B, H, W, 3] in [0, 1].

    uint8 input is taken as 0..255 whatever ``value_range`` says. Values outside the range are clipped
    (the reference clamps reconstructions to [-1, 1]).
    """
    if isinstance(images, torch.Tensor):
        array = images.detach().cpu()
        if array.dim() != 4:
            raise ValueError(f"Expected a batch of images [B, 3, H, W], got shape {tuple(array.shape)}.")
        array = array.permute(0, 2, 3, 1).numpy() if array.shape[1] in (1, 3) else array.numpy()
    else:
        array = np.asarray(images)
        if array.ndim != 4:
            raise ValueError(f"Expected a batch of images [B, H, W, 3], got shape {array.shape}.")
    if array.shape[-1] != 3:
        raise ValueError(
            f"Expected RGB images ([B, 3, H, W] tensors or [B, H, W, 3] arrays), got {array.shape}."
        )
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    low, high = value_range
    return np.clip((array.astype(np.float64) - low) / (high - low), 0.0, 1.0)


def truncate_to_uint8(unit: np.ndarray) -> np.ndarray:
    """[0, 1] float array (any shape) → uint8 by truncation of 255·x (the reference's ``astype(uint8)``):
    :func:`ibq_hf.image_processing.to_uint8` with ``rounding="truncate"``."""
    return to_uint8(unit, "truncate")


def psnr_uint8(reference: np.ndarray, reconstruction: np.ndarray) -> float:
    """PSNR (dB) of two float images in [0, 1] (any equal shapes), on their truncated uint8 versions.

    The reference's PSNR (§6): ``uint8(255·x) / 255``, then skimage's ``peak_signal_noise_ratio(data_range=1)``,
    i.e. ``10·log10(1 / MSE)`` — computed here with numpy (no skimage needed, e.g. in the demo); ``inf`` when equal.
    """
    if reference.shape != reconstruction.shape:
        raise ValueError(f"PSNR needs equal shapes, got {reference.shape} and {reconstruction.shape}.")
    a = truncate_to_uint8(reference).astype(np.float64) / 255.0
    b = truncate_to_uint8(reconstruction).astype(np.float64) / 255.0
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse)


def psnr_ssim(
    originals: torch.Tensor | np.ndarray,
    reconstructions: torch.Tensor | np.ndarray,
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image PSNR (dB) and SSIM, each float64 [B], with the reference's uint8 truncation."""
    from skimage.metrics import structural_similarity

    unit_a, unit_b = to_unit_range(originals, value_range), to_unit_range(reconstructions, value_range)
    if unit_a.shape != unit_b.shape:
        raise ValueError(
            f"originals {unit_a.shape} and reconstructions {unit_b.shape} must have the same shape."
        )
    psnr = np.array([psnr_uint8(x, y) for x, y in zip(unit_a, unit_b)])
    a = truncate_to_uint8(unit_a).astype(np.float64) / 255.0
    b = truncate_to_uint8(unit_b).astype(np.float64) / 255.0
    ssim = np.array([structural_similarity(x, y, data_range=1.0, channel_axis=-1) for x, y in zip(a, b)])
    return psnr, ssim


class PSNRSSIM:
    """Accumulates per-image PSNR/SSIM sums (no images kept). ``compute()`` → ``{"psnr", "ssim", "count"}``.

    Identical images give PSNR = inf (as skimage); the mean is then inf as well.
    """

    def __init__(self, value_range: tuple[float, float] = (-1.0, 1.0)) -> None:
        self.value_range = value_range
        self.count = 0
        self.psnr_sum = 0.0
        self.ssim_sum = 0.0

    def update(
        self, originals: torch.Tensor | np.ndarray, reconstructions: torch.Tensor | np.ndarray
    ) -> None:
        psnr, ssim = psnr_ssim(originals, reconstructions, self.value_range)
        self.count += len(psnr)
        self.psnr_sum += float(psnr.sum())
        self.ssim_sum += float(ssim.sum())

    def merge(self, other: PSNRSSIM) -> None:
        self.count += other.count
        self.psnr_sum += other.psnr_sum
        self.ssim_sum += other.ssim_sum

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("PSNRSSIM.compute() called before any update().")
        return {"psnr": self.psnr_sum / self.count, "ssim": self.ssim_sum / self.count, "count": self.count}
