"""The prepared GPU check (issue 14): one command, about 4 minutes on one GPU, random weights unless noted.

Checks (``--checks``, default all; they run in the order a, b, d, e, f, g, c so that the slowest, c, comes last):

* **a** greedy ``generate()`` tokens on the device (fp32) equal the CPU tokens: a random model ("mid", quick:
  "tiny" of ``generation.py``) and the bundled digits transformer (trained). A difference only counts as a
  pass at a floating-point near-tie: at the row's first differing token the gap between the two best guided
  logits (CPU, teacher-forced on the CPU tokens) is at most twice the device-vs-CPU logit difference there.
* **b** bf16: sampling runs (sequential and ``jacobi_window=8``, tokens in range), and teacher-forced logits of a
  bf16 copy stay within ``BF16_TOLERANCE`` of fp32: max |Δ| ≤ atol + rtol · max |fp32 logit| (both reported).
* **c** static cache + ``torch.compile`` (CUDA graphs, ``reduce-overhead``) decode tokens/s vs the dynamic cache
  at preset B width/depth for 1/8/32 images (CFG, sampling). To fit the time budget the grid is 8×8 = 64 image
  tokens instead of 16×16 (``--gen-grid``); the compile time is reported as ``first_call_s``.
* **d** speculative Jacobi decoding vs sequential on the device: the digits model at its default settings, batch
  1/4/16, windows 0 (sequential)/4/8/16: forward passes per image, tokens/s, fewer passes and wall-clock speed-up.
* **e** tokenizer encode/decode images/s in fp32 and bf16 (``tokenizer.py``'s ``bench_variant``: the released
  ``imagenet-16384`` architecture at 256², batch 16).
* **f** one bf16 training step (``TrainingArguments(bf16=True)``) of the tokenizer GAN trainer and of the AR
  trainer, tiny configs: every logged loss is finite.
* **g** the chunked quantizer at K = 262144 vs the dense path (1024 tokens, D = 256, forward + backward):
  step time and peak memory (``max_memory_allocated``; ``quantizer.py``'s ``run_one``).

Each check runs in ``try``/``except`` (an exception becomes ``"error"``, one line, and the run moves on) and the
JSON summary is rewritten atomically before and after every check, so a run cut off by a time limit still
reports. ``--budget-s`` (default 225 s from the start of the script) skips what would start after it; check c
stops adding batch sizes when less than 20 s are left.

    python benchmarks/gpu_check.py                         # all checks on cuda (skips cleanly without CUDA)
    python benchmarks/gpu_check.py --checks a,d,g
    python benchmarks/gpu_check.py --device cpu --quick    # tiny sizes on the CPU (what the test runs)

On the GPU machine run it through ``benchmarks/gpu_check.sh`` (it installs the carried wheels first). Output:
``--output``, default ``$OUT/gpu_check.json`` when ``$OUT`` is set, else ``benchmarks/results/gpu_check.json``.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "checkpoints" / "ibq-digits" / "transformer"
CHECKS: dict[str, str] = {
    "a": "greedy generate(): device fp32 tokens equal CPU tokens",
    "b": "bf16 sampling runs; bf16 logits within tolerance of fp32",
    "c": "static cache + torch.compile vs dynamic cache decode tokens/s at preset B",
    "d": "speculative Jacobi decoding vs sequential on the digits model",
    "e": "tokenizer encode/decode images/s fp32 / bf16",
    "f": "one bf16 training step of each trainer, finite losses",
    "g": "chunked quantizer vs dense at K = 262144: time and peak memory",
}
RUN_ORDER = ("a", "b", "d", "e", "f", "g", "c")  # the slowest (compilation) last
SKIP_LINE = (
    "gpu_check: no CUDA device; nothing to check (use --device cpu --quick to exercise the checks on CPU)"
)
#: bf16 logits vs fp32: max |Δ| ≤ atol + rtol · max |fp32 logit|. bf16 keeps 8 significant bits (relative step
#: 2⁻⁸ ≈ 0.4 %); a few such roundings per layer accumulate to a few percent of the logit range.
BF16_TOLERANCE = {"atol": 0.05, "rtol": 0.05}


def default_output() -> Path:
    out = os.environ.get("OUT")
    return Path(out) / "gpu_check.json" if out else REPO / "benchmarks" / "results" / "gpu_check.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checks", default=",".join(CHECKS), help="comma list of a..g (default: all)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for every check (the CPU test)")
    parser.add_argument("--output", type=Path, default=None, help="JSON summary (see above)")
    parser.add_argument("--budget-s", type=float, default=225.0, help="skip checks starting after this")
    parser.add_argument("--gen-grid", type=int, default=8, help="check c: grid side (tokens = side²)")
    parser.add_argument(
        "--compile-backend",
        default=None,
        help="check c: torch.compile backend (default inductor; quick on CPU: eager, a dynamo trace only)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    names = [c.strip() for c in args.checks.split(",") if c.strip()]
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        parser.error(f"unknown checks {unknown}; choose from {sorted(CHECKS)}")
    args.checks = [c for c in RUN_ORDER if c in names]
    args.output = args.output or default_output()
    return args


# ---------------------------------------------------------------------------------------------- helpers


def sync(device: torch.device) -> None:
    from _common import synchronize

    synchronize(device)


def random_ar_model(size: str, device: torch.device, dtype: str = "float32") -> Any:
    """A random model of ``generation.py``'s sizes (its head re-initialised so that logits are not uniform)."""
    from generation import build_model

    return build_model(size, device, dtype)


def digits_model(device: torch.device, dtype: torch.dtype = torch.float32) -> Any:
    """The bundled trained digits transformer (8×8 tokens, 256 codes, 10 classes)."""
    from ibq_hf.models.modeling_ar import IBQARForImageGeneration

    model = IBQARForImageGeneration.from_pretrained(str(DIGITS), local_files_only=True)
    return model.eval().to(device, dtype)


@torch.no_grad()
def guided_logits(model: Any, tokens: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """Teacher-forced guided logits [B, N, V] (fp32) that predict ``tokens`` [B, N] with constant CFG."""
    device = model.device
    ids, labels = tokens[:, :-1].to(device), labels.to(device)
    cond = model(input_ids=ids, class_labels=labels).logits.float()
    if scale == 1.0:
        return cond.cpu()
    null = torch.full_like(labels, model.config.num_classes)
    uncond = model(input_ids=ids, class_labels=null).logits.float()
    return (uncond + scale * (cond - uncond)).cpu()


def labels_for(model: Any, batch: int) -> torch.Tensor:
    return torch.arange(batch) * 7 % model.config.num_classes


def cpu_generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


# ---------------------------------------------------------------------------------------------- checks


def check_a(args: argparse.Namespace, device: torch.device, budget: Callable[[], float]) -> dict[str, Any]:
    scale = 2.0
    models = []
    size = "tiny" if args.quick else "mid"
    for name in (f"random {size}", "digits"):
        cpu_model = random_ar_model(size, torch.device("cpu")) if name != "digits" else digits_model(
            torch.device("cpu")
        )  # fmt: skip
        dev_model = copy.deepcopy(cpu_model).to(device)
        batch = 2 if (args.quick or name != "digits") else 8
        labels = labels_for(cpu_model, batch)
        kw = {"guidance_scale": scale, "do_sample": False, "guidance_schedule": "constant"}
        cpu_tokens = cpu_model.generate(labels, **kw)
        dev_tokens = dev_model.generate(labels.to(device), **kw).cpu()
        row: dict[str, Any] = {
            "model": name,
            "images": batch,
            "tokens_per_image": cpu_model.config.num_image_tokens,
            "guidance_scale": scale,
            "equal": bool(torch.equal(cpu_tokens, dev_tokens)),
            "first_mismatches": [],
        }
        if not row["equal"]:
            cpu_logits = guided_logits(cpu_model, cpu_tokens, labels, scale)
            dev_logits = guided_logits(dev_model, cpu_tokens, labels, scale)
            for b in range(batch):
                diff = (cpu_tokens[b] != dev_tokens[b]).nonzero()
                if len(diff) == 0:
                    continue
                n = int(diff[0])
                top2 = cpu_logits[b, n].topk(2).values
                gap = float(top2[0] - top2[1])
                noise = float((cpu_logits[b, n] - dev_logits[b, n]).abs().max())
                row["first_mismatches"].append(
                    {"row": b, "position": n, "top2_gap_cpu": gap, "device_vs_cpu_logit_diff": noise,
                     "near_tie": gap <= 2 * noise}
                )  # fmt: skip
        row["passed"] = row["equal"] or all(m["near_tie"] for m in row["first_mismatches"])
        models.append(row)
    return {"models": models, "passed": all(m["passed"] for m in models)}


def check_b(args: argparse.Namespace, device: torch.device, budget: Callable[[], float]) -> dict[str, Any]:
    models = []
    size = "tiny" if args.quick else "B"
    for name in (f"random {size}", "digits"):
        fp32 = random_ar_model(size, device) if name != "digits" else digits_model(device)
        bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
        batch = 4
        labels = labels_for(fp32, batch).to(device)
        g = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, fp32.config.vocab_size, (batch, fp32.config.num_image_tokens), generator=g)
        ref = guided_logits(fp32, tokens, labels, 2.0)
        got = guided_logits(bf16, tokens, labels, 2.0)
        max_abs = float((got - ref).abs().max())
        scale = float(ref.abs().max())
        tolerance = BF16_TOLERANCE["atol"] + BF16_TOLERANCE["rtol"] * scale
        sampling = {}
        vocab = bf16.config.vocab_size
        for window in (0, 8):
            out = bf16.generate(
                labels,
                guidance_scale=2.0,
                do_sample=True,
                generator=cpu_generators(list(range(batch))),
                jacobi_window=window,
                return_dict_in_generate=True,
            )
            seq = out.sequences
            sampling[f"window_{window}"] = {
                "shape_ok": list(seq.shape) == [batch, bf16.config.num_image_tokens],
                "in_range": bool(((seq >= 0) & (seq < vocab)).all()),
                "tokens_per_pass": round(float(out.mean_tokens_per_pass), 3),
            }
        sampling_ok = all(s["shape_ok"] and s["in_range"] for s in sampling.values())
        row = {
            "model": name,
            "images": batch,
            "max_abs_diff": round(max_abs, 5),
            "mean_abs_diff": round(float((got - ref).abs().mean()), 6),
            "max_abs_fp32_logit": round(scale, 4),
            "tolerance": round(tolerance, 5),
            "tolerance_rule": "atol + rtol * max|fp32 logit|",
            **BF16_TOLERANCE,
            "within_tolerance": max_abs <= tolerance,
            "argmax_agreement": round(float((got.argmax(-1) == ref.argmax(-1)).float().mean()), 4),
            "sampling": sampling,
            "passed": max_abs <= tolerance and sampling_ok,
        }
        models.append(row)
    return {"models": models, "passed": all(m["passed"] for m in models)}


def check_c(args: argparse.Namespace, device: torch.device, budget: Callable[[], float]) -> dict[str, Any]:
    import generation
    from _common import time_calls
    from transformers import CompileConfig

    cuda = device.type == "cuda"
    if args.quick:
        size, batches = "tiny", [1, 2]
    else:
        size = f"B@grid{args.gen_grid}"
        generation.SIZES[size] = {**generation.SIZES["B"], "grid_size": args.gen_grid}
        batches = [1, 8, 32]
    backend = args.compile_backend or ("eager" if (args.quick and not cuda) else "inductor")
    mode = ("reduce-overhead" if cuda else "default") if backend == "inductor" else None
    compile_config = CompileConfig(fullgraph=True, mode=mode, backend=backend)
    model = random_ar_model(size, device)
    tokens = model.config.num_image_tokens
    repeats = 1 if args.quick else 2
    rows: list[dict[str, Any]] = []
    skipped = []
    for batch in batches:
        if budget() < 20:
            skipped.append(batch)
            continue
        labels = labels_for(model, batch).to(device)
        by_setting = {}
        for setting in ("dynamic", "static+compile"):
            kw: dict[str, Any] = {"cache_implementation": "dynamic" if setting == "dynamic" else "static"}
            if setting == "static+compile":
                kw["compile_config"] = compile_config
            torch.manual_seed(0)
            timing = time_calls(
                lambda kw=kw, labels=labels: model.generate(labels, guidance_scale=2.0, **kw),
                device,
                repeats=repeats,
                warmup=1,
            )
            row = {
                "batch_size": batch,
                "setting": setting,
                "tokens_per_image": tokens,
                "first_call_s": round(timing.first_call_s, 3),
                "seconds": round(timing.median, 4),
                "tokens_per_s": round(batch * tokens / timing.median, 1),
                "ms_per_step": round(1000 * timing.median / tokens, 3),
            }
            by_setting[setting] = row
            rows.append(row)
            print(f"[gpu_check c] {row}", flush=True)
        by_setting["static+compile"]["speedup_vs_dynamic"] = round(
            by_setting["static+compile"]["tokens_per_s"] / by_setting["dynamic"]["tokens_per_s"], 2
        )
    return {
        "model": size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokens_per_image": tokens,
        "note": None
        if args.quick
        else f"preset B width/depth with a {args.gen_grid}×{args.gen_grid} grid ({tokens} tokens/image instead "
        "of 256) to fit the time budget",
        "compile": {"backend": backend, "mode": mode, "fullgraph": True},
        "guidance_scale": 2.0,
        "repeats": repeats,
        "rows": rows,
        "skipped_batch_sizes_for_time": skipped,
        "passed": bool(rows),
    }


def check_d(args: argparse.Namespace, device: torch.device, budget: Callable[[], float]) -> dict[str, Any]:
    from _common import time_calls

    model = digits_model(device)
    batches, windows = ([1, 2], [0, 4]) if args.quick else ([1, 4, 16], [0, 4, 8, 16])
    repeats = 1 if args.quick else 2
    tokens = model.config.num_image_tokens
    num_classes = model.config.num_classes
    rows = []
    for batch in batches:
        labels = [i % num_classes for i in range(batch)]
        for window in windows:
            outs = []

            def call(labels=labels, window=window, outs=outs) -> None:
                seed = len(outs)
                outs.append(
                    model.generate(
                        labels,
                        generator=cpu_generators([seed * 1000 + i for i in range(len(labels))]),
                        jacobi_window=window,
                        return_dict_in_generate=True,
                    )
                )

            timing = time_calls(call, device, repeats=repeats, warmup=1)
            timed = outs[1:]
            passes = sum(float(o.forward_passes_per_sample.float().mean()) for o in timed) / len(timed)
            rows.append(
                {
                    "batch_size": batch,
                    "window": window,
                    "seconds": round(timing.median, 4),
                    "tokens_per_s": round(batch * tokens / timing.median, 1),
                    "forward_passes_per_image": round(passes, 2),
                    "batched_forward_passes": sum(o.num_forward_passes for o in timed) / len(timed),
                    "tokens_per_pass": round(sum(o.mean_tokens_per_pass for o in timed) / len(timed), 3),
                }
            )
            print(f"[gpu_check d] {rows[-1]}", flush=True)
    base = {r["batch_size"]: r for r in rows if r["window"] == 0}
    for r in rows:
        ref = base[r["batch_size"]]
        r["fewer_passes"] = round(ref["forward_passes_per_image"] / r["forward_passes_per_image"], 2)
        r["wall_clock_speedup"] = round(ref["seconds"] / r["seconds"], 2)
    settings = {
        k: v for k, v in model.generation_config.to_diff_dict().items() if k != "transformers_version"
    }
    return {
        "model": "checkpoints/ibq-digits/transformer (trained)",
        "settings": settings,
        "cache": "dynamic",
        "repeats": repeats,
        "rows": rows,
        "passed": all(r["forward_passes_per_image"] <= tokens for r in rows),
    }


def check_e(args: argparse.Namespace, device: torch.device, budget: Callable[[], float]) -> dict[str, Any]:
    from tokenizer import bench_variant

    targs = SimpleNamespace(
        preset="imagenet-16384",
        quick=args.quick,
        resolution=None if args.quick else 256,
        batch_size=1 if args.quick else (16 if device.type == "cuda" else 2),
        repeats=1 if args.quick else 3,
    )
    rows = []
    for variant in ("fp32", "bf16"):
        rows += bench_variant(targs, variant, device)  # type: ignore[arg-type]
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"rows": rows, "passed": all(r["images_per_s"] > 0 for r in rows)}


def _finite_losses(history: list[dict[str, Any]]) -> dict[str, float]:
    losses = {}
    for entry in history:
        for k, v in entry.items():
            if "loss" in k and isinstance(v, (int, float)):
                losses[k] = float(v)
    return losses


def check_f(args: argparse.Namespace, device: torch.device, budget: Callable[[], float]) -> dict[str, Any]:
    from tokenizer import QUICK_ARCH
    from transformers import TrainerCallback

    from ibq_hf.models.configuration_ar import IBQARConfig
    from ibq_hf.models.modeling_ar import IBQARForImageGeneration
    from ibq_hf.training.ar_trainer import ARCodesCollator, IBQARTrainer, IBQARTrainingArguments
    from training import _collate_images, _common_args, _Rows

    class _StopAfterFirstStep(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            control.should_training_stop = True
            return control

    logging.getLogger("transformers").setLevel(logging.ERROR)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as out:
        # Tokenizer GAN step: generator + discriminator + LeCam + LPIPS (random VGG backbone), bf16 autocast.
        from ibq_hf.models.modeling_vq import IBQVQModel
        from ibq_hf.training.tokenizer_trainer import (
            IBQTokenizerTrainer,
            IBQTokenizerTrainingArguments,
            build_tokenizer_gan,
        )

        batch = 2
        common = {**_common_args(device, "bf16", batch, 1, out + "/tok"), "logging_steps": 1}
        targs = IBQTokenizerTrainingArguments(**common)
        torch.manual_seed(0)
        gan = build_tokenizer_gan(IBQVQModel(**QUICK_ARCH), targs, lpips_random_backbone=True)
        g = torch.Generator().manual_seed(0)
        images = torch.rand(batch, 3, QUICK_ARCH["resolution"], QUICK_ARCH["resolution"], generator=g) * 2 - 1
        trainer = IBQTokenizerTrainer(
            model=gan,
            args=targs,
            train_dataset=_Rows([{"pixel_values": x} for x in images]),
            data_collator=_collate_images,
        )
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            trainer.train()
        sync(device)
        losses = _finite_losses(trainer.state.log_history)
        results["tokenizer"] = {
            "architecture": "quick (tiny)",
            "resolution": QUICK_ARCH["resolution"],
            "batch_size": batch,
            "steps": trainer.state.global_step,
            "seconds": round(time.perf_counter() - start, 3),
            "losses": losses,
            "finite": bool(losses) and all(math.isfinite(v) for v in losses.values()),
        }
        # AR step: cross-entropy over all codes, AdamW, bf16 autocast.
        config = IBQARConfig(vocab_size=256, num_classes=10, hidden_size=64, num_hidden_layers=2,
                             num_attention_heads=2, grid_size=4, multiple_of=32)  # fmt: skip
        torch.manual_seed(0)
        model = IBQARForImageGeneration(config)
        batch = 4
        codes = torch.randint(0, config.vocab_size, (batch, config.num_image_tokens), generator=g)
        rows = [{"input_ids": c.tolist(), "label": i % config.num_classes} for i, c in enumerate(codes)]
        # The VAR schedule needs max_steps > warmup + 1: plan two steps, stop after the first.
        aargs = IBQARTrainingArguments(
            **{**_common_args(device, "bf16", batch, 2, out + "/ar"), "logging_steps": 1}, warmup_steps=0
        )
        trainer = IBQARTrainer(
            model=model,
            args=aargs,
            train_dataset=_Rows(rows),
            data_collator=ARCodesCollator(config.num_image_tokens),
            callbacks=[_StopAfterFirstStep()],
        )
        start = time.perf_counter()
        trainer.train()
        sync(device)
        losses = _finite_losses(trainer.state.log_history)
        results["ar"] = {
            "architecture": "tiny (64 wide, 2 layers, 4×4 grid, 256 codes)",
            "batch_size": batch,
            "steps": trainer.state.global_step,
            "seconds": round(time.perf_counter() - start, 3),
            "losses": losses,
            "finite": bool(losses) and all(math.isfinite(v) for v in losses.values()),
        }
    return {
        "bf16": True,
        **results,
        "passed": all(r["finite"] and r["steps"] == 1 for r in results.values()),
    }


def check_g(args: argparse.Namespace, device: torch.device, budget: Callable[[], float]) -> dict[str, Any]:
    from quantizer import run_one

    codebook, tokens, repeats = (4096, 256, 1) if args.quick else (262144, 1024, 3)
    rows = {}
    for impl in ("dense", "chunked"):
        row = run_one(codebook, impl, repeats, tokens=tokens, dim=256, device=str(device))
        row["step_seconds"] = [round(s, 4) for s in row["step_seconds"]]
        row["step_seconds_median"] = round(row["step_seconds_median"], 4)
        rows[impl] = row
        print(
            f"[gpu_check g] {impl}: {row['step_seconds_median']} s, peak +{row['peak_memory_above_baseline_mb']} MB"
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()
    dense, chunked = rows["dense"], rows["chunked"]
    memory_ratio = None
    if dense["peak_memory_above_baseline_mb"] and chunked["peak_memory_above_baseline_mb"]:
        memory_ratio = round(
            dense["peak_memory_above_baseline_mb"] / chunked["peak_memory_above_baseline_mb"], 2
        )
    return {
        "codebook_size": codebook,
        "tokens": tokens,
        "dim": 256,
        "step": "forward + backward of quant_loss + 0.05 * entropy_loss",
        "rows": [dense, chunked],
        "chunked_speedup_vs_dense": round(dense["step_seconds_median"] / chunked["step_seconds_median"], 2),
        "dense_over_chunked_peak_memory": memory_ratio,
        "passed": True,
    }


CHECK_FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "a": check_a, "b": check_b, "c": check_c, "d": check_d, "e": check_e, "f": check_f, "g": check_g,
}  # fmt: skip


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(SKIP_LINE)
        return None
    if args.threads:
        torch.set_num_threads(args.threads)
    from _common import machine_info, utc_now, write_json_atomic

    start = time.perf_counter()

    def budget() -> float:
        return args.budget_s - (time.perf_counter() - start)

    summary: dict[str, Any] = {
        "benchmark": "gpu_check",
        "schema_version": 1,
        "started": utc_now(),
        "machine": machine_info(device),
        "settings": {
            "checks": args.checks,
            "quick": args.quick,
            "budget_s": args.budget_s,
            "gen_grid": args.gen_grid,
            "weights": "random unless noted (digits: the bundled trained model)",
        },
        "checks": {},
        "complete": False,
    }

    def write() -> None:
        summary["updated"] = utc_now()
        summary["elapsed_s"] = round(time.perf_counter() - start, 2)
        write_json_atomic(args.output, summary)

    for name in args.checks:
        entry: dict[str, Any] = {"name": CHECKS[name], "status": "running"}
        summary["checks"][name] = entry
        if budget() <= 0:
            entry.update(status="skipped", reason=f"time budget of {args.budget_s} s spent")
            write()
            continue
        write()
        print(f"[gpu_check] {name}: {CHECKS[name]}", flush=True)
        t0 = time.perf_counter()
        torch.manual_seed(0)
        try:
            entry.update(CHECK_FUNCTIONS[name](args, device, budget))
            entry["status"] = "ok"
        except Exception as error:
            entry["status"] = "error"
            entry["error"] = f"{type(error).__name__}: {error}".splitlines()[0][:500]
            traceback.print_exc()
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        if device.type == "cuda":
            entry["max_memory_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 1024**2, 1)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        print(f"[gpu_check] {name}: {entry['status']} passed={entry.get('passed')} ({entry['seconds']} s)")
        write()
    summary["complete"] = True
    summary["passed"] = {k: v.get("passed") for k, v in summary["checks"].items()}
    write()
    print(f"wrote {args.output}")
    return summary


if __name__ == "__main__":
    main()
