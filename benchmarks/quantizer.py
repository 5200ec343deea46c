"""Quantizer step time and peak memory: straightforward reference vs ibq-hf dense vs ibq-hf chunked.

One training step = forward + backward of ``quant_loss + 0.05 * entropy_loss`` for z of shape
[4, 256, 16, 16] (1024 tokens, D = 256), as in the released tokenizers' per-device batch. Each
configuration runs in a fresh subprocess so its memory is its own; memory is the peak RSS (on CUDA:
``max_memory_allocated``) above what was held after the codebook and inputs were allocated.

    python benchmarks/quantizer.py                       # all sizes and implementations
    python benchmarks/quantizer.py --codebook 262144 --impl chunked --repeats 3
    python benchmarks/quantizer.py --quick               # K = 1024 only, in this process (smoke run)

Results are merged into ``benchmarks/results/quantizer.json`` (one row per device, codebook size and
implementation).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _common import RESULTS_DIR, machine_info, merge_results, peak_memory, resolve_device, synchronize

RESULTS = RESULTS_DIR


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


def run_one(
    codebook_size: int, impl: str, repeats: int, tokens: int = 1024, dim: int = 256, device: str = "cpu"
) -> dict:
    """Measure one configuration in this process (a fresh subprocess, unless ``--in-process``)."""
    from ibq_hf.models.quantizer import IBQQuantizer

    dev = torch.device(device)
    torch.manual_seed(0)
    side = round((tokens // 4) ** 0.5)
    z = torch.randn(4, dim, side, side).to(dev).requires_grad_(True)
    quantizer = IBQQuantizer(codebook_size, dim, use_entropy_loss=True).to(dev)
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

    times = []
    with peak_memory(dev) as mem:
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            synchronize(dev)
            times.append(time.perf_counter() - t0)
    return {
        "device": str(dev),
        "codebook_size": codebook_size,
        "implementation": impl,
        "tokens": tokens,
        "dim": dim,
        "repeats": repeats,
        "step_seconds": times,
        "step_seconds_median": statistics.median(times),
        "peak_memory_above_baseline_mb": mem.peak_above_baseline_mb,
        "baseline_memory_mb": mem.baseline_mb,
        "memory_method": mem.method,
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--codebook", type=int, nargs="+", default=None, help="default 1024 16384 262144")
    parser.add_argument("--impl", nargs="+", default=["reference", "dense", "chunked"],
                        choices=["reference", "dense", "chunked"])  # fmt: skip
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (quick 1)")
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
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    parser.add_argument(
        "--in-process", action="store_true", help="measure in this process (no subprocess per configuration)"
    )
    parser.add_argument("--quick", action="store_true", help="K = 1024, one step each, in this process")
    parser.add_argument("--output", type=Path, default=RESULTS / "quantizer.json")
    parser.add_argument("--_child", nargs=2, metavar=("K", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.codebook = args.codebook or ([1024] if args.quick else [1024, 16384, 262144])
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.in_process = args.in_process or args.quick
    device = resolve_device(args.device)

    if args._child:
        k, impl = int(args._child[0]), args._child[1]
        print(json.dumps(run_one(k, impl, args.repeats, device=str(device))))
        return None

    results = []
    for k in args.codebook:
        for impl in args.impl:
            if impl == "dense" and k > args.dense_max_codebook:
                continue
            repeats = args.reference_repeats if (impl != "chunked" and k >= 2**18) else args.repeats
            if args.in_process:
                results.append(run_one(k, impl, repeats, device=str(device)))
                print(json.dumps(results[-1]), flush=True)
                continue
            cmd = [sys.executable, __file__, "--repeats", str(repeats), "--device", str(device)]
            proc = subprocess.run([*cmd, "--_child", str(k), impl], capture_output=True, text=True)
            if proc.returncode != 0:
                row = {
                    "device": str(device),
                    "codebook_size": k,
                    "implementation": impl,
                    "tokens": 1024,
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
    for row in results:
        row["isolation"] = "in-process" if args.in_process else "subprocess"
    payload = merge_results(
        args.output,
        "quantizer",
        machine_info(device),
        results,
        key=("device", "codebook_size", "implementation", "tokens"),
    )
    print(f"wrote {args.output}")
    return payload


if __name__ == "__main__":
    main()
