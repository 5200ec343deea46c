"""Uniquely numbered tiny images for data-order tests: the red and green channels encode the id, blue varies over
the image so that random crops differ."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def numbered_image(i: int, size: tuple[int, int] = (24, 20)) -> Image.Image:
    """Image ``i`` of ``size`` (width, height): R = i % 256, G = i // 256 everywhere; B a per-image gradient."""
    w, h = size
    arr = np.empty((h, w, 3), dtype=np.uint8)
    arr[..., 0] = i % 256
    arr[..., 1] = i // 256
    yy, xx = np.mgrid[0:h, 0:w]
    arr[..., 2] = (xx * 9 + yy * 5 + i * 17) % 256
    return Image.fromarray(arr)


def image_id(pixels: torch.Tensor | np.ndarray) -> int:
    """The id of a transformed image [3,R,R] in [-1,1] (constant channels survive resize and crop)."""
    px = torch.as_tensor(np.asarray(pixels, dtype=np.float32))
    r, g = (round((float(px[c].mean()) + 1) * 127.5) for c in (0, 1))
    return r + 256 * g


def batch_ids(batch: dict) -> list[int]:
    return [image_id(p) for p in batch["pixel_values"]]


def write_numbered_folder(
    root: Path, n: int, classes: int = 1, size: tuple[int, int] = (24, 20), broken: tuple[int, ...] = ()
) -> Path:
    """``root/train/c<k>/<id>.png`` for ids 0..n-1, class-sorted (ids of class k are contiguous); ids in
    ``broken`` are written as unreadable files."""
    per_class = -(-n // classes)
    for i in range(n):
        folder = root / "train" / f"c{i // per_class:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        if i in broken:
            (folder / f"{i:05d}.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
        else:
            numbered_image(i, size).save(folder / f"{i:05d}.png")
    return root


def write_numbered_parquet(
    folder: Path, n: int, shards: int, classes: int = 1, size: tuple[int, int] = (24, 20)
) -> list[str]:
    """ids 0..n-1 in ``shards`` contiguous parquet files (class-sorted, as a folder converted in order)."""
    import datasets

    folder.mkdir(parents=True, exist_ok=True)
    per_class = -(-n // classes)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[f"c{k}" for k in range(classes)])}
    )
    bounds = np.linspace(0, n, shards + 1).round().astype(int)
    paths = []
    for s in range(shards):
        ids = range(bounds[s], bounds[s + 1])
        rows = {"image": [numbered_image(i, size) for i in ids], "label": [i // per_class for i in ids]}
        path = folder / f"part-{s:03d}.parquet"
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
        paths.append(str(path))
    return paths
