"""``benchmarks/jacobi_decoding.py --quick``: the rows it writes and what they must satisfy (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _module(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its sibling _common
    spec = importlib.util.spec_from_file_location(
        "jacobi_decoding_benchmark", BENCHMARKS / "jacobi_decoding.py"
    )
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # ~30 generate() calls of 64 tokens: ~30 s on a busy core
def test_quick_speed_and_acceptance_rows(tmp_path, monkeypatch, one_thread):
    out = tmp_path / "jacobi.json"
    payload = _module(monkeypatch).main(["--quick", "--parts", "speed,acceptance", "--output", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))
    speed = payload["speed"]
    # batch sizes 1, 2 × caches dynamic, static × sequential + windows 2, 4
    assert len(speed) == 2 * 2 * 3
    for row in speed:
        if row["window"] == 0:
            assert row["forward_passes_per_image"] == 64.0 and row["tokens_per_pass"] == 1.0
            assert row["fewer_passes"] == 1.0 and row["wall_clock_speedup"] == 1.0
        else:
            assert 1.0 <= row["tokens_per_pass"] <= row["window"] + 1
            assert row["fewer_passes"] >= 1.0
            assert row["forward_passes_per_image"] <= row["batched_forward_passes"]
        assert row["tokens_per_second"] > 0
    modes = {(r["mode"], r["temperature"]) for r in payload["acceptance"]}
    assert modes == {("sampling", 1.0), ("greedy", None)}
    for row in payload["acceptance"]:
        rates = [r for r in row["acceptance_rate_by_position"] if r is not None]
        assert len(row["acceptance_rate_by_position"]) == row["window"] and rates
        assert all(0.0 <= r <= 1.0 and not math.isnan(r) for r in rates)
