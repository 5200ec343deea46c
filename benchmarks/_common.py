"""Shared helpers of the benchmark scripts: machine description, atomic JSON, peak memory, timing.

Kept free of ``ibq_hf`` imports so that ``run_all.py`` can describe the machine before anything heavy loads.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCHEMA_VERSION = 1


# ---------------------------------------------------------------------------------------------- machine


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_average() -> list[float] | None:
    """1/5/15-minute load averages: the figures are only comparable when the machine was otherwise idle."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def machine_info(device: str | torch.device = "cpu") -> dict[str, Any]:
    """Where the figures came from: CPU, cores, threads, library versions, GPU, date and load average."""
    device = torch.device(device)
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": _memory_gb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "diffusers": _version("diffusers"),
        "device": str(device),
        "date": utc_now(),
        "load_average": load_average(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(device).total_memory / 1024**3, 1)
    return info


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was requested but torch.cuda.is_available() is False")
    return device


# ---------------------------------------------------------------------------------------------- JSON


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write to ``<name>.<pid>.tmp`` beside ``path`` and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


def merge_results(
    path: Path,
    benchmark: str,
    machine: dict[str, Any],
    rows: list[dict[str, Any]],
    key: Sequence[str],
    extra: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge ``rows`` into the JSON at ``path`` and write it atomically.

    Rows of an earlier run with the same ``key`` (which always includes the device) are replaced; other rows
    are kept, so a GPU run adds its rows beside the committed CPU ones. ``machines`` holds the latest machine
    per device type (``cpu`` / ``cuda``); every row gets a ``measured_at``. ``defaults`` fills key fields that
    rows of older files lack (e.g. ``dtype`` before it was recorded).
    """
    data: dict[str, Any] = {}
    if path.is_file():
        with contextlib.suppress(json.JSONDecodeError):
            data = json.loads(path.read_text())

    fill = {"device": "cpu", **(defaults or {})}

    def ident(row: dict[str, Any]) -> tuple:
        return tuple(row.get(k, fill.get(k)) for k in key)

    now = utc_now()
    rows = [{**r, "measured_at": r.get("measured_at", now)} for r in rows]
    new = {ident(r) for r in rows}
    old_date = data.get("updated")  # rows of files written before rows carried their own date
    kept = [
        {**{k: v for k, v in fill.items() if k in key}, **r, "measured_at": r.get("measured_at", old_date)}
        for r in data.get("results", [])
        if ident(r) not in new
    ]
    machines = dict(data.get("machines", {}))
    if "machine" in data and not machines:  # files written before machines were kept per device type
        machines["cpu"] = data["machine"]
    machines[torch.device(machine["device"]).type] = machine
    payload = {
        "benchmark": benchmark,
        "schema_version": SCHEMA_VERSION,
        "updated": now,
        **(extra or {}),
        "machines": machines,
        "results": kept + rows,
    }
    write_json_atomic(path, payload)
    return payload


# ---------------------------------------------------------------------------------------------- memory


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    """Hand freed heap pages back to the OS, so the baseline RSS does not hide memory the next call reuses."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass
class PeakMemory:
    """Peak memory of the code run inside :func:`peak_memory` (MB above the memory held when it started)."""

    peak_above_baseline_mb: float | None = None
    baseline_mb: float | None = None
    method: str = "none"


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[PeakMemory]:
    """Measure peak memory of a block: CUDA ``max_memory_allocated``; on CPU the peak RSS (VmHWM after a reset).

    On CPU the reset (``/proc/self/clear_refs``) makes the figure the block's own even in a long-lived process;
    without it the process-lifetime ``ru_maxrss`` would be meaningless, so the result stays ``None``.
    """
    result = PeakMemory()
    gc.collect()  # objects of an earlier measurement held in reference cycles would hide this one's memory
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        result.baseline_mb = round(base / 1024**2, 1)
        result.peak_above_baseline_mb = round((peak - base) / 1024**2, 1)
        result.method = "cuda max_memory_allocated"
        return
    _malloc_trim()
    base = _status_mb("VmRSS")
    ok = base is not None and _reset_peak_rss()
    yield result
    if ok:
        peak = _status_mb("VmHWM")
        assert base is not None and peak is not None
        result.baseline_mb = round(base, 1)
        result.peak_above_baseline_mb = round(max(peak - base, 0.0), 1)
        result.method = "peak RSS (VmHWM reset)"


def fresh_process_peak_rss_mb() -> float:
    """``ru_maxrss`` in MB: the peak of a process that ran nothing else (the quantizer's children)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    first_call_s: float
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def time_calls(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> Timing:
    """``warmup`` untimed calls (compilation, allocator warm-up; the first one's time is kept), then ``repeats``."""
    first = float("nan")
    for i in range(warmup):
        start = time.perf_counter()
        fn()
        synchronize(device)
        if i == 0:
            first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return Timing(first_call_s=first, seconds=times)


def rounded(values: Sequence[float], digits: int = 4) -> list[float]:
    return [round(v, digits) for v in values]


def add_run_arguments(parser: argparse.ArgumentParser, quick_help: str, default_output: Path) -> None:
    """The flags every benchmark shares: ``--device``, ``--threads``, ``--quick``, ``--output``."""
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--output", type=Path, default=default_output)


def parse_choices(parser: argparse.ArgumentParser, text: str, allowed: Sequence[str], what: str) -> list[str]:
    """A comma list checked against ``allowed`` (an argparse error names the bad entry and the choices)."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    for name in names:
        if name not in allowed:
            parser.error(f"unknown {what} {name!r}; choose from {sorted(allowed)}")
    return names


def default_variants(cuda: bool, quick: bool, all_variants: Sequence[str]) -> list[str]:
    """fp32 only on CPU; on CUDA every variant (fp32 + bf16 when quick)."""
    if not cuda:
        return ["fp32"]
    return ["fp32", "bf16"] if quick else list(all_variants)


def parse_run_args(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> tuple[argparse.Namespace, torch.device]:
    """Parse ``argv``, apply ``--threads`` and resolve ``--device``: the start of every benchmark's ``main``."""
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args, resolve_device(args.device)
