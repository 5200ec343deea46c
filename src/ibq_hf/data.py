"""Image data for tokenizer and AR training: transforms, streaming datasets, robust decoding, collate.

The reference pipeline (reference §8) is: PIL open → RGB → shortest side to R (cv2 bilinear, no
antialias) → RandomCrop (train) / CenterCrop (eval) → x/127.5 − 1, **no** horizontal flip. This module
reproduces it without torchvision and wraps it around a `datasets` stream that

* decodes images itself, so a corrupt or truncated file is skipped and counted instead of crashing
  a multi-day run (`DataStats`);
* orders the data as one seeded sequence of passes (a permutation per pass, or shuffled shards + a buffer
  for streams), cut into per-rank batches so each rank reads its own share (`ImageBatches`);
* resumes exactly at any position, across pass boundaries, from a (pass, offset) pair.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from .image_processing import DEFAULT_PROTOCOL, PROTOCOLS, _randint, open_image, preprocess

__all__ = [
    "STREAM_POSITION_KEY",
    "DataStats",
    "GatedDatasetError",
    "ImageBatches",
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


@dataclass
class ImageTransform:
    """PIL image → float tensor [3,R,R] in [-1,1] (reference §8). Build with `image_transform`.

    The pixels come from :func:`ibq_hf.image_processing.preprocess` (the one implementation per named
    protocol, shared with ``reconstruct``, ``ibq-hf evaluate tokenizer`` and code extraction); this class adds
    the seeding and the optional flip. Randomness (crop offset, then flip) comes from, in order of priority:
    the ``generator`` passed to ``__call__``, a per-sample python ``random.Random(seed)`` when ``seed`` is
    passed, else the global torch RNG (what a seeded DataLoader reproduces). Eval mode with no flip uses no
    randomness at all.
    """

    resolution: int
    train: bool
    hflip: bool = False
    protocol: str = DEFAULT_PROTOCOL

    def __post_init__(self) -> None:
        if isinstance(self.resolution, bool) or not isinstance(self.resolution, int) or self.resolution <= 0:
            raise ValueError(f"resolution must be a positive integer, got {self.resolution}.")
        if self.protocol not in PROTOCOLS:
            raise ValueError(
                f"Unknown preprocessing protocol {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}."
            )

    def __call__(
        self, image: Image.Image, generator: torch.Generator | None = None, seed: int | None = None
    ) -> torch.Tensor:
        rng = random.Random(seed) if (seed is not None and generator is None) else None
        pixels = preprocess(
            image,
            self.resolution,
            protocol=self.protocol,
            random_crop=self.train,
            generator=generator,
            rng=rng,
        )
        if self.hflip and _randint(2, generator, rng) == 1:
            pixels = pixels.flip(-1)
        return pixels


def image_transform(
    resolution: int, train: bool, hflip: bool = False, protocol: str = DEFAULT_PROTOCOL
) -> ImageTransform:
    """The reference image transform: shortest side → ``resolution``, random (train) / center (eval)
    crop, optional horizontal flip (off by default, as in the reference), scaled to [-1,1].

    Returns a callable ``(PIL.Image, generator=None, seed=None) -> FloatTensor[3,R,R]``; any PIL mode
    (L, P, RGBA, CMYK, 16-bit greyscale, ...) is converted to 8-bit RGB first by
    :func:`ibq_hf.image_processing.to_rgb` (alpha is dropped, like the reference's ``convert("RGB")``).
    ``protocol`` selects another named protocol (:data:`ibq_hf.image_processing.PROTOCOLS`).
    """
    return ImageTransform(resolution=resolution, train=train, hflip=hflip, protocol=protocol)


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

    Through :func:`ibq_hf.image_processing.open_image`: the pixel count is checked from the header before
    decoding (a decompression bomb raises ``ImageSizeError``), and ``load()`` runs here so truncated files
    fail here (``ImageDecodeError``), not later inside the transform; both are ``ValueError``s, skipped and
    counted by the caller.
    """
    if isinstance(value, Image.Image):
        where = "<PIL image>"
    elif isinstance(value, dict):
        where = str(value.get("path") or "<bytes>")
    elif isinstance(value, (bytes, bytearray)):
        where = "<bytes>"
    else:
        where = str(value)
    return open_image(value), where


def _example_seed(seed: int, epoch: int, offset: int) -> int:
    """Crop/flip seed of the example at ``offset`` of pass ``epoch``.

    A function of the position, not of a counter or a global RNG: every pass draws fresh crops (as the reference
    does), and a resumed run, any number of ranks or DataLoader workers draw the very same ones.
    """
    digest = hashlib.blake2b(f"{seed}:{epoch}:{offset}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _where(value: Any) -> str:
    path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str) else None
    return str(path or "<bytes>")


class _Decoder:
    """One record (undecoded ``datasets`` row) → ``{"pixel_values": float32 [3,R,R], "class_labels": int}``.

    Returns ``(example, None)``, or ``(None, reason)`` for an unreadable image, which is counted in ``stats``.
    """

    def __init__(
        self, transform: ImageTransform, image_column: str, label_column: str | None, stats: DataStats
    ) -> None:
        self.transform = transform
        self.image_column = image_column
        self.label_column = label_column
        self.stats = stats

    def __call__(self, record: dict[str, Any], seed: int) -> tuple[dict[str, Any] | None, str | None]:
        value = record[self.image_column]
        label = -1 if self.label_column is None else int(record[self.label_column])
        self.stats.seen += 1
        try:
            image, _ = _open_image(value)
            mode = image.mode
            pixels = self.transform(image, seed=seed)  # converts to RGB (may fail on exotic modes: skipped)
        except _IMAGE_ERRORS as error:
            where = _where(value)
            self.stats.record_skip(where, error)
            reason = f"{type(error).__name__}: {str(error).rstrip('.')}"
            return None, reason if where in reason else f"{where}: {reason}"
        if mode != "RGB":
            with self.stats._lock:
                self.stats.converted[mode] += 1
        return {"pixel_values": pixels, "class_labels": label}, None


# ----------------------------------------------------------------------------------------------------
# Dataset loading
# ----------------------------------------------------------------------------------------------------


try:  # datasets is an optional ("train") dependency
    from datasets.exceptions import DatasetNotFoundError as _DatasetNotFoundError
except ImportError:  # pragma: no cover - exercised only without datasets installed
    _DatasetNotFoundError = FileNotFoundError  # type: ignore[assignment,misc]


class GatedDatasetError(_DatasetNotFoundError):
    """The dataset is gated on the Hub (ImageNet is) and this machine is not authenticated/authorised."""


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
    cache_dir: str | None = None,
    token: str | bool | None = None,
    stats: DataStats | None = None,
    protocol: str = DEFAULT_PROTOCOL,
) -> ImageStream:
    """Load an image classification dataset as a transformed, seeded, shardable, resumable `ImageStream`.

    Source, in order: ``train_data_dir`` (an ``imagefolder``: ``<dir>/<class>/*.png`` or
    ``<dir>/<split>/<class>/*``), ``data_files`` (parquet files), else the Hub ``dataset_name``
    (default: the gated ``ILSVRC/imagenet-1k``).

    * **Indexed** (random access): an imagefolder always (``datasets`` indexes its file paths, no image bytes
      are copied), and any source with ``streaming=False`` (the Arrow cache is prepared first). A shuffled pass
      is a full permutation, seeded by ``(seed, pass)``.
    * **Streamed** (``streaming=True`` for parquet / Hub sources): a shuffled pass visits the shards (files) in a
      seeded order, then mixes examples through a seeded buffer of ``shuffle_buffer_size`` (0: no buffer).

    ``shuffle`` defaults to ``train``. Columns: ``image_column`` / ``label_column`` or the single ``Image`` /
    ``ClassLabel`` feature. Images are decoded here (not by ``datasets``) so broken files are skipped and
    counted in ``stats``. Crops (``train=True``) are seeded per example by ``(transform_seed or seed, pass,
    offset)``: fresh every pass, identical on resume. ``rank`` / ``world_size`` are the defaults for iterating
    the stream and for `ImageStream.batches`; the trainers set them from their own arguments. ``protocol`` names
    the preprocessing (:data:`ibq_hf.image_processing.PROTOCOLS`; ``"pretrain"`` for the Pretrain tokenizers).
    """
    import datasets

    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"Need 0 <= rank < world_size, got rank={rank}, world_size={world_size}.")
    if shuffle_buffer_size < 0:
        raise ValueError(f"shuffle_buffer_size must be >= 0, got {shuffle_buffer_size}.")
    stats = stats if stats is not None else DataStats()
    shuffle = train if shuffle is None else shuffle
    transform = image_transform(resolution, train, hflip, protocol=protocol)  # checks the protocol name first

    if train_data_dir is not None:  # paths only: indexing is cheap and gives random access
        path, kwargs, streaming = "imagefolder", {"data_dir": train_data_dir}, False
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
    if columns:  # read only what is used (parquet reads just these columns)
        raw = raw.select_columns([c for c in (image_column, label_column) if c is not None])
    is_indexed = isinstance(raw, datasets.Dataset)
    source = _IndexedSource(raw) if is_indexed else _StreamedSource(raw, shuffle_buffer_size)
    decoder = _Decoder(transform, image_column, label_column, stats)
    return ImageStream(
        source, decoder, class_names=class_names, seed=seed, shuffle=shuffle,
        shuffle_buffer_size=shuffle_buffer_size, transform_seed=transform_seed, rank=rank, world_size=world_size,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------
# Order, sharding and resume
# ----------------------------------------------------------------------------------------------------

STREAM_POSITION_KEY = (
    "stream_position"  # in every `ImageBatches` batch: (pass, offset) where the next one starts
)


def _with_last(items: Iterable[Any]) -> Iterator[tuple[Any, bool]]:
    """``(item, is_last)`` pairs, reading one item ahead."""
    iterator = iter(items)
    try:
        previous = next(iterator)
    except StopIteration:
        return
    for item in iterator:
        yield previous, False
        previous = item
    yield previous, True


class _IndexedSource:
    """A map-style ``datasets.Dataset`` (an imagefolder's paths, or a prepared Arrow cache): random access,
    so a shuffled pass is a full permutation of the rows and a resume jumps straight to its offset."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.num_examples: int | None = len(dataset)

    def pass_items(self, epoch: int, seed: int, shuffle: bool, start: int) -> Iterator[tuple[int, Any, bool]]:
        """``(offset, row index, is_last)`` of pass ``epoch`` from ``start`` on."""
        n = len(self.dataset)
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else None
        for offset in range(start, n):
            yield offset, int(order[offset]) if order is not None else offset, offset == n - 1

    def fetch(self, items: Sequence[Any]) -> list[dict[str, Any]]:
        if not items:
            return []
        columns = self.dataset[list(items)]  # rows in the requested order, undecoded images
        return [dict(zip(columns, values)) for values in zip(*columns.values())]


class _StreamedSource:
    """A ``datasets.IterableDataset`` (Hub or parquet stream), read in order. A shuffled pass visits the shards
    (parquet files) in a seeded order, reading ``open_shards`` of them at a time in turn (one record each), and
    mixes the records through a seeded buffer of ``buffer_size``; so a class-sorted source (one class per file)
    reaches the buffer already interleaved.

    The buffer is emptied at the end of every pass, so each pass is a permutation of the whole source. A resume
    replays the pass from its start with the same seeds, reading but not decoding the records it skips.
    """

    def __init__(
        self, dataset: Any, buffer_size: int, open_shards: int = 8, read_batch_size: int = 64
    ) -> None:
        self.dataset = dataset
        self.buffer_size = buffer_size
        self.open_shards = open_shards
        self.read_batch_size = read_batch_size
        self.num_examples: int | None = None  # a stream does not know its length

    def _shard_records(self, shard: int) -> Iterator[dict[str, Any]]:
        num_shards = max(1, self.dataset.num_shards)
        part = self.dataset if num_shards == 1 else self.dataset.shard(num_shards=num_shards, index=shard)
        # ``iter`` reads in the calling process: no per-DataLoader-worker shard split by ``datasets``.
        for batch in part.iter(batch_size=self.read_batch_size):
            keys = list(batch)
            for values in zip(*(batch[k] for k in keys)):
                yield dict(zip(keys, values))

    def _records(self, epoch: int, seed: int, shuffle: bool) -> Iterator[dict[str, Any]]:
        shards = list(range(max(1, self.dataset.num_shards)))
        if not shuffle:
            for shard in shards:
                yield from self._shard_records(shard)
            return
        random.Random(f"shards:{seed}:{epoch}").shuffle(shards)
        pending = iter(shards)
        readers = [self._shard_records(s) for s in itertools.islice(pending, self.open_shards)]
        while readers:
            still_open = []
            for reader in readers:
                record = next(reader, None)
                if record is None:  # this shard is done: the next one takes its turn
                    shard = next(pending, None)
                    if shard is not None:
                        still_open.append(self._shard_records(shard))
                    continue
                yield record
                still_open.append(reader)
            readers = still_open

    def _mixed(self, epoch: int, seed: int, shuffle: bool) -> Iterator[dict[str, Any]]:
        records = self._records(epoch, seed, shuffle)
        if not shuffle or self.buffer_size <= 1:
            yield from records
            return
        rng = random.Random(f"buffer:{seed}:{epoch}")
        buffer: list[dict[str, Any]] = []
        for record in records:
            if len(buffer) < self.buffer_size:
                buffer.append(record)
                continue
            i = rng.randrange(self.buffer_size)
            yield buffer[i]
            buffer[i] = record
        rng.shuffle(buffer)
        yield from buffer

    def pass_items(self, epoch: int, seed: int, shuffle: bool, start: int) -> Iterator[tuple[int, Any, bool]]:
        """``(offset, record, is_last)`` of pass ``epoch`` from ``start`` on (earlier records are read, not decoded)."""
        for offset, (record, last) in enumerate(_with_last(self._mixed(epoch, seed, shuffle))):
            if offset >= start:
                yield offset, record, last

    def fetch(self, items: Sequence[Any]) -> list[dict[str, Any]]:
        return list(items)


class ImageStream(torch.utils.data.IterableDataset):
    """Transformed examples ``{"pixel_values": float32 [3,R,R] in [-1,1], "class_labels": int}`` of an image
    source, in a seeded order per pass. Build with `load_image_dataset`.

    The data order is one sequence S: pass 0, then pass 1, ... of the source. Pass ``e`` is the source's rows in
    a permutation seeded by ``(seed, e)`` (indexed sources), or its shards in a seeded order mixed through a
    seeded buffer (streamed sources), or the stored order when ``shuffle`` is off. Crops are seeded by
    ``(transform_seed or seed, pass, offset)``.

    * Iterating the stream itself yields one pass (``set_epoch`` picks which) of this rank's share (offsets
      ``rank``, ``rank + world_size``, ...), split over DataLoader workers: for evaluation and simple loops.
    * `batches` gives the endless per-rank batches that training uses (sharding, tail policy and resume are
      described there); the trainers of this package take an ``ImageStream`` as ``train_dataset`` directly.
    """

    def __init__(
        self,
        source: _IndexedSource | _StreamedSource,
        decoder: _Decoder,
        *,
        class_names: list[str] | None,
        seed: int,
        shuffle: bool,
        shuffle_buffer_size: int,
        transform_seed: int | None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self._source = source
        self._decoder = decoder
        self.class_names = class_names
        self.seed = seed
        self.shuffle = shuffle
        self.shuffle_buffer_size = shuffle_buffer_size
        self.transform_seed = transform_seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    @property
    def stats(self) -> DataStats:
        """Decoding counts of this process (DataLoader workers keep their own)."""
        return self._decoder.stats

    @property
    def image_column(self) -> str:
        return self._decoder.image_column

    @property
    def label_column(self) -> str | None:
        return self._decoder.label_column

    @property
    def num_examples(self) -> int | None:
        """Examples per pass (indexed sources); None for a stream, whose length is unknown."""
        return self._source.num_examples

    @property
    def dataset(self) -> ImageStream:
        """The stream itself (kept for code written against the earlier ``stream.dataset``)."""
        return self

    def set_epoch(self, epoch: int) -> None:
        """Which pass iterating the stream yields (its order and its crops)."""
        self.epoch = int(epoch)

    def order_settings(self) -> dict[str, Any]:
        """What defines the order S and the crops: a resume with other values continues a different sequence."""
        return {
            "seed": self.seed,
            "shuffle": self.shuffle,
            "shuffle_buffer_size": self.shuffle_buffer_size
            if isinstance(self._source, _StreamedSource)
            else 0,
            "transform_seed": self.transform_seed,
            "num_examples": self.num_examples,
        }

    def _decode(
        self, record: dict[str, Any], epoch: int, offset: int
    ) -> tuple[dict[str, Any] | None, str | None]:
        base = self.seed if self.transform_seed is None else self.transform_seed
        return self._decoder(record, _example_seed(base, epoch, offset))

    def _sequence(self, start: tuple[int, int]) -> Iterator[tuple[int, int, Any, tuple[int, int]]]:
        """S from ``start`` = (pass, offset): ``(pass, offset, item, position after this item)``, endlessly."""
        epoch, offset = start
        while True:
            produced = False
            for off, item, last in self._source.pass_items(epoch, self.seed, self.shuffle, offset):
                produced = True
                yield epoch, off, item, ((epoch + 1, 0) if last else (epoch, off + 1))
            if not produced and offset == 0:
                raise ValueError(
                    f"The image source has no examples (pass {epoch} was empty); check the data path."
                )
            epoch, offset = epoch + 1, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        picks: list[tuple[int, Any]] = []
        mine = 0
        items = self._source.pass_items(self.epoch, self.seed, self.shuffle, 0)
        for offset, item, last in items:
            if offset % self.world_size == self.rank:
                if mine % workers == worker:
                    picks.append((offset, item))
                mine += 1
            if picks and (len(picks) == 64 or last):
                yield from self._decoded(picks)
                picks = []
        yield from self._decoded(picks)

    def _decoded(self, picks: list[tuple[int, Any]]) -> Iterator[dict[str, Any]]:
        records = self._source.fetch([item for _, item in picks])
        for (offset, _), record in zip(picks, records):
            example, _ = self._decode(record, self.epoch, offset)
            if example is not None:
                yield example

    def batches(
        self,
        batch_size: int,
        collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        start: tuple[int, int] = (0, 0),
    ) -> ImageBatches:
        """Endless batches of ``batch_size`` for one rank (see `ImageBatches`), from position ``start``."""
        return ImageBatches(
            self,
            batch_size,
            collate_fn if collate_fn is not None else collate_images,
            rank=self.rank if rank is None else rank,
            world_size=self.world_size if world_size is None else world_size,
            start=start,
        )


class ImageBatches(torch.utils.data.IterableDataset):
    """Endless batches of one rank: the sharding, tail and resume policy of image training.

    S (the stream's order: pass 0, pass 1, ...) is cut into global micro-batches of ``batch_size × world_size``
    consecutive examples; rank ``r`` gets the examples ``r, r + world_size, ...`` of each. So every example is
    read by exactly one rank per pass, the global batch is ``batch_size × world_size`` (× gradient accumulation
    per optimizer step), and **the tail of a pass is carried over**: the last global micro-batch of pass ``e`` is
    completed with the first examples of pass ``e + 1`` (nothing dropped, nothing padded, no rank waits).

    An unreadable image is dropped from its batch (counted in ``stats``; the batch is one smaller, not refilled);
    a batch whose every image fails raises :class:`~ibq_hf.errors.UnreadableImagesError`. DataLoader workers take whole
    batches in turn (worker ``w`` builds micro-batches ``w, w + K, ...``), so the batches are the same for any
    number of workers. Each batch carries ``batch["stream_position"]`` = (pass, offset) where the next global
    micro-batch starts; ``start`` = such a position continues the sequence exactly (a resume).
    """

    def __init__(
        self,
        stream: ImageStream,
        batch_size: int,
        collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]],
        *,
        rank: int,
        world_size: int,
        start: tuple[int, int] = (0, 0),
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"Need 0 <= rank < world_size, got rank={rank}, world_size={world_size}.")
        self.stream = stream
        self.batch_size = batch_size
        self.collate_fn = collate_fn
        self.rank = rank
        self.world_size = world_size
        self.start = (int(start[0]), int(start[1]))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        group = self.batch_size * self.world_size
        picks: list[tuple[int, int, Any]] = []
        for j, (epoch, offset, item, after) in enumerate(self.stream._sequence(self.start)):
            micro_batch, within = divmod(j, group)
            if micro_batch % workers != worker:
                continue
            if within % self.world_size == self.rank:
                picks.append((epoch, offset, item))
            if within == group - 1:
                yield self._batch(picks, after, micro_batch)
                picks = []

    def _batch(self, picks: list[tuple[int, int, Any]], after: tuple[int, int], index: int) -> dict[str, Any]:
        from ibq_hf.errors import UnreadableImagesError

        records = self.stream._source.fetch([item for _, _, item in picks])
        examples, reasons = [], []
        for (epoch, offset, _), record in zip(picks, records):
            example, reason = self.stream._decode(record, epoch, offset)
            if example is not None:
                examples.append(example)
            else:
                reasons.append(reason)
        if not examples:
            first = picks[0]
            raise UnreadableImagesError(
                f"None of the {len(picks)} images of batch {index} on rank {self.rank} (pass {first[0]}, from "
                f"offset {first[1]}) could be decoded ({reasons[0]}), so the image source looks unreadable: "
                "check or remove its broken files."
            )
        batch = dict(self.collate_fn(examples))
        batch[STREAM_POSITION_KEY] = after
        return batch


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
