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

from ibq_hf.training.data import (  # noqa: E402
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
    b = _ids(load_image_dataset(streaming=False, num_shards=3, **kw).dataset)
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


@pytest.mark.parametrize("source", ["parquet", "imagefolder"])
def test_resume_from_state_dict_is_exact(source: str, parquet_files: list[str], image_folder: Path) -> None:
    kw = {"resolution": RES, "train": True, "transform_seed": 7, "shuffle": True, "shuffle_buffer_size": 0}
    kw.update({"data_files": parquet_files} if source == "parquet" else {"train_data_dir": str(image_folder)})
    full = _ids(load_image_dataset(**kw).dataset)
    first = load_image_dataset(**kw)
    head, state = [], None
    for i, ex in enumerate(first.dataset):
        head.append(_digest(ex["pixel_values"]))
        if i == 9:
            state = first.state_dict()
            break
    resumed = load_image_dataset(**kw)
    resumed.load_state_dict(state)
    rest = _ids(resumed.dataset)
    assert head + rest == full  # same order: nothing repeated, nothing skipped
    assert len(set(full)) > 20  # the ids distinguish examples


def test_resume_with_shuffle_buffer_never_repeats(parquet_files: list[str]) -> None:
    kw = {
        "data_files": parquet_files,
        "resolution": RES,
        "train": False,
        "shuffle": True,
        "shuffle_buffer_size": 4,
    }
    first = load_image_dataset(seed=3, **kw)
    head, state = [], None
    for i, ex in enumerate(first.dataset):
        head.append(_digest(ex["pixel_values"]))
        if i == 7:
            state = first.state_dict()
            break
    resumed = load_image_dataset(seed=3, **kw)
    resumed.load_state_dict(state)
    rest = _ids(resumed.dataset)
    assert not set(head) & set(rest)
    assert 24 - 4 <= len(head) + len(rest) <= 24


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
