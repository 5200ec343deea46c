"""Tokenize an image dataset with a frozen IBQ tokenizer into a codes dataset for ``train_ar.py``.

    python examples/extract_codes.py --tokenizer checkpoints/tok --images data/train_folder \
        --resolution 256 --output_dir codes/ --batch_size 64

``--images`` is an ``imagefolder`` tree (``<root>/<class name>/*.png``, class names become a ClassLabel) or,
with ``--dataset``, any ``datasets`` id / local script with an image and a label column. Each image is resized
(shorter side) and centre-cropped to ``--resolution`` (the IBQ evaluation transform, so the codes are
deterministic), then ``IBQVQModel.tokenize`` gives its ``grid × grid`` code ids. The output is parquet shards
of rows ``{input_ids: [grid²] int, label: int}`` with the ClassLabel names kept in the metadata.

The reference trains the AR model on a fresh random crop of every image at every step. Pre-extracted codes
cannot do that exactly; ``--crops N`` approximates it with N random crops per image (the reference train
transform, ``ibq_hf.training.data.image_transform``, seeded per image and crop by ``--seed`` so a rerun gives
the same rows), optionally flipped with ``--hflip``. ``--push_to_hub REPO`` uploads the shards as a dataset
after they are written locally.
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
    parser.add_argument("--rows_per_shard", type=int, default=50_000, help="Rows per parquet file.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--crops", type=int, default=0, help="Random crops per image (0: one centre crop, deterministic)."
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


def main(argv: list[str] | None = None) -> list[str]:
    """Tokenize and write the shards; returns the parquet paths written."""
    import datasets

    from ibq_hf import IBQVQModel
    from ibq_hf.pipeline import images_to_tensor
    from ibq_hf.training.data import image_transform

    args = parse_args(argv)
    if args.images is not None:
        source = datasets.load_dataset("imagefolder", data_dir=args.images, split=args.split)
    else:
        source = datasets.load_dataset(args.dataset, split=args.split)
    for column in (args.image_column, args.label_column):
        if column not in source.column_names:
            raise ValueError(f"The dataset has no column {column!r}; columns are {source.column_names}.")
    label_feature = source.features[args.label_column]

    dtype = getattr(torch, args.dtype)
    vqvae = IBQVQModel.from_pretrained(args.tokenizer).to(args.device, dtype).eval().requires_grad_(False)
    features = datasets.Features(
        {
            "input_ids": datasets.Sequence(datasets.Value("int32")),
            "label": label_feature
            if isinstance(label_feature, datasets.ClassLabel)
            else datasets.Value("int64"),
        }
    )
    os.makedirs(args.output_dir, exist_ok=True)
    written: list[str] = []
    rows: dict[str, list] = {"input_ids": [], "label": []}

    def flush() -> None:
        path = os.path.join(args.output_dir, f"{args.split}-{len(written):05d}.parquet")
        datasets.Dataset.from_dict(rows, features=features).to_parquet(path)
        written.append(path)
        rows["input_ids"], rows["label"] = [], []

    augment = image_transform(args.resolution, train=True, hflip=args.hflip) if args.crops else None
    seen = 0
    for batch in source.iter(batch_size=args.batch_size):
        labels = [int(label) for label in batch[args.label_column]]
        if augment is None:
            pixels = images_to_tensor(batch[args.image_column], resolution=args.resolution)
        else:  # crop j of image i uses seed (seed, i, j): independent of batch size and reruns
            crops = []
            for i, image in enumerate(batch[args.image_column]):
                for j in range(args.crops):
                    gen = torch.Generator().manual_seed(args.seed * 1_000_003 + (seen + i) * args.crops + j)
                    crops.append(augment(image, generator=gen))
            pixels = torch.stack(crops)  # [B·N, 3, R, R] in [-1, 1]
            labels = [label for label in labels for _ in range(args.crops)]
        seen += len(batch[args.label_column])
        with torch.inference_mode():
            codes = vqvae.tokenize(pixels.to(args.device, dtype))  # [B, h, w]
        rows["input_ids"] += codes.flatten(1).cpu().tolist()
        rows["label"] += labels
        if len(rows["label"]) >= args.rows_per_shard:
            flush()
    if rows["label"]:
        flush()
    print(f"wrote {len(written)} shard(s) from {len(source)} images to {args.output_dir}", flush=True)
    if args.push_to_hub:  # only after everything is safely on disk
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(args.push_to_hub, repo_type="dataset", exist_ok=True)
        api.upload_folder(repo_id=args.push_to_hub, repo_type="dataset", folder_path=args.output_dir)
    return written


if __name__ == "__main__":
    main(sys.argv[1:])
