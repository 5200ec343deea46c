"""Exceptions shared by the models, the converters and the command line."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "CheckpointKeyError",
    "ImageDecodeError",
    "ImageInputError",
    "ImageSizeError",
    "UnreadableImagesError",
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
