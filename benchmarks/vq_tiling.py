"""Tiled vs untiled tokenizer: how far ``IBQVQModel.enable_tiling`` moves the pixels and the token ids.

Tiling cannot be exact: attention (at the lowest level and in the mid block) and GroupNorm look at the whole
image, and a tile sees only itself. This script measures the difference on the **bundled digits tokenizer**
(``checkpoints/ibq-digits/vqvae``: trained weights, 256 codes, factor 4, trained at 32²; attention at its
8×8-token level) on two images per size:

* ``digits``: a mosaic of scikit-learn digits, each bilinearly upscaled to 32×32 as for training (the
  tokenizer's own kind of image: 16×16 digits at 512², 32×32 at 1024²);
* ``camera``: scikit-image's ``camera.png`` (512², grey), bicubically resized (a photograph, which this
  tokenizer reconstructs badly: the tiling figures still show how tiling changes its output).

For each tile size (pixels; overlap ``--overlap`` of a tile with each neighbour):

* ``decode_psnr_db``: PSNR of ``decode_indices`` tiled vs untiled on the **same** token ids (the untiled
  tokenization), images clamped to ``[-1, 1]`` (peak-to-peak 2);
* ``token_agreement``: fraction of token ids that tiled ``tokenize`` gives identically to untiled;
* ``roundtrip_psnr_db``: reconstruction PSNR against the input, tiled tokenize + tiled decode (``untiled``
  rows: both untiled);
* seconds and peak memory of the decode (one call each, on a machine that may be busy: indicative only).

    python benchmarks/vq_tiling.py --threads 1     # 512² and 1024², both images, tiles 32, 64, 128 (CPU: hours)
    python benchmarks/vq_tiling.py --quick         # 64² and 128²: a smoke run (a minute)

The committed figures come from two runs (about 30 minutes on one core of a busy 2-core machine):

    python benchmarks/vq_tiling.py --threads 1 --sizes 512 --tiles 32 64 128
    python benchmarks/vq_tiling.py --threads 1 --sizes 1024 --tiles 64 128 --images digits

Results are merged into ``benchmarks/results/vq_tiling.json`` (one row per device, image, size and tile size).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _common import RESULTS_DIR, add_run_arguments, machine_info, merge_results, parse_run_args, peak_memory

DEFAULT_OUTPUT = RESULTS_DIR / "vq_tiling.json"
CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "ibq-digits" / "vqvae"
IMAGES = ("digits", "camera")


def digit_mosaic(size: int, cell: int = 32) -> torch.Tensor:
    """``[1, 3, size, size]`` in ``[-1, 1]``: scikit-learn digits (white on black) upscaled to ``cell`` px, in a grid."""
    from sklearn.datasets import load_digits

    per_side = size // cell
    digits = torch.tensor(load_digits().images[: per_side**2], dtype=torch.float32)[:, None] / 16.0
    digits = F.interpolate(digits, size=(cell, cell), mode="bilinear", align_corners=False).clamp(0, 1)
    grid = digits.reshape(per_side, per_side, cell, cell).permute(0, 2, 1, 3).reshape(size, size)
    return (grid * 2 - 1).expand(1, 3, size, size).contiguous()


def camera(size: int) -> torch.Tensor:
    """``[1, 3, size, size]`` in ``[-1, 1]``: scikit-image's ``camera.png`` resized (bicubic, antialiased)."""
    import numpy as np

    from ibq_hf.sample_datasets import load_skimage_photo

    photo = torch.from_numpy(np.array(load_skimage_photo("camera.png"))).permute(2, 0, 1)[None].float() / 255
    photo = F.interpolate(photo, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return photo.clamp(0, 1) * 2 - 1


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in ``[-1, 1]`` (both clamped; peak-to-peak 2)."""
    mse = float(torch.mean((a.clamp(-1, 1) - b.clamp(-1, 1)) ** 2))
    return round(10 * math.log10(4.0 / mse), 2) if mse > 0 else math.inf


def timed(fn: Any, device: torch.device) -> tuple[Any, float, Any]:
    """``(result, seconds, peak memory)`` of one call."""
    with peak_memory(device) as mem:
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return result, round(seconds, 3), mem


def measure(
    model: Any, name: str, size: int, tiles: list[int], overlap: float, device: torch.device
) -> list[dict]:
    """One untiled row and one row per tile size for one image."""
    pixels = (digit_mosaic(size) if name == "digits" else camera(size)).to(device)
    base = {"device": str(device), "image": name, "size": size, "overlap_factor": overlap}
    model.disable_tiling()
    ids = model.tokenize(pixels)
    reference, seconds, mem = timed(lambda: model.decode_indices(ids), device)
    rows = [
        {
            **base,
            "tile": "untiled",
            "decode_psnr_db": None,  # the reference itself
            "token_agreement": 1.0,
            "roundtrip_psnr_db": psnr(reference, pixels),
            "decode_seconds": seconds,
            "decode_peak_memory_mb": mem.peak_above_baseline_mb,
            "memory_method": mem.method,
        }
    ]
    for tile in tiles:
        model.enable_tiling(tile_sample_size=tile, tile_overlap_factor=overlap)
        tiled, seconds, mem = timed(lambda: model.decode_indices(ids), device)
        tiled_ids = model.tokenize(pixels)
        roundtrip = model.decode_indices(tiled_ids)
        grid, step = model._tile_grid()
        rows.append(
            {
                **base,
                "tile": tile,
                "tile_tokens": grid,
                "overlap_tokens": step,
                "decode_psnr_db": psnr(tiled, reference),
                "token_agreement": round(float((tiled_ids == ids).float().mean()), 4),
                "roundtrip_psnr_db": psnr(roundtrip, pixels),
                "decode_seconds": seconds,
                "decode_peak_memory_mb": mem.peak_above_baseline_mb,
                "memory_method": mem.method,
            }
        )
        model.disable_tiling()
    for row in rows:
        print(
            f"[vq_tiling] {name} {size}² tile {row['tile']}: decode PSNR vs untiled {row['decode_psnr_db']} dB, "
            f"tokens equal {row['token_agreement']:.1%}, round trip {row['roundtrip_psnr_db']} dB, "
            f"decode {row['decode_seconds']} s, peak +{row['decode_peak_memory_mb']} MB",
            flush=True,
        )
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="image sides (default 512 1024)")
    parser.add_argument("--tiles", type=int, nargs="+", default=[32, 64, 128], help="tile sides in pixels")
    parser.add_argument("--overlap", type=float, default=0.25, help="tile_overlap_factor")
    parser.add_argument("--images", nargs="+", choices=IMAGES, default=list(IMAGES))
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT, help="tokenizer folder")
    add_run_arguments(parser, "64² and 128² (seconds)", DEFAULT_OUTPUT)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, device = parse_run_args(build_parser(), argv)
    sizes = args.sizes or ([64, 128] if args.quick else [512, 1024])
    from ibq_hf import IBQVQModel

    model = IBQVQModel.from_pretrained(args.checkpoint).eval().to(device)
    default_tile = model.tile_sample_min_size  # before enable_tiling(tile_sample_size=...) changes it
    rows: list[dict[str, Any]] = []
    with torch.inference_mode():
        for size in sizes:
            for name in args.images:
                rows += measure(model, name, size, args.tiles, args.overlap, device)
    payload = merge_results(
        args.output,
        "vq_tiling",
        machine_info(device),
        rows,
        key=("device", "image", "size", "tile", "overlap_factor"),
        extra={
            "model": "checkpoints/ibq-digits/vqvae (trained; 256 codes, factor 4, trained at 32x32)"
            if args.checkpoint == CHECKPOINT
            else str(args.checkpoint),
            "default_tile": default_tile,
        },
    )
    print(f"wrote {args.output}")
    return payload


if __name__ == "__main__":
    main()
