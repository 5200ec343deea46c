"""Training-step throughput of both models, through the real trainers.

* **tokenizer**: ``IBQTokenizerTrainer`` (the GAN step: generator forward, discriminator step with hinge + LeCam,
  generator loss L1 + LPIPS + 0.1·non-saturating g + quant + 0.05·entropy, backward, Adam step, EMA update) on an
  ``IBQTokenizerGAN`` built by ``build_tokenizer_gan`` (reference PatchGAN, LeCam, LPIPS-VGG). LPIPS has a
  **random VGG backbone** (the ImageNet weights are not available offline): the cost is the same, the values
  are meaningless. Reported as images/s.
* **ar**: ``IBQARTrainer`` (cross-entropy over all grid² codes, AdamW groups, VAR schedule, clipping 1.0) on
  ``IBQARForImageGeneration``. Reported as tokens/s (scored image tokens: batch × grid²).

Both run ``Trainer.train()`` for ``warmup + repeats`` optimizer steps on random in-memory data; a callback times
each step from ``on_step_begin`` to ``on_step_end`` (everything the trainer does in one optimizer step, data
loading excluded), and the median of the steps after the warm-up is reported. Weights are random: speed does not
depend on them. Peak memory covers the whole ``train()`` call above the memory held by the built models, so it
includes optimizer states and activations.

CPU defaults are small so one step takes seconds (tokenizer: the released ``imagenet-16384`` architecture at
128², batch 2; AR: the 57.7M-parameter "mid" size of ``generation.py``, batch 4); CUDA defaults are the full sizes
(tokenizer at 256², batch 8; AR preset B, batch 32) in fp32, bf16 (``TrainingArguments(bf16=True)``, autocast)
and bf16+compile (AR: ``torch_compile=True``; tokenizer: ``Module.compile()`` of the generator's encoder and
decoder, the discriminator and LPIPS, because the GAN trainer calls its sub-networks directly and Trainer's
``torch_compile`` would only wrap the unused outer module).

    python benchmarks/training.py                       # both models, CPU defaults
    python benchmarks/training.py --models ar --ar-size B --ar-batch-size 8
    python benchmarks/training.py --quick               # tiny models (smoke run)

Results are merged into ``benchmarks/results/training.json``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
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
    synchronize,
)
from transformers import TrainerCallback

MODELS = ("tokenizer", "ar")
VARIANTS = ("fp32", "bf16", "bf16+compile")
DEFAULT_OUTPUT = RESULTS_DIR / "training.json"
AR_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 256,
             "grid_size": 4, "multiple_of": 32},
    "mid": {"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8},
}  # fmt: skip


class _StepTimer(TrainerCallback):
    """Callback recording the wall time of every optimizer step (synchronised on CUDA)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: list[float] = []
        self._start = 0.0

    def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()

    def on_step_end(self, *args: Any, **kwargs: Any) -> None:
        synchronize(self.device)
        self.seconds.append(time.perf_counter() - self._start)


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


def _collate_images(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.stack([r["pixel_values"] for r in rows])}


def _common_args(device: torch.device, variant: str, batch: int, steps: int, out: str) -> dict[str, Any]:
    return {
        "output_dir": out,
        "max_steps": steps,
        "per_device_train_batch_size": batch,
        "use_cpu": device.type == "cpu",
        "bf16": variant.startswith("bf16"),
        "report_to": [],
        "disable_tqdm": True,
        "save_strategy": "no",
        "logging_steps": 10_000,
        "dataloader_num_workers": 0,
        "seed": 0,
    }


def _run_trainer(trainer: Any, device: torch.device) -> tuple[_StepTimer, Any]:
    timer = _StepTimer(device)
    trainer.add_callback(timer)
    with peak_memory(device) as mem:
        trainer.train()
    return timer, mem


def bench_tokenizer(args: argparse.Namespace, variant: str, device: torch.device) -> dict[str, Any]:
    from tokenizer import QUICK_ARCH

    from ibq_hf import IBQVQModel
    from ibq_hf.training.tokenizer_trainer import (
        IBQTokenizerTrainer,
        IBQTokenizerTrainingArguments,
        build_tokenizer_gan,
    )

    resolution = args.tok_resolution or (32 if args.quick else (256 if device.type == "cuda" else 128))
    batch = args.tok_batch_size or (2 if device.type == "cpu" else 8)
    steps = args.warmup + args.repeats
    torch.manual_seed(0)
    generator = IBQVQModel(**QUICK_ARCH) if args.quick else IBQVQModel.from_preset(args.tok_preset)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch * steps, 3, resolution, resolution, generator=g) * 2 - 1
    with tempfile.TemporaryDirectory() as out:
        targs = IBQTokenizerTrainingArguments(**_common_args(device, variant, batch, steps, out))
        gan = build_tokenizer_gan(generator, targs, lpips_random_backbone=True)
        if variant.endswith("+compile"):
            for module in (gan.generator.encoder, gan.generator.decoder, gan.discriminator, gan.lpips):
                module.compile()
        trainer = IBQTokenizerTrainer(
            model=gan,
            args=targs,
            train_dataset=_Rows([{"pixel_values": x} for x in images]),
            data_collator=_collate_images,
        )
        timer, mem = _run_trainer(trainer, device)
    median = statistics.median(timer.seconds[args.warmup :])
    return {
        "model": "tokenizer",
        "architecture": "quick (tiny)" if args.quick else args.tok_preset,
        "parameters_generator": sum(p.numel() for p in gan.generator.parameters()),
        "parameters_discriminator": sum(p.numel() for p in gan.discriminator.parameters()),
        "lpips": "VGG16, random backbone",
        "resolution": resolution,
        "batch_size": batch,
        "steps_per_s": round(1 / median, 4),
        "images_per_s": round(batch / median, 4),
        **_timing_fields(timer, args, median, mem),
    }


def bench_ar(args: argparse.Namespace, variant: str, device: torch.device) -> dict[str, Any]:
    from ibq_hf import IBQARForImageGeneration
    from ibq_hf.models.configuration_ar import IBQARConfig
    from ibq_hf.training.ar_trainer import ARCodesCollator, IBQARTrainer, IBQARTrainingArguments

    size = args.ar_size or ("tiny" if args.quick else ("B" if device.type == "cuda" else "mid"))
    batch = args.ar_batch_size or (2 if args.quick else (4 if device.type == "cpu" else 32))
    steps = args.warmup + args.repeats
    if size in AR_SIZES:
        config = IBQARConfig(**{"vocab_size": 16384, "num_classes": 1000, "grid_size": 16, **AR_SIZES[size]})
    else:
        config = IBQARConfig.from_preset(size)
    torch.manual_seed(0)
    model = IBQARForImageGeneration(config)
    tokens = config.num_image_tokens
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, config.vocab_size, (batch * steps, tokens), generator=g)
    labels = torch.randint(0, config.num_classes, (batch * steps,), generator=g)
    rows = [{"input_ids": c.tolist(), "label": int(lab)} for c, lab in zip(codes, labels)]
    with tempfile.TemporaryDirectory() as out:
        targs = IBQARTrainingArguments(
            **_common_args(device, variant, batch, steps, out),
            warmup_steps=0,  # the lr schedule does not change the cost of a step
            torch_compile=variant.endswith("+compile"),
        )
        trainer = IBQARTrainer(
            model=model, args=targs, train_dataset=_Rows(rows), data_collator=ARCodesCollator(tokens)
        )
        timer, mem = _run_trainer(trainer, device)
    median = statistics.median(timer.seconds[args.warmup :])
    return {
        "model": "ar",
        "architecture": size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "grid_size": config.grid_size,
        "vocab_size": config.vocab_size,
        "batch_size": batch,
        "tokens_per_step": batch * tokens,
        "steps_per_s": round(1 / median, 4),
        "tokens_per_s": round(batch * tokens / median, 1),
        "images_per_s": round(batch / median, 4),
        **_timing_fields(timer, args, median, mem),
    }


def _timing_fields(timer: _StepTimer, args: argparse.Namespace, median: float, mem: Any) -> dict[str, Any]:
    if len(timer.seconds) != args.warmup + args.repeats:
        raise RuntimeError(f"timed {len(timer.seconds)} steps, expected {args.warmup + args.repeats}")
    return {
        "warmup_steps": args.warmup,
        "repeats": args.repeats,
        "first_step_s": round(timer.seconds[0], 4),
        "step_seconds": round(median, 4),
        "all_step_seconds": rounded(timer.seconds[args.warmup :]),
        "peak_memory_above_model_mb": mem.peak_above_baseline_mb,
        "memory_method": mem.method,
        "torch_threads": torch.get_num_threads(),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="tokenizer,ar", help=f"comma list of {MODELS}")
    parser.add_argument(
        "--variants", default=None, help=f"comma list of {VARIANTS} (default: CPU fp32; CUDA all three)"
    )
    parser.add_argument("--tok-preset", default="imagenet-16384", help="tokenizer architecture (preset)")
    parser.add_argument(
        "--tok-resolution", type=int, default=None, help="default: CPU 128, CUDA 256, quick 32"
    )
    parser.add_argument("--tok-batch-size", type=int, default=None, help="default: CPU 2, CUDA 8")
    parser.add_argument(
        "--ar-size", default=None, help="tiny | mid | B | L | XL | XXL (default: CPU mid, CUDA B, quick tiny)"
    )
    parser.add_argument("--ar-batch-size", type=int, default=None, help="default: CPU 4, CUDA 32, quick 2")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps (default: CPU 2, CUDA 3, quick 1)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed steps (default: 3, quick 2)")
    add_run_arguments(parser, "tiny models at tiny sizes (seconds)", DEFAULT_OUTPUT)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args, device = parse_run_args(parser, argv)
    cuda = device.type == "cuda"
    if args.warmup is None:
        # The GAN step's second step still pays one-time costs on CPU (measured: 13, 18, 7.8, 7.8 s), hence 2.
        args.warmup = 1 if args.quick else (3 if cuda else 2)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3
    models = parse_choices(parser, args.models, MODELS, "model")
    if args.variants is None:
        variants = default_variants(cuda, args.quick, VARIANTS)
    else:
        variants = parse_choices(parser, args.variants, VARIANTS, "variant")

    logging.getLogger("transformers").setLevel(logging.ERROR)
    rows = []
    for model in models:
        for variant in variants:
            base = {"device": str(device), "variant": variant}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    fn = bench_tokenizer if model == "tokenizer" else bench_ar
                    row = {**base, **fn(args, variant, device), "weights": "random init"}
            except Exception as error:  # a failing variant (e.g. compile) must not lose the others
                row = {**base, "model": model, "error": repr(error)}
            rows.append(row)
            if "error" in row:
                print(f"[training] {model} {variant} failed: {row['error']}", flush=True)
            else:
                rate = f"{row['images_per_s']:.3f} images/s" if model == "tokenizer" else (
                    f"{row['tokens_per_s']:.1f} tokens/s"
                )  # fmt: skip
                print(
                    f"[training] {device.type} {model} {row['architecture']} {variant}: {rate}, "
                    f"{row['step_seconds']} s/step (first {row['first_step_s']} s), "
                    f"peak +{row['peak_memory_above_model_mb']} MB",
                    flush=True,
                )
            if cuda:
                torch.cuda.empty_cache()
    payload = merge_results(
        args.output,
        "training",
        machine_info(device),
        rows,
        key=("device", "model", "variant", "architecture", "batch_size", "resolution"),
    )
    print(f"wrote {args.output}")
    return payload


if __name__ == "__main__":
    main()
