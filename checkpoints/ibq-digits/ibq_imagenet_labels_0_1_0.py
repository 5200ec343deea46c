# Shipped by ibq-hf 0.1.0 from ibq_hf/imagenet_labels.py (generated at save time; edit the package, not this file).
"""The ImageNet-1k class names, in the class-id order every released IBQ / LlamaGen / DiT model uses.

Class id ``i`` is the ``i``-th WordNet id in sorted order (``n01440764`` "tench" is 0, ``n02099601`` "golden
retriever" is 207). Folder orders of some ImageNet copies differ from this (LlamaGen issue #76), so the table
ships with the package instead of being derived from a dataset on disk. Each class has one or more names
(WordNet lemmas), as in DiT's ``id2label``: ``"tench, Tinca tinca"``.
"""

from __future__ import annotations

from functools import cache
from .ibq_imagenet_classes_0_1_0 import IMAGENET_CLASSES_TSV

__all__ = ["IMAGENET_NUM_CLASSES", "imagenet_id2label", "imagenet_wnids"]

IMAGENET_NUM_CLASSES = 1000
_DATA_FILE = "imagenet_classes.tsv"


@cache
def _read_table() -> tuple[tuple[str, str], ...]:
    # The copy shipped next to saved weights has no package data: it embeds the table (ibq_hf.remote_code).
    resource = None
    text = IMAGENET_CLASSES_TSV
    rows = tuple(
        tuple(line.split("\t", 1)) for line in text.splitlines() if line.strip() and not line.startswith("#")
    )
    if len(rows) != IMAGENET_NUM_CLASSES or any(len(row) != 2 for row in rows):
        raise RuntimeError(
            f"The packaged {_DATA_FILE} is damaged ({len(rows)} rows, expected {IMAGENET_NUM_CLASSES} "
            "'wnid<TAB>names' rows); reinstall ibq-hf."
        )
    return rows  # type: ignore[return-value]


def imagenet_id2label() -> dict[int, str]:
    """``{class id: "name, synonym, ..."}`` for the 1000 ImageNet-1k classes (a fresh dict each call)."""
    return {i: names for i, (_, names) in enumerate(_read_table())}


def imagenet_wnids() -> list[str]:
    """The 1000 WordNet ids in class-id order (sorted)."""
    return [wnid for wnid, _ in _read_table()]
