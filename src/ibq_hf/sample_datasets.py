"""Small real-image datasets built offline from photographs that an installed package ships.

Why: experiments on training behaviour (e.g. codebook utilization as the codebook grows,
``benchmarks/codebook_scaling.py``) need natural images on a machine without network access. The
scikit-image wheel ships a handful of photographs (``skimage/data/*.png|jpg``); random square crops of
them, resized to a small resolution, give an unbounded supply of natural-image patches.

The split is by **photograph**, never by crop: the held-out photographs are never cropped for training.
Near-duplicates stay on one side: ``cat``/``chelsea`` are one file, and the stereo pair
``motorcycle_left``/``motorcycle_right`` is in the training split together.

The result is an ``imagefolder`` tree ``<root>/<split>/<photo>/<index>.png`` (the photo name is the class
label), read through the same data path as any other dataset
(``load_image_dataset(train_data_dir=root, split="train")``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "SKIMAGE_EVAL_PHOTOS",
    "SKIMAGE_TRAIN_PHOTOS",
    "count_crop_windows",
    "load_skimage_photo",
    "write_skimage_photo_crops",
]

# Files inside the scikit-image wheel (nothing is downloaded). Grayscale photographs become RGB with equal channels.
SKIMAGE_TRAIN_PHOTOS: tuple[str, ...] = (
    "astronaut.png",
    "chelsea.png",  # the `cat` of skimage.data is this same file
    "hubble_deep_field.jpg",
    "ihc.png",
    "motorcycle_left.png",  # stereo pair: both views in the same split
    "motorcycle_right.png",
    "retina.jpg",
    "camera.png",
    "brick.png",
    "grass.png",
    "moon.png",
)
SKIMAGE_EVAL_PHOTOS: tuple[str, ...] = ("coffee.png", "rocket.jpg", "coins.png", "gravel.png")


def _skimage_data_dir() -> Path:
    try:
        import skimage
    except ImportError as error:  # pragma: no cover - scikit-image is in the eval/dev extras
        raise ImportError(
            "The photo-crop dataset needs scikit-image (its wheel ships the photographs): "
            "pip install 'ibq-hf[eval]' or pip install scikit-image."
        ) from error
    return Path(skimage.__file__).parent / "data"


def load_skimage_photo(name: str) -> Any:
    """One photograph of the scikit-image wheel as an RGB ``PIL.Image`` (``name`` is its file name)."""
    from PIL import Image

    path = _skimage_data_dir() / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{name!r} is not a file of the installed scikit-image wheel ({path.parent}); pick one of "
            f"{sorted(SKIMAGE_TRAIN_PHOTOS + SKIMAGE_EVAL_PHOTOS)}."
        )
    with Image.open(path) as image:
        return image.convert("RGB")


def count_crop_windows(width: int, height: int, min_side: int, max_side: int) -> int:
    """Number of distinct integer square windows with side in ``[min_side, max_side]`` inside ``width × height``."""
    total = 0
    for side in range(min_side, min(max_side, width, height) + 1):
        total += (width - side + 1) * (height - side + 1)
    return total


def _write_split(
    photos: Sequence[str],
    root: Path,
    count: int,
    resolution: int,
    min_side: int,
    max_side: int,
    rng: random.Random,
) -> dict[str, Any]:
    from PIL import Image

    loaded = {name: load_skimage_photo(name) for name in photos}
    per_photo: dict[str, int] = dict.fromkeys(photos, 0)
    for index in range(count):
        name = photos[index % len(photos)]  # round robin: every photo contributes equally
        image = loaded[name]
        width, height = image.size
        side = rng.randint(min_side, min(max_side, width, height))
        left = rng.randrange(width - side + 1)
        top = rng.randrange(height - side + 1)
        crop = image.crop((left, top, left + side, top + side)).resize(
            (resolution, resolution),
            Image.Resampling.BILINEAR,  # PIL bilinear antialiases when downscaling
        )
        folder = root / Path(name).stem
        folder.mkdir(parents=True, exist_ok=True)
        crop.save(folder / f"{index:06d}.png")
        per_photo[name] += 1
    windows = {name: count_crop_windows(*loaded[name].size, min_side, max_side) for name in photos}
    return {"crops": count, "crops_per_photo": per_photo, "distinct_windows_per_photo": windows}


def write_skimage_photo_crops(
    output_dir: str | Path,
    resolution: int = 32,
    train_crops: int = 20_000,
    eval_crops: int = 2_000,
    min_side: int = 48,
    max_side: int = 160,
    seed: int = 0,
    train_photos: Sequence[str] = SKIMAGE_TRAIN_PHOTOS,
    eval_photos: Sequence[str] = SKIMAGE_EVAL_PHOTOS,
) -> dict[str, Any]:
    """Write random square crops of the scikit-image photographs as an imagefolder; returns its description.

    Each crop: a photograph (round robin over the split's photographs), a side drawn uniformly from
    ``[min_side, max_side]`` pixels, a uniform position, then a PIL bilinear resize to
    ``resolution × resolution``. Splits: ``train`` from ``train_photos``, ``test`` from ``eval_photos``
    (disjoint photographs). The description (also written to ``<output_dir>/dataset.json``) states the
    sizes, the seed and the number of distinct crop windows each photograph offers.
    """
    overlap = set(train_photos) & set(eval_photos)
    if overlap:
        raise ValueError(
            f"Photographs {sorted(overlap)} are in both splits; the held-out set must be disjoint."
        )
    if not 1 <= min_side <= max_side:
        raise ValueError(f"Need 1 <= min_side <= max_side, got {min_side}, {max_side}.")
    root = Path(output_dir)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; pass an empty or new folder.")
    rng = random.Random(seed)
    description = {
        "source": "scikit-image wheel photographs (skimage/data), nothing downloaded",
        "resolution": resolution,
        "crop_side_range": [min_side, max_side],
        "resize": "PIL bilinear (antialiased)",
        "seed": seed,
        "splits": {
            "train": {"photos": list(train_photos)},
            "test": {"photos": list(eval_photos)},
        },
    }
    description["splits"]["train"].update(
        _write_split(list(train_photos), root / "train", train_crops, resolution, min_side, max_side, rng)
    )
    description["splits"]["test"].update(
        _write_split(list(eval_photos), root / "test", eval_crops, resolution, min_side, max_side, rng)
    )
    (root / "dataset.json").write_text(json.dumps(description, indent=2) + "\n")
    return description
