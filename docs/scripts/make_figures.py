"""Draw the documentation figures under ``docs/assets/`` from the bundled digits pipeline.

    python docs/scripts/make_figures.py                 # all figures, about 25 s on 2 idle CPU cores
    python docs/scripts/make_figures.py --output_dir /tmp/figs

Inputs are only things that ship with the repository or its dependencies: ``checkpoints/ibq-digits``
(tokenizer + AR model trained on scikit-learn's digits), the 1,797 real digits of ``sklearn.datasets``
(prepared exactly as ``examples/digits/prepare_digits.py`` prepares the training set) and a photo from
``skimage.data``. Every random draw comes from a seeded ``torch.Generator``, so a rerun on the same
machine and library versions rewrites the same pixels. The numbers quoted in the docs are printed at the
end.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ibq_hf import IBQPipeline, codebook_usage

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "checkpoints" / "ibq-digits"
SCALE = 3  # 32×32 images are drawn as 96×96 blocks (nearest neighbour) so single pixels stay visible


def load_real_digits(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The digits as uint8 [N, R, R] and labels [N], through the same function that built the training set."""
    path = ROOT / "examples" / "digits" / "prepare_digits.py"
    spec = importlib.util.spec_from_file_location("prepare_digits", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.digits_as_images(resolution)


def to_model_space(gray_uint8: np.ndarray) -> torch.Tensor:
    """uint8 [N, R, R] grey images → float32 [N, 3, R, R] in [-1, 1] (grey replicated to RGB, as in training)."""
    x = torch.from_numpy(gray_uint8).float() / 127.5 - 1.0
    return x[:, None].expand(-1, 3, -1, -1).contiguous()


def to_display(x: torch.Tensor) -> np.ndarray:
    """Model-space [N, 3, H, W] → float [N, H, W, 3] in [0, 1] (clamped, as the pipeline does)."""
    return ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()


def tile(images: np.ndarray, rows: int, cols: int, gap: int = 2, scale: int = SCALE) -> np.ndarray:
    """[rows·cols, H, W, 3] in [0, 1] → one [rows·(H·s+gap)−gap, ...] mosaic with white gaps."""
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    n, h, w, c = images.shape
    assert n == rows * cols, (n, rows, cols)
    out = np.ones((rows * (h + gap) - gap, cols * (w + gap) - gap, c), dtype=np.float32)
    for i, image in enumerate(images):
        r, k = divmod(i, cols)
        out[r * (h + gap) : r * (h + gap) + h, k * (w + gap) : k * (w + gap) + w] = image
    return out


def save(fig: plt.Figure, path: Path, colors: int = 96) -> None:
    """Render, reduce to an adaptive palette of ``colors`` (no dithering: deterministic, small files), write."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB")
    image = image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    image.save(path, optimize=True)
    print(
        f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} ({path.stat().st_size} bytes)"
    )


def mosaic_figure(mosaic: np.ndarray, row_labels: list[str], col_labels: list[str] | None, title: str,
                  row_title: str, col_title: str | None = None) -> plt.Figure:  # fmt: skip
    """A mosaic with one label per row (and optionally per column) placed at the cell centres."""
    rows, cols = len(row_labels), len(col_labels) if col_labels else None
    height, width = mosaic.shape[:2]
    fig = plt.figure(figsize=(width / 100 + 0.9, height / 100 + 0.8))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(mosaic, interpolation="nearest")
    step_y = (height + 2) / rows
    ax.set_yticks([step_y * (r + 0.5) - 1 for r in range(rows)], row_labels)
    ax.set_ylabel(row_title)
    if cols:
        step_x = (width + 2) / cols
        ax.set_xticks([step_x * (k + 0.5) - 1 for k in range(cols)], col_labels)
        ax.xaxis.tick_top()
        ax.xaxis.set_label_position("top")
        if col_title:
            ax.set_xlabel(col_title)
    else:
        ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, pad=6 if not cols else 24, fontsize=11)
    return fig


@torch.no_grad()
def generated_digits(pipe: IBQPipeline, out: Path, per_class: int = 8) -> None:
    """A row per class, ``per_class`` samples each, image i of row c seeded with 1000·c + i."""
    labels = [c for c in range(10) for _ in range(per_class)]
    generators = [torch.Generator().manual_seed(1000 * c + i) for c in range(10) for i in range(per_class)]
    images = pipe(class_labels=labels, generator=generators, output_type="np").images
    fig = mosaic_figure(
        tile(images, 10, per_class),
        [str(c) for c in range(10)],
        None,
        f"IBQPipeline samples, guidance {pipe.transformer.generation_config.guidance_scale:g} (stored default)",
        "requested class",
    )
    save(fig, out / "generated_digits.png")


@torch.no_grad()
def guidance_sweep(pipe: IBQPipeline, out: Path, scales=(1.0, 1.5, 2.0, 3.0, 5.0)) -> None:
    """The same seed per column at every guidance scale: what classifier-free guidance changes."""
    rows = []
    for scale in scales:
        generators = [torch.Generator().manual_seed(7 + c) for c in range(10)]
        rows.append(
            pipe(
                class_labels=list(range(10)), guidance_scale=scale, generator=generators, output_type="np"
            ).images
        )
    fig = mosaic_figure(
        tile(np.concatenate(rows), len(scales), 10),
        [f"{s:g}" for s in scales],
        [str(c) for c in range(10)],
        "Same seed per column, guidance scale per row",
        "guidance_scale",
        "class label",
    )
    save(fig, out / "guidance_scales.png")


@torch.no_grad()
def reconstructions(pipe: IBQPipeline, digits: np.ndarray, out: Path, count: int = 12) -> dict[str, float]:
    """Originals above reconstructions for ``count`` digits drawn with a seeded permutation."""
    vqvae = pipe.vqvae
    pick = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))[:count].numpy()
    x = to_model_space(digits[pick])
    recon = vqvae.decode_indices(vqvae.tokenize(x))
    mosaic = tile(np.concatenate([to_display(x), to_display(recon)]), 2, count)
    fig = mosaic_figure(mosaic, ["original", "reconstruction"], None,
                        "Digits tokenizer: real digits (top) and their 8×8-token reconstructions (bottom)", "")  # fmt: skip
    save(fig, out / "reconstructions_digits.png")

    # Whole-dataset numbers for the text: mean absolute error in [-1, 1] and PSNR on [0, 1] images.
    x_all = to_model_space(digits)
    recon_all = torch.cat([vqvae.decode_indices(vqvae.tokenize(b)) for b in x_all.split(256)]).clamp(-1, 1)
    mse = (((recon_all - x_all) / 2) ** 2).flatten(1).mean(1)
    return {
        "recon_l1_mean": float((recon_all - x_all).abs().mean()),
        "recon_psnr_mean_db": float((10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean()),
    }


def _photo(resolution: int) -> np.ndarray:
    """``skimage.data.camera()`` (a real 512×512 grey photograph), area-downscaled to ``resolution``."""
    from skimage import data

    x = torch.from_numpy(data.camera()).float()[None, None]
    x = F.interpolate(x, size=(resolution, resolution), mode="area")
    return x[0, 0].round().clamp(0, 255).to(torch.uint8).numpy()


@torch.no_grad()
def token_maps(pipe: IBQPipeline, digits: np.ndarray, labels: np.ndarray, out: Path) -> dict[str, float]:
    """A digit and a photo next to their token-index maps and reconstructions."""
    vqvae = pipe.vqvae
    cmap = plt.get_cmap("viridis")
    digit = digits[int(np.flatnonzero(labels == 3)[0])][None]
    photo = _photo(128)
    fig, axes = plt.subplots(2, 3, figsize=(9.6, 6.6), gridspec_kw={"hspace": 0.3, "wspace": 0.08})
    stats = {}
    for row, (name, image) in enumerate([("digit (32×32)", digit), ("photo (128×128)", photo[None])]):
        x = to_model_space(image)
        ids = vqvae.tokenize(x)
        recon = vqvae.decode_indices(ids).clamp(-1, 1)
        grid = ids[0].numpy()
        axes[row, 0].imshow(to_display(x)[0], interpolation="nearest")
        axes[row, 0].set_title(f"input: {name}", fontsize=10)
        axes[row, 1].imshow(
            grid, cmap=cmap, vmin=0, vmax=vqvae.config.num_embeddings - 1, interpolation="nearest"
        )
        axes[row, 1].set_title(f"token ids, {grid.shape[0]}×{grid.shape[1]} grid", fontsize=10)
        if grid.shape[0] <= 8:  # small enough to print every id in its cell
            for (i, j), value in np.ndenumerate(grid):
                shade = "black" if value > 0.6 * vqvae.config.num_embeddings else "white"
                axes[row, 1].text(j, i, str(value), ha="center", va="center", fontsize=8, color=shade)
        axes[row, 2].imshow(to_display(recon)[0], interpolation="nearest")
        axes[row, 2].set_title("decode_indices(token ids)", fontsize=10)
        key = "digit" if row == 0 else "photo"
        stats[f"{key}_distinct_tokens"] = int(np.unique(grid).size)
        stats[f"{key}_psnr_db"] = float(10 * torch.log10(1.0 / (((recon - x) / 2) ** 2).mean()))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("One token per 4×4 pixel patch (tokenizer downsampling factor 4)", fontsize=11)
    save(fig, out / "token_map.png")
    return stats


@torch.no_grad()
def codebook_plot(pipe: IBQPipeline, digits: np.ndarray, out: Path) -> dict[str, float]:
    """Code frequencies over every token of the 1,797 real digits."""
    vqvae = pipe.vqvae
    ids = torch.cat([vqvae.tokenize(b) for b in to_model_space(digits).split(256)])
    usage = codebook_usage(ids, vqvae.config.num_embeddings)
    counts = usage["counts"].numpy()
    k = counts.size
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1.6, 1]})
    order = np.sort(counts)[::-1]
    left.bar(np.arange(k), np.maximum(order, 0.8), width=1.0, color="#3f51b5")
    left.set_yscale("log")
    left.set_ylim(0.8, order.max() * 1.5)
    left.set_xlim(-1, k)
    left.set_xlabel("codes, most to least frequent")
    left.set_ylabel("tokens (log scale)")
    left.set_title(
        f"{usage['used']} of {k} codes used, perplexity {usage['perplexity']:.1f}  ({ids.numel():,} tokens)",
        fontsize=10,
    )
    side = math.isqrt(k)  # 16 for the digits tokenizer's 256 codes
    assert k % side == 0, k
    image = right.imshow(np.log10(counts.reshape(side, -1) + 1), cmap="magma", interpolation="nearest")
    right.set_title(f"log10(1 + count) per code id ({side}×{k // side}, row-major)", fontsize=10)
    right.set_xticks([])
    right.set_yticks([])
    fig.colorbar(image, ax=right, fraction=0.046, pad=0.04)
    fig.suptitle("Codebook usage of the digits tokenizer on the real digits", fontsize=11, y=1.02)
    save(fig, out / "codebook_usage.png")
    return {
        "codes_used": usage["used"],
        "codebook_size": k,
        "utilization": usage["utilization"],
        "perplexity": usage["perplexity"],
        "tokens": ids.numel(),
    }


def ar_schedule_plot(out: Path) -> None:
    """The reference AR learning-rate and weight-decay schedules, from the library's own functions."""
    from ibq_hf.training.ar_schedule import (
        AR_TRAINING_PRESETS,
        resolve_ar_schedule,
        var_lr_lambda,
        var_weight_decay,
    )

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    for name in AR_TRAINING_PRESETS:  # reference §4.1, ImageNet at global batch 768 (1,669 steps per epoch)
        schedule = resolve_ar_schedule(name, num_examples=1_281_166, global_batch=768)
        total, final_wd = schedule.max_steps, schedule.final_weight_decay
        steps = np.linspace(0, total - 1, 1200).round().astype(int)
        factor = var_lr_lambda(schedule.warmup_steps, total, schedule.final_lr_ratio)
        left.plot(steps / 1000, [3 * factor(int(i)) for i in steps], label=name, linewidth=1.4)
        right.plot(steps / 1000, [var_weight_decay(int(i), total, 0.05, final_wd) for i in steps], label=name)
    left.set_ylabel("learning rate (×1e-4)")
    left.set_title("lr: warm-up, 5 % plateau, linear decay to wpe·lr", fontsize=10)
    right.set_ylabel("weight decay")
    right.set_title("wd: cosine from 0.05 to twde (constant when twde = 0)", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel("optimizer step (thousands; global batch 768)")
        ax.legend(fontsize=8, frameon=False)
        ax.grid(alpha=0.3)
    fig.suptitle("Reference AR schedules per size (ibq_hf.training.ar_schedule)", fontsize=11, y=1.02)
    fig.tight_layout()
    save(fig, out / "ar_schedule.png")


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_dir", type=Path, default=ROOT / "docs" / "assets")
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    args = parser.parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    pipe = IBQPipeline.from_pretrained(str(args.checkpoint))
    pipe.set_progress_bar_config(disable=True)
    resolution = pipe.vqvae.config.resolution
    digits, labels = load_real_digits(resolution)

    stats: dict[str, float] = {}
    generated_digits(pipe, args.output_dir)
    guidance_sweep(pipe, args.output_dir)
    stats.update(reconstructions(pipe, digits, args.output_dir))
    stats.update(token_maps(pipe, digits, labels, args.output_dir))
    stats.update(codebook_plot(pipe, digits, args.output_dir))
    ar_schedule_plot(args.output_dir)
    print(json.dumps(stats, indent=2))
    return stats


if __name__ == "__main__":
    main()
