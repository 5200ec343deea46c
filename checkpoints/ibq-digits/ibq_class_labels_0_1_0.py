# Shipped by ibq-hf 0.1.0 from ibq_hf/class_labels.py (generated at save time; edit the package, not this file).
"""Class labels → class ids: the one parser behind the pipeline, the CLI and the demo.

A label is an int id, a string of digits (``"207"``; also ``"207: golden retriever"``, the form pickers show), or
a class name (case- and whitespace-insensitive, any comma-separated synonym of ``id2label``: ``"tench"`` and
``"Tinca tinca"`` are both 0); a list, tuple, 1-D integer tensor or array holds several. A string of digits is
always an id, even where a class is named by digits. Errors name the problem and the fix (closest names for a
typo, the candidate ids for a name two classes share).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .ibq_imagenet_labels_0_1_0 import IMAGENET_NUM_CLASSES, imagenet_id2label

__all__ = ["ClassLabels", "class_id2label", "has_class_names", "label_ids", "resolve_class_labels"]

ClassLabels = int | str | Sequence[int | str] | torch.Tensor | np.ndarray

_DEFAULT_LABEL = re.compile(r"^LABEL_\d+$")
# "207", "-1" (out of range, said so), or "207: golden retriever" (the id is what counts).
_ID_TEXT = re.compile(r"(-?\d+)(\s*:.*)?", flags=re.DOTALL)


def normalize_name(name: str) -> str:
    """``" Tinca   TINCA "`` → ``"tinca tinca"``: how names are compared."""
    return " ".join(name.split()).casefold()


def has_class_names(config: Any) -> bool:
    """True when ``config.id2label`` names every one of ``config.num_classes`` classes (not transformers'
    placeholder ``LABEL_i`` entries)."""
    id2label = getattr(config, "id2label", None) or {}
    if len(id2label) != config.num_classes:
        return False
    if sorted(str(k) for k in id2label) != sorted(str(i) for i in range(config.num_classes)):
        return False
    return not all(_DEFAULT_LABEL.match(str(v)) for v in id2label.values())


def class_id2label(config: Any) -> dict[int, str]:
    """``{class id: "name, synonym, ..."}`` of a model config: its ``id2label`` when that names every class, else
    the ImageNet-1k table (sorted WordNet ids, as DiT / LlamaGen / IBQ) for 1000 classes, else ``{}`` (ids only)."""
    if has_class_names(config):
        return {int(k): str(v) for k, v in sorted(config.id2label.items(), key=lambda kv: int(kv[0]))}
    if config.num_classes == IMAGENET_NUM_CLASSES:
        return imagenet_id2label()
    return {}


def _name_index(id2label: Mapping[int, str]) -> dict[str, list[int]]:
    index: dict[str, list[int]] = {}
    for class_id, names in id2label.items():
        for name in names.split(","):
            key = normalize_name(name)
            if key and class_id not in index.setdefault(key, []):
                index[key].append(class_id)
    return index


def label_ids(
    names: str | Sequence[str],
    id2label: Mapping[int, str],
    num_classes: int,
    names_where: str = "pipe.id2label",
) -> list[int]:
    """Class ids of class names (each comma-separated synonym of ``id2label`` is a name).

    Unknown names raise with the closest matches; names shared by two classes (ImageNet's "crane" is a bird and a
    machine) raise with the candidate ids. ``names_where`` says where the user can read the names.
    """
    names = [names] if isinstance(names, str) else list(names)
    index = _name_index(id2label)
    if not index:
        raise ValueError(
            f"This model's {num_classes} classes have no names (its config has no id2label and it is not an "
            f"ImageNet-1k model); pass class ids in [0, {num_classes}) instead of {names[0]!r}."
        )
    ids = []
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"Class names must be strings, got {type(name).__name__} ({name!r}).")
        matches = index.get(normalize_name(name))
        if matches is None:
            close = difflib.get_close_matches(normalize_name(name), list(index), n=5, cutoff=0.6)
            hint = (
                "Did you mean " + ", ".join(f"{c!r} ({index[c][0]})" for c in close) + "?"
                if close
                else "No similar name exists."
            )
            raise ValueError(
                f"Unknown class name {name!r}. {hint} The names are listed in {names_where}; class ids in "
                f"[0, {num_classes}) work too."
            )
        if len(matches) > 1:
            options = "; ".join(f"{i}: {id2label[i]!r}" for i in matches)
            raise ValueError(f"Class name {name!r} is ambiguous ({options}); pass the class id instead.")
        ids.append(matches[0])
    return ids


def _check_id(class_id: int, num_classes: int) -> int:
    if not 0 <= class_id < num_classes:
        raise ValueError(
            f"Class label {class_id} is out of range: this model has {num_classes} classes, ids 0 to "
            f"{num_classes - 1}."
        )
    return class_id


def resolve_class_labels(
    class_labels: ClassLabels,
    id2label: Mapping[int, str],
    num_classes: int,
    names_where: str = "pipe.id2label",
) -> list[int]:
    """Ids, digit strings, names, or a list / 1-D integer tensor / array of them → a flat list of class ids.

    Every id is checked against ``[0, num_classes)``; names are looked up in ``id2label`` (see :func:`label_ids`).

    Raises:
        ValueError: ``None``, an empty list, an id out of range, an unknown or ambiguous name, a float or
            multi-dimensional tensor.
        TypeError: anything that is not a label or a list of labels (floats, sets, nested lists, ...).
    """
    if class_labels is None:
        raise ValueError(
            "class_labels is required: pass a class id, a class name or a list of them, e.g. "
            f"pipe(class_labels=[3]) (names: {names_where})."
        )
    if isinstance(class_labels, (torch.Tensor, np.ndarray)):
        if class_labels.ndim > 1 or class_labels.dtype in (torch.bool, np.bool_):
            raise ValueError(
                f"class_labels must be a 0-d or 1-d integer tensor/array, got shape {tuple(class_labels.shape)} "
                f"and dtype {class_labels.dtype}."
            )
        if (isinstance(class_labels, torch.Tensor) and class_labels.is_floating_point()) or (
            isinstance(class_labels, np.ndarray) and not np.issubdtype(class_labels.dtype, np.integer)
        ):
            raise ValueError(f"class_labels must hold integer class ids, got dtype {class_labels.dtype}.")
        class_labels = class_labels.tolist()
    if isinstance(class_labels, (int, str, np.integer)):
        items = [class_labels]
    elif isinstance(class_labels, Sequence):
        items = list(class_labels)
    else:
        raise TypeError(
            f"class_labels must be a class id, a class name, a list of them or a 1-D integer tensor, got "
            f"{type(class_labels).__name__} ({class_labels!r})."
        )
    if not items:
        raise ValueError("class_labels is empty: pass at least one class id or name.")
    ids = []
    for item in items:
        if isinstance(item, str):
            as_id = _ID_TEXT.fullmatch(item.strip())
            if as_id:
                ids.append(_check_id(int(as_id.group(1)), num_classes))
            else:
                ids += label_ids(item, id2label, num_classes, names_where)
        elif isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_)):
            ids.append(_check_id(int(item), num_classes))
        else:
            raise TypeError(
                f"class_labels entries must be int class ids or str class names, got {type(item).__name__} "
                f"({item!r})."
            )
    return ids

# diffusers copies only the files a module imports itself; these complete the set it needs.
from .ibq_imagenet_classes_0_1_0 import __name__ as _ibq_imagenet_classes_0_1_0  # noqa: F401
