"""The offline photo-crop dataset: disjoint photographs per split, seeded, read through the common data path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ibq_hf.sample_datasets import (
    SKIMAGE_EVAL_PHOTOS,
    SKIMAGE_TRAIN_PHOTOS,
    count_crop_windows,
    write_skimage_photo_crops,
)

pytest.importorskip("skimage")


def test_count_crop_windows_by_enumeration():
    expected = sum(1 for s in range(2, 4) for x in range(6 - s + 1) for y in range(5 - s + 1))
    assert count_crop_windows(6, 5, 2, 3) == expected
    assert count_crop_windows(6, 5, 2, 99) == count_crop_windows(6, 5, 2, 5)


def test_splits_are_disjoint_photographs_and_seeded(tmp_path):
    assert not set(SKIMAGE_TRAIN_PHOTOS) & set(SKIMAGE_EVAL_PHOTOS)
    # Near-duplicates on one side: the stereo pair is in the training split together.
    assert {"motorcycle_left.png", "motorcycle_right.png"} <= set(SKIMAGE_TRAIN_PHOTOS)
    a = write_skimage_photo_crops(tmp_path / "a", resolution=16, train_crops=22, eval_crops=8, seed=3)
    b = write_skimage_photo_crops(tmp_path / "b", resolution=16, train_crops=22, eval_crops=8, seed=3)
    write_skimage_photo_crops(tmp_path / "c", resolution=16, train_crops=22, eval_crops=8, seed=4)
    assert a == b == json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert a["splits"]["train"]["crops"] == 22 and a["splits"]["test"]["crops"] == 8
    assert sum(a["splits"]["train"]["crops_per_photo"].values()) == 22
    train_dirs = {p.name for p in (tmp_path / "a" / "train").iterdir()}
    test_dirs = {p.name for p in (tmp_path / "a" / "test").iterdir()}
    assert train_dirs.isdisjoint(test_dirs) and len(train_dirs) == len(SKIMAGE_TRAIN_PHOTOS)
    files = sorted((tmp_path / "a" / "train").rglob("*.png"))
    first = np.asarray(Image.open(files[0]))
    assert first.shape == (16, 16, 3)
    assert np.array_equal(
        first, np.asarray(Image.open(tmp_path / "b" / files[0].relative_to(tmp_path / "a")))
    )
    other = tmp_path / "c" / files[0].relative_to(tmp_path / "a")
    assert not np.array_equal(first, np.asarray(Image.open(other)))
    with pytest.raises(FileExistsError, match="not empty"):
        write_skimage_photo_crops(tmp_path / "a", train_crops=1, eval_crops=1)
    with pytest.raises(ValueError, match="both splits"):
        write_skimage_photo_crops(tmp_path / "d", train_photos=["coffee.png"], eval_photos=["coffee.png"])


def test_crops_stream_through_the_common_data_path(tmp_path):
    pytest.importorskip("datasets")
    from ibq_hf.data import load_image_dataset

    write_skimage_photo_crops(tmp_path, resolution=16, train_crops=11, eval_crops=4, seed=0)
    counts = {}
    for split in ("train", "test"):
        stream = load_image_dataset(
            dataset_name=None, train_data_dir=str(tmp_path), split=split, resolution=16,
            train=split == "train", shuffle_buffer_size=0, require_labels=False,
        )  # fmt: skip
        rows = list(stream.dataset)
        counts[split] = len(rows)
        assert all(np.asarray(r["pixel_values"]).shape == (3, 16, 16) for r in rows)
        assert stream.stats.skipped == 0
    assert counts == {"train": 11, "test": 4}
