"""LPIPS v0.1, the one implementation: the perceptual loss of tokenizer training and the LPIPS metric of evaluation.

LPIPS (Zhang et al. 2018, the ``lpips`` package) compares two images in [-1, 1] through a frozen ImageNet
backbone: ``(x − shift) / scale``, then at each tapped layer k unit-normalise every position's channel vector,
square the difference, weight the channels with the 1×1 head ``lin_k`` (no bias), average over space; the
distance is the sum over layers. Two backbones, each loading torchvision's checkpoint file by key (no
torchvision needed):

* `LPIPS` — VGG16 (taps after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3): the training loss (reference §3.2)
  and ``lpips_vgg``. Keys as the reference's ``loss.perceptual_loss.*``; Dropout(0.5) before each head follows
  ``train()`` / ``eval()``; ``forward`` keeps the graph for the inputs and returns [B, 1, 1, 1].
* `LPIPSAlex` — AlexNet (taps after each of its five convs): ``lpips_alex``, evaluation only; always in eval
  mode, ``forward`` runs without a graph and returns [B].

Both share the distance (`_LPIPSBase.layer_distances`). Weight files: torchvision's backbone
(`VGG16_URL` / `ALEXNET_URL`, a path or the torch.hub cache) and the 6-11 KB v0.1 heads, shipped in the ``lpips``
wheel (`lpips_package_heads`). Turning missing files into "unavailable" metrics is evaluation's policy
(`ibq_hf.evaluation.load_lpips`).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import CheckpointKeyError

__all__ = [
    "ALEXNET_URL",
    "LPIPS",
    "LPIPS_ALEX_CHANNELS",
    "LPIPS_CHANNELS",
    "VGG16_URL",
    "LPIPSAlex",
    "hub_cache_file",
    "lpips_package_heads",
]

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"

# The [-1, 1] → ImageNet-normalised input map of LPIPS v0.1: (x − shift) / scale.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)

# VGG16: torchvision's "D" configuration (channels per conv, "M" = 2×2 max-pool); [start, end) layer indices of
# the five slices, each ending after the tapped ReLU; the conv indices of ``features``.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
_VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
#: Channels of the five VGG16 taps (= input channels of the heads ``lin0..lin4``).
LPIPS_CHANNELS = (64, 128, 256, 512, 512)

# AlexNet: torchvision ``alexnet().features`` convs as (index, in, out, kernel, stride, padding); ReLU after each,
# 3×3/2 max-pools before convs 2 and 3 (0-based). LPIPS taps the ReLU after each conv.
_ALEX_CONVS = ((0, 3, 64, 11, 4, 2), (3, 64, 192, 5, 1, 2), (6, 192, 384, 3, 1, 1), (8, 384, 256, 3, 1, 1),
               (10, 256, 256, 3, 1, 1))  # fmt: skip
#: Channels of the five AlexNet taps.
LPIPS_ALEX_CHANNELS = (64, 192, 384, 256, 256)


# ---------------------------------------------------------------------------------------------------------------
# Weight files
# ---------------------------------------------------------------------------------------------------------------


def hub_cache_file(url: str) -> str | None:
    """Path of ``url``'s file in the torch.hub checkpoint cache (``$TORCH_HOME/hub/checkpoints``), if present."""
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    return path if os.path.isfile(path) else None


def lpips_package_heads(net: str) -> str | None:
    """Path of the ``lpips`` wheel's ``weights/v0.1/{net}.pth`` heads (``net`` "vgg" or "alex"), if installed."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(next(iter(spec.submodule_search_locations)), "weights", "v0.1", f"{net}.pth")
    return path if os.path.isfile(path) else None


def _load_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from ``path`` (a bare dict or one under ``"state_dict"``), on the CPU, tensors only."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__}).")
    return dict(state)


def _check_keys(
    what: str, state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], hint: str
) -> None:
    """Strict loading: exactly the ``expected`` keys with their shapes, else `CheckpointKeyError`."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        (k, tuple(state[k].shape), v)
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != v
    ]
    if missing or unexpected or mismatched:
        raise CheckpointKeyError(what, missing, unexpected, mismatched, hint=hint)


# ---------------------------------------------------------------------------------------------------------------
# The distance
# ---------------------------------------------------------------------------------------------------------------


class _ScalingLayer(nn.Module):
    """[-1, 1] input → the backbone's ImageNet-normalised input: (x − shift) / scale."""

    def __init__(self, persistent: bool = True) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=persistent)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=persistent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


def _normalize_channels(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit-normalise each spatial position's feature vector (eps added to the norm, as in LPIPS)."""
    return x / (torch.sqrt(torch.sum(x * x, dim=1, keepdim=True)) + eps)


class _LPIPSBase(nn.Module):
    """The LPIPS distance over a backbone: subclasses give ``scaling_layer``, ``_taps`` and ``_heads``."""

    scaling_layer: _ScalingLayer
    #: Smallest image side the backbone accepts (its poolings); checked before running it.
    min_size = 1

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The tapped feature maps of scaled images [B, 3, H, W], one per head."""
        raise NotImplementedError(f"{type(self).__name__} must define _taps() (its backbone's feature maps)")

    def _heads(self) -> list[nn.Module]:
        """The 1×1 heads, one per tap: [B, C_k, h, w] → [B, 1, h, w]."""
        raise NotImplementedError(f"{type(self).__name__} must define _heads() (one 1×1 head per tap)")

    def layer_distances(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """Per-tap terms, each [B, 1, 1, 1]; their sum is the LPIPS distance of images x, y in [-1, 1]."""
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"LPIPS expects two [B,3,H,W] images of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}."
            )
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"{type(self).__name__} needs images of at least {self.min_size}x{self.min_size}, got "
                f"{tuple(x.shape[-2:])}."
            )
        feats_x = self._taps(self.scaling_layer(x))
        feats_y = self._taps(self.scaling_layer(y))
        out = []
        for head, fx, fy in zip(self._heads(), feats_x, feats_y):
            diff = (_normalize_channels(fx) - _normalize_channels(fy)) ** 2
            out.append(head(diff).mean(dim=(2, 3), keepdim=True))
        return out


# ---------------------------------------------------------------------------------------------------------------
# VGG16
# ---------------------------------------------------------------------------------------------------------------


def _vgg16_layers() -> list[nn.Module]:
    """torchvision's ``vgg16().features[:30]`` (no final pool): conv/relu/pool at the same indices."""
    layers: list[nn.Module] = []
    in_ch = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            in_ch = v
    assert [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)] == list(_VGG16_CONV_INDICES)
    return layers


class _VGG16Slices(nn.Module):
    """``slice1..slice5`` holding the VGG16 layers under their original indices (``slice2.5`` = ``features.5``)."""

    def __init__(self) -> None:
        super().__init__()
        layers = _vgg16_layers()
        for k, (start, end) in enumerate(_SLICES, start=1):
            block = nn.Sequential()
            for idx in range(start, end):
                block.add_module(str(idx), layers[idx])
            setattr(self, f"slice{k}", block)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for k in range(1, 6):
            x = getattr(self, f"slice{k}")(x)
            feats.append(x)
        return feats


class _NetLinLayer(nn.Module):
    """Dropout + 1x1 conv to one channel, no bias; keys ``model.1.weight`` as in LPIPS v0.1."""

    def __init__(self, channels: int, use_dropout: bool = True) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.Dropout(0.5) if use_dropout else nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPS(_LPIPSBase):
    """LPIPS-VGG16 v0.1 (reference §3.2): frozen perceptual distance, ``forward(x, y) -> [B,1,1,1]``.

    Inputs are images in [-1,1], [B,3,H,W] (at least 16×16). Per slice k: unit-normalise channels, squared
    difference, dropout + 1x1 head ``lin{k}``, spatial mean; the five terms are summed.

    Dropout: the reference trains with the whole loss module in train mode, so Dropout(0.5) before each
    head is **active during training** (reference §3.1, §9.5). This module follows its own ``train()`` /
    ``eval()`` flag like any other: put it in ``eval()`` for deterministic metrics (``use_dropout=False``
    removes it), leave it in train mode for reference-faithful training. Parameters are frozen
    (``requires_grad=False``) either way; gradients still flow to the inputs.

    Build with `from_pretrained_weights`; a bare ``LPIPS()`` has random (meaningless) weights.
    """

    min_size = 16  # four 2× poolings

    def __init__(self, use_dropout: bool = True) -> None:
        super().__init__()
        self.scaling_layer = _ScalingLayer()
        self.net = _VGG16Slices()
        for k, ch in enumerate(LPIPS_CHANNELS):
            setattr(self, f"lin{k}", _NetLinLayer(ch, use_dropout))
        self.requires_grad_(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net(x)

    def _heads(self) -> list[nn.Module]:
        return [getattr(self, f"lin{k}") for k in range(len(LPIPS_CHANNELS))]

    # -------------------------------------------------------------------------------- weights
    def backbone_keys(self) -> dict[str, str]:
        """torchvision key (``features.N.weight``) → our key (``net.sliceK.N.weight``)."""
        out = {}
        for k, (start, end) in enumerate(_SLICES, start=1):
            for idx in _VGG16_CONV_INDICES:
                if start <= idx < end:
                    for p in ("weight", "bias"):
                        out[f"features.{idx}.{p}"] = f"net.slice{k}.{idx}.{p}"
        return out

    def load_vgg16_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load torchvision's VGG16 state dict (``features.*``; ``classifier.*`` ignored). Strict otherwise."""
        mapping = self.backbone_keys()
        own = self.state_dict()
        _check_keys(
            "LPIPS VGG16 backbone (torchvision vgg16 features)",
            {k: v for k, v in state.items() if k.startswith("features.")},
            {src: tuple(own[dst].shape) for src, dst in mapping.items()},
            hint=f"Expected torchvision's vgg16-397923af.pth ({VGG16_URL}).",
        )
        with torch.no_grad():
            for src, dst in mapping.items():
                own[dst].copy_(state[src])

    def load_heads_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load the five v0.1 heads ``lin{0..4}.model.1.weight`` (taming's / SEED-Voken's ``vgg.pth`` or the
        `lpips` package's ``weights/v0.1/vgg.pth``). Strict: any other key is an error."""
        expected = {f"lin{k}.model.1.weight": (1, ch, 1, 1) for k, ch in enumerate(LPIPS_CHANNELS)}
        _check_keys(
            "LPIPS v0.1 linear heads",
            state,
            expected,
            hint="Expected the LPIPS v0.1 VGG heads file (lpips package weights/v0.1/vgg.pth).",
        )
        own = self.state_dict()
        with torch.no_grad():
            for k in expected:
                own[k].copy_(state[k])

    @classmethod
    def from_pretrained_weights(
        cls,
        vgg_path: str | os.PathLike | None = None,
        heads_path: str | os.PathLike | None = None,
        random_backbone: bool = False,
        use_dropout: bool = True,
    ) -> LPIPS:
        """Build LPIPS-VGG with real weights.

        Backbone: ``vgg_path`` (torchvision's ``vgg16-397923af.pth``), else downloaded from `VGG16_URL`
        through ``torch.hub`` (online only; cached in ``$TORCH_HOME``). Heads: ``heads_path``, else the
        `lpips` package's file when installed. ``random_backbone=True`` keeps a randomly initialised VGG
        (and, without a heads file, constant heads 1/C): only for tests and plumbing — values are
        meaningless then.
        """
        model = cls(use_dropout=use_dropout)
        if not random_backbone:
            if vgg_path is not None:
                vgg = _load_file(vgg_path)
            else:
                try:
                    vgg = torch.hub.load_state_dict_from_url(VGG16_URL, map_location="cpu", check_hash=True)
                except Exception as error:  # network errors come in many types
                    raise ValueError(
                        f"Could not download the VGG16 ImageNet weights for LPIPS ({VGG16_URL}): {error}. "
                        "Download that file on a machine with network access and pass vgg_path=..., "
                        "or use random_backbone=True for plumbing tests only."
                    ) from error
            model.load_vgg16_state_dict(vgg)
        heads_path = heads_path if heads_path is not None else lpips_package_heads("vgg")
        if heads_path is not None:
            model.load_heads_state_dict(_load_file(heads_path))
        elif random_backbone:
            with torch.no_grad():
                for head, ch in zip(model._heads(), LPIPS_CHANNELS):
                    head.model[1].weight.fill_(1.0 / ch)
        else:
            raise ValueError(
                "No LPIPS v0.1 head weights: pass heads_path=... (the 7 KB vgg.pth of taming / SEED-Voken, "
                "or lpips' weights/v0.1/vgg.pth) or `pip install lpips` so they are found automatically."
            )
        return model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS distance [B,1,1,1] between images x, y in [-1,1] (shape as in the reference, for broadcasting)."""
        return torch.stack(self.layer_distances(x, y), dim=0).sum(dim=0)


# ---------------------------------------------------------------------------------------------------------------
# AlexNet
# ---------------------------------------------------------------------------------------------------------------


class LPIPSAlex(_LPIPSBase):
    """LPIPS-AlexNet v0.1: ``forward(x, y)`` with images [B, 3, H, W] in [-1, 1] → distances [B].

    An evaluation metric (the ``lpips`` package's ``net='alex'``): always in eval mode, frozen, no graph.
    ``convs`` are torchvision's ``features.{0,3,6,8,10}``, ``lins`` the v0.1 heads. Build with
    `from_pretrained_weights`; a bare ``LPIPSAlex()`` has random (meaningless) weights.
    """

    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = _ScalingLayer(persistent=False)
        self.convs = nn.ModuleList(
            nn.Conv2d(i, o, k, stride=s, padding=p) for _, i, o, k, s, p in _ALEX_CONVS
        )
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in LPIPS_ALEX_CHANNELS)
        self.eval().requires_grad_(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for j, conv in enumerate(self.convs):
            if j in (1, 2):
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.relu(conv(x))
            taps.append(x)
        return taps

    def _heads(self) -> list[nn.Module]:
        return list(self.lins)

    def load_torchvision_alexnet(self, state: Mapping[str, torch.Tensor]) -> None:
        """torchvision's ``alexnet`` state dict (``features.{0,3,6,8,10}.*``; classifier ignored). Strict otherwise."""
        mapping = {
            f"features.{index}.{p}": (j, p)
            for j, (index, *_rest) in enumerate(_ALEX_CONVS)
            for p in ("weight", "bias")
        }
        _check_keys(
            "LPIPS AlexNet backbone (torchvision alexnet features)",
            {k: v for k, v in state.items() if k.startswith("features.")},
            {key: tuple(getattr(self.convs[j], p).shape) for key, (j, p) in mapping.items()},
            hint=f"Expected torchvision's alexnet-owt-7be5be79.pth ({ALEXNET_URL}).",
        )
        with torch.no_grad():
            for key, (j, p) in mapping.items():
                getattr(self.convs[j], p).copy_(state[key])

    def load_heads(self, state: Mapping[str, torch.Tensor]) -> None:
        """The ``lpips`` package's ``weights/v0.1/alex.pth`` (``lin{k}.model.1.weight``). Strict."""
        expected = {f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate(LPIPS_ALEX_CHANNELS)}
        _check_keys(
            "LPIPS v0.1 AlexNet heads",
            state,
            expected,
            hint="Expected the LPIPS v0.1 AlexNet heads file (lpips package weights/v0.1/alex.pth).",
        )
        with torch.no_grad():
            for k, lin in enumerate(self.lins):
                lin.weight.copy_(state[f"lin{k}.model.1.weight"])

    @classmethod
    def from_pretrained_weights(
        cls,
        alexnet_path: str | os.PathLike | None = None,
        heads_path: str | os.PathLike | None = None,
        random_backbone: bool = False,
    ) -> LPIPSAlex:
        """Build LPIPS-AlexNet from local files: ``alexnet_path`` (torchvision's ``alexnet-owt-7be5be79.pth``) and
        ``heads_path`` (``alex.pth``, default: the `lpips` package's). ``random_backbone=True`` keeps the random
        convs and, without a heads file, constant heads 1/C (plumbing tests only: meaningless values)."""
        model = cls()
        if not random_backbone:
            if alexnet_path is None:
                raise ValueError(
                    f"Pass alexnet_path=... (torchvision's {os.path.basename(ALEXNET_URL)}, from {ALEXNET_URL})."
                )
            model.load_torchvision_alexnet(_load_file(alexnet_path))
        heads_path = heads_path if heads_path is not None else lpips_package_heads("alex")
        if heads_path is not None:
            model.load_heads(_load_file(heads_path))
        elif random_backbone:
            with torch.no_grad():
                for lin, channels in zip(model.lins, LPIPS_ALEX_CHANNELS):
                    lin.weight.fill_(1.0 / channels)
        else:
            raise ValueError(
                "No LPIPS v0.1 AlexNet head weights: pass heads_path=... (lpips' weights/v0.1/alex.pth) or "
                "`pip install --no-deps lpips` so they are found automatically."
            )
        return model

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(x.shape[0], device=x.device)
        for term in self.layer_distances(x, y):
            total += term.reshape(x.shape[0])
        return total
