"""Quantizer step time and peak memory: straightforward reference vs ibq-hf dense vs ibq-hf chunked.

One training step = forward + backward of ``quant_loss + 0.05 * entropy_loss`` for z of shape
[4, 256, 16, 16] (1024 tokens, D = 256), as in the released tokenizers' per-device batch. Each
configuration runs in a fresh subprocess so peak RSS (``ru_maxrss``) is its own; memory is reported
above the RSS measured after the codebook and inputs were allocated.

    python benchmarks/quantizer.py                       # all sizes and implementations
    python benchmarks/quantizer.py --codebook 262144 --impl chunked --repeats 3

Writes ``benchmarks/results/quantizer.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).resolve().parent / "results"


def reference_step(
    z: torch.Tensor, codebook: torch.Tensor, beta: float = 0.25, tau: float = 0.01
) -> torch.Tensor:
    """The straightforward implementation of the reference quantizer (dense einsums in BDHW), as a baseline."""
    logits = torch.einsum("bdhw,nd->bnhw", z, codebook)
    soft = logits.softmax(dim=1)
    ind = soft.argmax(dim=1)
    hard = torch.zeros_like(logits).scatter_(1, ind.unsqueeze(1), 1.0)
    one_hot = hard - soft.detach() + soft
    z_q = torch.einsum("bnhw,nd->bdhw", one_hot, codebook)
    z_q2 = torch.einsum("bnhw,nd->bdhw", hard, codebook)
    quant_loss = F.mse_loss(z_q, z) + F.mse_loss(z_q2.detach(), z) + beta * F.mse_loss(z_q2, z.detach())
    flat = logits.permute(0, 2, 3, 1).reshape(-1, codebook.shape[0]) / tau
    probs = flat.softmax(dim=-1)
    log_probs = (flat + 1e-5).log_softmax(dim=-1)
    avg_probs = probs.mean(dim=0)
    avg_entropy = -(avg_probs * torch.log(avg_probs + 1e-5)).sum()
    sample_entropy = -(probs * log_probs).sum(dim=-1).mean()
    return quant_loss + 0.05 * (sample_entropy - avg_entropy)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_one(codebook_size: int, impl: str, repeats: int, tokens: int = 1024, dim: int = 256) -> dict:
    """Measure one configuration in this process (called in a fresh subprocess)."""
    from ibq_hf.quantizer import IBQQuantizer

    torch.manual_seed(0)
    side = round((tokens // 4) ** 0.5)
    z = torch.randn(4, dim, side, side, requires_grad=True)
    quantizer = IBQQuantizer(codebook_size, dim, use_entropy_loss=True)
    codebook = quantizer.embedding.weight

    def step():
        z.grad = None
        codebook.grad = None
        if impl == "reference":
            loss = reference_step(z, codebook)
        else:
            out = quantizer(z, implementation=impl)
            loss = out.quant_loss + 0.05 * out.entropy_loss
        loss.backward()

    base = _rss_mb()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "codebook_size": codebook_size,
        "implementation": impl,
        "tokens": tokens,
        "dim": dim,
        "repeats": repeats,
        "step_seconds": times,
        "step_seconds_median": statistics.median(times),
        "peak_rss_above_baseline_mb": round(peak - base, 1),
        "baseline_rss_mb": round(base, 1),
    }


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--codebook", type=int, nargs="+", default=[1024, 16384, 262144])
    parser.add_argument("--impl", nargs="+", default=["reference", "dense", "chunked"],
                        choices=["reference", "dense", "chunked"])  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--reference-repeats", type=int, default=1, help="repeats of the slow baseline at K>=2^18"
    )
    parser.add_argument(
        "--dense-max-codebook",
        type=int,
        default=16384,
        help="skip ibq-hf's dense path above this codebook size (it is the reference algorithm; the baseline "
        "row already measures it)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "quantizer.json")
    parser.add_argument("--_child", nargs=2, metavar=("K", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._child:
        k, impl = int(args._child[0]), args._child[1]
        print(json.dumps(run_one(k, impl, args.repeats)))
        return

    results = []
    for k in args.codebook:
        for impl in args.impl:
            if impl == "dense" and k > args.dense_max_codebook:
                continue
            repeats = args.reference_repeats if (impl != "chunked" and k >= 2**18) else args.repeats
            cmd = [sys.executable, __file__, "--repeats", str(repeats), "--_child", str(k), impl]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                row = {
                    "codebook_size": k,
                    "implementation": impl,
                    "error": proc.stderr.strip().splitlines()[-1:],
                }
            else:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(row)
            print(json.dumps(row), flush=True)

    by_key = {(r["codebook_size"], r["implementation"]): r for r in results if "step_seconds_median" in r}
    for k in args.codebook:
        ref, fast = by_key.get((k, "reference")), by_key.get((k, "chunked"))
        if ref and fast:
            fast["speedup_vs_reference"] = round(ref["step_seconds_median"] / fast["step_seconds_median"], 2)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": "quantizer", "machine": machine_info(), "results": results}
    tmp = args.output.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
