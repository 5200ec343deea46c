# Shipped by ibq-hf 0.1.0 from ibq_hf/errors.py (generated at save time; edit the package, not this file).
"""Exceptions shared by the models, the converters and the command line."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "CheckpointKeyError",
    "HubModelUnavailableError",
    "ImageDecodeError",
    "ImageInputError",
    "ImageSizeError",
    "ModelFolderNotFoundError",
    "UnreadableImagesError",
    "run_script_main",
]


class CheckpointKeyError(ValueError):
    """A checkpoint does not match the architecture it is converted to.

    Carries the offending key lists so callers (and tests) can inspect them.
    """

    def __init__(
        self,
        what: str,
        missing: Iterable[str] = (),
        unexpected: Iterable[str] = (),
        mismatched: Iterable[tuple[str, tuple[int, ...], tuple[int, ...]]] = (),
        hint: str = "",
    ) -> None:
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = sorted(mismatched)
        lines = [f"The checkpoint does not match the {what}."]
        if self.missing:
            lines.append(f"Missing keys ({len(self.missing)}): {_abbreviate(self.missing)}")
        if self.unexpected:
            lines.append(f"Unexpected keys ({len(self.unexpected)}): {_abbreviate(self.unexpected)}")
        if self.mismatched:
            shown = [f"{k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in self.mismatched]
            lines.append(f"Mis-shaped keys ({len(shown)}): {_abbreviate(shown)}")
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))


def _abbreviate(items: list[str], limit: int = 20) -> str:
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f", ... (+{len(items) - limit} more)"


class UnreadableImagesError(ValueError):
    """Every image of a training batch failed to decode: the data source is unreadable or badly damaged.

    Single broken files are skipped and counted (``DataStats``); this is raised when nothing is left to train on.
    """


class ImageInputError(ValueError):
    """A picture given as input cannot be used; the message names the file, the problem and the fix.

    Base of :class:`ImageSizeError` and :class:`ImageDecodeError` (``ibq_hf.image_processing``).
    """


class ImageSizeError(ImageInputError):
    """A picture has too many pixels (a possible decompression bomb) or an absurd aspect ratio."""


class ImageDecodeError(ImageInputError):
    """A file is not an image, or is truncated/corrupt."""


def run_script_main(main: Any, argv: list[str], prog: str) -> None:
    """Run an example script's ``main(argv)``; a user-input error becomes one ``prog: error: ...`` line, exit code 2.

    Only this package's own input errors (unreadable data, unusable pictures, checkpoints that do not match) are
    turned into a message; anything else keeps its traceback, because it is a bug to report.
    """
    import sys

    try:
        main(argv)
    except (UnreadableImagesError, ImageInputError, CheckpointKeyError) as error:
        # Starts on a fresh line: a progress bar may own the current one.
        print(f"\n{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


class ModelFolderNotFoundError(FileNotFoundError):
    """A path given to ``from_pretrained`` (or ``--model``) that can only be meant as a local folder does not exist,
    or is not a saved model; the message names the path as given and as resolved."""


class HubModelUnavailableError(OSError):
    """A Hub repo id cannot be loaded: the Hub is unreachable or off and the repo is not cached, or it does not
    exist; the message says how to point at a local folder instead."""
