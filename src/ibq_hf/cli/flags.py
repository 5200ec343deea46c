"""One definition per command-line option that more than one ``ibq-hf`` command (or example script) takes.

A command module never spells out a shared flag: it calls the ``add_*`` function here, so the flag's name, type,
checks and help text are the same everywhere it appears. Where commands legitimately differ (``--seed`` is 0 for
``generate`` and the reference's 42 for ``evaluate sample``; what ``--model`` names), the difference is a
parameter of the one definition, never a second declaration. ``tests/cli/test_flags.py`` keeps it so.

Standard library only: ``ibq-hf --help`` must not import torch (``tests/test_import_time.py``).
"""

from __future__ import annotations

import argparse
import math

__all__ = [
    "DTYPES",
    "PROTOCOLS",
    "add_batch_size_argument",
    "add_device_argument",
    "add_dtype_argument",
    "add_generation_arguments",
    "add_model_arguments",
    "add_overwrite_argument",
    "add_progress_argument",
    "add_protocol_argument",
    "add_seed_argument",
    "finite_float",
    "non_negative_int",
    "positive_int",
]

#: ``--dtype`` choices: torch dtype names of the weights.
DTYPES = ("float32", "bfloat16", "float16")
#: ``ibq_hf.image_processing.PROTOCOLS``, spelled out so that building the parser imports no numpy/PIL/torch
#: (a test checks that the two agree).
PROTOCOLS = ("reference", "pretrain")
_GENERATION_CONFIG_DEFAULT = "default: the model's generation config"


# ---- argparse types ----------------------------------------------------------------------------------------------


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


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


# ---- shared options ----------------------------------------------------------------------------------------------


def add_model_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--model`` (``what`` it names: "the pipeline", "a pipeline or tokenizer", ...), ``--revision`` and
    ``--local-files-only``: where a model is loaded from."""
    parser.add_argument("--model", required=True, help=f"{what}: a local folder or a Hub repo id")
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit (default: main)")
    parser.add_argument(
        "--local-files-only", action="store_true", help="never touch the network (use the local Hub cache)"
    )


def add_device_argument(parser: argparse.ArgumentParser, default: str = "cuda if any") -> None:
    """``--device``; ``default`` says in words what an unset device means for the command."""
    parser.add_argument(
        "--device", default=None, help=f"torch device, e.g. cuda, cuda:1, cpu (default: {default})"
    )


def add_dtype_argument(parser: argparse.ArgumentParser) -> None:
    """``--dtype``: the dtype the weights are loaded in."""
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="weight dtype (default float32)")


def add_seed_argument(
    parser: argparse.ArgumentParser, *, default: int, meaning: str, default_note: str = ""
) -> None:
    """``--seed``: ``meaning`` says what it seeds in this command, ``default`` differs between commands (0 for
    ``generate``, the reference's 42 for ADM sampling); ``default_note`` follows the default in the help."""
    parser.add_argument(
        "--seed", type=int, default=default, help=f"{meaning} (default {default}{default_note})"
    )


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """``--guidance-scale``, ``--temperature``, ``--top-k``, ``--top-p``, ``--jacobi-window``: sampling settings.
    Unset (``None``) means the model's ``generation_config``; non-finite values are refused by argparse
    (:func:`finite_float`)."""
    parser.add_argument(
        "--guidance-scale",
        type=finite_float,
        default=None,
        help=f"classifier-free guidance (1 = off; {_GENERATION_CONFIG_DEFAULT})",
    )
    parser.add_argument(
        "--temperature",
        type=finite_float,
        default=None,
        help=f"sampling temperature ({_GENERATION_CONFIG_DEFAULT})",
    )
    parser.add_argument(
        "--top-k",
        type=int,
        default=None,
        help=f"keep the k most likely tokens (0 = off; {_GENERATION_CONFIG_DEFAULT})",
    )
    parser.add_argument(
        "--top-p",
        type=finite_float,
        default=None,
        help=f"nucleus sampling mass (1.0 = off; {_GENERATION_CONFIG_DEFAULT})",
    )
    parser.add_argument(
        "--jacobi-window",
        type=int,
        default=None,
        help="speculative Jacobi decoding: draft tokens verified per forward pass (0 = sequential; same "
        f"distribution, fewer passes, other images for a seed; {_GENERATION_CONFIG_DEFAULT})",
    )


def add_protocol_argument(parser: argparse.ArgumentParser, default_help: str) -> None:
    """``--protocol``: the named image preprocessing (:data:`PROTOCOLS`); ``default_help`` says what unset
    means for the command."""
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=None,
        help="image preprocessing: 'reference' (the ImageNet tokenizers: shortest side -> R, bilinear without "
        "antialias, centre crop) or 'pretrain' (the Pretrain tokenizers: Resize(R) + CenterCrop(R), PIL bilinear "
        f"antialiased). Default: {default_help}",
    )


def add_batch_size_argument(
    parser: argparse.ArgumentParser, *, default: int, unit: str = "images per batch", default_note: str = ""
) -> None:
    """``--batch-size`` (>= 1): ``unit`` says what one batch is for the command."""
    parser.add_argument(
        "--batch-size", type=positive_int, default=default, help=f"{unit} (default {default}{default_note})"
    )


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``."""
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    """``--overwrite`` for commands that write an ``--output`` folder."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty --output folder (all its files are deleted); without it such a folder is refused",
    )
