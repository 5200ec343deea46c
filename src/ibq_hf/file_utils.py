"""Durable file publishing shared by the training checkpoints and the converters.

Why: a folder is published by renaming a staging folder into place; the rename is only safe once the staged
files (and the directory entries) are on disk, or a crash can leave a published folder with empty files.
"""

from __future__ import annotations

import os

__all__ = ["fsync_dir", "fsync_tree"]


def fsync_tree(folder: str | os.PathLike) -> None:
    """Flush every file below ``folder`` to disk, so a following rename publishes complete data."""
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush ``folder``'s own entries (creations, renames) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
