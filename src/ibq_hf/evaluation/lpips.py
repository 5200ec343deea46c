"""LPIPS v0.1 (VGG16 and AlexNet) for evaluation, with weights only from local files / the torch.hub cache.

The reference reports LPIPS from the ``lpips`` package (``net='alex'`` and ``net='vgg'``) on [-1, 1] inputs,
summed over images and divided by their number (§6). Both need two files: the torchvision ImageNet backbone
(``vgg16-397923af.pth`` / ``alexnet-owt-7be5be79.pth``) and the 6-11 KB linear heads (the ``lpips`` package's
``weights/v0.1/{vgg,alex}.pth``). Neither backbone ships in any package here, so without them `load_lpips` raises
`WeightsUnavailableError` (reported as "unavailable" by the runners), never a made-up number.
The VGG variant is `ibq_hf.training.losses.LPIPS` (in eval mode: no dropout); AlexNet is defined here.
"""

from __future__ import annotations

import importlib.util
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import WeightsUnavailableError

__all__ = ["ALEXNET_URL", "LPIPSAlex", "LPIPSMeter", "load_lpips"]

ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
_ALEX_CHANNELS = (64, 192, 384, 256, 256)
# torchvision alexnet().features: (index, in, out, kernel, stride, padding); ReLU after each conv,
# 3x3/2 max pools before convs 3 and 6. LPIPS taps the ReLU after each conv.
_ALEX_CONVS = ((0, 3, 64, 11, 4, 2), (3, 64, 192, 5, 1, 2), (6, 192, 384, 3, 1, 1), (8, 384, 256, 3, 1, 1),
               (10, 256, 256, 3, 1, 1))  # fmt: skip
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def _unit_channels(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPSAlex(nn.Module):
    """LPIPS-AlexNet v0.1: ``forward(x, y)`` with images [B, 3, H, W] in [-1, 1] → distances [B]."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.convs = nn.ModuleList(
            nn.Conv2d(i, o, k, stride=s, padding=p) for _, i, o, k, s, p in _ALEX_CONVS
        )
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _ALEX_CHANNELS)
        self.eval().requires_grad_(False)

    def load_torchvision_alexnet(self, state: dict[str, torch.Tensor]) -> None:
        """torchvision's ``alexnet`` state dict (``features.{0,3,6,8,10}.*``; classifier ignored)."""
        own = {}
        for j, (index, *_rest) in enumerate(_ALEX_CONVS):
            for p in ("weight", "bias"):
                key = f"features.{index}.{p}"
                if key not in state or state[key].shape != getattr(self.convs[j], p).shape:
                    raise ValueError(f"Not a torchvision AlexNet state dict: {key} missing or mis-shaped.")
                own[f"{j}.{p}"] = state[key]
        self.convs.load_state_dict(own)  # strict: every conv weight and bias (the heads load separately)

    def load_heads(self, state: dict[str, torch.Tensor]) -> None:
        """The ``lpips`` package's ``weights/v0.1/alex.pth`` (``lin{k}.model.1.weight``)."""
        expected = {f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate(_ALEX_CHANNELS)}
        if set(state) != set(expected) or any(tuple(state[k].shape) != v for k, v in expected.items()):
            raise ValueError(
                f"Not LPIPS v0.1 AlexNet heads: expected keys {sorted(expected)}, got {sorted(state)}."
            )
        with torch.no_grad():
            for k in range(len(_ALEX_CHANNELS)):
                self.lins[k].weight.copy_(state[f"lin{k}.model.1.weight"])

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        taps = []
        for j, conv in enumerate(self.convs):
            if j in (1, 2):
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.relu(conv(x))
            taps.append(x)
        return taps

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"LPIPS expects two [B, 3, H, W] images of equal shape, got {x.shape} and {y.shape}."
            )
        total = torch.zeros(x.shape[0], device=x.device)
        for lin, fx, fy in zip(self.lins, self._taps(x), self._taps(y)):
            total += lin((_unit_channels(fx) - _unit_channels(fy)) ** 2).mean(dim=(1, 2, 3))
        return total


def _hub_file(url: str) -> str | None:
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    return path if os.path.isfile(path) else None


def _package_heads(net: str) -> str | None:
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(next(iter(spec.submodule_search_locations)), "weights", "v0.1", f"{net}.pth")
    return path if os.path.isfile(path) else None


def _load(path: str) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return dict(state.get("state_dict", state)) if isinstance(state, dict) else state


def load_lpips(
    net: str = "vgg",
    backbone_path: str | os.PathLike | None = None,
    heads_path: str | os.PathLike | None = None,
    allow_download: bool = False,
    random_weights: bool = False,
) -> nn.Module:
    """LPIPS ``net`` ∈ {"vgg", "alex"} whose ``forward(x, y)`` gives per-image distances (any shape with B
    elements). Backbone: ``backbone_path``, else the torch.hub cache, else (``allow_download``) torchvision's URL.
    Heads: ``heads_path``, else the ``lpips`` package's file. ``random_weights`` is for plumbing tests only.
    Raises `WeightsUnavailableError` naming the missing file and how to get it.
    """
    from ibq_hf.training.losses import LPIPS, VGG16_URL

    if net not in ("vgg", "alex"):
        raise ValueError(f"LPIPS net must be 'vgg' or 'alex', got {net!r}.")
    url = VGG16_URL if net == "vgg" else ALEXNET_URL
    model: nn.Module
    if random_weights:
        torch.manual_seed(0)
        if net == "vgg":
            return LPIPS.from_pretrained_weights(
                random_backbone=True, use_dropout=False, heads_path=heads_path
            ).eval()
        model = LPIPSAlex()
        with torch.no_grad():
            for lin, channels in zip(model.lins, _ALEX_CHANNELS):
                lin.weight.fill_(1.0 / channels)
        return model
    backbone = os.fspath(backbone_path) if backbone_path is not None else _hub_file(url)
    if backbone is None and allow_download:
        try:
            torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False)
        except Exception as error:  # network errors come in many types
            raise WeightsUnavailableError(
                f"Could not download {url} for LPIPS-{net}: {error}. Download it on a machine that is online and "
                f"pass the file with --lpips-{net} FILE (Python: backbone_path=FILE)."
            ) from error
        backbone = _hub_file(url)
    if backbone is None:
        raise WeightsUnavailableError(
            f"LPIPS-{net} needs the torchvision ImageNet backbone {os.path.basename(url)}, which is not in the "
            f"torch.hub cache ({torch.hub.get_dir()}/checkpoints). To make it available: download {url} (on any "
            f"machine) and pass the file with --lpips-{net} FILE (Python: backbone_path=FILE), or copy it into "
            f"that cache folder; or, when online, add --lpips-download (allow_download=True)."
        )
    heads = os.fspath(heads_path) if heads_path is not None else _package_heads(net)
    if heads is None:
        raise WeightsUnavailableError(
            f"LPIPS-{net} needs the v0.1 linear heads ({net}.pth), which ship in the lpips wheel: "
            f"`pip install --no-deps lpips`, or pass the file with --lpips-{net}-heads FILE (Python: heads_path=FILE)."
        )
    if net == "vgg":
        return LPIPS.from_pretrained_weights(vgg_path=backbone, heads_path=heads, use_dropout=False).eval()
    model = LPIPSAlex()
    model.load_torchvision_alexnet(_load(backbone))
    model.load_heads(_load(heads))
    return model


class LPIPSMeter:
    """Sum of per-image LPIPS and the count (the reference divides the sum by the number of images)."""

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

    def compute(self) -> float:
        if self.count == 0:
            raise ValueError("LPIPSMeter.compute() called before any update().")
        return self.total / self.count
