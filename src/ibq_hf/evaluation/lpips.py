"""LPIPS as an evaluation metric: weights only from local files / the torch.hub cache, and the mean over images.

The reference reports LPIPS from the ``lpips`` package (``net='alex'`` and ``net='vgg'``) on [-1, 1] inputs,
summed over images and divided by their number (§6). The networks are the package's one implementation,
`ibq_hf.lpips` (`LPIPS` for VGG, in eval mode without dropout; `LPIPSAlex`); this module adds evaluation's policy:
both need two files, the torchvision ImageNet backbone (``vgg16-397923af.pth`` / ``alexnet-owt-7be5be79.pth``)
and the 6-11 KB linear heads (the ``lpips`` package's ``weights/v0.1/{vgg,alex}.pth``). Neither backbone ships in
any package here, so without them `load_lpips` raises `WeightsUnavailableError` (reported as "unavailable" by
the runners), never a made-up number. `LPIPSMeter` is the accumulator (mergeable across processes).
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn

from ..lpips import ALEXNET_URL, LPIPS, VGG16_URL, LPIPSAlex, hub_cache_file, lpips_package_heads
from .errors import WeightsUnavailableError

__all__ = ["LPIPSMeter", "load_lpips"]


def _build(net: str, backbone: str | None, heads: str | None, random_backbone: bool = False) -> nn.Module:
    """The network in eval mode (VGG without dropout: deterministic)."""
    if net == "vgg":
        return LPIPS.from_pretrained_weights(
            vgg_path=backbone, heads_path=heads, random_backbone=random_backbone, use_dropout=False
        ).eval()
    return LPIPSAlex.from_pretrained_weights(backbone, heads, random_backbone=random_backbone)


def load_lpips(
    net: str = "vgg",
    backbone_path: str | os.PathLike | None = None,
    heads_path: str | os.PathLike | None = None,
    allow_download: bool = False,
    random_weights: bool = False,
) -> nn.Module:
    """LPIPS ``net`` ∈ {"vgg", "alex"} whose ``forward(x, y)`` gives per-image distances (any shape with B
    elements). Backbone: ``backbone_path``, else the torch.hub cache, else (``allow_download``) torchvision's URL.
    Heads: ``heads_path``, else the ``lpips`` package's file. ``random_weights`` is for plumbing tests only
    (random backbone seeded with 0; heads from ``heads_path`` / the package, else constant 1/C).
    Raises `WeightsUnavailableError` naming the missing file and how to get it.
    """
    if net not in ("vgg", "alex"):
        raise ValueError(f"LPIPS net must be 'vgg' or 'alex', got {net!r}.")
    heads_file = os.fspath(heads_path) if heads_path is not None else None
    if random_weights:
        torch.manual_seed(0)
        return _build(net, None, heads_file, random_backbone=True)
    url = VGG16_URL if net == "vgg" else ALEXNET_URL
    backbone = os.fspath(backbone_path) if backbone_path is not None else hub_cache_file(url)
    if backbone is None and allow_download:
        try:
            torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False)
        except Exception as error:  # network errors come in many types
            raise WeightsUnavailableError(
                f"Could not download {url} for LPIPS-{net}: {error}. Download it on a machine that is online and "
                f"pass the file with --lpips-{net} FILE (Python: backbone_path=FILE)."
            ) from error
        backbone = hub_cache_file(url)
    if backbone is None:
        raise WeightsUnavailableError(
            f"LPIPS-{net} needs the torchvision ImageNet backbone {os.path.basename(url)}, which is not in the "
            f"torch.hub cache ({torch.hub.get_dir()}/checkpoints). To make it available: download {url} (on any "
            f"machine) and pass the file with --lpips-{net} FILE (Python: backbone_path=FILE), or copy it into "
            f"that cache folder; or, when online, add --lpips-download (allow_download=True)."
        )
    heads_file = heads_file if heads_file is not None else lpips_package_heads(net)
    if heads_file is None:
        raise WeightsUnavailableError(
            f"LPIPS-{net} needs the v0.1 linear heads ({net}.pth), which ship in the lpips wheel: "
            f"`pip install --no-deps lpips`, or pass the file with --lpips-{net}-heads FILE (Python: heads_path=FILE)."
        )
    return _build(net, backbone, heads_file)


class LPIPSMeter:
    """Sum of per-image LPIPS and the count (the reference divides the sum by the number of images).

    Mergeable: `merge` adds another meter's sums (e.g. gathered from another process).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.total = 0.0
        self.count = 0

    @torch.no_grad()
    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """x, y: [B, 3, H, W] in [-1, 1]."""
        device = next(self.model.parameters()).device
        values = self.model(x.to(device).float(), y.to(device).float()).reshape(x.shape[0])
        self.total += float(values.double().sum())
        self.count += x.shape[0]

    def merge(self, other: LPIPSMeter) -> None:
        """Fold in another meter's sum and count."""
        self.total += other.total
        self.count += other.count

    def compute(self) -> float:
        if self.count == 0:
            raise ValueError("LPIPSMeter.compute() called before any update().")
        return self.total / self.count
