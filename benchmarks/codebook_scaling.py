"""Codebook utilization as the codebook grows: IBQ vs vanilla VQ, at a scale a CPU can train (the paper's claim).

The paper's reason for IBQ: vanilla VQ (nearest-code straight-through; only the selected codes get gradient)
loses codebook utilization as the codebook grows, IBQ (straight-through over the one-hot of the full softmax;
every code gets gradient) keeps it high. This experiment trains the **same** small tokenizer with the **same**
trainer, data, steps and seeds for every codebook size K and three arms:

* ``ibq``: IBQ as released (entropy loss on, weight 0.05, τ 0.01);
* ``ibq_no_entropy``: IBQ without the entropy loss (so the quantizer's effect is not confounded with it);
* ``vanilla``: the VQGAN quantizer (:class:`~ibq_hf.models.vanilla_quantizer.VanillaVectorQuantizer`).

Data: random crops of the photographs in the scikit-image wheel (:mod:`ibq_hf.sample_datasets`; training and
held-out crops come from disjoint photographs), streamed through the same data path as any dataset
(``examples/train_ibq.py --train_data_dir``). Deviation from the recipe: no LPIPS term (its VGG weights are not
available offline).

Measured per run, on held-out crops with the exported (EMA) tokenizer: utilization (distinct codes / K over at
least 5·K tokens, so the measurement itself does not cap it), perplexity, PSNR, KID (unbiased, on
``--kid-images`` images) and FID on the same images (biased at this N: reported with N, for reference only);
training curves (windowed utilization and losses from the trainer's logs).

    python benchmarks/codebook_scaling.py                 # the committed run (see docs/codebook_scaling.md)
    python benchmarks/codebook_scaling.py --quick         # tiny sizes, seconds (the test suite runs this)

Writes ``benchmarks/results/codebook_scaling.json`` (as it goes, so a cut-off run keeps what finished) and, with
``--figure``, a PNG: utilization vs K per arm, and PSNR vs K.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine_info, utc_now, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
ARMS = {
    "ibq": ["--quantizer_type", "ibq"],
    "ibq_no_entropy": ["--quantizer_type", "ibq", "--no_entropy_loss"],
    "vanilla": ["--quantizer_type", "vanilla"],
}


def _train_ibq_module() -> Any:
    spec = importlib.util.spec_from_file_location("train_ibq", ROOT / "examples" / "train_ibq.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes and steps (smoke run, seconds)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="codebook sizes K")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resolution", type=int, default=None, help="crop size (pixels)")
    parser.add_argument("--data-dir", type=Path, default=None, help="photo crops (built here when missing)")
    parser.add_argument("--train-crops", type=int, default=None)
    parser.add_argument("--eval-crops", type=int, default=None, help="held-out crops (>= 5*K tokens needed)")
    parser.add_argument("--kid-images", type=int, default=None, help="held-out images for KID / FID")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "codebook_scaling.json")
    parser.add_argument("--figure", type=Path, default=None, help="write the PNG figure here")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the finished runs of --output (same settings and commit required) and run only the rest",
    )
    return parser


def _defaults(args: argparse.Namespace) -> argparse.Namespace:
    quick = args.quick
    fill = {
        "sizes": [16, 64] if quick else [256, 1024, 4096, 16384],
        "steps": 4 if quick else 600,
        "batch_size": 4 if quick else 32,
        "resolution": 16 if quick else 32,
        "train_crops": 64 if quick else 20_000,
        "eval_crops": 24 if quick else 1_280,
        "kid_images": 0 if quick else 1_000,
    }
    for key, value in fill.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def _model_flags(quick: bool) -> list[str]:
    """The tokenizer: 3 levels (factor 4: 8×8 tokens on 32² crops), one res block, attention at 8², 32-d codes."""
    if quick:
        flags = "--ch 32 --ch_mult 1 2 --num_res_blocks 1 --attn_resolutions 8 --z_channels 32 --embed_dim 8"
    else:
        flags = (
            "--ch 32 --ch_mult 1 2 2 --num_res_blocks 1 --attn_resolutions 8 --z_channels 32 --embed_dim 32"
        )
    return flags.split(" ")


@torch.no_grad()
def evaluate_held_out(
    tokenizer: Any, data_dir: Path, resolution: int, kid_images: int, inception: Any, real_features: Any
) -> dict[str, Any]:
    """Utilization, perplexity, PSNR, KID/FID of ``tokenizer`` on the held-out split (center crops)."""
    from ibq_hf.data import collate_images, load_image_dataset
    from ibq_hf.evaluation import InceptionFeatureAccumulator, frechet_distance, psnr_uint8
    from ibq_hf.evaluation.kid import kernel_inception_distance
    from ibq_hf.models.quantizer import CodebookUsage

    stream = load_image_dataset(
        dataset_name=None, train_data_dir=str(data_dir), split="test", resolution=resolution, train=False,
        shuffle_buffer_size=0, require_labels=False,
    )  # fmt: skip
    usage = CodebookUsage(tokenizer.config.num_embeddings)
    psnrs: list[float] = []
    fake = InceptionFeatureAccumulator(inception, keep_features=True) if inception is not None else None
    rows = list(stream.dataset)
    seen = 0
    for start in range(0, len(rows), 64):
        x = collate_images(rows[start : start + 64])["pixel_values"]
        indices = tokenizer.tokenize(x)
        usage.update(indices)
        recon = tokenizer.decode_indices(indices).clamp(-1, 1)
        a, b = ((x + 1) / 2).numpy(), ((recon + 1) / 2).numpy()
        psnrs.extend(psnr_uint8(a[i], b[i]) for i in range(len(a)))
        if fake is not None and seen < kid_images:
            take = min(kid_images - seen, len(x))
            fake.update((recon[:take] + 1) / 2)
            seen += take
    stats = usage.compute()
    tokens = int(usage.counts.sum())
    out: dict[str, Any] = {
        "held_out_images": len(rows),
        "held_out_tokens": tokens,
        "tokens_per_code": tokens / tokenizer.config.num_embeddings,
        "utilization": stats["utilization"],
        "used_codes": stats["used"],
        "perplexity": stats["perplexity"],
        "psnr": float(np.mean(psnrs)),
    }
    if fake is not None and real_features is not None:
        real_stats, real_feats = real_features
        kid = kernel_inception_distance(real_feats, fake.features, subset_size=min(500, len(real_feats)))
        out.update(
            kid=kid["kid"],
            kid_std=kid["kid_std"],
            kid_subset_size=kid["subset_size"],
            fid=float(
                frechet_distance(
                    real_stats.mean, real_stats.covariance, fake.stats.mean, fake.stats.covariance
                )
            ),
            fid_kid_images=seen,
        )
    return out


def _real_features(data_dir: Path, resolution: int, kid_images: int, inception: Any) -> Any:
    from ibq_hf.data import collate_images, load_image_dataset
    from ibq_hf.evaluation import InceptionFeatureAccumulator

    stream = load_image_dataset(
        dataset_name=None, train_data_dir=str(data_dir), split="test", resolution=resolution, train=False,
        shuffle_buffer_size=0, require_labels=False,
    )  # fmt: skip
    acc = InceptionFeatureAccumulator(inception, keep_features=True)
    rows = list(stream.dataset)[:kid_images]
    for start in range(0, len(rows), 64):
        acc.update((collate_images(rows[start : start + 64])["pixel_values"] + 1) / 2)
    return acc.stats, acc.features


def _curves(log_history: list[dict[str, Any]]) -> dict[str, list[float]]:
    keys = (
        "train/codebook_utilization",
        "train/codebook_perplexity",
        "train/rec_loss",
        "train/quant_loss",
        "loss",
    )
    curves: dict[str, list[float]] = {"step": []}
    for entry in log_history:
        if "train/codebook_utilization" not in entry:
            continue
        curves["step"].append(entry["step"])
        for key in keys:
            if key in entry:
                curves.setdefault(key, []).append(float(entry[key]))
    return curves


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ibq_hf import IBQVQModel
    from ibq_hf.sample_datasets import write_skimage_photo_crops

    args = _defaults(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    ch_mult = _model_flags(args.quick)
    levels = ch_mult.index("--num_res_blocks") - ch_mult.index("--ch_mult") - 1
    tokens_per_image = (args.resolution // 2 ** (levels - 1)) ** 2
    needed = 5 * max(args.sizes)
    if args.eval_crops * tokens_per_image < needed:
        raise SystemExit(
            f"--eval-crops {args.eval_crops} gives {args.eval_crops * tokens_per_image} held-out tokens; K = "
            f"{max(args.sizes)} needs >= {needed} (5·K) or utilization is capped by the measurement."
        )
    tmp = tempfile.TemporaryDirectory(prefix="codebook-scaling-")
    data_dir = args.data_dir or Path(tmp.name) / "photos"
    if not (data_dir / "dataset.json").exists():
        write_skimage_photo_crops(
            data_dir, resolution=args.resolution, train_crops=args.train_crops, eval_crops=args.eval_crops,
            seed=args.seed,
        )  # fmt: skip
    dataset = json.loads((data_dir / "dataset.json").read_text())
    inception = real = None
    if args.kid_images > 0:
        from ibq_hf.evaluation import load_fid_inception

        inception = load_fid_inception("fid-helper", allow_download=False)
        real = _real_features(data_dir, args.resolution, args.kid_images, inception)

    train_ibq = _train_ibq_module()
    result: dict[str, Any] = {
        "benchmark": "codebook_scaling",
        "date": utc_now(),
        "commit": _git_commit(),
        "machine": machine_info("cpu"),
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("output", "figure")
        },
        "model_flags": _model_flags(args.quick),
        "dataset": dataset,
        "deviations": ["no LPIPS term (VGG weights unavailable offline)", "EMA decay 0.99 (short runs)"],
        "runs": [],
    }
    if args.resume and args.output.exists():
        result = _resumed(result, json.loads(args.output.read_text()))
    done = {(r["K"], r["arm"]) for r in result["runs"]}
    started = time.perf_counter() - result.get("total_seconds", 0.0)
    for k in args.sizes:
        for arm in args.arms:
            if (k, arm) in done:
                continue
            out_dir = Path(tmp.name) / f"{arm}-{k}"
            argv = [
                "--train_data_dir", str(data_dir), "--resolution", str(args.resolution),
                *_model_flags(args.quick), "--num_embeddings", str(k), *ARMS[arm],
                "--no_lpips", "--disc_num_layers", "2", "--per_device_train_batch_size", str(args.batch_size),
                "--learning_rate", str(args.learning_rate), "--ema_decay", "0.99", "--max_steps", str(args.steps),
                "--logging_steps", str(max(1, args.steps // 20)), "--save_strategy", "no", "--report_to", "none",
                "--seed", str(args.seed), "--shuffle_buffer_size", "1000", "--dataloader_num_workers", "0",
                "--output_dir", str(out_dir), "--disable_tqdm", "true",
            ]  # fmt: skip
            t0 = time.perf_counter()
            trainer = train_ibq.main(argv)
            train_s = time.perf_counter() - t0
            tokenizer = IBQVQModel.from_pretrained(out_dir).eval()
            metrics = evaluate_held_out(
                tokenizer, data_dir, args.resolution, args.kid_images, inception, real
            )
            entry = {"K": k, "arm": arm, "train_seconds": round(train_s, 1), **metrics}
            entry["curves"] = _curves(trainer.state.log_history)
            result["runs"].append(entry)
            result["total_seconds"] = round(time.perf_counter() - started, 1)
            write_json_atomic(args.output, result)
            print(
                f"K={k:>6} {arm:>15}: utilization {metrics['utilization']:.3f} perplexity "
                f"{metrics['perplexity']:.1f} PSNR {metrics['psnr']:.2f} ({train_s:.0f} s)",
                flush=True,
            )
            del trainer, tokenizer
    if args.figure is not None:
        write_figure(result, args.figure)
    tmp.cleanup()
    return result


_RUN_INDEPENDENT = ("sizes", "arms", "threads", "resume")


def _resumed(fresh: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """``previous`` continued: refused when its settings (other than which runs) or its commit differ."""
    keep = {k: v for k, v in fresh["settings"].items() if k not in _RUN_INDEPENDENT}
    old = {k: v for k, v in previous.get("settings", {}).items() if k not in _RUN_INDEPENDENT}
    if keep != old or fresh["commit"] != previous.get("commit"):
        raise SystemExit(
            "--resume: the existing results were made with other settings or another commit "
            f"({previous.get('commit')} vs {fresh['commit']}); use another --output or drop --resume."
        )
    previous["settings"] = fresh["settings"]
    previous.setdefault("resumed_at", []).append(fresh["date"])
    return previous


def write_figure(result: dict[str, Any], path: Path) -> None:
    """Utilization vs K per arm (left) and PSNR vs K (right), log2 K axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for arm in dict.fromkeys(r["arm"] for r in result["runs"]):
        runs = sorted((r for r in result["runs"] if r["arm"] == arm), key=lambda r: r["K"])
        ks = [r["K"] for r in runs]
        axes[0].plot(ks, [100 * r["utilization"] for r in runs], marker="o", label=arm)
        axes[1].plot(ks, [r["psnr"] for r in runs], marker="o", label=arm)
    for ax, label in zip(axes, ("held-out utilization (%)", "held-out PSNR (dB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("codebook size K")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(0, 105)
    axes[0].legend()
    steps = result["settings"]["steps"]
    fig.suptitle(f"IBQ vs vanilla VQ, photo crops {result['settings']['resolution']}², {steps} steps each")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    main()
