"""Image data for tokenizer and AR training: transforms, streaming datasets, robust decoding, collate.

The reference pipeline (reference §8) is: PIL open → RGB → shortest side to R (cv2 bilinear, no
antialias) → RandomCrop (train) / CenterCrop (eval) → x/127.5 − 1, **no** horizontal flip. This module
reproduces it without torchvision and wraps it around a `datasets` stream that

* decodes images itself, so a corrupt or truncated file is skipped and counted instead of crashing
  a multi-day run (`DataStats`);
* shards per rank (`split_dataset_by_node`) and shuffles with a buffer;
* resumes mid-epoch through `IterableDataset.state_dict()` / `load_state_dict()`.
"""

from __future__ import annotations

import io
import random
import threading
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "DataStats",
    "GatedDatasetError",
    "ImageStream",
    "ImageTransform",
    "collate_images",
    "image_transform",
    "load_image_dataset",
]

# PIL raises a zoo of exception types for broken files; these are the ones that mean "bad data".
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError)


# ----------------------------------------------------------------------------------------------------
# Transform
# ----------------------------------------------------------------------------------------------------


def _resize_shortest_side(pixels: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 [3,H,W] → uint8 [3,h,w] with min(h,w) == resolution.

    Bilinear with half-pixel centres and **no antialias**, like cv2 ``INTER_LINEAR`` used by the
    reference's albumentations ``SmallestMaxSize``. PIL's BILINEAR would antialias when downscaling
    (its filter support grows with the scale factor), which blurs more than the reference, so we use
    ``F.interpolate(antialias=False)`` instead. Remaining difference: cv2 uses 11-bit fixed-point weights
    on uint8, we compute in fp32 and round, so pixels can differ by 1 level.
    """
    _, h, w = pixels.shape
    scale = resolution / min(h, w)
    new_h = resolution if h <= w else max(resolution, round(h * scale))
    new_w = resolution if w <= h else max(resolution, round(w * scale))
    if (new_h, new_w) == (h, w):
        return pixels
    out = F.interpolate(
        pixels[None].float(), size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=False
    )[0]
    return out.round_().clamp_(0, 255).to(torch.uint8)


@dataclass
class ImageTransform:
    """PIL image → float tensor [3,R,R] in [-1,1] (reference §8). Build with `image_transform`.

    Randomness (crop offset, flip) comes from, in order of priority: the ``generator`` passed to
    ``__call__``, a per-sample python ``random.Random(seed)`` when ``seed`` is passed, else the global
    torch RNG (what a seeded DataLoader reproduces). Eval mode with no flip uses no randomness at all.
    """

    resolution: int
    train: bool
    hflip: bool = False

    def __post_init__(self) -> None:
        if self.resolution <= 0:
            raise ValueError(f"resolution must be a positive integer, got {self.resolution}.")

    def _randint(self, high: int, generator: torch.Generator | None, rng: random.Random | None) -> int:
        """Uniform integer in [0, high)."""
        if high <= 1:
            return 0
        if generator is not None:
            return int(torch.randint(high, (1,), generator=generator))
        if rng is not None:
            return rng.randrange(high)
        return int(torch.randint(high, (1,)))

    def __call__(
        self, image: Image.Image, generator: torch.Generator | None = None, seed: int | None = None
    ) -> torch.Tensor:
        if image.mode != "RGB":
            image = image.convert("RGB")
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)  # [3,H,W]
        pixels = _resize_shortest_side(pixels, self.resolution)
        _, h, w = pixels.shape
        r = self.resolution
        rng = random.Random(seed) if (seed is not None and generator is None) else None
        if self.train:
            top = self._randint(h - r + 1, generator, rng)
            left = self._randint(w - r + 1, generator, rng)
        else:  # torchvision CenterCrop rounding
            top = round((h - r) / 2.0)
            left = round((w - r) / 2.0)
        pixels = pixels[:, top : top + r, left : left + r]
        if self.hflip and self._randint(2, generator, rng) == 1:
            pixels = pixels.flip(-1)
        return pixels.float().div_(127.5).sub_(1.0)


def image_transform(resolution: int, train: bool, hflip: bool = False) -> ImageTransform:
    """The reference image transform: shortest side → ``resolution``, random (train) / center (eval)
    crop, optional horizontal flip (off by default, as in the reference), scaled to [-1,1].

    Returns a callable ``(PIL.Image, generator=None, seed=None) -> FloatTensor[3,R,R]``; any PIL mode
    (L, P, RGBA, CMYK, ...) is converted to RGB first (alpha is dropped, like the reference's
    ``convert("RGB")``).
    """
    return ImageTransform(resolution=resolution, train=train, hflip=hflip)


# ----------------------------------------------------------------------------------------------------
# Robust decoding and statistics
# ----------------------------------------------------------------------------------------------------


@dataclass
class DataStats:
    """Counts of what the decoding step did, for logs. Thread-safe; one object per process.

    ``skipped``: unreadable images dropped; ``converted``: images whose mode was not RGB, by mode;
    ``seen``: examples looked at. With DataLoader workers each worker has its own copy (counts then
    stay in the workers); with ``num_workers=0`` they are exact in the main process.
    """

    seen: int = 0
    skipped: int = 0
    converted: Counter = field(default_factory=Counter)
    skipped_examples: list[str] = field(default_factory=list)
    max_recorded: int = 20
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record_skip(self, where: str, error: BaseException) -> None:
        with self._lock:
            self.skipped += 1
            if len(self.skipped_examples) < self.max_recorded:
                self.skipped_examples.append(f"{where}: {type(error).__name__}: {error}")

    def as_dict(self) -> dict[str, int]:
        """Flat numbers for a logger: ``{"data/seen", "data/skipped", "data/converted", "data/converted_<MODE>"}``."""
        out = {
            "data/seen": self.seen,
            "data/skipped": self.skipped,
            "data/converted": sum(self.converted.values()),
        }
        out.update({f"data/converted_{mode}": n for mode, n in sorted(self.converted.items())})
        return out

    def __getstate__(self) -> dict[str, Any]:  # picklable for DataLoader workers / datasets fingerprinting
        state = self.__dict__.copy()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _open_image(value: Any) -> tuple[Image.Image, str]:
    """Decode an undecoded `datasets.Image` value (``{"bytes", "path"}``), a path, bytes or a PIL image.

    Calls ``load()`` so truncated files fail here, not later inside the transform.
    """
    if isinstance(value, Image.Image):
        value.load()
        return value, "<PIL image>"
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
    elif isinstance(value, (bytes, bytearray)):
        data, path = bytes(value), None
    else:
        data, path = None, str(value)
    where = path or "<bytes>"
    image = Image.open(io.BytesIO(data)) if data is not None else Image.open(path)
    image.load()
    return image, where


def _sample_seed(seed: int, value: Any) -> int:
    """Deterministic per-sample seed from the base seed and the image content (resume-safe: no counter)."""
    data = value.get("bytes") if isinstance(value, dict) else value if isinstance(value, bytes) else None
    if data is None:
        key = str(value.get("path") if isinstance(value, dict) else value).encode()
    else:
        key = data
    return (seed * 1_000_003 + zlib.crc32(key)) & 0xFFFFFFFF


class _ExampleMapper:
    """Batched ``datasets`` map: decode, convert, transform; drop (and count) broken images."""

    def __init__(
        self,
        transform: ImageTransform,
        image_column: str,
        label_column: str | None,
        stats: DataStats,
        transform_seed: int | None,
    ) -> None:
        self.transform = transform
        self.image_column = image_column
        self.label_column = label_column
        self.stats = stats
        self.transform_seed = transform_seed

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        pixel_values: list[np.ndarray] = []
        labels: list[int] = []
        images = batch[self.image_column]
        targets = batch[self.label_column] if self.label_column is not None else [-1] * len(images)
        for value, label in zip(images, targets):
            self.stats.seen += 1
            try:
                image, _ = _open_image(value)
                mode = image.mode
                if mode != "RGB":
                    image = image.convert("RGB")  # may itself fail on exotic modes: counted as skipped
                seed = _sample_seed(self.transform_seed, value) if self.transform_seed is not None else None
                pixels = self.transform(image, seed=seed)
            except _IMAGE_ERRORS as error:
                where = value.get("path") if isinstance(value, dict) else None
                self.stats.record_skip(str(where or "<bytes>"), error)
                continue
            if mode != "RGB":
                self.stats.converted[mode] += 1
            pixel_values.append(pixels.numpy())  # numpy: avoids torch's copy-construct warning in datasets
            labels.append(int(label))
        return {"pixel_values": pixel_values, "class_labels": labels}


# ----------------------------------------------------------------------------------------------------
# Dataset loading
# ----------------------------------------------------------------------------------------------------


try:  # datasets is an optional ("train") dependency
    from datasets.exceptions import DatasetNotFoundError as _DatasetNotFoundError
except ImportError:  # pragma: no cover - exercised only without datasets installed
    _DatasetNotFoundError = FileNotFoundError  # type: ignore[assignment,misc]


class GatedDatasetError(_DatasetNotFoundError):
    """The dataset is gated on the Hub (ImageNet is) and this machine is not authenticated/authorised."""


@dataclass
class ImageStream:
    """What `load_image_dataset` returns.

    ``dataset`` yields ``{"pixel_values": float32 [3,R,R] in [-1,1], "class_labels": int}``;
    ``class_names`` comes from the label column's ClassLabel (None when absent or not a ClassLabel).
    """

    dataset: Any  # datasets.IterableDataset
    stats: DataStats
    image_column: str
    label_column: str | None
    class_names: list[str] | None

    def state_dict(self) -> dict:
        """Stream position (shard + offset + shuffle state) for exact mid-epoch resume."""
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Continue from a position saved by `state_dict` (call before iterating again)."""
        self.dataset.load_state_dict(state)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle shards and buffer differently per epoch (the seed is ``seed + epoch``)."""
        self.dataset.set_epoch(epoch)


def _detect_columns(
    features: Any,
    columns: Sequence[str],
    image_column: str | None,
    label_column: str | None,
    require_labels: bool,
) -> tuple[str, str | None]:
    import datasets

    def typed(kind: type) -> list[str]:
        return [name for name, feat in (features or {}).items() if isinstance(feat, kind)]

    listing = f"available columns: {list(columns)}" + (
        f" with features {dict(features)}" if features else " (features unknown for this stream)"
    )
    if image_column is None:
        found = typed(datasets.Image)
        if len(found) != 1:
            why = "no column of type datasets.Image" if not found else f"several Image columns {found}"
            raise ValueError(
                f"Cannot pick the image column: {why}; {listing}. Pass image_column=... to choose one."
            )
        image_column = found[0]
    elif columns and image_column not in columns:
        raise ValueError(f"image_column={image_column!r} is not in the dataset; {listing}.")
    if label_column is None:
        found = typed(datasets.ClassLabel)
        if len(found) == 1:
            label_column = found[0]
        elif require_labels:
            why = (
                "no column of type datasets.ClassLabel"
                if not found
                else f"several ClassLabel columns {found}"
            )
            raise ValueError(
                f"Cannot pick the label column: {why}; {listing}. Pass label_column=... (integer class ids), "
                "or require_labels=False for unlabelled tokenizer training (labels are then -1)."
            )
    elif columns and label_column not in columns:
        raise ValueError(f"label_column={label_column!r} is not in the dataset; {listing}.")
    return image_column, label_column


def load_image_dataset(
    dataset_name: str | None = "ILSVRC/imagenet-1k",
    dataset_config_name: str | None = None,
    train_data_dir: str | None = None,
    data_files: str | Sequence[str] | dict[str, Any] | None = None,
    split: str = "train",
    streaming: bool = True,
    image_column: str | None = None,
    label_column: str | None = None,
    resolution: int = 256,
    train: bool = True,
    hflip: bool = False,
    shuffle: bool | None = None,
    seed: int = 0,
    shuffle_buffer_size: int = 1000,
    rank: int = 0,
    world_size: int = 1,
    transform_seed: int | None = None,
    require_labels: bool = True,
    num_shards: int = 16,
    map_batch_size: int = 16,
    cache_dir: str | None = None,
    token: str | bool | None = None,
    stats: DataStats | None = None,
) -> ImageStream:
    """Load an image classification dataset as a transformed, sharded, resumable `datasets` stream.

    Source, in order: ``train_data_dir`` (an ``imagefolder``: ``<dir>/<class>/*.png`` or
    ``<dir>/<split>/<class>/*``), ``data_files`` (parquet files), else the Hub ``dataset_name``
    (default: the gated ``ILSVRC/imagenet-1k``). ``streaming=False`` prepares the Arrow cache first, then
    iterates it as ``num_shards`` shards (several shards → several DataLoader workers).

    Columns: ``image_column`` / ``label_column`` or the single ``Image`` / ``ClassLabel`` feature.
    Images are decoded here (not by ``datasets``) so broken files are skipped and counted in ``stats``.

    Order: when ``shuffle`` (default: ``train``) and ``shuffle_buffer_size > 0``, shards are shuffled and a
    buffer mixes examples; then the stream is split over ``world_size`` ranks. Resume with
    ``stream.load_state_dict(saved)``: exact (no repeats, no skips) without a shuffle buffer; with one,
    ``datasets`` drops the up-to-``shuffle_buffer_size`` buffered examples on resume (never repeats them).

    Crop randomness: ``transform_seed=None`` draws from the global torch RNG (new crops every epoch, like
    the reference); an int makes each image's crop a function of (seed, image bytes), which stays
    identical across resumes — change it per epoch (e.g. ``seed + epoch``) to vary crops.
    """
    import datasets
    from datasets.distributed import split_dataset_by_node

    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"Need 0 <= rank < world_size, got rank={rank}, world_size={world_size}.")
    if shuffle_buffer_size < 0:
        raise ValueError(f"shuffle_buffer_size must be >= 0, got {shuffle_buffer_size}.")
    stats = stats if stats is not None else DataStats()
    shuffle = train if shuffle is None else shuffle

    if train_data_dir is not None:
        path, kwargs = "imagefolder", {"data_dir": train_data_dir}
    elif data_files is not None:
        files = data_files if isinstance(data_files, dict) else {split: data_files}
        path, kwargs = "parquet", {"data_files": files}
    elif dataset_name is not None:
        path, kwargs = dataset_name, {"name": dataset_config_name}
    else:
        raise ValueError("Give one data source: train_data_dir=..., data_files=... or dataset_name=....")
    try:
        raw = datasets.load_dataset(
            path, split=split, streaming=streaming, cache_dir=cache_dir, token=token, **kwargs
        )
    except _DatasetNotFoundError as error:
        if "gated" in str(error).lower():
            raise GatedDatasetError(
                f"{path!r} is a gated dataset on the Hugging Face Hub: accept its terms on "
                f"https://huggingface.co/datasets/{path}, then run `hf auth login` (`huggingface-cli login` "
                "with huggingface-hub < 1.0; or set HF_TOKEN, "
                "or pass token=...). Alternatively point train_data_dir=... at a local copy "
                f"(imagefolder) or data_files=... at parquet files. Original error: {error}"
            ) from error
        raise
    if not streaming:
        raw = raw.to_iterable_dataset(num_shards=max(1, min(num_shards, len(raw))))

    columns = list(raw.column_names or (raw.features or {}).keys())
    image_column, label_column = _detect_columns(
        raw.features, columns, image_column, label_column, require_labels
    )
    class_names = None
    if raw.features is not None and isinstance(raw.features.get(label_column), datasets.ClassLabel):
        class_names = list(raw.features[label_column].names)

    # Decode ourselves: a broken file must be counted and skipped, not crash inside datasets' decoding.
    if raw.features is not None and isinstance(raw.features.get(image_column), datasets.Image):
        raw = raw.cast_column(image_column, datasets.Image(decode=False))
    if shuffle and shuffle_buffer_size > 0:  # 0: stream order as stored (the only exactly resumable order)
        raw = raw.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
    if world_size > 1:
        raw = split_dataset_by_node(raw, rank=rank, world_size=world_size)
    mapper = _ExampleMapper(
        image_transform(resolution, train, hflip), image_column, label_column, stats, transform_seed
    )
    # Unknown columns (a Hub stream without metadata): drop at least the two we consumed.
    drop = columns or [c for c in (image_column, label_column) if c is not None]
    out = raw.map(mapper, batched=True, batch_size=map_batch_size, remove_columns=drop)
    return ImageStream(out, stats, image_column, label_column, class_names)


# ----------------------------------------------------------------------------------------------------
# Collate
# ----------------------------------------------------------------------------------------------------


def collate_images(examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """List of ``{"pixel_values": [3,R,R], "class_labels": int}`` → ``{"pixel_values": [B,3,R,R] float32,
    "class_labels": [B] int64}``. Accepts numpy arrays, tensors or nested lists."""
    if not examples:
        raise ValueError("collate_images got an empty batch.")
    pixels = torch.stack([torch.as_tensor(np.asarray(e["pixel_values"], dtype=np.float32)) for e in examples])
    labels = torch.tensor([int(e["class_labels"]) for e in examples], dtype=torch.long)
    return {"pixel_values": pixels, "class_labels": labels}
