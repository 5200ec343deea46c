"""Speculative Jacobi decoding (``generate(jacobi_window=L)``) against sequential decoding, on a trained model.

Random weights are no speed test (their near-uniform conditionals accept almost every draft), so this runs the
bundled digits pipeline (``checkpoints/ibq-digits``: 8×8 tokens, 256 codes, trained) at its default settings
(guidance 2.0, temperature 1.0, no top-k/top-p) unless told otherwise. Three parts:

* ``speed``: forward passes per image and wall-clock image tokens/s at batch 1, 4 and 16, windows 4/8/16/32 and
  sequential, dynamic and static cache (median of ``--repeats`` timed calls after one warm-up call);
* ``acceptance``: tokens per pass and the acceptance rate of each window position, per temperature;
* ``quality``: the digit classifier's accuracy (an SVC on the real scans, ``examples/digits/check_digits.py``)
  and FID against the 1,797 real digits (the project's Inception features) for sequential decoding and SJD, on
  the same number of samples, with two seeds each for the run-to-run spread.

Examples::

    python benchmarks/jacobi_decoding.py                       # all parts (~10 min on 2 CPU cores)
    python benchmarks/jacobi_decoding.py --parts speed --batch-sizes 1 --windows 8
    python benchmarks/jacobi_decoding.py --quick               # tiny random model, seconds (smoke run)

Results go to ``benchmarks/results/jacobi_decoding.json`` (replaced per run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import RESULTS_DIR, machine_info, utc_now, write_json_atomic

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "checkpoints" / "ibq-digits"
DEFAULT_OUTPUT = RESULTS_DIR / "jacobi_decoding.json"
PARTS = ("speed", "acceptance", "quality")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="a saved IBQPipeline folder")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    parser.add_argument("--batch-sizes", default="1,4,16")
    parser.add_argument("--windows", default="4,8,16,32", help="SJD windows (sequential is always included)")
    parser.add_argument("--caches", default="dynamic,static")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per setting (median reported)")
    parser.add_argument("--temperatures", default="0.7,1.0,1.3", help="acceptance part")
    parser.add_argument("--acceptance-window", type=int, default=8)
    parser.add_argument("--acceptance-images", type=int, default=200)
    parser.add_argument("--quality-window", type=int, default=8)
    parser.add_argument("--quality-per-class", type=int, default=30)
    parser.add_argument("--quality-seeds", default="0,1")
    parser.add_argument(
        "--quality-reference", type=int, default=None, help="real digits for FID (default: all 1,797)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="tiny random model and sizes (smoke run)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    args.parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {PARTS}")
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.windows = [int(w) for w in args.windows.split(",")]
    args.caches = args.caches.split(",")
    args.temperatures = [float(t) for t in args.temperatures.split(",")]
    args.quality_seeds = [int(s) for s in args.quality_seeds.split(",")]
    if args.quick:
        args.batch_sizes, args.windows, args.repeats = [1, 2], [2, 4], 1
        args.temperatures, args.acceptance_images = [1.0], 8
        args.quality_per_class, args.quality_window, args.quality_reference = 2, 4, 40
    return args


def load_pipeline(args: argparse.Namespace) -> Any:
    from ibq_hf import IBQPipeline

    if not args.quick:
        pipe = IBQPipeline.from_pretrained(args.model, local_files_only=True)
    else:
        from ibq_hf import IBQARConfig, IBQARForImageGeneration, IBQVQModel

        torch.manual_seed(0)
        vqvae = IBQVQModel(
            resolution=16, ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), z_channels=32,
            embed_dim=16, num_embeddings=64,
        )  # fmt: skip
        transformer = IBQARForImageGeneration(
            IBQARConfig(vocab_size=64, num_classes=10, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, grid_size=8, multiple_of=32)
        )  # fmt: skip
        with torch.no_grad():
            transformer.head.weight.normal_(0.0, 0.3)
        pipe = IBQPipeline(transformer=transformer, vqvae=vqvae)
    pipe.set_progress_bar_config(disable=True)
    pipe.transformer.eval()
    return pipe


def generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def run_speed(pipe: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    model = pipe.transformer
    num_classes = model.config.num_classes
    num_tokens = model.config.num_image_tokens
    rows = []
    for batch in args.batch_sizes:
        labels = [i % num_classes for i in range(batch)]
        for cache in args.caches:
            for window in [0, *args.windows]:
                if window >= num_tokens:
                    continue

                def call(seed: int, labels=labels, window=window, cache=cache) -> Any:
                    return model.generate(
                        labels,
                        generator=generators([seed * 1000 + i for i in range(len(labels))]),
                        jacobi_window=window,
                        cache_implementation=cache,
                        return_dict_in_generate=True,
                    )

                call(0)  # warm-up (allocations; static cache creation)
                times, outs = [], []
                for r in range(args.repeats):
                    start = time.perf_counter()
                    outs.append(call(r + 1))
                    times.append(time.perf_counter() - start)
                seconds = statistics.median(times)
                passes_per_image = float(np.mean([o.forward_passes_per_sample.float().mean() for o in outs]))
                row = {
                    "batch_size": batch,
                    "cache": cache,
                    "window": window,
                    "seconds": round(seconds, 4),
                    "tokens_per_second": round(batch * num_tokens / seconds, 1),
                    "forward_passes_per_image": round(passes_per_image, 2),
                    "batched_forward_passes": float(np.mean([o.num_forward_passes for o in outs])),
                    "tokens_per_pass": round(float(np.mean([o.mean_tokens_per_pass for o in outs])), 3),
                }
                rows.append(row)
                print(row, flush=True)
    # Speed-ups against sequential decoding with the same batch size and cache.
    base = {(r["batch_size"], r["cache"]): r for r in rows if r["window"] == 0}
    for r in rows:
        ref = base[(r["batch_size"], r["cache"])]
        r["fewer_passes"] = round(ref["forward_passes_per_image"] / r["forward_passes_per_image"], 2)
        r["wall_clock_speedup"] = round(ref["seconds"] / r["seconds"], 2)
    return rows


def run_acceptance(pipe: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    model = pipe.transformer
    num_classes = model.config.num_classes
    n = args.acceptance_images
    labels = [i % num_classes for i in range(n)]
    rows = []
    for temperature in args.temperatures:
        for do_sample in (True, False):
            if not do_sample and temperature != args.temperatures[0]:
                continue  # greedy ignores the temperature
            out = model.generate(
                labels,
                generator=generators(list(range(n))),
                temperature=temperature if do_sample else None,
                do_sample=do_sample,
                jacobi_window=args.acceptance_window,
                return_dict_in_generate=True,
            )
            rates = out.acceptance_rate_by_position
            row = {
                "mode": "sampling" if do_sample else "greedy",
                "temperature": temperature if do_sample else None,
                "window": args.acceptance_window,
                "images": n,
                "tokens_per_pass": round(out.mean_tokens_per_pass, 3),
                "forward_passes_per_image": round(float(out.forward_passes_per_sample.float().mean()), 2),
                "acceptance_rate_by_position": [
                    None if v != v else round(v, 3) for v in rates.tolist()
                ],  # NaN: never verified,
            }
            rows.append(row)
            print(row, flush=True)
    return rows


def run_quality(pipe: Any, args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "examples" / "digits"))
    from check_digits import real_digit_classifier, to_digit_features
    from prepare_digits import digits_as_images

    from ibq_hf.evaluation import InceptionFeatureAccumulator, fid_from_accumulators, load_fid_inception

    model = pipe.transformer
    num_classes = model.config.num_classes
    per_class = args.quality_per_class
    labels = [c for c in range(num_classes) for _ in range(per_class)]
    classifier = real_digit_classifier()
    inception = load_fid_inception(allow_download=False)
    gray, _ = digits_as_images(pipe.vqvae.config.resolution)  # uint8 [N, H, W]
    real = np.repeat(gray[: args.quality_reference, ..., None], 3, axis=-1)
    reference = InceptionFeatureAccumulator(inception)
    for begin in range(0, len(real), 100):
        reference.update(real[begin : begin + 100])
    runs = []
    for window in (0, args.quality_window):
        for seed in args.quality_seeds:
            seeds = [seed * 100_000 + i for i in range(len(labels))]
            start = time.perf_counter()
            images = []
            for begin in range(0, len(labels), 100):
                out = pipe(
                    class_labels=labels[begin : begin + 100],
                    generator=generators(seeds[begin : begin + 100]),
                    jacobi_window=window,
                    output_type="np",
                ).images
                images.append(out)
            images = np.concatenate(images)
            seconds = time.perf_counter() - start
            accuracy = float((classifier.predict(to_digit_features(images)) == np.array(labels)).mean())
            samples = InceptionFeatureAccumulator(inception)
            uint8 = np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)
            for begin in range(0, len(uint8), 100):
                samples.update(uint8[begin : begin + 100])
            fid = float(fid_from_accumulators(predictions=samples, references=reference))
            row = {
                "window": window,
                "seed": seed,
                "images": len(labels),
                "accuracy": round(accuracy, 4),
                "fid": round(fid, 2),
                "sampling_seconds": round(seconds, 2),
            }
            runs.append(row)
            print(row, flush=True)
    return {"reference_images": len(real), "inception_weights": inception.source, "runs": runs}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline(args)
    result: dict[str, Any] = {
        "benchmark": "jacobi_decoding",
        "date": utc_now(),
        "machine": machine_info("cpu"),
        "model": "quick (random tiny)"
        if args.quick
        else str(Path(args.model).relative_to(REPO))
        if Path(args.model).resolve().is_relative_to(REPO)
        else args.model,
        "generation_defaults": {
            k: v
            for k, v in pipe.transformer.generation_config.to_diff_dict().items()
            if k != "transformers_version"
        },
        "settings": {k: v for k, v in vars(args).items() if k not in ("output",)},
    }
    start = time.perf_counter()
    if "speed" in args.parts:
        result["speed"] = run_speed(pipe, args)
    if "acceptance" in args.parts:
        result["acceptance"] = run_acceptance(pipe, args)
    if "quality" in args.parts:
        result["quality"] = run_quality(pipe, args)
    result["total_seconds"] = round(time.perf_counter() - start, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.output, result)
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
