"""Tokenizer throughput: ``IBQVQModel.tokenize`` (encode) and ``decode_indices`` (decode) images/s and peak memory.

The model has a released architecture (``IBQVQModel.from_preset``, default ``imagenet-16384``: 128 base
channels, ch_mult (1, 1, 2, 2, 4), 4 res blocks per level) with **random weights**: speed and memory do not
depend on the weight values. Inputs are 256² images (a 16×16 grid); decode gets the indices encode produced.

Variants: ``fp32`` (eager); on CUDA also ``bf16`` (bf16 weights with the quantizer kept in fp32, what
``from_pretrained(..., dtype=torch.bfloat16)`` gives) and ``bf16+compile`` (``torch.compile`` of the
encoder and decoder). Each figure is the median of the timed calls after one warm-up call; peak memory is
measured over the timed calls (CUDA ``max_memory_allocated``; on CPU the process's peak RSS after a reset).

    python benchmarks/tokenizer.py                          # CPU: fp32 at 256², batch 2
    python benchmarks/tokenizer.py --device cuda            # fp32, bf16, bf16+compile at batch 16
    python benchmarks/tokenizer.py --quick                  # a tiny architecture at 32² (smoke run)

Results are merged into ``benchmarks/results/tokenizer.json`` (one row per device, variant and operation).
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any

import torch
from _common import (
    RESULTS_DIR,
    add_run_arguments,
    default_variants,
    machine_info,
    merge_results,
    parse_choices,
    parse_run_args,
    peak_memory,
    rounded,
    time_calls,
)

VARIANTS = ("fp32", "bf16", "bf16+compile")
DEFAULT_OUTPUT = RESULTS_DIR / "tokenizer.json"
# Smoke-run architecture: every block type (downsampling, channel change, attention) at a few ms per image.
QUICK_ARCH = {
    "resolution": 32,
    "ch": 32,
    "ch_mult": (1, 2),
    "num_res_blocks": 1,
    "attn_resolutions": (16,),
    "z_channels": 32,
    "embed_dim": 8,
    "num_embeddings": 256,
}


def build_model(preset: str, quick: bool, variant: str, device: torch.device) -> Any:
    """Randomly initialised tokenizer in eval mode, cast and compiled as ``variant`` says."""
    from ibq_hf import IBQVQModel

    torch.manual_seed(0)
    model = IBQVQModel(**QUICK_ARCH) if quick else IBQVQModel.from_preset(preset)
    model = model.eval().to(device)
    if variant.startswith("bf16"):
        with (
            warnings.catch_warnings()
        ):  # diffusers warns that `quantize` should stay fp32: it is restored below
            warnings.simplefilter("ignore")
            model.to(torch.bfloat16)
        model.quantize.float()
    if variant.endswith("+compile"):
        model.encoder.compile()
        model.decoder.compile()
    return model


def bench_variant(args: argparse.Namespace, variant: str, device: torch.device) -> list[dict[str, Any]]:
    model = build_model(args.preset, args.quick, variant, device)
    cfg = model.config
    resolution = args.resolution or cfg.resolution
    dtype = torch.bfloat16 if variant.startswith("bf16") else torch.float32
    g = torch.Generator().manual_seed(0)
    pixels = (torch.rand(args.batch_size, 3, resolution, resolution, generator=g) * 2 - 1).to(device, dtype)
    params = sum(p.numel() for p in model.parameters())
    rows = []
    indices = None
    with torch.inference_mode():
        for op in ("encode", "decode"):
            if op == "encode":

                def call() -> Any:
                    return model.tokenize(pixels)
            else:
                assert indices is not None

                def call(indices: torch.Tensor = indices) -> Any:
                    return model.decode_indices(indices)

            # Warm-up outside the memory window: compilation and one-off allocations are not the op's memory.
            first = time_calls(call, device, repeats=0, warmup=1).first_call_s
            with peak_memory(device) as mem:
                timing = time_calls(call, device, repeats=args.repeats, warmup=0)
            if op == "encode":
                indices = model.tokenize(pixels)
            rows.append(
                {
                    "device": str(device),
                    "variant": variant,
                    "operation": op,
                    "api": "tokenize" if op == "encode" else "decode_indices",
                    "architecture": "quick (tiny)" if args.quick else args.preset,
                    "weights": "random init",
                    "parameters": params,
                    "resolution": resolution,
                    "grid": resolution // model.downsample_factor,
                    "batch_size": args.batch_size,
                    "repeats": args.repeats,
                    "first_call_s": round(first, 4),
                    "seconds": round(timing.median, 4),
                    "all_seconds": rounded(timing.seconds),
                    "images_per_s": round(args.batch_size / timing.median, 4),
                    "ms_per_image": round(1000 * timing.median / args.batch_size, 2),
                    "peak_memory_above_baseline_mb": mem.peak_above_baseline_mb,
                    "baseline_memory_mb": mem.baseline_mb,
                    "memory_method": mem.method,
                    "torch_threads": torch.get_num_threads(),
                }
            )
            r = rows[-1]
            print(
                f"[tokenizer] {device.type} {variant:>12} {op}: {r['images_per_s']:9.3f} images/s "
                f"({r['ms_per_image']} ms/image, peak +{r['peak_memory_above_baseline_mb']} MB, "
                f"first call {r['first_call_s']} s)",
                flush=True,
            )
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="imagenet-16384", help="IBQVQModel preset (architecture)")
    parser.add_argument("--resolution", type=int, default=None, help="image side (default: 256, quick 32)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: CPU 2, CUDA 16, quick 1")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 3, quick 1)")
    parser.add_argument(
        "--variants", default=None, help=f"comma list of {VARIANTS} (default: CPU fp32; CUDA all three)"
    )
    add_run_arguments(parser, "tiny architecture at 32² (seconds)", DEFAULT_OUTPUT)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args, device = parse_run_args(parser, argv)
    cuda = device.type == "cuda"
    if args.batch_size is None:
        args.batch_size = 1 if args.quick else (16 if cuda else 2)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.variants is None:
        variants = default_variants(cuda, args.quick, VARIANTS)
    else:
        variants = parse_choices(parser, args.variants, VARIANTS, "variant")

    rows: list[dict[str, Any]] = []
    for variant in variants:
        try:
            rows += bench_variant(args, variant, device)
        except Exception as error:  # one failing variant (e.g. a compile error) must not lose the others
            print(f"[tokenizer] {variant} failed: {error!r}", flush=True)
            rows.append(
                {"device": str(device), "variant": variant, "operation": "encode", "error": repr(error)}
            )
        if cuda:
            torch.cuda.empty_cache()
    payload = merge_results(
        args.output,
        "tokenizer",
        machine_info(device),
        rows,
        key=("device", "variant", "operation", "architecture", "resolution", "batch_size"),
    )
    print(f"wrote {args.output}")
    return payload


if __name__ == "__main__":
    main()
