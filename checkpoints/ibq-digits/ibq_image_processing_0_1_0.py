# Shipped by ibq-hf 0.1.0 from ibq_hf/image_processing.py (generated at save time; edit the package, not this file).
"""Image input for every IBQ path: safe decoding, mode conversion, and the one resize/crop per named protocol.

Everything that turns a user's or a dataset's picture into tokenizer input goes through this module — the
training data path (`ibq_hf.data.image_transform`), `reconstruct` / `ibq-hf reconstruct`,
`ibq-hf evaluate tokenizer`, code extraction and the demo — so they all see the same pixels.

Protocols (``protocol=`` everywhere):

* ``"reference"`` — the IBQ ImageNet protocol (reference §6, §8): RGB → shortest side to R with cv2
  ``INTER_LINEAR`` semantics (bilinear, half-pixel centres, **no** antialias) → random crop (training) or
  centre crop (evaluation, torchvision rounding) → ``x / 127.5 − 1``. No flip.
* ``"pretrain"`` — the protocol of the two "Pretrain" tokenizers (reference §7.3): torchvision
  ``Resize(R)`` on a PIL image (PIL bilinear, antialiased, longer side truncated) → crop.

Both bound the work by the output: the reference protocol computes only the output rows and columns the crop
keeps, at the full-resize scale (memory ∝ R² whatever the input's shape: a 1,000,000×1 picture costs what a
square one costs), with the pixels of resizing the whole image and then cropping; the pretrain protocol resizes
the whole image (exactly torchvision's pixels) within the aspect-ratio limit, else only the kept box. Absurd
aspect ratios (longer side more than :data:`MAX_ASPECT_RATIO` times the shorter) are refused with
:class:`~ibq_hf.errors.ImageSizeError`.
"""

from __future__ import annotations

import io
import math
import os
import random
import warnings
from collections.abc import Sequence
from typing import IO, Any

import numpy as np
import PIL.Image
import torch

from .ibq_errors_0_1_0 import ImageDecodeError, ImageSizeError

__all__ = [
    "DEFAULT_PROTOCOL",
    "MAX_ASPECT_RATIO",
    "PROTOCOLS",
    "UINT8_ROUNDINGS",
    "ImageInput",
    "check_image_shape",
    "images_to_tensor",
    "numpy_to_pil",
    "open_image",
    "pil_to_tensor",
    "postprocess_images",
    "preprocess",
    "resize_crop",
    "resized_size",
    "to_rgb",
    "to_uint8",
]

#: Names accepted by ``protocol=``; see the module docstring for the pixels each produces.
PROTOCOLS = ("reference", "pretrain")
DEFAULT_PROTOCOL = "reference"

#: Longest accepted ratio of an image's longer side to its shorter side before resizing (a 100:1 strip is
#: already 100 crops wide). Beyond it the crop shows a smear of a few source pixels; such inputs are refused.
MAX_ASPECT_RATIO = 100

# The pretrain protocol resizes the whole picture (exact torchvision pixels) up to this many crops' worth.
_PIL_FULL_RESIZE_RATIO = 100

#: Values of ``output_type`` for :func:`postprocess_images`.
_OUTPUT_TYPES = ("pil", "np", "pt")

ImageInput = (
    PIL.Image.Image | np.ndarray | torch.Tensor | Sequence[PIL.Image.Image | np.ndarray | torch.Tensor]
)

# PIL modes holding more than 8 bits per sample, and the value that maps to white (255) for each.
# PNG/TIFF 16-bit greyscale opens as I;16*; older Pillow (and 32-bit TIFF) give "I", which we read as 16-bit
# data too; "F" (float TIFF) is read as [0, 1]. `convert("RGB")` clips all of these at 255: mostly white.
_HIGH_BIT_DEPTH_WHITE = {
    "I;16": 65535.0,
    "I;16L": 65535.0,
    "I;16B": 65535.0,
    "I;16N": 65535.0,
    "I": 65535.0,
    "F": 1.0,
}


# ---------------------------------------------------------------------------------------------------------------
# Decoding and mode conversion
# ---------------------------------------------------------------------------------------------------------------


def open_image(
    source: str | os.PathLike | bytes | bytearray | IO[bytes] | dict | PIL.Image.Image,
    *,
    max_pixels: int | None = None,
) -> PIL.Image.Image:
    """Decode a picture safely: the size is checked from the header *before* the pixels are decoded.

    Args:
        source: a path, encoded bytes, a binary file object, an undecoded ``datasets.Image`` value
            (``{"bytes", "path"}``) or a PIL image (only checked and loaded).
        max_pixels: the largest accepted width × height; default ``PIL.Image.MAX_IMAGE_PIXELS`` (89.5 M, read at
            call time; ``None`` there disables the check). PIL refuses above twice its own limit regardless.

    Returns:
        The decoded (``load()``-ed) image in its stored mode; pass it to :func:`to_rgb`.

    Raises:
        ImageSizeError: more pixels than allowed (a decompression bomb: a small file that decodes to gigabytes).
        ImageDecodeError: not an image, or truncated/corrupt.
    """
    limit = PIL.Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if isinstance(source, PIL.Image.Image):
        image, where = source, "<PIL image>"
    else:
        if isinstance(source, dict):
            data, path = source.get("bytes"), source.get("path")
        elif isinstance(source, (bytes, bytearray)):
            data, path = bytes(source), None
        elif isinstance(source, (str, os.PathLike)):
            data, path = None, os.fspath(source)
        else:
            data, path = source, getattr(source, "name", None)
        where = str(path) if path else "<bytes>"
        stream = (
            io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data if data is not None else path
        )
        try:
            with warnings.catch_warnings():
                # PIL only warns between its limit and twice it; the limit is checked below instead.
                warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
                image = PIL.Image.open(stream)  # type: ignore[arg-type]
        except PIL.Image.DecompressionBombError as error:
            raise ImageSizeError(
                f"{where}: {error} Refusing to decode it; resize the picture, or raise PIL.Image.MAX_IMAGE_PIXELS "
                "if you trust the file."
            ) from None
        except FileNotFoundError:
            raise
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            raise ImageDecodeError(
                f"{where}: not a readable image ({type(error).__name__}: {error})."
            ) from None
    width, height = image.size
    if limit is not None and width * height > limit:
        raise ImageSizeError(
            f"{where}: the image is {width}×{height} = {width * height:,} pixels, more than the limit of "
            f"{int(limit):,} (a possible decompression bomb). Resize it first, or pass a larger max_pixels "
            "(PIL.Image.MAX_IMAGE_PIXELS) if you trust the file."
        )
    if width < 1 or height < 1:
        raise ImageDecodeError(f"{where}: the image is empty ({width}×{height}).")
    try:
        image.load()  # decode now, so truncated files fail here and not inside a transform
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageDecodeError(
            f"{where}: the file is damaged or truncated and cannot be decoded ({type(error).__name__}: {error})."
        ) from None
    return image


def to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """Any PIL mode → 8-bit RGB: the one mode conversion used wherever images are read.

    High-bit-depth greyscale (``I;16``, ``I;16B``, ``I;16L``, ``I``: 0..65535; ``F``: 0..1) is scaled to
    0..255 with rounding (``round(v · 255 / white)``), where ``convert("RGB")`` would clip it (16-bit PNGs
    would come out white). 16-bit RGB(A) PNGs are already reduced to 8 bits by PIL when decoded (high byte).
    Alpha is dropped without compositing, like the reference's ``convert("RGB")``; palette, CMYK, YCbCr, LAB,
    ... go through PIL's conversion.
    """
    if image.mode == "RGB":
        return image
    white = _HIGH_BIT_DEPTH_WHITE.get(image.mode)
    if white is not None:
        values = np.asarray(image, dtype=np.float64)
        values = np.nan_to_num(values, nan=0.0, posinf=white, neginf=0.0)
        grey = np.rint(np.clip(values, 0.0, white) * (255.0 / white)).astype(np.uint8)
        return PIL.Image.fromarray(grey).convert("RGB")
    return image.convert("RGB")


def pil_to_tensor(image: PIL.Image.Image) -> torch.Tensor:
    """PIL image (any mode) → uint8 [3, H, W] through :func:`to_rgb` (a channels-last view of a writable copy)."""
    return torch.from_numpy(np.array(to_rgb(image), dtype=np.uint8)).permute(2, 0, 1)


# ---------------------------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------------------------


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"Unknown preprocessing protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}."
        )


def check_image_shape(height: int, width: int, *, max_aspect_ratio: float | None = None) -> None:
    """Refuse empty images and longer/shorter side ratios above ``max_aspect_ratio``.

    ``None`` uses :data:`MAX_ASPECT_RATIO`, read at call time (so setting
    ``ibq_hf.image_processing.MAX_ASPECT_RATIO`` changes it everywhere, like ``PIL.Image.MAX_IMAGE_PIXELS``);
    ``math.inf`` accepts any shape (the work stays bounded by the output size).
    """
    if height < 1 or width < 1:
        raise ImageSizeError(f"The image is empty ({width}×{height} pixels).")
    limit = MAX_ASPECT_RATIO if max_aspect_ratio is None else max_aspect_ratio
    ratio = max(height, width) / min(height, width)
    if ratio > limit:
        raise ImageSizeError(
            f"The image is {width}×{height} pixels, an aspect ratio of {ratio:.0f}:1, above the limit of "
            f"{limit:g}:1 (ibq_hf.image_processing.MAX_ASPECT_RATIO). Crop it to a less extreme shape first, or "
            "raise the limit if you really want a crop of it."
        )


def resized_size(
    height: int, width: int, resolution: int, protocol: str = DEFAULT_PROTOCOL
) -> tuple[int, int]:
    """Size (h, w) after the protocol's shortest-side resize to ``resolution``.

    ``"reference"``: the longer side is ``round(side · R / shorter)`` (at least R), like albumentations'
    ``SmallestMaxSize``; ``"pretrain"``: ``int(R · longer / shorter)``, like torchvision's ``Resize(R)``.
    """
    _check_protocol(protocol)
    if protocol == "pretrain":
        if width <= height:
            return int(resolution * height / width), resolution
        return resolution, int(resolution * width / height)
    scale = resolution / min(height, width)
    new_h = resolution if height <= width else max(resolution, round(height * scale))
    new_w = resolution if width <= height else max(resolution, round(width * scale))
    return new_h, new_w


def _center_offset(size: int, crop: int) -> int:
    """torchvision ``CenterCrop`` rounding (Python's round half to even)."""
    return round((size - crop) / 2.0)


def _randint(high: int, generator: torch.Generator | None, rng: random.Random | None) -> int:
    """Uniform integer in [0, high); draws nothing when there is a single choice."""
    if high <= 1:
        return 0
    if generator is not None:
        return int(torch.randint(high, (1,), generator=generator))
    if rng is not None:
        return rng.randrange(high)
    return int(torch.randint(high, (1,)))


def _linear_taps(in_size: int, out_size: int, start: int, count: int) -> tuple[torch.Tensor, ...]:
    """Source indices and weights of output positions ``start .. start+count`` of a 1-D linear resize.

    The geometry of ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)`` (= cv2
    ``INTER_LINEAR``): float32 scale ``in/out``, source ``scale·(dst + ½) − ½`` clamped at 0, two neighbours.
    Returns (i0, i1, w0, w1) with float32 weights.
    """
    dst = torch.arange(start, start + count, dtype=torch.int64)
    if in_size == out_size:
        return dst, dst, torch.ones(count), torch.zeros(count)
    scale = float(np.float32(in_size) / np.float32(out_size))
    src = (scale * (dst.double() + 0.5) - 0.5).float().clamp_min(0.0)  # one rounding, as torch's kernel
    i0 = src.floor().long().clamp_max(in_size - 1)
    w1 = (src - i0.float()).clamp(0.0, 1.0)
    w0 = 1.0 - w1
    i1 = torch.where(i0 < in_size - 1, i0 + 1, i0)
    return i0, i1, w0, w1


def _bilinear_window(
    pixels: torch.Tensor, size: tuple[int, int], top: int, left: int, crop: int
) -> torch.Tensor:
    """Rows ``top..top+crop`` × columns ``left..left+crop`` of the bilinear resize of ``pixels`` to ``size``.

    Only the source rows/columns the kept outputs read are gathered (2·crop of each; the longer side is
    narrowed first, so no intermediate is as long as the input), then interpolated along the width, then the
    height, in float32, like torch's kernel. Elementwise ops make the result deterministic (torch's own kernel
    rounds near-ties differently with the thread count, see docs/tokenizer.md). Returns float32 [C, crop, crop].
    """
    _, height, width = pixels.shape
    device = pixels.device
    h0, h1, wh0, wh1 = (t.to(device) for t in _linear_taps(height, size[0], top, crop))
    c0, c1, wc0, wc1 = (t.to(device) for t in _linear_taps(width, size[1], left, crop))
    rows = torch.cat([h0, h1])
    if width > height:
        both = pixels.index_select(2, torch.cat([c0, c1])).index_select(1, rows)  # [C, 2·crop, 2·crop]
        first, second = both[:, :, :crop], both[:, :, crop:]
    else:
        kept_rows = pixels.index_select(1, rows)  # [C, 2·crop, W], W ≤ H
        first, second = kept_rows.index_select(2, c0), kept_rows.index_select(2, c1)
    along_width = first.float().mul_(wc0).add_(second.float().mul_(wc1))  # [C, 2·crop, crop]: rows h0 | h1
    upper, lower = along_width[:, :crop], along_width[:, crop:]
    return upper.mul_(wh0[:, None]).add_(lower.mul_(wh1[:, None]))


def _pil_window(
    image: PIL.Image.Image, size: tuple[int, int], top: int, left: int, crop: int
) -> PIL.Image.Image:
    """The crop of PIL's antialiased bilinear resize to ``size`` (h, w).

    Within :data:`MAX_ASPECT_RATIO` the whole image is resized and cropped (exactly torchvision's pixels; at
    most MAX_ASPECT_RATIO·R² pixels). Beyond it (only reachable with the limit raised) only the kept region is
    resampled, through PIL's ``box``: output pixel i maps to ``box0 + (i + ½)·scale`` as in the full resize,
    up to float rounding of the filter weights (±1 level on a fraction of a percent of the pixels).
    """
    width, height = image.size
    if size[0] * size[1] <= _PIL_FULL_RESIZE_RATIO * crop * crop:
        return image.resize((size[1], size[0]), PIL.Image.Resampling.BILINEAR).crop(
            (left, top, left + crop, top + crop)
        )
    sx, sy = width / size[1], height / size[0]
    box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
    return image.resize((crop, crop), PIL.Image.Resampling.BILINEAR, box=box)


def resize_crop(
    pixels: torch.Tensor,
    resolution: int,
    *,
    protocol: str = DEFAULT_PROTOCOL,
    top: int | None = None,
    left: int | None = None,
    max_aspect_ratio: float | None = None,
) -> torch.Tensor:
    """[C, H, W] → [C, R, R]: the protocol's shortest-side resize to R, then the R×R crop at (top, left).

    Args:
        pixels: uint8 (0..255) or float (any range, e.g. [0, 1]) channels-first pixels.
        resolution: R.
        protocol: one of :data:`PROTOCOLS`.
        top: the crop's first row in the *resized* image (see :func:`resized_size`); ``None`` centres it
            (torchvision rounding).
        left: the crop's first column, likewise.
        max_aspect_ratio: see :func:`check_image_shape`.

    Returns:
        uint8 input → uint8 (rounded half to even, like the reference's uint8 output); float → float32.
        Only the kept rows/columns are computed, at the full-resize scale.
    """
    _check_protocol(protocol)
    if not isinstance(resolution, int) or resolution <= 0:
        raise ValueError(f"resolution must be a positive int, got {resolution!r}.")
    if pixels.ndim != 3:
        raise ValueError(f"pixels must be [C, H, W], got shape {tuple(pixels.shape)}.")
    _, height, width = pixels.shape
    check_image_shape(height, width, max_aspect_ratio=max_aspect_ratio)
    new_h, new_w = resized_size(height, width, resolution, protocol)
    top = _center_offset(new_h, resolution) if top is None else top
    left = _center_offset(new_w, resolution) if left is None else left
    if not (0 <= top <= new_h - resolution and 0 <= left <= new_w - resolution):
        raise ValueError(
            f"Crop offset (top={top}, left={left}) is outside the resized {new_w}×{new_h} image for a "
            f"{resolution}×{resolution} crop."
        )
    is_uint8 = pixels.dtype == torch.uint8
    if not is_uint8 and not pixels.is_floating_point():
        raise ValueError(f"pixels must be uint8 or floating point, got dtype {pixels.dtype}.")
    if protocol == "pretrain":
        return _pretrain_window(pixels, (new_h, new_w), top, left, resolution)
    if (new_h, new_w) == (height, width):
        window = pixels[:, top : top + resolution, left : left + resolution]
        return window.clone() if is_uint8 else window.float()
    window = _bilinear_window(pixels, (new_h, new_w), top, left, resolution)
    if is_uint8:
        return window.round_().clamp_(0, 255).to(torch.uint8)
    return window.float()


def _pretrain_window(
    pixels: torch.Tensor, size: tuple[int, int], top: int, left: int, resolution: int
) -> torch.Tensor:
    """The "pretrain" crop through PIL: uint8 as an RGB/L image (PIL's 8-bit path), float channel by channel."""
    if pixels.dtype == torch.uint8:
        array = np.ascontiguousarray(pixels.permute(1, 2, 0).cpu().numpy())
        image = PIL.Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
        window = np.array(_pil_window(image, size, top, left, resolution))
        window = window[..., None] if window.ndim == 2 else window
        return torch.from_numpy(np.ascontiguousarray(window.transpose(2, 0, 1)))
    channels = [
        np.asarray(_pil_window(PIL.Image.fromarray(c.float().cpu().numpy()), size, top, left, resolution))
        for c in pixels
    ]
    return torch.from_numpy(np.stack(channels))


# ---------------------------------------------------------------------------------------------------------------
# The per-protocol preprocessing
# ---------------------------------------------------------------------------------------------------------------


def preprocess(
    image: PIL.Image.Image | torch.Tensor,
    resolution: int,
    *,
    protocol: str = DEFAULT_PROTOCOL,
    random_crop: bool = False,
    generator: torch.Generator | None = None,
    rng: random.Random | None = None,
    max_aspect_ratio: float | None = None,
) -> torch.Tensor:
    """The tokenizer input of one picture under ``protocol``: float32 [3, R, R] in [-1, 1].

    ``image`` is a PIL image (any mode, see :func:`to_rgb`) or a uint8 [3, H, W] tensor. Evaluation and
    reconstruction use the centre crop (``random_crop=False``, no randomness); training and code extraction
    draw the crop's top then left offset from ``generator`` (torch), else ``rng`` (``random.Random``), else the
    global torch RNG. The reference protocol has no flip; callers that want one add it after.
    """
    _check_protocol(protocol)
    if isinstance(image, PIL.Image.Image):
        pixels = pil_to_tensor(image)
    elif (
        isinstance(image, torch.Tensor)
        and image.dtype == torch.uint8
        and image.ndim == 3
        and image.shape[0] == 3
    ):
        pixels = image
    else:
        raise TypeError(
            "preprocess expects a PIL image or a uint8 [3, H, W] tensor; use images_to_tensor for numpy arrays, "
            "float tensors and batches."
        )
    _, height, width = pixels.shape
    check_image_shape(height, width, max_aspect_ratio=max_aspect_ratio)
    top = left = None
    if random_crop:
        new_h, new_w = resized_size(height, width, resolution, protocol)
        top = _randint(new_h - resolution + 1, generator, rng)
        left = _randint(new_w - resolution + 1, generator, rng)
    window = resize_crop(pixels, resolution, protocol=protocol, top=top, left=left, max_aspect_ratio=math.inf)
    return window.float().div_(127.5).sub_(1.0)


def _to_chw(image: Any, where: str) -> list[torch.Tensor]:
    """One image (or batch) → list of [3, H, W]: uint8 (PIL, uint8, uint16 rescaled) or float32 in [0, 1]."""
    if isinstance(image, PIL.Image.Image):
        return [pil_to_tensor(image)]
    if isinstance(image, np.ndarray):
        if image.ndim not in (3, 4) or image.shape[-1] != 3:
            raise ValueError(
                f"{where}: a numpy image must be [H, W, 3] or [B, H, W, 3] (channels last, RGB); got shape "
                f"{image.shape}. Convert grayscale/RGBA pictures to RGB first."
            )
        if image.dtype == np.uint16:  # 16-bit pictures: the same scaling as to_rgb
            image = np.rint(image.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
        array = np.ascontiguousarray(image)
        tensor = torch.from_numpy(array if array.flags.writeable else array.copy()).movedim(-1, -3)
    elif isinstance(image, torch.Tensor):
        if image.ndim not in (3, 4) or image.shape[-3] != 3:
            raise ValueError(
                f"{where}: an image tensor must be [3, H, W] or [B, 3, H, W] (channels first, RGB); got shape "
                f"{tuple(image.shape)}."
            )
        tensor = image.detach().cpu()
    else:
        raise TypeError(
            f"{where}: expected a PIL image, a numpy array or a torch tensor, got {type(image).__name__}."
        )
    if tensor.is_floating_point():
        tensor = tensor.float()
        if tensor.numel():
            if not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"{where}: the image contains NaN or infinite values; pass finite pixels.")
            lo, hi = float(tensor.min()), float(tensor.max())
            if lo < -1e-3 or hi > 1.0 + 1e-3:
                raise ValueError(
                    f"{where}: float images must lie in [0, 1] (the pipeline's image convention), got values in "
                    f"[{lo:.3g}, {hi:.3g}]. Map [-1, 1] tensors with (x + 1) / 2 and [0, 255] ones with x / 255, "
                    "or pass uint8."
                )
            tensor = tensor.clamp(0.0, 1.0)
    elif tensor.dtype != torch.uint8:
        raise ValueError(
            f"{where}: images must be uint8, uint16 (numpy) or floating point, got dtype {tensor.dtype}."
        )
    return list(tensor) if tensor.ndim == 4 else [tensor]


def images_to_tensor(
    images: ImageInput, resolution: int | None = None, protocol: str = DEFAULT_PROTOCOL
) -> torch.Tensor:
    """PIL images, numpy arrays or tensors → float32 pixels [B, 3, H, W] in [-1, 1] (the tokenizer's input).

    Accepted: PIL images (any mode, through :func:`to_rgb`); uint8 arrays/tensors in [0, 255]; uint16 numpy
    arrays (scaled like 16-bit PNGs); float ones in [0, 1]. numpy is channels last ([H, W, 3] / [B, H, W, 3]),
    torch channels first ([3, H, W] / [B, 3, H, W]); a list may mix them. ``resolution`` applies the
    protocol's resize and centre crop (:func:`resize_crop`): uint8 pictures get exactly the pixels of the
    evaluation data path (``image_transform(R, train=False)``); float ones are resized without quantization.
    ``None`` keeps the sizes, which must then agree.
    """
    _check_protocol(protocol)
    if resolution is not None and (
        isinstance(resolution, bool) or not isinstance(resolution, int) or resolution <= 0
    ):
        raise ValueError(f"resolution must be a positive int or None, got {resolution!r}.")
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise ValueError("images is empty: pass at least one image.")
    tensors: list[torch.Tensor] = []
    for i, item in enumerate(items):
        tensors += _to_chw(item, where=f"images[{i}]" if len(items) > 1 else "images")
    if resolution is not None:
        tensors = [resize_crop(t, resolution, protocol=protocol) for t in tensors]
    sizes = sorted({tuple(t.shape[-2:]) for t in tensors})
    if len(sizes) > 1:
        raise ValueError(
            f"Images have different sizes {sizes}; pass resolution=N to resize and centre-crop them all to N×N."
        )
    # uint8 → x/127.5 − 1 exactly as the data path; float [0, 1] → 2x − 1.
    return torch.stack(
        [t.float().div(127.5).sub(1.0) if t.dtype == torch.uint8 else t * 2.0 - 1.0 for t in tensors]
    )


# ---------------------------------------------------------------------------------------------------------------
# Output conversion
# ---------------------------------------------------------------------------------------------------------------


def postprocess_images(
    pixels: torch.Tensor, output_type: str
) -> list[PIL.Image.Image] | np.ndarray | torch.Tensor:
    """Decoder output [B, 3, H, W] (≈[-1, 1]) → images: clamp to [-1, 1], map to [0, 1]; PIL rounds 255·x.

    ``"np"`` gives float32 [B, H, W, 3], ``"pt"`` float32 [B, 3, H, W] (on the decoder's device); for PIL,
    ``np.round(np_images * 255)`` are exactly its pixels.
    """
    images = (pixels.float().clamp(-1.0, 1.0) + 1.0) / 2.0
    if output_type == "pt":
        return images
    array = images.permute(0, 2, 3, 1).cpu().numpy()
    if output_type == "np":
        return array
    if output_type == "pil":
        return numpy_to_pil(array)
    raise ValueError(f"output_type must be one of {_OUTPUT_TYPES} here, got {output_type!r}.")


#: Values of ``rounding`` for :func:`to_uint8`.
UINT8_ROUNDINGS = ("round", "truncate")


def to_uint8(images01: torch.Tensor | np.ndarray, rounding: str = "round") -> np.ndarray:
    """Images in [0, 1] → uint8 0..255, channels last: the one float-to-uint8 conversion.

    Args:
        images01: a torch tensor [B, 3, H, W] (or [3, H, W]), computed in float32 and returned as
            [B, H, W, 3] (or [H, W, 3]); or a float numpy array, channels last ([B, H, W, 3] / [H, W, 3]; any
            shape is converted elementwise), computed in its own precision.
        rounding: ``"round"`` — ``round(255·x)``, half to even: what saved PNGs and the pipeline's PIL output
            hold; ``"truncate"`` — ``floor(255·x)``, the reference's ``astype(uint8)`` (its sampling and
            PSNR/SSIM; on average half a level darker).

    Values are clipped to [0, 1] first.
    """
    if rounding not in UINT8_ROUNDINGS:
        raise ValueError(f"rounding must be one of {UINT8_ROUNDINGS}, got {rounding!r}.")
    if isinstance(images01, torch.Tensor):
        if images01.ndim not in (3, 4) or images01.shape[-3] != 3:
            raise ValueError(
                f"An image tensor must be [B, 3, H, W] or [3, H, W] (channels first, RGB); got shape "
                f"{tuple(images01.shape)}."
            )
        scaled = images01.detach().float().clamp(0, 1).mul(255).movedim(-3, -1).cpu().numpy()
    else:
        array = np.asarray(images01)
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(
                f"to_uint8 expects float images in [0, 1], got dtype {array.dtype}; uint8 images need no conversion."
            )
        scaled = np.clip(array, 0.0, 1.0) * 255.0
    return (np.round(scaled) if rounding == "round" else np.floor(scaled)).astype(np.uint8)


def numpy_to_pil(images: np.ndarray) -> list[PIL.Image.Image]:
    """Float images [B, H, W, 3] in [0, 1] → RGB PIL images, uint8 by rounding ``255·x`` (not truncating)."""
    return [PIL.Image.fromarray(image) for image in to_uint8(images, "round")]
