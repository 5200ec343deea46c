"""The ``ibq-hf`` command line: thin argument parsing over the library.

Commands: ``convert {tokenizer,ar,pipeline}``, ``generate`` (class-conditional samples as an image grid: a row
per class labelled with its name, tiles enlarged for small models, white gutters; ``ibq_hf.image_grid``),
``reconstruct`` (tokenize + decode pictures) and ``evaluate {tokenizer,sample,generation}`` (metrics with the
paper's protocol, docs/evaluation.md). Errors caused by the user's input (bad paths, mismatched checkpoints,
a malformed ``--config`` YAML, a non-empty ``--output`` folder, NaN/inf settings, unreadable or oversized
pictures, unknown class names, bad arguments) are printed as ``ibq-hf: error: ...`` with exit status 2,
never as a traceback; a ``--model`` path that does not exist is "folder not found", not a Hub error
(``ibq_hf.models.loading``). The module imports only the standard library at the top: ``ibq-hf --help`` and
every ``<command> --help`` import none of torch, transformers and diffusers (each command imports what it uses).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

_DTYPES = ("float32", "bfloat16", "float16")


def _convert_tokenizer(args: argparse.Namespace) -> None:
    from .conversion.tokenizer import convert_tokenizer_checkpoint

    model = convert_tokenizer_checkpoint(
        args.checkpoint,
        args.output,
        config_path=args.config,
        use_ema=False if args.no_ema else (True if args.ema else None),
        resolution=args.resolution,
        overwrite=args.overwrite,
        protocol=args.protocol,
    )
    n_params = sum(p.numel() for p in model.parameters())
    print(f"Saved IBQVQModel ({model.config.num_embeddings} codes, {n_params:,} parameters) to {args.output}")


def _convert_ar(args: argparse.Namespace) -> None:
    from .conversion.ar import convert_ar_checkpoint

    model = convert_ar_checkpoint(
        args.checkpoint, args.output, config_path=args.config, overwrite=args.overwrite
    )
    n_params = sum(p.numel() for p in model.parameters())
    print(f"Saved IBQARForImageGeneration ({n_params:,} parameters) to {args.output}")


def _convert_pipeline(args: argparse.Namespace) -> None:
    from .conversion.pipeline import convert_pipeline_checkpoint

    pipe = convert_pipeline_checkpoint(
        args.checkpoint,
        args.output,
        config_path=args.config,
        resolution=args.resolution,
        overwrite=args.overwrite,
    )
    n_params = sum(p.numel() for p in pipe.transformer.parameters())
    print(
        f"Saved IBQPipeline (tokenizer with {pipe.vqvae.config.num_embeddings} codes, transformer with "
        f"{n_params:,} parameters) to {args.output}"
    )


@contextlib.contextmanager
def _loading_bars(show: bool) -> Iterator[None]:
    """Hide diffusers/transformers weight-loading progress bars (shown with --verbose); restores the setting."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    switched = []
    if not show:
        for module in (diffusers_logging, transformers_logging):
            if module.is_progress_bar_enabled():
                module.disable_progress_bar()
                switched.append(module)
    try:
        yield
    finally:
        for module in switched:
            module.enable_progress_bar()


@contextlib.contextmanager
def _naming_the_model(model: str) -> Iterator[None]:
    """Prefix loading errors (often raised deep inside huggingface_hub) with the --model they concern."""
    try:
        yield
    except (OSError, ValueError) as err:
        kind = OSError if isinstance(err, OSError) else ValueError
        raise kind(f"Could not load --model {model!r}: {err}") from err


def _torch_setup(args: argparse.Namespace) -> tuple[Any, Any]:
    """(device, dtype) from --device / --dtype; the device defaults to CUDA when there is one."""
    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA device is available; use --device cpu.")
    return device, getattr(torch, args.dtype)


def _parse_class(value: str) -> int | str:
    """``"207"`` → 207; anything else is a class name."""
    value = value.strip()
    return int(value) if re.fullmatch(r"\d+", value) else value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def _check_image_path(output: str) -> Path:
    """Checked before any work, so a typo does not cost a whole generation run."""
    path = Path(output)
    if path.suffix.lower() not in {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}:
        raise ValueError(f"--output {output!r} needs an image extension such as .png or .jpg.")
    return path


def _write_image(image: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _row_labels(pipe: Any, classes: list[int | str]) -> list[str] | None:
    """Each row's class name (the first synonym), or ``None`` when the model's classes have no names."""
    id2label = pipe.id2label
    if not id2label:
        return None
    ids = [c if isinstance(c, int) else pipe.get_label_ids(c)[0] for c in classes]
    return [id2label[i] for i in ids]


def _generate(args: argparse.Namespace) -> None:
    import torch

    from .image_grid import auto_gutter, auto_upscale, image_grid
    from .pipeline import IBQPipeline

    if args.num_images < 1:
        raise ValueError(f"--num-images must be >= 1, got {args.num_images}.")
    output = _check_image_path(args.output)
    device, dtype = _torch_setup(args)
    with _loading_bars(args.verbose), _naming_the_model(args.model):
        pipe = IBQPipeline.from_pretrained(
            args.model, revision=args.revision, local_files_only=args.local_files_only, dtype=dtype
        )
    if args.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    classes = [_parse_class(c) for c in args.classes]
    total = len(classes) * args.num_images
    # Image i (row-major in the grid) always uses seed + i, whatever else is generated with it.
    generators = [torch.Generator().manual_seed(args.seed + i) for i in range(total)]
    images = pipe(
        class_labels=classes,
        num_images_per_prompt=args.num_images,
        generator=generators,
        guidance_scale=args.guidance_scale,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        do_sample=False if args.greedy else None,
    ).images
    width, height = images[0].size
    upscale = auto_upscale(width, height) if args.upscale is None else args.upscale
    gutter = auto_gutter(width * upscale, height * upscale) if args.gutter is None else args.gutter
    labels = None if args.no_labels else _row_labels(pipe, classes)
    grid = image_grid(
        images, rows=len(classes), cols=args.num_images, upscale=upscale, gutter=gutter, row_labels=labels
    )
    path = _write_image(grid, output)
    shown = f", shown {upscale}× larger" if upscale > 1 else ""
    print(
        f"Saved a {len(classes)}×{args.num_images} grid of {width}×{height} images{shown} (classes "
        f"{', '.join(map(repr, classes))}; seeds {args.seed}..{args.seed + total - 1}) to {path} "
        f"({grid.width}×{grid.height} pixels)"
    )


def _load_tokenizer(model: str, revision: str | None, local_files_only: bool, dtype: Any) -> Any:
    """The tokenizer of a pipeline (its ``vqvae/`` folder, without loading the AR model) or of a tokenizer folder."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    from .models.loading import resolve_pretrained
    from .models.modeling_vq import IBQVQModel

    kwargs = {"revision": revision, "local_files_only": local_files_only, "dtype": dtype}
    # A missing local folder or an unreachable, uncached repo id fails here, in one sentence.
    location = resolve_pretrained(
        model, "IBQ pipeline or tokenizer", ("model_index.json", "config.json"), kwargs
    )
    local = Path(location)
    if local.is_dir():
        is_pipeline = (local / "model_index.json").is_file()
    else:
        try:
            hf_hub_download(
                location, "model_index.json", revision=revision, local_files_only=kwargs["local_files_only"]
            )
            is_pipeline = True
        except EntryNotFoundError:  # includes "not in the local cache" when offline: try the tokenizer layout
            is_pipeline = False
    if is_pipeline:
        return IBQVQModel.from_pretrained(location, subfolder="vqvae", **kwargs)
    return IBQVQModel.from_pretrained(location, **kwargs)


def _reconstruct(args: argparse.Namespace) -> None:
    import torch
    from diffusers.utils import make_image_grid

    from .image_processing import open_image, to_rgb
    from .pipeline import images_to_tensor, numpy_to_pil, reconstruct

    output = _check_image_path(args.output)
    # Pictures first: a missing, corrupt or oversized file (decompression bomb: ImageSizeError) fails before the
    # model is loaded.
    pictures = [to_rgb(open_image(name)) for name in args.images]
    device, dtype = _torch_setup(args)
    with _loading_bars(args.verbose), _naming_the_model(args.model):
        vqvae = _load_tokenizer(args.model, args.revision, args.local_files_only, dtype).to(device)
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
    path = _write_image(make_image_grid(tiles, rows=rows, cols=len(args.images)), output)
    if args.save_indices:
        import numpy as np

        indices_path = Path(args.save_indices)
        indices_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(indices_path, result.indices.cpu().numpy())
        print(f"Saved token ids {tuple(result.indices.shape)} to {indices_path}")
    print(f"Saved {'originals (top) and ' if args.side_by_side else ''}reconstructions to {path}")


def _add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty --output folder (all its files are deleted); without it such a folder is refused",
    )


def _add_loading_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--model", required=True, help=f"{what}: a local folder or a Hub repo id")
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit (default: main)")
    parser.add_argument(
        "--local-files-only", action="store_true", help="never touch the network (use the local Hub cache)"
    )
    parser.add_argument(
        "--device", default=None, help="torch device, e.g. cuda, cuda:1, cpu (default: cuda if any)"
    )
    parser.add_argument("--dtype", choices=_DTYPES, default="float32", help="weight dtype (default float32)")


def build_parser() -> argparse.ArgumentParser:
    from .evaluation.commands import finite_float

    parser = argparse.ArgumentParser(
        prog="ibq-hf",
        description="IBQ (Index Backpropagation Quantization) tokenizer and AR image generation, Hugging Face-native.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    convert = commands.add_parser(
        "convert",
        help="convert official SEED-Voken checkpoints to Hugging Face folders",
        description="Convert official SEED-Voken IBQ checkpoints (.ckpt) into from_pretrained folders (safetensors).",
    )
    kinds = convert.add_subparsers(dest="kind", required=True, metavar="KIND")

    tok = kinds.add_parser(
        "tokenizer",
        help="an IBQ tokenizer checkpoint -> IBQVQModel",
        description=(
            "Convert an IBQ tokenizer checkpoint (e.g. imagenet256_16384.ckpt) into an IBQVQModel folder. "
            "Uses the EMA weights when present (as the published results did)."
        ),
    )
    tok.add_argument("--checkpoint", required=True, help="original .ckpt file (Lightning or raw state dict)")
    tok.add_argument(
        "--output", required=True, help="output folder (loadable with IBQVQModel.from_pretrained)"
    )
    tok.add_argument("--config", default=None, help="original YAML config, for non-default architectures")
    ema = tok.add_mutually_exclusive_group()
    ema.add_argument("--no-ema", action="store_true", help="convert the raw (non-EMA) weights")
    ema.add_argument("--ema", action="store_true", help="require EMA weights (default: EMA when present)")
    tok.add_argument(
        "--resolution", type=int, default=256, help="training resolution, to place attention (default 256)"
    )
    tok.add_argument(
        "--protocol",
        choices=("reference", "pretrain"),
        default=None,
        help="preprocessing protocol recorded in the model card (default: detected; 'pretrain' for the "
        "IBQ_pretrain_* tokenizers)",
    )
    _add_overwrite_argument(tok)
    tok.set_defaults(func=_convert_tokenizer)

    ar = kinds.add_parser(
        "ar",
        help="an IBQ AR checkpoint -> IBQARForImageGeneration",
        description="Convert an IBQ class-conditional AR checkpoint (AR_256_{B,L,XL,XXL}.ckpt).",
    )
    ar.add_argument("--checkpoint", required=True, help="original AR .ckpt file")
    ar.add_argument("--output", required=True, help="output folder (loadable with IBQARForImageGeneration)")
    ar.add_argument("--config", default=None, help="original YAML config (transformer_config.params)")
    _add_overwrite_argument(ar)
    ar.set_defaults(func=_convert_ar)

    pipe = kinds.add_parser(
        "pipeline",
        help="an IBQ AR checkpoint -> IBQPipeline (AR model + its embedded tokenizer)",
        description=(
            "Convert an official AR checkpoint (AR_256_{B,L,XL,XXL}.ckpt) into a whole IBQPipeline folder: its "
            "transformer.* weights become the AR model and its embedded first_stage_model.* weights the tokenizer. "
            "The file is read once; any unmapped, missing or mis-shaped key is an error."
        ),
    )
    pipe.add_argument("--checkpoint", required=True, help="original AR .ckpt file")
    pipe.add_argument(
        "--output", required=True, help="output folder (loadable with IBQPipeline.from_pretrained)"
    )
    pipe.add_argument(
        "--config", default=None, help="original AR YAML (transformer_config.params), for non-released sizes"
    )
    pipe.add_argument(
        "--resolution",
        type=int,
        default=256,
        help="tokenizer training resolution, to place attention (default 256)",
    )
    _add_overwrite_argument(pipe)
    pipe.set_defaults(func=_convert_pipeline)

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
    _add_loading_arguments(gen, "the pipeline")
    gen.add_argument(
        "--class",
        dest="classes",
        action="append",
        required=True,
        metavar="CLASS",
        help="class id (207) or name ('golden retriever'); repeat for several classes",
    )
    gen.add_argument("--num-images", type=int, default=1, help="images per class (default 1)")
    gen.add_argument("--seed", type=int, default=0, help="seed of the first image (default 0)")
    gen.add_argument("--output", required=True, help="image file for the grid (.png, .jpg, ...)")
    gen.add_argument(
        "--guidance-scale", type=finite_float, default=None, help="classifier-free guidance (1 = off)"
    )
    gen.add_argument("--temperature", type=finite_float, default=None, help="sampling temperature")
    gen.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens (0 = off)")
    gen.add_argument("--top-p", type=finite_float, default=None, help="nucleus sampling mass (1.0 = off)")
    gen.add_argument("--greedy", action="store_true", help="take the most likely token at every step")
    gen.add_argument(
        "--cpu-offload", action="store_true", help="keep only the running model on the GPU (less memory)"
    )
    layout = gen.add_argument_group("grid layout")
    layout.add_argument(
        "--upscale",
        type=_positive_int,
        default=None,
        metavar="N",
        help="enlarge every image N× with nearest-neighbour pixels (default: enough for tiles of at least 128 px, "
        "e.g. 4 for 32×32 models, 1 for 256×256; 1 keeps the model's pixels)",
    )
    layout.add_argument(
        "--gutter",
        type=_non_negative_int,
        default=None,
        metavar="PX",
        help="white pixels between images (default: 1/16 of a tile, at least 2; 0 for none)",
    )
    layout.add_argument(
        "--no-labels",
        action="store_true",
        help="no class names left of the rows (default: names when the model has them)",
    )
    gen.set_defaults(func=_generate)

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
    _add_loading_arguments(rec, "a pipeline or tokenizer")
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
    rec.set_defaults(func=_reconstruct)
    _add_evaluate_commands(commands)
    return parser


def _evaluate(args: argparse.Namespace) -> None:
    from .evaluation import commands

    {
        "tokenizer": commands.run_tokenizer,
        "sample": commands.run_sample,
        "generation": commands.run_generation,
    }[args.kind](args)


def _add_evaluate_commands(commands: Any) -> None:
    """``ibq-hf evaluate {tokenizer,sample,generation}``: the same code as examples/evaluate_*.py, sample_fid.py."""
    from .evaluation import commands as evaluation

    group = commands.add_parser(
        "evaluate",
        help="rFID/PSNR/SSIM/LPIPS/usage of a tokenizer; ADM sampling; gFID/IS/precision/recall",
        description="Evaluate with the paper's protocol (see docs/evaluation.md).",
    )
    kinds = group.add_subparsers(dest="kind", required=True, metavar="KIND")
    tok = kinds.add_parser(
        "tokenizer",
        help="rFID / PSNR / SSIM / LPIPS / codebook usage on a datasets split (default ImageNet val, streamed)",
        description="Reconstruct a datasets split with an IBQ tokenizer and measure it (reference §6).",
        epilog="example: ibq-hf evaluate tokenizer --model DIR --data-dir photos/ --max-images 100 --output-dir out",
    )
    evaluation.add_tokenizer_arguments(tok)
    sample = kinds.add_parser(
        "sample",
        help="ADM-protocol sampling into an .npz (50 images per class; per-image seeds)",
        description=(
            "Sample images per class with an IBQPipeline into an ADM .npz (reference §5.3). Several processes: "
            "accelerate launch -m ibq_hf.cli evaluate sample ..."
        ),
        epilog="example: ibq-hf evaluate sample --model DIR --output samples.npz",
    )
    evaluation.add_sample_arguments(sample)
    gen = kinds.add_parser(
        "generation",
        help="gFID / IS / precision / recall of an .npz against a reference .npz or a datasets split",
        description="Compare generated images (ADM .npz) with a reference batch or a datasets split.",
        epilog="example: ibq-hf evaluate generation --samples samples.npz --reference VIRTUAL_imagenet256_labeled.npz",
    )
    evaluation.add_generation_arguments(gen)
    for parser in (tok, sample, gen):
        parser.set_defaults(func=_evaluate)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, TypeError, OSError) as err:
        print(f"ibq-hf: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
