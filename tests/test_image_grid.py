"""`ibq_hf.image_grid`: gutters, nearest-neighbour upscaling and row labels of the ``ibq-hf generate`` grid."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest

from ibq_hf.image_grid import GridLayout, auto_gutter, auto_upscale, image_grid


def tiles(count: int, size: int = 4) -> list[PIL.Image.Image]:
    rng = np.random.default_rng(0)
    return [PIL.Image.fromarray(rng.integers(0, 200, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def test_defaults_make_small_tiles_readable():
    assert auto_upscale(32, 32) == 4  # the bundled digits: 32 px → 128 px
    assert auto_upscale(16, 16) == 8 and auto_upscale(100, 100) == 2 and auto_upscale(256, 256) == 1
    assert auto_upscale(32, 64) == 4  # the shorter side decides
    assert auto_gutter(128, 128) == 8 and auto_gutter(16, 16) == 2 and auto_gutter(256, 256) == 16


def test_raw_grid_is_the_tiles_edge_to_edge():
    images = tiles(6)
    grid = np.asarray(image_grid(images, rows=2, cols=3))
    assert grid.shape == (8, 12, 3)
    for index, image in enumerate(images):
        row, col = divmod(index, 3)
        np.testing.assert_array_equal(grid[row * 4 : row * 4 + 4, col * 4 : col * 4 + 4], np.asarray(image))


def test_gutter_upscale_and_labels():
    images = tiles(4)
    grid = image_grid(images, rows=2, cols=2, upscale=3, gutter=2, row_labels=["tench, Tinca tinca", "7"])
    array = np.asarray(grid)
    width = grid.width
    layout = GridLayout(2, 2, 12, 12, gutter=2, label_width=width - (2 * 12 + 2) - 2)
    assert grid.size == layout.size == (layout.left + 26, 26)
    for index, image in enumerate(images):
        left, top, right, bottom = layout.tile_box(*divmod(index, 2))
        # Nearest-neighbour: every source pixel becomes a 3×3 block, nothing is smoothed.
        np.testing.assert_array_equal(
            array[top:bottom, left:right], np.asarray(image).repeat(3, 0).repeat(3, 1)
        )
    assert (array[12:14, layout.left :] == 255).all() and (
        array[:, layout.left + 12 : layout.left + 14] == 255
    ).all()
    for row in range(2):  # dark text in each row's label area
        _, top, _, bottom = layout.tile_box(row, 0)
        assert (array[top:bottom, : layout.label_width] < 100).any()
    # Only the first synonym is written: the long ImageNet name takes no more room than "tench" needs.
    short = image_grid(images, rows=2, cols=2, upscale=3, gutter=2, row_labels=["tench", "7"])
    assert short.size == grid.size


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"rows": 2, "cols": 2}, "needs 4 images, got 3"),
        ({"rows": 1, "cols": 3, "upscale": 0}, "upscale must be a whole number >= 1"),
        ({"rows": 1, "cols": 3, "upscale": 1.5}, "upscale must be a whole number >= 1"),
        ({"rows": 1, "cols": 3, "gutter": -1}, "gutter must be"),
        ({"rows": 1, "cols": 3, "row_labels": ["a", "b"]}, "one text per row"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        image_grid(tiles(3), **kwargs)
