"""Image transform, robust streaming datasets (imagefolder + parquet, offline), sharding, exact resume."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

datasets = pytest.importorskip("datasets")

from numbered_images import (  # noqa: E402
    batch_ids,
    image_id,
    write_numbered_folder,
    write_numbered_parquet,
)

from ibq_hf.data import (  # noqa: E402
    DataStats,
    GatedDatasetError,
    collate_images,
    image_transform,
    load_image_dataset,
)

RES = 16


@pytest.fixture(autouse=True)
def _no_arrow_shutdown_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """datasets sleeps 5 s when a shuffled parquet stream ends (apache/arrow#45214 workaround); not needed
    for these tiny in-process files, and it would dominate the test time."""
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


def _digit_images(n: int) -> list[tuple[Image.Image, int]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = []
    for i in range(n):
        arr = (digits.images[i] * (255.0 / 16.0)).astype(np.uint8)
        img = Image.fromarray(arr, mode="L").resize((20, 24), Image.NEAREST)  # non-square: exercises resize
        out.append((img.convert("RGB"), int(digits.target[i])))
    return out


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<root>/train/<class>/*: 24 RGB digits + special files (truncated JPEG, CMYK, RGBA, grayscale, palette)."""
    from skimage import data as skdata

    root = tmp_path_factory.mktemp("imgs") / "train"
    for i, (img, label) in enumerate(_digit_images(24)):
        d = root / f"c{label}"
        d.mkdir(parents=True, exist_ok=True)
        img.save(d / f"digit_{i:03d}.png")
    special = root / "c0"
    photo = Image.fromarray(skdata.astronaut()).resize((40, 32))
    buf = io.BytesIO()
    photo.save(buf, format="JPEG")
    (special / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    Image.fromarray(skdata.coffee()).resize((30, 20)).convert("CMYK").save(special / "cmyk.jpg")
    rgba = Image.fromarray(skdata.chelsea()).resize((30, 20)).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(special / "rgba.png")
    Image.fromarray(skdata.camera()).resize((20, 20)).save(special / "gray.png")  # mode L
    Image.fromarray(skdata.rocket()).resize((30, 20)).convert("P").save(special / "palette.png")
    return root.parent


@pytest.fixture(scope="module")
def parquet_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two parquet shards of 12 digits each, with an Image and a ClassLabel column."""
    features = datasets.Features(
        {
            "img": datasets.Image(),
            "digit": datasets.ClassLabel(names=[str(i) for i in range(10)]),
            "id": datasets.Value("int64"),
        }
    )
    images = _digit_images(24)
    out = tmp_path_factory.mktemp("pq")
    paths = []
    for shard in range(2):
        rows = images[shard * 12 : (shard + 1) * 12]
        ds = datasets.Dataset.from_dict(
            {
                "img": [r[0] for r in rows],
                "digit": [r[1] for r in rows],
                "id": list(range(shard * 12, shard * 12 + 12)),
            },
            features=features,
        )
        path = str(out / f"part-{shard}.parquet")
        ds.to_parquet(path)
        paths.append(path)
    return paths


def _digest(x: np.ndarray | torch.Tensor) -> str:
    return hashlib.sha1(np.ascontiguousarray(np.asarray(x, dtype=np.float32)).tobytes()).hexdigest()


def _ids(ds) -> list[str]:
    return [_digest(ex["pixel_values"]) for ex in ds]


# ------------------------------------------------------------------------------------------ transform


def test_transform_shapes_range_and_modes() -> None:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    for image in (rgb, rgb.convert("L"), rgb.convert("RGBA"), rgb.convert("CMYK"), rgb.convert("P")):
        out = image_transform(RES, train=True)(image, generator=torch.Generator().manual_seed(0))
        assert out.shape == (3, RES, RES) and out.dtype == torch.float32
        assert out.min() >= -1.0 and out.max() <= 1.0


def test_transform_resize_is_bilinear_without_antialias() -> None:
    # 8 -> 2 (factor 4): half-pixel bilinear samples source x = 1.5 and 5.5, i.e. the mean of pixels (1,2)
    # and (5,6). An antialiased resize would average all four pixels of each block instead.
    row = np.array([0, 10, 20, 30, 40, 50, 60, 70], dtype=np.uint8)
    img = Image.fromarray(np.stack([np.tile(row, (8, 1))] * 3, axis=-1))
    out = image_transform(2, train=False)(img)
    expected = (torch.tensor([15.0, 55.0]) / 127.5) - 1
    torch.testing.assert_close(out[0, 0], expected)


def test_transform_center_crop_and_deterministic_random_crop() -> None:
    arr = np.zeros((16, 32, 3), dtype=np.uint8)
    arr[:, :, 0] = np.arange(32, dtype=np.uint8)[None, :] * 8  # column index in the red channel
    img = Image.fromarray(arr)
    center = image_transform(16, train=False)(img)
    assert torch.equal(center[0, 0], (torch.arange(8, 24) * 8).float() / 127.5 - 1)  # columns 8..23
    t = image_transform(16, train=True)
    lefts = {round((float(t(img, seed=s)[0, 0, 0]) + 1) * 127.5 / 8) for s in range(30)}
    assert len(lefts) > 3 and lefts <= set(range(17))  # random offsets, all valid
    assert torch.equal(t(img, seed=5), t(img, seed=5))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(t(img, generator=g1), t(img, generator=g2))


def test_transform_flip_only_when_enabled() -> None:
    arr = np.tile(np.arange(16, dtype=np.uint8)[None, :, None] * 16, (16, 1, 3))
    img = Image.fromarray(arr)
    no_flip = image_transform(16, train=False)
    assert all(torch.equal(no_flip(img, seed=s), no_flip(img)) for s in range(10))
    flip = image_transform(16, train=False, hflip=True)
    outs = {bool(flip(img, seed=s)[0, 0, 0] > 0) for s in range(20)}
    assert outs == {True, False}


def test_transform_rejects_bad_resolution() -> None:
    with pytest.raises(ValueError, match="resolution"):
        image_transform(0, train=True)


def test_transform_reads_16_bit_greyscale() -> None:
    """16-bit PNGs (mode I;16) are scaled to 8 bits; `convert("RGB")` clipped them to white."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((20, 24), 30000, dtype=np.uint16)).save(buffer, format="PNG")
    image = Image.open(io.BytesIO(buffer.getvalue()))
    assert image.mode == "I;16"
    for train in (False, True):
        out = image_transform(RES, train=train)(image, seed=0)
        torch.testing.assert_close(out, torch.full((3, RES, RES), round(30000 / 257) / 127.5 - 1.0))


def test_stream_skips_thin_images_and_bombs_and_reads_16_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the training data path a 2000×1 PNG (3 GB of resize before) and a decompression bomb are skipped and
    counted with a clear reason, and a 16-bit PNG arrives as its grey level, not white."""
    root = tmp_path / "train" / "c0"
    root.mkdir(parents=True)
    Image.new("RGB", (24, 20), (10, 20, 30)).save(root / "normal.png")
    Image.new("RGB", (2000, 1), (200, 0, 0)).save(root / "strip.png")
    Image.new("L", (100, 100)).save(root / "bomb.png")
    Image.fromarray(np.full((20, 20), 30000, dtype=np.uint16)).save(root / "sixteen.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    stats = DataStats()
    stream = load_image_dataset(
        train_data_dir=str(tmp_path / "train"), resolution=RES, train=True, stats=stats, require_labels=False
    )
    rows = list(stream.dataset)
    assert len(rows) == 2 and stats.skipped == 2 and stats.seen == 4
    reasons = " | ".join(stats.skipped_examples)
    assert "strip.png: ImageSizeError" in reasons and "aspect ratio of 2000:1" in reasons
    assert "bomb.png: ImageSizeError" in reasons and "decompression bomb" in reasons
    levels = sorted(float(np.asarray(r["pixel_values"]).mean()) for r in rows)
    assert levels[1] == pytest.approx(round(30000 / 257) / 127.5 - 1.0)  # the 16-bit picture, not white (1.0)


# ------------------------------------------------------------------------------------------ datasets


def test_imagefolder_stream_skips_and_counts(image_folder: Path) -> None:
    stats = DataStats()
    stream = load_image_dataset(train_data_dir=str(image_folder), resolution=RES, train=False, stats=stats)
    rows = list(stream.dataset)
    assert len(rows) == 24 + 4  # 24 digits + CMYK, RGBA, grayscale, palette; the truncated JPEG is dropped
    assert stats.skipped == 1 and "truncated.jpg" in stats.skipped_examples[0]
    assert stats.seen == 29
    assert dict(stats.converted) == {"CMYK": 1, "RGBA": 1, "L": 1, "P": 1}
    assert stats.as_dict()["data/converted"] == 4
    assert stream.image_column == "image" and stream.label_column == "label"
    assert stream.class_names is not None and "c0" in stream.class_names
    batch = collate_images(rows[:5])
    assert batch["pixel_values"].shape == (5, 3, RES, RES) and batch["pixel_values"].dtype == torch.float32
    assert batch["class_labels"].dtype == torch.long and batch["class_labels"].shape == (5,)


def test_parquet_stream_columns_and_dataloader(parquet_files: list[str]) -> None:
    stream = load_image_dataset(
        data_files=parquet_files, resolution=RES, train=True, seed=1, shuffle_buffer_size=8
    )
    assert (stream.image_column, stream.label_column) == ("img", "digit")
    loader = torch.utils.data.DataLoader(stream.dataset, batch_size=6, collate_fn=collate_images)
    batches = list(loader)
    assert sum(len(b["class_labels"]) for b in batches) == 24
    labels = torch.cat([b["class_labels"] for b in batches])
    expected = sorted(lbl for _, lbl in _digit_images(24))
    assert sorted(labels.tolist()) == expected


def test_non_streaming_matches_streaming(parquet_files: list[str], tmp_path: Path) -> None:
    kw = {"data_files": parquet_files, "resolution": RES, "train": False, "cache_dir": str(tmp_path)}
    a = _ids(load_image_dataset(streaming=True, **kw).dataset)
    b = _ids(load_image_dataset(streaming=False, **kw).dataset)
    assert sorted(a) == sorted(b) and len(a) == 24


def test_column_errors_list_columns(parquet_files: list[str]) -> None:
    with pytest.raises(ValueError, match=r"image_column='nope'.*available columns.*'img'"):
        load_image_dataset(data_files=parquet_files, image_column="nope")
    with pytest.raises(ValueError, match=r"label_column=.*'digit'"):
        load_image_dataset(data_files=parquet_files, label_column="missing")
    # "id" is an int column, not a ClassLabel: auto-detection still picks "digit"; forcing no ClassLabel:
    stream = load_image_dataset(data_files=parquet_files, label_column="id", train=False, resolution=RES)
    assert [int(ex["class_labels"]) for ex in stream.dataset] == list(range(24))


def test_missing_label_column_error_and_unlabelled_mode(tmp_path: Path) -> None:
    ds = datasets.Dataset.from_dict({"picture": [img for img, _ in _digit_images(3)]})
    path = str(tmp_path / "nolabel.parquet")
    ds.to_parquet(path)
    with pytest.raises(ValueError, match=r"label column.*\['picture'\].*require_labels=False"):
        load_image_dataset(data_files=path)
    stream = load_image_dataset(data_files=path, require_labels=False, resolution=RES, train=False)
    assert [int(ex["class_labels"]) for ex in stream.dataset] == [-1, -1, -1]


def test_gated_dataset_error_names_login() -> None:
    from datasets.exceptions import DatasetNotFoundError

    gated = DatasetNotFoundError(
        "Dataset 'ILSVRC/imagenet-1k' is a gated dataset on the Hub. You must be authenticated to access it."
    )
    with mock.patch("datasets.load_dataset", side_effect=gated), pytest.raises(GatedDatasetError) as info:
        load_image_dataset()
    assert "hf auth login" in str(info.value) and "ILSVRC/imagenet-1k" in str(info.value)
    assert isinstance(info.value, DatasetNotFoundError)  # callers catching the datasets error still work
    other = DatasetNotFoundError("Dataset 'x/y' doesn't exist on the Hub or cannot be accessed.")
    with mock.patch("datasets.load_dataset", side_effect=other), pytest.raises(DatasetNotFoundError) as info2:
        load_image_dataset(dataset_name="x/y")
    assert not isinstance(info2.value, GatedDatasetError)


def test_rank_sharding_partitions_the_stream(parquet_files: list[str]) -> None:
    kw = {"data_files": parquet_files, "resolution": RES, "train": False}
    full = _ids(load_image_dataset(**kw).dataset)
    parts = [_ids(load_image_dataset(rank=r, world_size=2, **kw).dataset) for r in range(2)]
    assert sorted(parts[0] + parts[1]) == sorted(full)
    assert len(parts[0]) == len(parts[1]) == 12
    with pytest.raises(ValueError, match="rank"):
        load_image_dataset(rank=2, world_size=2, **kw)


# ------------------------------------------------------------------------------------------ order, shards, resume

N_IDS = 10  # not a multiple of any global batch below: every pass ends inside a micro-batch


@pytest.fixture(scope="module")
def numbered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The same 10 numbered 24x20 images as an imagefolder (indexed) and as 3 streamed parquet files."""
    root = tmp_path_factory.mktemp("numbered")
    folder = write_numbered_folder(root / "folder", N_IDS, classes=2)
    files = write_numbered_parquet(root / "pq", N_IDS, shards=3, classes=2)
    return {
        "indexed": {"train_data_dir": str(folder), "cache_dir": str(root / "cache")},
        "streamed": {"data_files": files, "shuffle_buffer_size": 4},
        "streamed, stored order": {"data_files": files, "shuffle": False},
    }


def _take(batches, count: int) -> list[dict]:
    out = []
    for batch in batches:
        out.append(batch)
        if len(out) == count:
            return out
    raise AssertionError("the batches ended")


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("source", ["indexed", "streamed"])
def test_batches_give_each_rank_its_share_and_carry_the_tail_over(numbered, source, world) -> None:
    """Every id is read by exactly one rank in every pass; a global micro-batch holds batch × world examples;
    the last one of a pass is completed with the first examples of the next pass (the tail policy)."""
    stream = load_image_dataset(resolution=RES, seed=5, **numbered[source])
    size, steps = 2, 7  # 7 global micro-batches of 2·world ≥ 2.8 passes of 10
    batches = [_take(stream.batches(size, rank=r, world_size=world), steps) for r in range(world)]
    per_rank = [[batch_ids(b) for b in rank] for rank in batches]
    assert all(len(ids) == size for rank in per_rank for ids in rank)  # global micro-batch = size × world
    sequence = [per_rank[r][m][i] for m in range(steps) for i in range(size) for r in range(world)]
    passes = [sequence[p * N_IDS : (p + 1) * N_IDS] for p in range(len(sequence) // N_IDS)]
    assert len(passes) >= 2 and all(sorted(p) == list(range(N_IDS)) for p in passes)
    tail = sequence[len(passes) * N_IDS :]
    assert len(set(tail)) == len(tail)
    assert passes[0] != passes[1]  # a new order every pass
    # the micro-batch holding the end of pass 0 also holds the start of pass 1; every rank reports where the
    # next global micro-batch starts: (pass, offset)
    group = size * world
    boundary = N_IDS // group
    for rank in batches:
        assert rank[boundary - 1]["stream_position"] == (0, boundary * group)
        assert rank[boundary]["stream_position"] == (1, (boundary + 1) * group - N_IDS)


@pytest.mark.parametrize("source", ["indexed", "streamed", "streamed, stored order"])
def test_batches_resume_exactly_from_every_position(numbered, source) -> None:
    """Restarting at any batch's stream_position continues the same batches bitwise (crops included), across
    pass boundaries and with a shuffle buffer."""
    stream = load_image_dataset(resolution=RES, seed=1, **numbered[source])
    full = _take(stream.batches(3), 12)  # 3.6 passes
    for k in range(1, 12):
        start = full[k - 1]["stream_position"]
        resumed = _take(
            load_image_dataset(resolution=RES, seed=1, **numbered[source]).batches(3, start=start), 12 - k
        )
        for a, b in zip(resumed, full[k:]):
            assert torch.equal(a["pixel_values"], b["pixel_values"]), (k, start)
            assert a["stream_position"] == b["stream_position"]
    crops = {}
    for b in full:
        for px in b["pixel_values"]:
            crops.setdefault(image_id(px), set()).add(_digest(px))
    assert any(len(c) > 1 for c in crops.values())  # random crops differ between passes


def test_batches_do_not_depend_on_dataloader_workers(numbered) -> None:
    stream = load_image_dataset(resolution=RES, seed=2, **numbered["streamed"])
    alone = _take(stream.batches(2, rank=1, world_size=2), 9)
    loader = torch.utils.data.DataLoader(
        stream.batches(2, rank=1, world_size=2), batch_size=None, num_workers=2
    )
    workers = _take(loader, 9)
    for a, b in zip(alone, workers):
        assert torch.equal(a["pixel_values"], b["pixel_values"]) and a["stream_position"] == tuple(
            b["stream_position"]
        )


def test_unreadable_images_are_dropped_and_an_unreadable_batch_stops(tmp_path: Path) -> None:
    from ibq_hf.errors import UnreadableImagesError

    folder = write_numbered_folder(tmp_path / "some", 6, broken=(2,))
    kw = {"resolution": RES, "cache_dir": str(tmp_path), "require_labels": False}
    stream = load_image_dataset(train_data_dir=str(folder), shuffle=False, **kw)
    first, second = _take(stream.batches(3), 2)
    assert batch_ids(first) == [0, 1] and batch_ids(second) == [3, 4, 5]  # dropped, not refilled
    assert stream.stats.skipped == 1 and "00002.png" in stream.stats.skipped_examples[0]
    folder = write_numbered_folder(tmp_path / "all", 3, broken=(0, 1, 2))
    stream = load_image_dataset(train_data_dir=str(folder), **kw)
    with pytest.raises(
        UnreadableImagesError, match=r"None of the 2 images .* could be decoded \(.*0000\d\.png"
    ):
        next(iter(stream.batches(2)))


def _classes_per_batch(stream, batch_size: int, count: int) -> float:
    batches = _take(stream.batches(batch_size), count)
    return float(np.mean([len(set(b["class_labels"].tolist())) for b in batches]))


def test_a_class_sorted_source_is_mixed_per_pass(tmp_path: Path) -> None:
    """Item 7: 40 classes × 8 images stored class by class, in distinct classes per batch of 32 over one pass.
    An imagefolder (indexed) is fully permuted per pass, like an i.i.d. draw; a stream reads its shards (files)
    in a seeded order per pass, several at a time, before the buffer."""
    n, classes, batch = 320, 40, 32
    iid = classes * (1 - np.prod([(n - 8 - j) / (n - j) for j in range(batch)]))  # 22.95 for 8 per class
    folder = write_numbered_folder(tmp_path / "sorted", n, classes=classes, size=(4, 4))
    kw = {"resolution": 4, "seed": 0}
    stored = load_image_dataset(train_data_dir=str(folder), shuffle=False, cache_dir=str(tmp_path), **kw)
    indexed = load_image_dataset(train_data_dir=str(folder), cache_dir=str(tmp_path), **kw)
    assert _classes_per_batch(stored, batch, 10) == 4.0  # measured
    assert _classes_per_batch(indexed, batch, 10) > 0.9 * iid  # measured 23.8
    files = write_numbered_parquet(tmp_path / "pq", n, shards=20, classes=classes, size=(4, 4))
    streamed = load_image_dataset(data_files=files, shuffle_buffer_size=64, **kw)
    assert (
        _classes_per_batch(streamed, batch, 10) > 3 * 4.0
    )  # measured 16.0: the buffer (64) bounds the mixing
    first_pass = _take(streamed.batches(batch), 20)
    again = _take(load_image_dataset(data_files=files, shuffle_buffer_size=64, **kw).batches(batch), 20)
    labels = [b["class_labels"].tolist() for b in first_pass]
    assert labels == [b["class_labels"].tolist() for b in again]  # seeded
    assert labels[:10] != labels[10:]  # a new shard order and buffer draw every pass


def test_collate_rejects_empty() -> None:
    with pytest.raises(ValueError, match="empty"):
        collate_images([])


def test_stream_without_feature_metadata_needs_explicit_columns() -> None:
    """Hub streams (e.g. webdataset shards) may carry no features: auto-detection must say so."""

    def rows():
        for img, label in _digit_images(5):
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            yield {"png": {"bytes": buf.getvalue(), "path": None}, "cls": label}

    raw = datasets.IterableDataset.from_generator(rows)
    assert raw.features is None
    with mock.patch("datasets.load_dataset", return_value=raw):
        with pytest.raises(ValueError, match=r"features unknown.*image_column="):
            load_image_dataset(dataset_name="some/webdataset")
        stream = load_image_dataset(
            dataset_name="some/webdataset",
            image_column="png",
            label_column="cls",
            train=False,
            resolution=RES,
        )
    out = list(stream.dataset)
    assert [int(ex["class_labels"]) for ex in out] == [lbl for _, lbl in _digit_images(5)]
    assert set(out[0]) == {"pixel_values", "class_labels"} and stream.class_names is None
