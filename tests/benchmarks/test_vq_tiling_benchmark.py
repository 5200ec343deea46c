"""``benchmarks/vq_tiling.py`` on a small size: the rows it writes and what they must satisfy."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
pytest.importorskip("sklearn")


def _module(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its sibling _common
    spec = importlib.util.spec_from_file_location("vq_tiling", BENCHMARKS / "vq_tiling.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # loads the digits tokenizer and tiles a 64² mosaic (~5 s on an idle core)
def test_digit_mosaic_rows(tmp_path, monkeypatch, one_thread):
    out = tmp_path / "vq_tiling.json"
    payload = _module(monkeypatch).main(
        ["--sizes", "64", "--tiles", "32", "64", "--images", "digits", "--threads", "1", "--output", str(out)]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))
    rows = {row["tile"]: row for row in payload["results"]}
    assert set(rows) == {"untiled", 32, 64}
    assert rows["untiled"]["decode_psnr_db"] is None and rows["untiled"]["token_agreement"] == 1.0
    # 32 px = 8 tokens < the 16-token grid: tiled, so different; 64 px covers the image: untiled, identical.
    assert 10 < rows[32]["decode_psnr_db"] < 60 and rows[32]["token_agreement"] < 1
    assert rows[32]["tile_tokens"] == 8 and rows[32]["overlap_tokens"] == 2
    assert (
        rows[64]["token_agreement"] == 1.0
        and rows[64]["roundtrip_psnr_db"] == rows["untiled"]["roundtrip_psnr_db"]
    )
    assert payload["default_tile"] == 128  # 32 tokens × factor 4
