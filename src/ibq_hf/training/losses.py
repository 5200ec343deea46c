"""Tokenizer training losses (reference §3): LPIPS-VGG, PatchGAN discriminator, hinge / non-saturating
adversarial losses and the LeCam regulariser.

Everything here is torchvision-free: LPIPS rebuilds the VGG16 ``features`` stack itself and loads
torchvision's checkpoint file by key.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ibq_hf.errors import CheckpointKeyError

__all__ = [
    "LPIPS",
    "VGG16_URL",
    "LeCamRegularizer",
    "NLayerDiscriminator",
    "hinge_d_loss",
    "non_saturating_g_loss",
]

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"

# torchvision vgg16 "D" configuration: channels per conv, "M" = 2x2 max-pool.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# [start, end) layer indices of the five slices, ending after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
_VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)


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


class _ScalingLayer(nn.Module):
    """[-1,1] input → ImageNet-normalised VGG input: (x − shift) / scale."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class _NetLinLayer(nn.Module):
    """Dropout + 1x1 conv to one channel, no bias; keys ``model.1.weight`` as in LPIPS v0.1."""

    def __init__(self, channels: int, use_dropout: bool = True) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.Dropout(0.5) if use_dropout else nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _normalize_channels(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit-normalise each spatial position's feature vector (eps added to the norm, as in LPIPS)."""
    return x / (torch.sqrt(torch.sum(x * x, dim=1, keepdim=True)) + eps)


def _load_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__}).")
    return dict(state)


def _lpips_package_heads() -> str | None:
    """Path of the `lpips` pip package's ``weights/v0.1/vgg.pth`` when that package is installed."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(next(iter(spec.submodule_search_locations)), "weights", "v0.1", "vgg.pth")
    return path if os.path.isfile(path) else None


class LPIPS(nn.Module):
    """LPIPS-VGG16 v0.1 (reference §3.2): frozen perceptual distance, ``forward(x, y) -> [B,1,1,1]``.

    Inputs are images in [-1,1], [B,3,H,W]. Per slice k: unit-normalise channels, squared difference,
    dropout + 1x1 head ``lin{k}``, spatial mean; the five terms are summed.

    Dropout: the reference trains with the whole loss module in train mode, so Dropout(0.5) before each
    head is **active during training** (reference §3.1, §9.5). This module follows its own ``train()`` /
    ``eval()`` flag like any other: put it in ``eval()`` for deterministic metrics, leave it in train mode
    for reference-faithful training. Parameters are frozen (``requires_grad=False``) either way; gradients
    still flow to the inputs.

    Build with `from_pretrained_weights`; a bare ``LPIPS()`` has random (meaningless) weights.
    """

    def __init__(self, use_dropout: bool = True) -> None:
        super().__init__()
        self.scaling_layer = _ScalingLayer()
        self.net = _VGG16Slices()
        for k, ch in enumerate(LPIPS_CHANNELS):
            setattr(self, f"lin{k}", _NetLinLayer(ch, use_dropout))
        self.requires_grad_(False)

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
        feats = {k: v for k, v in state.items() if k.startswith("features.")}
        unexpected = [k for k in feats if k not in mapping]
        missing = [k for k in mapping if k not in feats]
        own = self.state_dict()
        mismatched = [
            (k, tuple(feats[k].shape), tuple(own[mapping[k]].shape))
            for k in mapping
            if k in feats and feats[k].shape != own[mapping[k]].shape
        ]
        if missing or unexpected or mismatched:
            raise CheckpointKeyError(
                "LPIPS VGG16 backbone (torchvision vgg16 features)",
                missing,
                unexpected,
                mismatched,
                hint=f"Expected torchvision's vgg16-397923af.pth ({VGG16_URL}).",
            )
        with torch.no_grad():
            for src, dst in mapping.items():
                own[dst].copy_(feats[src])

    def load_heads_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load the five v0.1 heads ``lin{0..4}.model.1.weight`` (taming's / SEED-Voken's ``vgg.pth`` or the
        `lpips` package's ``weights/v0.1/vgg.pth``). Strict: any other key is an error."""
        expected = {f"lin{k}.model.1.weight": (1, ch, 1, 1) for k, ch in enumerate(LPIPS_CHANNELS)}
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        mismatched = [
            (k, tuple(state[k].shape), v)
            for k, v in expected.items()
            if k in state and tuple(state[k].shape) != v
        ]
        if missing or unexpected or mismatched:
            raise CheckpointKeyError(
                "LPIPS v0.1 linear heads",
                missing,
                unexpected,
                mismatched,
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
        heads_path = heads_path if heads_path is not None else _lpips_package_heads()
        if heads_path is not None:
            model.load_heads_state_dict(_load_file(heads_path))
        elif random_backbone:
            with torch.no_grad():
                for k, ch in enumerate(LPIPS_CHANNELS):
                    getattr(model, f"lin{k}").model[1].weight.fill_(1.0 / ch)
        else:
            raise ValueError(
                "No LPIPS v0.1 head weights: pass heads_path=... (the 7 KB vgg.pth of taming / SEED-Voken, "
                "or lpips' weights/v0.1/vgg.pth) or `pip install lpips` so they are found automatically."
            )
        return model

    # -------------------------------------------------------------------------------- forward
    def layer_distances(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """Per-slice terms, each [B,1,1,1]; their sum is the LPIPS distance."""
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"LPIPS expects two [B,3,H,W] images of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}."
            )
        if min(x.shape[-2:]) < 16:
            raise ValueError(
                f"LPIPS-VGG needs images of at least 16x16 (four 2x poolings), got {tuple(x.shape[-2:])}."
            )
        feats_x = self.net(self.scaling_layer(x))
        feats_y = self.net(self.scaling_layer(y))
        out = []
        for k, (fx, fy) in enumerate(zip(feats_x, feats_y)):
            diff = (_normalize_channels(fx) - _normalize_channels(fy)) ** 2
            out.append(getattr(self, f"lin{k}")(diff).mean(dim=(2, 3), keepdim=True))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS distance [B,1,1,1] between images x, y in [-1,1] (shape as in the reference, for broadcasting)."""
        return torch.stack(self.layer_distances(x, y), dim=0).sum(dim=0)


# ----------------------------------------------------------------------------------------------------
# Discriminator
# ----------------------------------------------------------------------------------------------------


class NLayerDiscriminator(nn.Module):
    """pix2pix PatchGAN (reference §3.3): ``forward(x [B,3,H,W]) -> logits [B,1,h,w]`` (256² → 30×30).

    ndf 64, 3 strided layers, BatchNorm, LeakyReLU(0.2); keys ``main.{0,2,3,5,6,8,9,11}`` so reference
    checkpoints load as-is; 2,765,633 parameters. Init (reference §1.7): conv weights N(0, 0.02) with
    default biases, BatchNorm weight N(1, 0.02) and bias 0.
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        kw, padw = 4, 1
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, kw, stride=2, padding=padw),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, kw, stride=2, padding=padw, bias=False),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, kw, stride=1, padding=padw, bias=False),
            nn.BatchNorm2d(ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, kw, stride=1, padding=padw),
        ]
        self.main = nn.Sequential(*layers)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, 0.0, 0.02)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


# ----------------------------------------------------------------------------------------------------
# Adversarial losses and LeCam
# ----------------------------------------------------------------------------------------------------


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: 0.5·(mean relu(1 − D(x)) + mean relu(1 + D(x̂))), means over batch×patches."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def non_saturating_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator loss of the reference: average each sample's patch logits **first** (m_b), then
    mean_b softplus(−m_b) (= BCE-with-logits against "real"). logits_fake: [B, ...]."""
    per_sample = logits_fake.reshape(logits_fake.shape[0], -1).mean(dim=1)
    return F.softplus(-per_sample).mean()


class LeCamRegularizer(nn.Module):
    """LeCam regulariser for the discriminator (reference §3.1):
    ``reg = mean(relu(D(x) − ema_fake)²) + mean(relu(ema_real − D(x̂))²)``.

    ``ema_real`` / ``ema_fake`` are EMAs (decay 0.999, init 0) of the batch-mean logits, updated **before**
    the regulariser is computed, as in the reference. Unlike the reference (host floats, lost on resume,
    per-rank), they are registered buffers, so they are saved in checkpoints, and with
    ``all_reduce=True`` the batch means are averaged over ranks first (a deviation, off by default).
    The EMAs update only in training mode (or when ``update=True`` is passed).
    """

    ema_real: torch.Tensor
    ema_fake: torch.Tensor

    def __init__(self, decay: float = 0.999, init: float = 0.0, all_reduce: bool = False) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must lie in [0, 1], got {decay}.")
        self.decay = decay
        self.all_reduce = all_reduce
        self.register_buffer("ema_real", torch.tensor(float(init), dtype=torch.float32))
        self.register_buffer("ema_fake", torch.tensor(float(init), dtype=torch.float32))

    @torch.no_grad()
    def update(self, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> None:
        """Fold the batch means of real and fake logits into the EMAs (rank-averaged if ``all_reduce``)."""
        means = torch.stack([logits_real.detach().float().mean(), logits_fake.detach().float().mean()])
        if self.all_reduce and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(means)
            means /= torch.distributed.get_world_size()
        means = means.to(self.ema_real.device)
        self.ema_real.mul_(self.decay).add_(means[0] * (1.0 - self.decay))
        self.ema_fake.mul_(self.decay).add_(means[1] * (1.0 - self.decay))

    def forward(
        self, logits_real: torch.Tensor, logits_fake: torch.Tensor, update: bool | None = None
    ) -> torch.Tensor:
        """LeCam loss ``mean relu(D(x) − ema_fake)² + mean relu(ema_real − D(x̂))²``.

        The EMAs are updated first when ``update`` is true (default: in training mode only).
        """
        if self.training if update is None else update:
            self.update(logits_real, logits_fake)
        ema_real = self.ema_real.to(logits_fake.dtype)
        ema_fake = self.ema_fake.to(logits_real.dtype)
        return F.relu(logits_real - ema_fake).pow(2).mean() + F.relu(ema_real - logits_fake).pow(2).mean()

    def extra_repr(self) -> str:
        return f"decay={self.decay}, all_reduce={self.all_reduce}"
