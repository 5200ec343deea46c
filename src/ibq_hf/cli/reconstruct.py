"""``ibq-hf reconstruct``: pictures → token ids → pictures with the IBQ tokenizer, side by side in one image, with
each picture's PSNR."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from .common import check_image_path, loading_bars, naming_the_model, torch_setup, write_image
from .flags import add_device_argument, add_dtype_argument, add_model_arguments


def run(args: argparse.Namespace) -> None:
    import torch
    from diffusers.utils import make_image_grid

    from ..image_processing import images_to_tensor, numpy_to_pil, open_image, to_rgb
    from ..models.modeling_vq import IBQVQModel
    from ..pipeline import reconstruct

    output = check_image_path(args.output)
    # Pictures first: a missing, corrupt or oversized file (decompression bomb: ImageSizeError) fails before the
    # model is loaded.
    pictures = [to_rgb(open_image(name)) for name in args.images]
    device, dtype = torch_setup(args)
    with loading_bars(args.verbose), naming_the_model(args.model):
        vqvae = IBQVQModel.load_tokenizer(
            args.model, revision=args.revision, local_files_only=args.local_files_only, dtype=dtype
        ).to(device)
    resolution = vqvae.config.resolution if args.resolution is None else args.resolution
    resolution = None if resolution == 0 else resolution
    result = reconstruct(vqvae, pictures, resolution=resolution, output_type="pt")
    originals = (images_to_tensor(pictures, resolution) + 1) / 2
    recons = result.images.float().cpu()
    for name, original, recon, indices in zip(args.images, originals, recons, result.indices):
        mse = float(torch.mean((original - recon) ** 2))
        psnr = 10 * math.log10(1.0 / mse) if mse > 0 else float("inf")
        h, w = original.shape[-2:]
        print(f"{name}: {w}×{h} -> {indices.shape[1]}×{indices.shape[0]} tokens, PSNR {psnr:.2f} dB")
    tiles = numpy_to_pil(recons.permute(0, 2, 3, 1).numpy())
    rows = 1
    if args.side_by_side:
        tiles = numpy_to_pil(originals.permute(0, 2, 3, 1).numpy()) + tiles
        rows = 2
    path = write_image(make_image_grid(tiles, rows=rows, cols=len(args.images)), output)
    if args.save_indices:
        import numpy as np

        indices_path = Path(args.save_indices)
        indices_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(indices_path, result.indices.cpu().numpy())
        print(f"Saved token ids {tuple(result.indices.shape)} to {indices_path}")
    print(f"Saved {'originals (top) and ' if args.side_by_side else ''}reconstructions to {path}")


def add_reconstruct_command(commands: Any) -> None:
    """Register ``reconstruct`` on the top-level subparsers ``commands``."""
    rec = commands.add_parser(
        "reconstruct",
        help="tokenize and decode pictures with the IBQ tokenizer",
        description=(
            "Reconstruct pictures through the tokenizer (image -> token ids -> image) and save the "
            "reconstructions side by side in one image; prints each picture's PSNR. --model may be a pipeline "
            "(only its vqvae/ folder is loaded) or a tokenizer folder."
        ),
        epilog="example: ibq-hf reconstruct --model DIR photo.jpg --output recon.png",
    )
    add_model_arguments(rec, "a pipeline or tokenizer")
    add_device_argument(rec)
    add_dtype_argument(rec)
    rec.add_argument("images", nargs="+", metavar="IMAGE", help="picture files (any format PIL reads)")
    rec.add_argument("--output", required=True, help="image file for the reconstructions (.png, ...)")
    rec.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="resize the shorter side to N and centre-crop N×N (default: the tokenizer's training resolution; "
        "0 keeps the size, which must be divisible by the downsampling factor)",
    )
    rec.add_argument(
        "--side-by-side", action="store_true", help="put the originals above the reconstructions"
    )
    rec.add_argument(
        "--save-indices", default=None, metavar="FILE.npy", help="also save the token ids [B, h, w]"
    )
    rec.set_defaults(func=run)
