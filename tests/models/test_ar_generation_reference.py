"""Greedy and seeded-sampled tokens equal those saved before the generation refactor (tests/data/…reference.json)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ibq_hf import IBQARForImageGeneration

DATA = Path(__file__).resolve().parents[1] / "data"
ROOT = Path(__file__).resolve().parents[2]
REFERENCE = json.loads((DATA / "ar_generation_reference.json").read_text())


def _maker():
    spec = importlib.util.spec_from_file_location("make_ref", DATA / "make_ar_generation_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def digits_transformer() -> IBQARForImageGeneration:
    return IBQARForImageGeneration.from_pretrained(ROOT / REFERENCE["model"]).eval()


@pytest.mark.parametrize("case", REFERENCE["cases"], ids=[c["name"] for c in REFERENCE["cases"]])
def test_tokens_equal_the_saved_reference(digits_transformer, case):
    settings = {k: v for k, v in case.items() if k != "tokens"}
    assert _maker().generate_case(digits_transformer, settings) == case["tokens"]


def test_reference_covers_greedy_and_sampled_settings():
    names = {c["name"] for c in REFERENCE["cases"]}
    assert any(not c.get("do_sample", True) for c in REFERENCE["cases"]) and len(names) == len(
        REFERENCE["cases"]
    )
    assert any("top_p" in c for c in REFERENCE["cases"]) and any(
        "guidance_cutoff" in c for c in REFERENCE["cases"]
    )
