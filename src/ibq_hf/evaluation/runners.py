"""The evaluation loops that `examples/*.py` and ``ibq-hf evaluate`` share.

* `evaluate_tokenizer`: rFID / PSNR / SSIM / LPIPS / codebook usage of a tokenizer on image batches (§6).
* `sample_for_fid`: ADM-protocol sampling (§5.3) into an ADM ``.npz``, independent of the number of processes.
* `evaluate_generation`: gFID / IS / precision / recall of an ``.npz`` against a reference ``.npz`` or images.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from ..image_processing import UINT8_ROUNDINGS, to_uint8
from ..models.generation_ar import resolve_generation_settings
from ..models.quantizer import CodebookUsage
from .errors import MetricUnavailableError
from .features import InceptionFeatureAccumulator, fid_from_accumulators
from .image_metrics import PSNRSSIM
from .inception import FIDInceptionV3
from .lpips import LPIPSMeter
from .npz import NpzImageReader, NpzImageWriter
from .precision_recall import precision_recall

__all__ = [
    "evaluate_generation",
    "evaluate_tokenizer",
    "image_seed",
    "results_markdown",
    "sample_for_fid",
    "sample_order",
    "write_results",
]


def _progress(total: int | None, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True)


# ----------------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_tokenizer(
    vqvae: Any,
    batches: Iterable[torch.Tensor],
    inception: FIDInceptionV3 | None,
    lpips: Mapping[str, torch.nn.Module | MetricUnavailableError] | None = None,
    max_images: int | None = None,
    progress: bool = True,
    unavailable: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Reconstruct every batch ([B, 3, H, W] in [-1, 1]) and measure it against the original.

    The batches are the protocol's pixels: ``ibq-hf evaluate tokenizer`` builds them with
    :func:`ibq_hf.image_processing.preprocess` (through the evaluation data path, ``--protocol``); for pictures
    in memory use :func:`ibq_hf.image_processing.images_to_tensor` with ``resolution`` and the same
    ``protocol`` (``"pretrain"`` for the Pretrain tokenizers), which gives the same pixels.

    rFID compares Inception features of the float originals and the clamped float reconstructions (not uint8),
    PSNR/SSIM use the uint8-truncated images, LPIPS the [-1, 1] pair, usage the token ids (§6).
    ``lpips`` maps a name ("lpips_vgg") to a model, or to the error explaining why it is unavailable.
    ``inception=None`` skips rFID (reported as unavailable with ``unavailable["rfid"]``).
    """
    device = next(vqvae.parameters()).device
    dtype = next(vqvae.parameters()).dtype
    real = InceptionFeatureAccumulator(inception) if inception is not None else None
    fake = InceptionFeatureAccumulator(inception) if inception is not None else None
    pixel = PSNRSSIM(value_range=(-1.0, 1.0))
    usage = CodebookUsage(vqvae.config.num_embeddings)
    meters = {name: LPIPSMeter(m) for name, m in (lpips or {}).items() if isinstance(m, torch.nn.Module)}
    reasons = {name: str(m) for name, m in (lpips or {}).items() if not isinstance(m, torch.nn.Module)}
    reasons.update(unavailable or {})
    start, count = time.perf_counter(), 0
    bar = _progress(max_images, "tokenizer eval", progress)
    for x in _limited(batches, max_images):
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"Expected image batches [B, 3, H, W] in [-1, 1], got shape {tuple(x.shape)}.")
        x = x.float()
        indices = vqvae.tokenize(x.to(device, dtype))
        recon = vqvae.decode_indices(indices).float().clamp(-1.0, 1.0).cpu()
        usage.update(indices)
        pixel.update(x, recon)
        if real is not None and fake is not None:
            real.update((x + 1) / 2)
            fake.update((recon + 1) / 2)
        for meter in meters.values():
            meter.update(x, recon)
        count += len(x)
        bar.update(len(x))
    bar.close()
    if count == 0:
        raise ValueError("The image source yielded no images; check the dataset, split and columns.")
    counts = usage.compute()
    result: dict[str, Any] = {"num_images": count}
    if real is not None and fake is not None and count >= 2:
        result["rfid"] = fid_from_accumulators(predictions=fake, references=real)
    else:
        result["rfid"] = None
        reasons.setdefault("rfid", "needs the FID Inception weights and at least 2 images")
    result.update({k: v for k, v in pixel.compute().items() if k != "count"})
    for name in ("lpips_vgg", "lpips_alex"):
        result[name] = meters[name].compute() if name in meters else None
    result.update(
        codebook_usage=counts["utilization"],
        codebook_used=counts["used"],
        codebook_size=vqvae.config.num_embeddings,
        codebook_perplexity=counts["perplexity"],
        num_tokens=int(usage.counts.sum()),
        inception_weights=getattr(inception, "source", None),
        seconds=round(time.perf_counter() - start, 2),
        unavailable={k: v for k, v in reasons.items() if result.get(k) is None},
    )
    return result


# ----------------------------------------------------------------------------------------------------
# Sampling (ADM protocol)
# ----------------------------------------------------------------------------------------------------


def image_seed(seed: int, index: int) -> int:
    """The seed of global image ``index``: a hash of (seed, index), so an image never depends on the process
    count, the batch size or the other images."""
    return int(
        np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]).generate_state(1, np.uint64)[0] >> 1
    )


# Mixed into the seed of the file order so that it is not correlated with any image's own seed.
_ORDER_STREAM = 0x5F0D_E12


def sample_order(seed: int, total: int, shuffle: bool = True) -> np.ndarray:
    """Global image index at each position of the sample file: int64 [total], a permutation of ``range(total)``.

    Image ``i`` (class ``classes[i // images_per_class]``, generator seed `image_seed(seed, i)`) is written at
    the position ``p`` where ``order[p] == i``. Shuffled (the default, like the reference's ``combine_npz.py``,
    but seeded by ``seed``) so that Inception Score's contiguous splits of 5,000 each see every class in
    proportion; ``shuffle=False`` gives class order. Depends only on ``(seed, total)``.
    """
    if not shuffle:
        return np.arange(total, dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, _ORDER_STREAM]))
    return rng.permutation(total).astype(np.int64)


@torch.no_grad()
def _decode_one(pipe: Any, tokens: torch.Tensor, rounding: str = "round") -> np.ndarray:
    """Decode one image alone: batched convolutions round differently for different batch compositions, which
    would make an image depend (by one uint8 level, rarely) on which images share its batch."""
    vqvae = pipe.vqvae
    pixels = vqvae.decode_indices(tokens[None].to(next(vqvae.parameters()).device))
    return to_uint8((pixels.float().clamp(-1, 1) + 1) / 2, rounding)


def sample_for_fid(
    pipe: Any,
    output: str | os.PathLike,
    images_per_class: int = 50,
    classes: list[int] | None = None,
    batch_size: int = 50,
    seed: int = 0,
    guidance_scale: float | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    jacobi_window: int | None = None,
    rounding: str = "round",
    accelerator: Any | None = None,
    progress: bool = True,
    shuffle: bool = True,
) -> dict[str, Any] | None:
    """Sample ``images_per_class`` images of every class (reference §5.3) into an ADM ``.npz``.

    Global image ``i`` has class ``classes[i // images_per_class]`` and its own generator seeded with
    `image_seed(seed, i)`; tokens are sampled in batches and each image is decoded alone, so the file does not
    depend on the batch size or the number of processes. Position ``p`` of the file holds image
    ``sample_order(seed, N, shuffle)[p]`` with its label: shuffled by default, because Inception Score is computed
    over contiguous splits of the file and a class-sorted file gives each split only a few classes (the reference
    shuffles before writing too). Images are generated in file order, so the writer streams. With an
    ``accelerate.Accelerator`` of W processes, rank r draws positions r, r + W, ... into a shard next to
    ``output``; rank 0 then merges them in position order (streamed) into ``arr_0`` (uint8 [N, H, W, 3]) and
    ``arr_1`` (labels), and writes ``<output>.json`` with the settings. Unset sampling settings come from
    ``pipe.transformer.generation_config`` (the per-model temperature / CFG of the paper). ``jacobi_window``
    samples with speculative Jacobi decoding (the same distribution, other images per seed).
    Returns the settings dict on rank 0, None elsewhere.
    """
    if rounding not in UINT8_ROUNDINGS:
        raise ValueError(f"rounding must be one of {UINT8_ROUNDINGS}, got {rounding!r}.")
    if images_per_class < 1 or batch_size < 1:
        raise ValueError("images_per_class and batch_size must be >= 1.")
    num_classes = pipe.transformer.config.num_classes
    classes = list(range(num_classes)) if classes is None else [int(c) for c in classes]
    if not classes or min(classes) < 0 or max(classes) >= num_classes:
        raise ValueError(f"classes must be non-empty ids in [0, {num_classes}), got {classes[:10]}.")
    output = os.fspath(output)
    if not output.endswith(".npz"):
        raise ValueError(f"output must be an .npz path, got {output!r}.")
    # The settings every image is sampled with (checked before any work), recorded next to the file.
    sampling = resolve_generation_settings(
        pipe.transformer.generation_config,
        guidance_scale=guidance_scale,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        jacobi_window=jacobi_window,
    )
    rank = accelerator.process_index if accelerator is not None else 0
    world = accelerator.num_processes if accelerator is not None else 1
    total = len(classes) * images_per_class
    order = sample_order(seed, total, shuffle)  # file position -> global image index
    mine = list(range(rank, total, world))  # this rank's file positions
    shard_path = f"{output}.rank{rank}-of-{world}.npy"
    shard = None
    start = time.perf_counter()
    bar = _progress(len(mine), f"sampling (rank {rank})", progress)
    for begin in range(0, len(mine), batch_size):
        chunk = [int(order[p]) for p in mine[begin : begin + batch_size]]
        labels = [classes[i // images_per_class] for i in chunk]
        generators = [torch.Generator().manual_seed(image_seed(seed, i)) for i in chunk]
        tokens = pipe(
            class_labels=labels,
            generator=generators,
            guidance_scale=guidance_scale,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            jacobi_window=jacobi_window,
            output_type="latent",
        ).images
        uint8 = np.concatenate([_decode_one(pipe, t, rounding) for t in tokens])
        if shard is None:
            os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
            shard = np.lib.format.open_memmap(
                shard_path, mode="w+", dtype=np.uint8, shape=(len(mine), *uint8.shape[1:])
            )
        shard[begin : begin + len(chunk)] = uint8
        bar.update(len(chunk))
    bar.close()
    if shard is not None:
        shard.flush()
        del shard
    if accelerator is not None:
        accelerator.wait_for_everyone()
    if rank != 0:
        return None
    shards = [np.load(f"{output}.rank{r}-of-{world}.npy", mmap_mode="r") for r in range(world) if r < total]
    shape = shards[0].shape[1:]
    labels_all = np.asarray(classes, dtype=np.int64)[order // images_per_class]
    with NpzImageWriter(output, total, shape) as writer:
        for begin in range(0, total, 1024):
            idx = np.arange(begin, min(begin + 1024, total))
            writer.write(np.stack([shards[i % world][i // world] for i in idx]))
        writer.set_labels(labels_all)
    del shards
    for r in range(min(world, total)):
        os.remove(f"{output}.rank{r}-of-{world}.npy")
    settings = {
        "output": output,
        "num_images": total,
        "images_per_class": images_per_class,
        "num_classes": len(classes),
        "image_shape": list(shape),
        "seed": seed,
        "seeding": "image i uses torch.Generator().manual_seed(image_seed(seed, i)); class = classes[i // per_class]",
        "order": "shuffled: position p holds image sample_order(seed, num_images)[p]"
        if shuffle
        else "class order: position p holds image p",
        **{
            name: sampling[name]
            for name in ("guidance_scale", "temperature", "top_k", "top_p", "jacobi_window")
        },
        "rounding": rounding,
        "num_processes": world,
        "seconds": round(time.perf_counter() - start, 2),
    }
    with open(output + ".json", "w") as f:
        json.dump(settings, f, indent=2)
    return settings


# ----------------------------------------------------------------------------------------------------
# Generation metrics
# ----------------------------------------------------------------------------------------------------


def _accumulate(
    accumulator: InceptionFeatureAccumulator,
    batches: Iterator[np.ndarray | torch.Tensor],
    total: int | None,
    desc: str,
    progress: bool,
) -> None:
    bar = _progress(total, desc, progress)
    for batch in batches:
        accumulator.update(batch)
        bar.update(len(batch))
    bar.close()


def evaluate_generation(
    samples: str | os.PathLike | Iterable[np.ndarray | torch.Tensor],
    reference: str | os.PathLike | Iterable[np.ndarray | torch.Tensor],
    inception: FIDInceptionV3,
    batch_size: int = 50,
    max_samples: int | None = None,
    max_reference: int | None = None,
    precision_recall_k: int | None = 3,
    progress: bool = True,
) -> dict[str, Any]:
    """gFID, Inception Score, precision and recall of ``samples`` against ``reference``.

    Both may be ADM ``.npz`` paths (streamed in batches) or iterables of image batches (uint8 or [0, 1] floats,
    e.g. from a `datasets` split). IS needs weights with logits: otherwise it is reported as unavailable, with
    the reason, never as a number. ``precision_recall_k=None`` skips precision/recall (which keeps all features,
    8 KB per image).
    """
    start = time.perf_counter()
    keep = precision_recall_k is not None
    sample_acc = InceptionFeatureAccumulator(
        inception, keep_features=keep, inception_score=True, batch_size=batch_size
    )
    ref_acc = InceptionFeatureAccumulator(inception, keep_features=keep, batch_size=batch_size)
    info: dict[str, Any] = {}
    for name, source, acc, limit in (
        ("samples", samples, sample_acc, max_samples),
        ("reference", reference, ref_acc, max_reference),
    ):
        if isinstance(source, (str, os.PathLike)):
            reader = NpzImageReader(source)
            n = reader.num_images if limit is None else min(limit, reader.num_images)
            info[f"{name}_shape"] = list(reader.image_shape)
            _accumulate(acc, reader.batches(batch_size, limit=n), n, name, progress)
        else:
            _accumulate(acc, _limited(source, limit), limit, name, progress)
        if acc.count < 2:
            raise ValueError(
                f"The {name} gave {acc.count} images; FID needs at least 2 (in practice thousands)."
            )
    result: dict[str, Any] = {"num_samples": sample_acc.count, "num_reference": ref_acc.count}
    result["fid"] = fid_from_accumulators(predictions=sample_acc, references=ref_acc)
    unavailable: dict[str, str] = {}
    if sample_acc.inception_score is not None:
        result.update(sample_acc.inception_score.compute())
    else:
        from .errors import InceptionLogitsUnavailableError

        result["inception_score"] = None
        unavailable["inception_score"] = str(InceptionLogitsUnavailableError(inception.source))
    if keep:
        result.update(precision_recall(ref_acc.features, sample_acc.features, k=precision_recall_k))
    result.update(info)
    result["inception_weights"] = inception.source
    result["seconds"] = round(time.perf_counter() - start, 2)
    result["unavailable"] = unavailable
    return result


def _limited(batches: Iterable[Any], limit: int | None) -> Iterator[Any]:
    """The image tensors of ``batches`` (tensors or ``{"pixel_values": ...}`` rows), cut to ``limit`` images."""
    seen = 0
    for batch in batches:
        x = batch["pixel_values"] if isinstance(batch, Mapping) else batch
        if limit is not None:
            x = x[: limit - seen]
        if len(x) == 0:
            return
        seen += len(x)
        yield x
        if limit is not None and seen >= limit:
            return


# ----------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------

_LABELS = {
    "rfid": "rFID",
    "fid": "FID",
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "lpips_vgg": "LPIPS-VGG",
    "lpips_alex": "LPIPS-Alex",
    "codebook_usage": "codebook usage",
    "codebook_perplexity": "codebook perplexity",
    "inception_score": "IS",
    "precision": "precision",
    "recall": "recall",
    "num_images": "images",
    "num_samples": "samples",
    "num_reference": "reference images",
    "protocol": "preprocessing protocol",
}


def results_markdown(result: Mapping[str, Any], title: str | None = None) -> str:
    """A two-column markdown table of the headline numbers; unavailable metrics say so."""
    lines = [f"### {title}", ""] if title else []
    lines += ["| metric | value |", "|---|---|"]
    unavailable = result.get("unavailable", {})
    for key, label in _LABELS.items():
        if key not in result:
            continue
        value = result[key]
        if value is None:
            text = "unavailable" + (" (see JSON)" if key in unavailable else "")
        elif key == "codebook_usage":
            text = f"{100 * value:.2f} % ({result.get('codebook_used')}/{result.get('codebook_size')})"
        elif isinstance(value, float):
            text = "inf" if math.isinf(value) else f"{value:.4f}"
        else:
            text = str(value)
        lines.append(f"| {label} | {text} |")
    return "\n".join(lines) + "\n"


def write_results(result: Mapping[str, Any], output_dir: str | os.PathLike, name: str) -> tuple[str, str]:
    """Write ``<name>.json`` and ``<name>.md`` under ``output_dir``; returns both paths."""
    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, f"{name}.json")
    md_path = os.path.join(output_dir, f"{name}.md")
    with open(json_path, "w") as f:
        json.dump(result, f, indent=2, default=float)
    with open(md_path, "w") as f:
        f.write(results_markdown(result, title=name))
    return json_path, md_path
