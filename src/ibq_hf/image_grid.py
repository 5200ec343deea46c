"""One picture from many samples: a grid with gutters, integer nearest-neighbour upscaling and row labels.

``ibq-hf generate`` writes a row per class. Tiles of small models (32×32 digits) pasted edge to edge are hard to
read, so tiles are enlarged by an integer factor with nearest-neighbour sampling (every model pixel becomes an
``N×N`` block, nothing is smoothed or invented), separated by a background-coloured gutter, and each row can carry
its class name on the left. Text uses PIL's built-in font: nothing is downloaded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

__all__ = ["GridLayout", "auto_gutter", "auto_upscale", "image_grid"]

#: ``auto_upscale`` enlarges tiles until their shorter side is at least this many pixels.
MIN_READABLE_TILE = 128
_MAX_LABEL_CHARS = 24


def auto_upscale(tile_width: int, tile_height: int) -> int:
    """The smallest integer factor that makes a tile at least :data:`MIN_READABLE_TILE` pixels on its shorter side
    (4 for 32×32 digits, 1 for 128 px and larger)."""
    return max(1, math.ceil(MIN_READABLE_TILE / max(1, min(tile_width, tile_height))))


def auto_gutter(tile_width: int, tile_height: int) -> int:
    """A gutter of 1/16 of the (upscaled) tile's shorter side, at least 2 pixels (8 px between 128 px tiles)."""
    return max(2, min(tile_width, tile_height) // 16)


@dataclass(frozen=True)
class GridLayout:
    """Where everything goes: tiles of ``tile_width × tile_height`` (after upscaling) in ``rows × cols``, ``gutter``
    pixels between neighbouring tiles, and a label column of ``label_width`` pixels (plus a gutter) on the left."""

    rows: int
    cols: int
    tile_width: int
    tile_height: int
    gutter: int = 0
    label_width: int = 0

    @property
    def left(self) -> int:
        return self.label_width + self.gutter if self.label_width else 0

    @property
    def size(self) -> tuple[int, int]:
        width = self.left + self.cols * self.tile_width + (self.cols - 1) * self.gutter
        return width, self.rows * self.tile_height + (self.rows - 1) * self.gutter

    def tile_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of tile ``(row, col)``, as PIL's ``crop`` takes it."""
        x = self.left + col * (self.tile_width + self.gutter)
        y = row * (self.tile_height + self.gutter)
        return x, y, x + self.tile_width, y + self.tile_height


def _short(label: str) -> str:
    """The first of comma-separated synonyms ("tench, Tinca tinca" → "tench"), at most 24 characters."""
    label = label.split(",")[0].strip()
    return label if len(label) <= _MAX_LABEL_CHARS else label[: _MAX_LABEL_CHARS - 3].rstrip() + "..."


def image_grid(
    images: Sequence[PIL.Image.Image],
    rows: int,
    cols: int,
    *,
    upscale: int = 1,
    gutter: int = 0,
    row_labels: Sequence[str] | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
    text_color: tuple[int, int, int] = (0, 0, 0),
) -> PIL.Image.Image:
    """Paste ``rows × cols`` equally sized images (row-major) into one RGB image.

    Args:
        images: ``rows * cols`` PIL images of one size.
        upscale: integer nearest-neighbour factor per tile (1 keeps the pixels as they are).
        gutter: background pixels between neighbouring tiles (and between the labels and the first column).
        row_labels: one text per row, drawn left of the row with PIL's default font (first synonym of a
            comma-separated name, shortened to 24 characters); ``None`` for no label column.
    """
    if rows < 1 or cols < 1 or len(images) != rows * cols:
        raise ValueError(f"A {rows}×{cols} grid needs {rows * cols} images, got {len(images)}.")
    if isinstance(upscale, bool) or not isinstance(upscale, int) or upscale < 1:
        raise ValueError(f"upscale must be a whole number >= 1, got {upscale!r}.")
    if isinstance(gutter, bool) or not isinstance(gutter, int) or gutter < 0:
        raise ValueError(f"gutter must be a whole number of pixels >= 0, got {gutter!r}.")
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"row_labels needs one text per row ({rows}), got {len(row_labels)}.")
    width, height = images[0].size
    if any(image.size != (width, height) for image in images):
        raise ValueError("All images of a grid must have the same size.")
    tile_width, tile_height = width * upscale, height * upscale

    texts = [_short(str(label)) for label in row_labels] if row_labels is not None else []
    font = PIL.ImageFont.load_default(size=max(10, min(48, round(tile_height * 0.3))))
    measure = PIL.ImageDraw.Draw(PIL.Image.new("RGB", (1, 1)))
    pad = max(2, tile_height // 16)
    text_widths = [measure.textlength(text, font=font) for text in texts]
    label_width = math.ceil(max(text_widths)) + 2 * pad if texts else 0

    layout = GridLayout(rows, cols, tile_width, tile_height, gutter, label_width)
    grid = PIL.Image.new("RGB", layout.size, background)
    for index, image in enumerate(images):
        tile = image.convert("RGB")
        if upscale > 1:
            tile = tile.resize((tile_width, tile_height), PIL.Image.Resampling.NEAREST)
        left, top, _, _ = layout.tile_box(index // cols, index % cols)
        grid.paste(tile, (left, top))
    draw = PIL.ImageDraw.Draw(grid)
    for row, (text, text_width) in enumerate(zip(texts, text_widths)):
        _, top, _, bottom = layout.tile_box(row, 0)
        # Right-aligned next to the row, vertically centred on it.
        draw.text(
            (label_width - pad - text_width, (top + bottom) / 2),
            text,
            fill=text_color,
            font=font,
            anchor="lm",
        )
    return grid
