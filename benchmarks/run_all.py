"""Run every benchmark with one command and write a combined ``summary.json``.

    python benchmarks/run_all.py                     # full CPU suite (about 6.5 minutes on 2 idle cores)
    python benchmarks/run_all.py --quick             # tiny sizes: a smoke run of every script (about 30 s)
    python benchmarks/run_all.py --device cuda       # GPU rows only (fp32, bf16, bf16+compile)

Sections, in order: ``quantizer`` (training step of the quantizer alone), ``tokenizer`` (encode / decode images/s
at 256²), ``generation`` (AR tokens/s) and ``training`` (GAN step images/s, AR step tokens/s). Each writes its JSON
into ``--out`` (``quantizer.json``, ``tokenizer.json``, ``generation.json``, ``training.json``: rows are merged by
configuration and device, so a GPU run adds its rows beside the CPU ones), and ``summary.json`` records the
machine (CPU model, cores, threads, library versions, GPU), the date, the load average before and after every
section and the headline figures of this run.

``--device auto`` (default) measures on the CPU and, when ``torch.cuda.is_available()``, on the GPU as well, where
the bf16 and torch.compile variants are added. A failing section is recorded in the summary and the other
sections still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS_DIR, SCHEMA_VERSION, load_average, machine_info, utc_now, write_json_atomic

SECTIONS = ("quantizer", "tokenizer", "generation", "training")
# The figure that summarises each row, per section.
HEADLINE = {
    "quantizer": ("codebook_size", "implementation", "step_seconds_median", "peak_memory_above_baseline_mb"),
    "tokenizer": ("variant", "operation", "batch_size", "resolution", "images_per_s", "peak_memory_above_baseline_mb"),
    "generation": ("size", "dtype", "setting", "num_images", "tokens_per_s", "images_per_s", "speedup_vs_baseline"),
    "training": ("model", "architecture", "variant", "batch_size", "images_per_s", "tokens_per_s",
                 "peak_memory_above_model_mb"),
}  # fmt: skip


def section_argv(name: str, device: torch.device, quick: bool, out: Path, threads: int | None) -> list[str]:
    """Command-line arguments of one benchmark script for this run (its own defaults do the rest)."""
    argv = ["--device", device.type, "--output", str(out / f"{name}.json")]
    if threads and name != "quantizer":  # the quantizer's children keep torch's default thread count
        argv += ["--threads", str(threads)]
    if quick:
        argv.append("--quick")
        if name == "training":
            argv += ["--repeats", "1"]
    elif name == "generation":
        if device.type == "cuda":
            argv += ["--sizes", "mid,B", "--dtypes", "float32,bfloat16", "--repeats", "3"]
        else:
            argv += ["--sizes", "mid", "--repeats", "2"]
        argv += ["--settings", "baseline,dynamic,static,static+compile"]
    elif name == "tokenizer" and device.type == "cpu":
        argv += ["--repeats", "2"]
    return argv


def _display(arg: str) -> str:
    """Absolute paths as relative ones, so the recorded command does not carry this machine's layout."""
    return os.path.relpath(arg) if os.path.isabs(arg) else arg


def run_section(name: str, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Run one benchmark script's ``main`` in this process; never raises (errors go into the summary)."""
    argv = section_argv(name, device, args.quick, args.out, args.threads)
    print(f"\n=== {name} on {device.type}: benchmarks/{name}.py {' '.join(argv)}", flush=True)
    started, load_start, t0 = utc_now(), load_average(), time.perf_counter()
    record: dict[str, Any] = {
        "device": device.type,
        "command": f"python benchmarks/{name}.py {' '.join(_display(a) for a in argv)}",
        "file": f"{name}.json",
        "started": started,
        "load_average_start": load_start,
    }
    try:
        module = importlib.import_module(name)
        payload = module.main(argv)
        rows = [
            r
            for r in (payload or {}).get("results", [])
            if str(r.get("measured_at", "")) >= started
            and torch.device(r.get("device", "cpu")).type == device.type
        ]
        errors = [r["error"] for r in rows if "error" in r]
        record["status"] = "error" if errors or not rows else "ok"
        if not rows:
            errors.append("no result rows were written")
        record["errors"] = errors
        record["rows"] = [{k: r.get(k) for k in HEADLINE[name] if r.get(k) is not None} for r in rows]
    except BaseException as error:  # SystemExit from argparse, KeyboardInterrupt is re-raised below
        if isinstance(error, KeyboardInterrupt):
            raise
        traceback.print_exc()
        record["status"] = "error"
        record["errors"] = [repr(error)]
        record["rows"] = []
    record["seconds"] = round(time.perf_counter() - t0, 1)
    record["load_average_end"] = load_average()
    print(f"=== {name} on {device.type}: {record['status']} in {record['seconds']} s", flush=True)
    return record


def _previous_sections(path: Path, sections: list[str], devices: list[torch.device]) -> dict[str, Any]:
    """Sections of an earlier summary that this run does not repeat (``--only`` reruns keep the others)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    if old.get("quick"):
        return {}
    redo = {f"{name}/{d.type}" for name in sections for d in devices}
    return {k: v for k, v in old.get("sections", {}).items() if k not in redo}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in about a minute")
    parser.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CPU, plus GPU when available"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder of the JSON files")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma list of {SECTIONS}")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for every benchmark")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the sections of an existing (non-quick) summary.json that this run does not repeat",
    )
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    for name in sections:
        if name not in SECTIONS:
            parser.error(f"unknown section {name!r}; choose from {SECTIONS}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda was requested but torch.cuda.is_available() is False")
    devices = [torch.device("cpu")] if args.device in ("auto", "cpu") else []
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))

    machine = machine_info(devices[-1])
    t0 = time.perf_counter()
    summary: dict[str, Any] = {
        "benchmark": "summary",
        "schema_version": SCHEMA_VERSION,
        "command": " ".join(["python benchmarks/run_all.py", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "devices": [d.type for d in devices],
        "machine": machine,
        "started": machine["date"],
        "load_average_start": machine["load_average"],
        "sections": {},
    }
    previous = _previous_sections(args.out / "summary.json", sections, devices) if args.keep else {}
    if previous:
        summary["kept_sections"] = sorted(previous)  # from an earlier run; each records its own date and load
    for device in devices:
        for name in sections:
            summary["sections"][f"{name}/{device.type}"] = run_section(name, device, args)
            summary["sections"] = {**previous, **summary["sections"]}
            # Written after every section, so an interrupted run still leaves a valid summary.
            summary["finished"] = utc_now()
            summary["duration_s"] = round(time.perf_counter() - t0, 1)
            summary["load_average_end"] = load_average()
            write_json_atomic(args.out / "summary.json", summary)
    failed = [k for k, v in summary["sections"].items() if v["status"] != "ok"]
    print(
        f"\nwrote {args.out / 'summary.json'} ({summary['duration_s']} s); failed sections: {failed or 'none'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
