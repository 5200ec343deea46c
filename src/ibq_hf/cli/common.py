"""What the ``ibq-hf`` commands share at run time: the device and dtype, quiet loading, errors that name the
``--model``, checked output image paths. Heavy libraries are imported inside the functions (fast ``--help``)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Extensions ``--output`` may have where a command writes one image.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})


def resolve_device(name: str | None) -> Any:
    """``--device`` as a ``torch.device``; unset means CUDA when there is one, else the CPU."""
    import torch

    device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA device is available; use --device cpu.")
    return device


def torch_setup(args: argparse.Namespace) -> tuple[Any, Any]:
    """(device, dtype) from ``--device`` / ``--dtype``."""
    import torch

    return resolve_device(args.device), getattr(torch, args.dtype)


@contextlib.contextmanager
def loading_bars(show: bool) -> Iterator[None]:
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
def naming_the_model(model: str) -> Iterator[None]:
    """Prefix loading errors (often raised deep inside huggingface_hub) with the --model they concern."""
    try:
        yield
    except (OSError, ValueError) as err:
        kind = OSError if isinstance(err, OSError) else ValueError
        raise kind(f"Could not load --model {model!r}: {err}") from err


def check_image_path(output: str) -> Path:
    """``--output`` of a command that writes one image; checked before any work, so a typo does not cost a whole
    generation run."""
    path = Path(output)
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise ValueError(f"--output {output!r} needs an image extension such as .png or .jpg.")
    return path


def write_image(image: Any, path: Path) -> Path:
    """Save a PIL image, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
