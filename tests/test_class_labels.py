"""The one class-label parser (ibq_hf.class_labels): ids, digit strings, names, lists, tensors, and its errors."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ibq_hf.class_labels import class_id2label, has_class_names, label_ids, resolve_class_labels
from ibq_hf.imagenet_labels import imagenet_id2label

DIGITS = {i: str(i) for i in range(10)}
ANIMALS = {0: "cat, kitty", 1: "dog", 2: "crane", 3: "crane, derrick"}


@pytest.mark.parametrize(
    "value, expected",
    [
        (3, [3]),
        (np.int64(3), [3]),
        ("3", [3]),
        (" 3 ", [3]),
        ("2: crane", [2]),  # the "id: name" form pickers show
        ([1, "2", "dog"], [1, 2, 1]),
        (("kitty",), [0]),
        ("  Kitty ", [0]),
        (torch.tensor([2, 0]), [2, 0]),
        (torch.tensor(1), [1]),
        (np.array([1, 1], dtype=np.int32), [1, 1]),
    ],
)
def test_accepted_forms(value, expected):
    assert resolve_class_labels(value, ANIMALS, 4) == expected


def test_a_digit_string_is_always_an_id():
    """Even where classes are named by other digits: names never shadow ids."""
    shifted = {0: "1", 1: "2", 2: "3"}
    assert resolve_class_labels("2", shifted, 3) == [2]
    assert label_ids("2", shifted, 3) == [1]  # the name lookup alone still finds the name


@pytest.mark.parametrize(
    "value, error, match",
    [
        (None, ValueError, r"class_labels is required: pass a class id"),
        ([], ValueError, "class_labels is empty"),
        (4, ValueError, r"Class label 4 is out of range: this model has 4 classes, ids 0 to 3"),
        ("-1", ValueError, "Class label -1 is out of range"),
        ("12: twelve", ValueError, "Class label 12 is out of range"),
        (True, TypeError, "entries must be int class ids or str class names, got bool"),
        ([1.5], TypeError, "entries must be int class ids or str class names, got float"),
        ([[1]], TypeError, "entries must be int class ids or str class names, got list"),
        ({1, 2}, TypeError, "must be a class id, a class name, a list of them or a 1-D integer tensor, got set"),
        (2.0, TypeError, "must be a class id, a class name, a list"),
        (torch.tensor([1.0]), ValueError, "must hold integer class ids"),
        (torch.tensor([[1]]), ValueError, r"0-d or 1-d integer tensor/array, got shape \(1, 1\)"),
        (np.array([True]), ValueError, "0-d or 1-d integer tensor/array"),
        ("kity", ValueError, r"Unknown class name 'kity'\. Did you mean 'kitty' \(0\)\?"),
        ("zebra", ValueError, r"Unknown class name 'zebra'\. No similar name exists\. The names are listed in pipe"),
        ("crane", ValueError, r"'crane' is ambiguous \(2: 'crane'; 3: 'crane, derrick'\); pass the class id"),
    ],
)  # fmt: skip
def test_errors_name_the_problem(value, error, match):
    with pytest.raises(error, match=match):
        resolve_class_labels(value, ANIMALS, 4)


def test_where_the_names_are_listed_is_the_callers_word():
    with pytest.raises(ValueError, match="listed in the Class dropdown; class ids in"):
        resolve_class_labels("kity", ANIMALS, 4, names_where="the Class dropdown")


def test_models_without_names_take_ids_only():
    assert resolve_class_labels(["3", 4], {}, 10) == [3, 4]
    with pytest.raises(ValueError, match=r"have no names .*class ids in \[0, 10\) instead of 'dog'"):
        resolve_class_labels("dog", {}, 10)


def test_where_names_come_from():
    named = SimpleNamespace(num_classes=10, id2label=DIGITS)
    placeholder = SimpleNamespace(num_classes=2, id2label={0: "LABEL_0", 1: "LABEL_1"})
    partial = SimpleNamespace(num_classes=3, id2label={0: "a", 1: "b"})
    imagenet = SimpleNamespace(num_classes=1000, id2label={0: "LABEL_0", 1: "LABEL_1"})
    assert has_class_names(named) and class_id2label(named) == DIGITS
    assert not has_class_names(placeholder) and class_id2label(placeholder) == {}
    assert not has_class_names(partial) and class_id2label(partial) == {}
    assert class_id2label(imagenet) == imagenet_id2label()
    names = class_id2label(imagenet)
    assert resolve_class_labels(["golden retriever", " tinca   TINCA "], names, 1000) == [207, 0]
