"""``ibq-hf generate``: class-conditional samples of an ``IBQPipeline`` as one image grid (a row per class,
labelled with its name; tiles enlarged for small models; white gutters: ``ibq_hf.image_grid``)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import check_image_path, loading_bars, naming_the_model, torch_setup, write_image
from .flags import (
    add_device_argument,
    add_dtype_argument,
    add_generation_arguments,
    add_model_arguments,
    add_seed_argument,
    non_negative_int,
    positive_int,
)

#: ``--seed`` of ``generate``: image i of the grid uses seed + i.
DEFAULT_SEED = 0


def run(args: argparse.Namespace) -> None:
    import torch

    from ..image_grid import auto_gutter, auto_upscale, image_grid
    from ..pipeline import IBQPipeline

    if args.num_images < 1:
        raise ValueError(f"--num-images must be >= 1, got {args.num_images}.")
    output = check_image_path(args.output)
    device, dtype = torch_setup(args)
    with loading_bars(args.verbose), naming_the_model(args.model):
        pipe = IBQPipeline.from_pretrained(
            args.model, revision=args.revision, local_files_only=args.local_files_only, dtype=dtype
        )
    if args.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    # The pipeline reads ids, digit strings and names (one place: ibq_hf.class_labels); unknown names fail here.
    class_ids = pipe.resolve_class_labels(args.classes)
    total = len(class_ids) * args.num_images
    # Image i (row-major in the grid) always uses seed + i, whatever else is generated with it.
    generators = [torch.Generator().manual_seed(args.seed + i) for i in range(total)]
    images = pipe(
        class_labels=class_ids,
        num_images_per_prompt=args.num_images,
        generator=generators,
        guidance_scale=args.guidance_scale,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        do_sample=False if args.greedy else None,
        jacobi_window=args.jacobi_window,
    ).images
    width, height = images[0].size
    upscale = auto_upscale(width, height) if args.upscale is None else args.upscale
    gutter = auto_gutter(width * upscale, height * upscale) if args.gutter is None else args.gutter
    labels = None if args.no_labels else _row_labels(pipe.id2label, class_ids)
    grid = image_grid(
        images, rows=len(class_ids), cols=args.num_images, upscale=upscale, gutter=gutter, row_labels=labels
    )
    path = write_image(grid, output)
    shown = f", shown {upscale}× larger" if upscale > 1 else ""
    print(
        f"Saved a {len(class_ids)}×{args.num_images} grid of {width}×{height} images{shown} (classes "
        f"{_shown_classes(args.classes)}; seeds {args.seed}..{args.seed + total - 1}) to {path} "
        f"({grid.width}×{grid.height} pixels)"
    )


def _row_labels(id2label: dict[int, str], class_ids: list[int]) -> list[str] | None:
    """Each row's class name, or ``None`` when the model's classes have no names."""
    return [id2label[i] for i in class_ids] if id2label else None


def _shown_classes(classes: list[str]) -> str:
    """The ``--class`` values as typed: ids bare, names quoted (``3, 'golden retriever'``)."""
    shown = (c.strip() for c in classes)
    return ", ".join(str(int(c)) if c.isdecimal() else repr(c) for c in shown)


def add_generate_command(commands: Any) -> None:
    """Register ``generate`` on the top-level subparsers ``commands``."""
    gen = commands.add_parser(
        "generate",
        help="sample class-conditional images into a grid",
        description=(
            "Generate images of the given classes with an IBQPipeline and save them as one grid: a row per "
            "--class, --num-images columns. Image i (row-major) uses seed --seed + i, so an image does not "
            "depend on what else is generated. Unset sampling options come from the model's generation config."
        ),
        epilog='example: ibq-hf generate --model DIR --class 207 --class "golden retriever" --num-images 4 '
        "--seed 0 --output grid.png",
    )
    add_model_arguments(gen, "the pipeline")
    add_device_argument(gen)
    add_dtype_argument(gen)
    gen.add_argument(
        "--class",
        dest="classes",
        action="append",
        required=True,
        metavar="CLASS",
        help="class id (207) or name ('golden retriever'); repeat for several classes",
    )
    gen.add_argument("--num-images", type=int, default=1, help="images per class (default 1)")
    add_seed_argument(gen, default=DEFAULT_SEED, meaning="seed of the first image")
    gen.add_argument("--output", required=True, help="image file for the grid (.png, .jpg, ...)")
    add_generation_arguments(gen)
    gen.add_argument("--greedy", action="store_true", help="take the most likely token at every step")
    gen.add_argument(
        "--cpu-offload", action="store_true", help="keep only the running model on the GPU (less memory)"
    )
    layout = gen.add_argument_group("grid layout")
    layout.add_argument(
        "--upscale",
        type=positive_int,
        default=None,
        metavar="N",
        help="enlarge every image N× with nearest-neighbour pixels (default: enough for tiles of at least 128 px, "
        "e.g. 4 for 32×32 models, 1 for 256×256; 1 keeps the model's pixels)",
    )
    layout.add_argument(
        "--gutter",
        type=non_negative_int,
        default=None,
        metavar="PX",
        help="white pixels between images (default: 1/16 of a tile, at least 2; 0 for none)",
    )
    layout.add_argument(
        "--no-labels",
        action="store_true",
        help="no class names left of the rows (default: names when the model has them)",
    )
    gen.set_defaults(func=run)
