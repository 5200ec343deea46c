"""``benchmarks/gpu_check.py``: the clean skip without CUDA, and every check at tiny sizes on the CPU (no timing
asserted)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPT = BENCHMARKS / "gpu_check.py"
SKIP_LINE = (
    "gpu_check: no CUDA device; nothing to check (use --device cpu --quick to exercise the checks on CPU)"
)


@pytest.fixture
def gpu_check(monkeypatch):
    """The script as a module; it and the sibling benchmarks it imports leave ``sys.modules`` afterwards."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its siblings (_common, generation, ...)
    before = set(sys.modules)
    import gpu_check

    yield gpu_check
    for name in set(sys.modules) - before:
        if str(getattr(sys.modules[name], "__file__", "") or "").startswith(str(BENCHMARKS)):
            del sys.modules[name]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the skip path is for machines without CUDA")
def test_without_cuda_prints_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, gpu_check):
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    code = gpu_check.main(["--output", str(tmp_path / "gpu_check.json")])
    assert code in (0, None)
    assert capsys.readouterr().out.splitlines() == [SKIP_LINE]
    assert not (tmp_path / "gpu_check.json").exists() and not (tmp_path / "out").exists()


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow  # every check at tiny sizes: ~35 s on one core
def test_quick_cpu_run_reports_every_check(tmp_path, monkeypatch, one_thread, gpu_check):
    monkeypatch.delenv("OUT", raising=False)
    out = tmp_path / "gpu_check.json"
    summary = gpu_check.main(["--device", "cpu", "--quick", "--output", str(out)])
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(summary))
    assert data["complete"] and data["machine"]["device"] == "cpu"
    checks = data["checks"]
    assert sorted(checks) == list("abcdefg")
    for name, entry in checks.items():
        assert entry["status"] == "ok", (name, entry.get("error"))
        assert "error" not in entry and entry["passed"] is True and entry["seconds"] >= 0

    for row in checks["a"]["models"]:
        assert row["equal"] and row["first_mismatches"] == []  # CPU against CPU
    for row in checks["b"]["models"]:
        assert 0 <= row["max_abs_diff"] <= row["tolerance"] and row["within_tolerance"]
        assert row["tolerance"] == pytest.approx(
            row["atol"] + row["rtol"] * row["max_abs_fp32_logit"], abs=1e-4
        )
        assert all(s["shape_ok"] and s["in_range"] for s in row["sampling"].values())

    c = checks["c"]
    assert {(r["batch_size"], r["setting"]) for r in c["rows"]} == {
        (b, s) for b in (1, 2) for s in ("dynamic", "static+compile")
    }
    assert c["compile"]["backend"] == "eager" and not c["skipped_batch_sizes_for_time"]
    assert all(_finite(r["tokens_per_s"]) for r in c["rows"])
    assert all(_finite(r["speedup_vs_dynamic"]) for r in c["rows"] if r["setting"] == "static+compile")

    d = checks["d"]["rows"]
    assert {(r["batch_size"], r["window"]) for r in d} == {(1, 0), (1, 4), (2, 0), (2, 4)}
    for r in d:
        assert _finite(r["tokens_per_s"]) and 1 <= r["forward_passes_per_image"] <= 64
        if r["window"] == 0:
            assert r["forward_passes_per_image"] == 64 and r["fewer_passes"] == 1.0
        else:
            assert r["tokens_per_pass"] >= 1.0 and r["fewer_passes"] >= 1.0

    e = checks["e"]["rows"]
    assert {(r["variant"], r["operation"]) for r in e} == {
        (v, op) for v in ("fp32", "bf16") for op in ("encode", "decode")
    }
    assert all(_finite(r["images_per_s"]) for r in e)

    f = checks["f"]
    assert f["bf16"] is True
    for trainer in ("tokenizer", "ar"):
        assert f[trainer]["steps"] == 1 and f[trainer]["finite"] and f[trainer]["losses"]
    assert "train/rec_loss" in f["tokenizer"]["losses"] and "loss" in f["ar"]["losses"]

    g = checks["g"]
    assert [r["implementation"] for r in g["rows"]] == ["dense", "chunked"]
    assert all(_finite(r["step_seconds_median"]) for r in g["rows"])
    assert _finite(g["chunked_speedup_vs_dense"])


def test_unknown_check_is_an_argument_error(capsys, gpu_check):
    with pytest.raises(SystemExit) as exc:
        gpu_check.parse_args(["--checks", "a,z"])
    assert exc.value.code == 2 and "unknown checks ['z']" in capsys.readouterr().err
