"""``benchmarks/run_all.py --quick``: every section runs and writes sane JSON (no wall-clock assertions)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SECTIONS = ("quantizer", "tokenizer", "generation", "training")


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _memory_ok(value: object) -> bool:
    """Peak memory is None where the OS cannot measure it, else a finite non-negative number."""
    return value is None or (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run_all.py"), "--quick", "--device", "cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _load(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.json").read_text())


@pytest.mark.slow  # runs every benchmark section (~20 s)
def test_files_and_summary(quick_run: Path) -> None:
    names = sorted(p.name for p in quick_run.iterdir())
    assert names == sorted([*(f"{s}.json" for s in SECTIONS), "summary.json"])  # no *.tmp left behind
    summary = _load(quick_run, "summary")
    assert summary["quick"] is True and summary["devices"] == ["cpu"]
    machine = summary["machine"]
    for key in ("cpu", "logical_cpus", "torch", "torch_threads", "date", "python"):
        assert machine[key], key
    assert machine["torch"] == torch.__version__
    load = summary["load_average_start"]
    assert load is None or (len(load) == 3 and all(v >= 0 for v in load))
    assert set(summary["sections"]) == {f"{s}/cpu" for s in SECTIONS}
    for name, section in summary["sections"].items():
        assert section["status"] == "ok", (name, section.get("errors"))
        assert section["rows"], name
        assert section["file"] == f"{name.split('/')[0]}.json"
        assert section["seconds"] >= 0


@pytest.mark.slow  # runs every benchmark section (~20 s)
def test_section_rows(quick_run: Path) -> None:
    for name in SECTIONS:
        data = _load(quick_run, name)
        assert data["benchmark"] == name
        assert data["machines"]["cpu"]["device"] == "cpu"
        assert data["results"], name
        for row in data["results"]:
            assert "error" not in row, (name, row)
            assert row["device"] == "cpu" and row["measured_at"], (name, row)

    quantizer = _load(quick_run, "quantizer")["results"]
    assert {r["implementation"] for r in quantizer} == {"reference", "dense", "chunked"}
    for row in quantizer:
        assert _positive(row["step_seconds_median"]) and _memory_ok(row["peak_memory_above_baseline_mb"])

    tokenizer = _load(quick_run, "tokenizer")["results"]
    assert {(r["variant"], r["operation"]) for r in tokenizer} == {("fp32", "encode"), ("fp32", "decode")}
    for row in tokenizer:
        assert _positive(row["images_per_s"]) and _positive(row["seconds"])
        assert row["grid"] > 0 and row["resolution"] % row["grid"] == 0
        assert _memory_ok(row["peak_memory_above_baseline_mb"])

    generation = _load(quick_run, "generation")["results"]
    assert {r["setting"] for r in generation} == {"baseline", "dynamic", "static"}
    for row in generation:
        assert _positive(row["tokens_per_s"]) and _positive(row["images_per_s"])
        assert row["baseline_agrees"] is True  # greedy tokens of the baseline loop == generate()

    training = {r["model"]: r for r in _load(quick_run, "training")["results"]}
    assert set(training) == {"tokenizer", "ar"}
    assert _positive(training["tokenizer"]["images_per_s"])
    assert _positive(training["ar"]["tokens_per_s"])
    for row in training.values():
        assert len(row["all_step_seconds"]) == row["repeats"]
        assert _memory_ok(row["peak_memory_above_model_mb"])


def test_merge_keeps_other_devices_and_replaces_same_key(tmp_path: Path) -> None:
    """A GPU run adds its rows beside the CPU ones; re-measuring a configuration replaces its row."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from _common import merge_results
    finally:
        sys.path.remove(str(BENCHMARKS))
    path = tmp_path / "x.json"
    cpu = {"device": "cpu", "date": "d"}
    gpu = {"device": "cuda", "date": "d", "gpu": "G"}
    merge_results(
        path,
        "x",
        cpu,
        [{"device": "cpu", "k": 1, "v": 1}, {"device": "cpu", "k": 2, "v": 2}],
        ("device", "k"),
    )
    merge_results(path, "x", gpu, [{"device": "cuda", "k": 1, "v": 3}], ("device", "k"))
    data = merge_results(path, "x", cpu, [{"device": "cpu", "k": 1, "v": 4}], ("device", "k"))
    assert sorted((r["device"], r["k"], r["v"]) for r in data["results"]) == [
        ("cpu", 1, 4), ("cpu", 2, 2), ("cuda", 1, 3)
    ]  # fmt: skip
    assert set(data["machines"]) == {"cpu", "cuda"}
    assert json.loads(path.read_text()) == data
    assert not list(tmp_path.glob("*.tmp"))


def test_peak_memory_sees_a_cpu_allocation() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from _common import peak_memory
    finally:
        sys.path.remove(str(BENCHMARKS))
    with peak_memory(torch.device("cpu")) as mem:
        x = torch.ones(64 * 2**20 // 4)  # 64 MB, touched
        del x
    if mem.peak_above_baseline_mb is None:
        pytest.skip("the kernel does not let this process reset its peak RSS")
    assert 48 <= mem.peak_above_baseline_mb < 1024


@pytest.mark.slow  # runs every benchmark section (~20 s)
def test_report_renders_every_section(quick_run: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "report.py"), "--results", str(quick_run)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in SECTIONS:
        assert f"### {name} (cpu)" in proc.stdout
    assert "load average at start" in proc.stdout
