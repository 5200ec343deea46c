"""Write scikit-learn's digits (1,797 real 8×8 scans, 10 classes) as an imagefolder for the IBQ scripts.

    python examples/digits/prepare_digits.py --output_dir data/digits --resolution 32

Each 8×8 image (values 0-16) is upscaled bilinearly to ``resolution`` and saved as an RGB PNG under
``<output_dir>/train/<digit>/<index>.png``, so ``datasets.load_dataset("imagefolder")`` sees a ClassLabel with
names "0".."9". The data ships inside scikit-learn: nothing is downloaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def digits_as_images(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """All digits as uint8 [N, R, R] (white strokes on black) and their labels [N]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # [N, 1, 8, 8] in [0, 1]
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return (x[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy(), digits.target


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--resolution", type=int, default=32)
    args = parser.parse_args()
    images, labels = digits_as_images(args.resolution)
    root = Path(args.output_dir) / "train"
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = root / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).convert("RGB").save(folder / f"{index:04d}.png")
    print(f"wrote {len(images)} images to {root}")


if __name__ == "__main__":
    main()
