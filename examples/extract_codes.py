"""Tokenize an image dataset with a frozen IBQ tokenizer into a codes dataset for ``train_ar.py``.

    python examples/extract_codes.py --tokenizer checkpoints/tok --images data/train_folder \
        --resolution 256 --output_dir codes/ --batch_size 64 --crops 8

``--images`` is an ``imagefolder`` tree (``<root>/<class name>/*.png``, class names become a ClassLabel) or,
with ``--dataset``, any ``datasets`` id / local script with an image and a label column. Every picture goes
through the reference protocol by name (``ibq_hf.image_processing.preprocess``: shortest side → ``--resolution``
with bilinear interpolation and no antialias, as cv2 in the reference), then ``IBQVQModel.tokenize`` gives its
``grid × grid`` code ids. The output is parquet shards with one row per image and the ClassLabel names kept in
the metadata:

* default (``--crops 0``): the centre crop, ``{input_ids: [grid²] int, label}`` — the same codes every epoch;
* ``--crops N``: N random crops (the reference's RandomCrop, crop ``j`` of image ``i`` seeded by
  (``--seed``, i, j), so reruns and batch sizes give the same rows), ``{input_ids: [N, grid²] int, label}``.
  ``train_ar.py`` then draws **one** of the N crops per image per epoch (seeded, resumable), so an epoch is
  one pass over the images, as in the reference. The reference draws a fresh random crop at every step; N
  stored crops approximate that: over E epochs an image shows on average N·(1 − (1 − 1/N)^E) distinct crops
  (E = 300: ≈ N for N ≤ 50), each about E/N times, at N times the extraction time and storage
  (4·grid² bytes per crop: 1 KiB at 16×16, 1.3 GB per crop for ImageNet). ``--hflip`` adds random horizontal
  flips, which the reference does not use.

Unreadable pictures are skipped and counted (printed at the end). ``--push_to_hub REPO`` uploads the shards as a
dataset after they are written locally.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizer", required=True, help="IBQVQModel folder or Hub id (frozen, eval mode).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--images", help="imagefolder root: <root>/<class>/*.png (or <root>/<split>/<class>/)."
    )
    source.add_argument("--dataset", help="A `datasets` id or local path with image and label columns.")
    parser.add_argument("--split", default="train")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--label_column", default="label")
    parser.add_argument("--resolution", type=int, required=True, help="Square input size of the tokenizer.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--rows_per_shard", type=int, default=50_000, help="Rows (images) per parquet file.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--crops",
        type=int,
        default=0,
        help="Random crops stored per image (0: the centre crop only); training draws one per image per epoch.",
    )
    parser.add_argument("--hflip", action="store_true", help="With --crops: random horizontal flips too.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the crop/flip randomness.")
    parser.add_argument("--push_to_hub", metavar="REPO", help="Upload the shards to this Hub dataset repo.")
    args = parser.parse_args(argv)
    if args.resolution <= 0 or args.batch_size <= 0 or args.rows_per_shard <= 0 or args.crops < 0:
        parser.error("--resolution, --batch_size and --rows_per_shard must be positive, --crops >= 0.")
    if args.hflip and not args.crops:
        parser.error("--hflip needs --crops N (the centre-crop extraction is deterministic).")
    return args


def crop_seed(seed: int, image_index: int, crop: int, num_crops: int) -> int:
    """Seed of crop ``crop`` of the ``image_index``-th picture of the source: independent of batching and reruns."""
    return seed * 1_000_003 + image_index * num_crops + crop


def image_crops(
    image, resolution: int, num_crops: int, hflip: bool, seed: int, image_index: int
) -> torch.Tensor:
    """[max(N, 1), 3, R, R] in [-1, 1]: the centre crop (N = 0) or N seeded random crops (top, left, then flip)."""
    from ibq_hf.image_processing import preprocess

    if num_crops == 0:
        return preprocess(image, resolution)[None]
    crops = []
    for j in range(num_crops):
        generator = torch.Generator().manual_seed(crop_seed(seed, image_index, j, num_crops))
        crop = preprocess(image, resolution, random_crop=True, generator=generator)
        if hflip and int(torch.randint(2, (1,), generator=generator)) == 1:
            crop = crop.flip(-1)
        crops.append(crop)
    return torch.stack(crops)


def main(argv: list[str] | None = None) -> list[str]:
    """Tokenize and write the shards; returns the parquet paths written."""
    import datasets

    from ibq_hf import IBQVQModel
    from ibq_hf.errors import ImageInputError
    from ibq_hf.image_processing import open_image

    args = parse_args(argv)
    if args.images is not None:
        source = datasets.load_dataset("imagefolder", data_dir=args.images, split=args.split)
    else:
        source = datasets.load_dataset(args.dataset, split=args.split)
    for column in (args.image_column, args.label_column):
        if column not in source.column_names:
            raise ValueError(f"The dataset has no column {column!r}; columns are {source.column_names}.")
    if isinstance(source.features[args.image_column], datasets.Image):  # decoded by open_image (size-checked)
        source = source.cast_column(args.image_column, datasets.Image(decode=False))
    label_feature = source.features[args.label_column]

    dtype = getattr(torch, args.dtype)
    vqvae = IBQVQModel.from_pretrained(args.tokenizer).to(args.device, dtype).eval().requires_grad_(False)
    codes_feature = datasets.Sequence(datasets.Value("int32"))
    features = datasets.Features(
        {
            "input_ids": datasets.Sequence(codes_feature) if args.crops else codes_feature,
            "label": label_feature
            if isinstance(label_feature, datasets.ClassLabel)
            else datasets.Value("int64"),
        }
    )
    os.makedirs(args.output_dir, exist_ok=True)
    written: list[str] = []
    rows: dict[str, list] = {"input_ids": [], "label": []}
    skipped: list[str] = []

    def flush() -> None:
        path = os.path.join(args.output_dir, f"{args.split}-{len(written):05d}.parquet")
        datasets.Dataset.from_dict(rows, features=features).to_parquet(path)
        written.append(path)
        rows["input_ids"], rows["label"] = [], []

    seen = 0
    for batch in source.iter(batch_size=args.batch_size):
        pixels, labels = [], []
        for i, (value, label) in enumerate(zip(batch[args.image_column], batch[args.label_column])):
            try:
                image = open_image(value)
            except ImageInputError as error:
                where = value.get("path") if isinstance(value, dict) else None
                skipped.append(f"{where or f'image {seen + i}'}: {error}")
                continue
            pixels.append(image_crops(image, args.resolution, args.crops, args.hflip, args.seed, seen + i))
            labels.append(int(label))
        seen += len(batch[args.label_column])
        if not pixels:
            continue
        stacked = torch.cat(pixels)  # [B·max(N,1), 3, R, R]
        with torch.inference_mode():
            codes = vqvae.tokenize(stacked.to(args.device, dtype)).flatten(1).cpu()  # [B·max(N,1), grid²]
        if args.crops:
            codes = codes.view(len(labels), args.crops, -1)  # one row per image: its N crops
        rows["input_ids"] += codes.tolist()
        rows["label"] += labels
        if len(rows["label"]) >= args.rows_per_shard:
            flush()
    if rows["label"]:
        flush()
    print(
        f"wrote {len(written)} shard(s) from {seen - len(skipped)} images to {args.output_dir}"
        + (f" ({args.crops} crops per image)" if args.crops else " (centre crops)"),
        flush=True,
    )
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s), e.g. {skipped[:3]}", flush=True)
    if args.push_to_hub:  # only after everything is safely on disk
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(args.push_to_hub, repo_type="dataset", exist_ok=True)
        api.upload_folder(repo_id=args.push_to_hub, repo_type="dataset", folder_path=args.output_dir)
    return written


if __name__ == "__main__":
    main(sys.argv[1:])
