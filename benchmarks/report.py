"""Print the benchmark JSON files as Markdown tables (the figures in ``docs/benchmarks.md`` come from here).

python benchmarks/report.py                          # benchmarks/results/
python benchmarks/report.py --results /tmp/bench --device cuda
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("—" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(value: float | None, digits: int = 3) -> str | None:
    if value is None:
        return None
    return f"{value:,.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"


def _rows(results: Path, name: str, device: str) -> list[dict[str, Any]]:
    path = results / f"{name}.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    return [
        r
        for r in data.get("results", [])
        if r.get("device", "cpu").split(":")[0] == device and "error" not in r
    ]


def quantizer(results: Path, device: str) -> str:
    rows = _rows(results, "quantizer", device)
    body = [
        [r["codebook_size"], r["implementation"], _fmt(r["step_seconds_median"]), r.get("speedup_vs_reference"),
         _fmt(r.get("peak_memory_above_baseline_mb", r.get("peak_rss_above_baseline_mb")), 4), r["repeats"]]
        for r in rows
    ]  # fmt: skip
    return _table(["codebook K", "implementation", "step (s)", "speed-up", "peak memory (MB)", "steps"], body)


def tokenizer(results: Path, device: str) -> str:
    rows = _rows(results, "tokenizer", device)
    body = [
        [r["architecture"], r["variant"], f"{r['operation']} (`{r['api']}`)", f"{r['resolution']}²", r["batch_size"],
         _fmt(r["images_per_s"]), _fmt(r["ms_per_image"], 4), _fmt(r["peak_memory_above_baseline_mb"], 4),
         _fmt(r["first_call_s"])]
        for r in rows
    ]  # fmt: skip
    header = [
        "architecture",
        "variant",
        "operation",
        "size",
        "batch",
        "images/s",
        "ms/image",
        "peak MB",
        "first call s",
    ]
    return _table(header, body)


def generation(results: Path, device: str) -> str:
    rows = _rows(results, "generation", device)
    body = [
        [r["size"], r.get("dtype", "float32"), r["setting"], r["num_images"], _fmt(r["tokens_per_s"]),
         _fmt(r["images_per_s"]), r["ms_per_step"], r.get("speedup_vs_baseline"), r["first_call_s"],
         (r.get("measured_at") or "")[:16]]
        for r in rows
    ]  # fmt: skip
    header = ["size", "dtype", "setting", "images", "tokens/s", "images/s", "ms/step", "vs baseline", "first call s",
              "measured (UTC)"]  # fmt: skip
    return _table(header, body)


def training(results: Path, device: str) -> str:
    rows = _rows(results, "training", device)
    body = []
    for r in rows:
        size = f"{r['resolution']}², batch {r['batch_size']}" if r["model"] == "tokenizer" else (
            f"{r['tokens_per_step']} tokens (batch {r['batch_size']})"
        )  # fmt: skip
        rate = (
            f"{_fmt(r['images_per_s'])} images/s"
            if r["model"] == "tokenizer"
            else f"{_fmt(r['tokens_per_s'])} tokens/s"
        )
        body.append([r["model"], r["architecture"], r["variant"], size, rate, _fmt(r["step_seconds"]),
                     _fmt(r["first_step_s"]), _fmt(r["peak_memory_above_model_mb"], 4)])  # fmt: skip
    header = [
        "model",
        "architecture",
        "variant",
        "step size",
        "throughput",
        "s/step",
        "first step s",
        "peak MB",
    ]
    return _table(header, body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)
    summary_path = args.results / "summary.json"
    if summary_path.is_file():
        s = json.loads(summary_path.read_text())
        m = s["machine"]
        print(f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m.get('memory_gb')} GB, torch {m['torch']} "
              f"({m['torch_threads']} threads){', GPU ' + m['gpu'] if m.get('gpu') else ''}; run {s['started']} → "
              f"{s.get('finished')} ({s.get('duration_s')} s); load average at start {s['load_average_start']}, "
              f"at end {s.get('load_average_end')}.\n")  # fmt: skip
        for name, sec in s["sections"].items():
            print(f"- {name}: {sec['status']}, {sec['seconds']} s, load {sec['load_average_start']} → "
                  f"{sec['load_average_end']}")  # fmt: skip
        print()
    for name, fn in (("quantizer", quantizer), ("tokenizer", tokenizer), ("generation", generation),
                     ("training", training)):  # fmt: skip
        print(f"### {name} ({args.device})\n\n{fn(args.results, args.device)}\n")


if __name__ == "__main__":
    main()
