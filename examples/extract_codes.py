"""Tokenize an image dataset with a frozen IBQ tokenizer into a codes dataset for ``train_ar.py``.

    python examples/extract_codes.py --tokenizer checkpoints/tok --images data/train_folder \
        --resolution 256 --output_dir codes/ --batch_size 64

``--images`` is an ``imagefolder`` tree (``<root>/<class name>/*.png``, class names become a ClassLabel) or,
with ``--dataset``, any ``datasets`` id / local script with an image and a label column. Each image is resized
(shorter side) and centre-cropped to ``--resolution`` (the IBQ evaluation transform, so the codes are
deterministic), then ``IBQVQModel.tokenize`` gives its ``grid × grid`` code ids. The output is parquet shards
of rows ``{input_ids: [grid²] int, label: int}`` with the ClassLabel names kept in the metadata.
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
    args = parser.parse_args(argv)
    if args.resolution <= 0 or args.batch_size <= 0 or args.rows_per_shard <= 0:
        parser.error("--resolution, --batch_size and --rows_per_shard must be positive.")
    return args


def main(argv: list[str] | None = None) -> list[str]:
    """Tokenize and write the shards; returns the parquet paths written."""
    import datasets

    from ibq_hf import IBQVQModel
    from ibq_hf.pipeline import images_to_tensor

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

    for batch in source.iter(batch_size=args.batch_size):
        pixels = images_to_tensor(batch[args.image_column], resolution=args.resolution)
        with torch.inference_mode():
            codes = vqvae.tokenize(pixels.to(args.device, dtype))  # [B, h, w]
        rows["input_ids"] += codes.flatten(1).cpu().tolist()
        rows["label"] += [int(label) for label in batch[args.label_column]]
        if len(rows["label"]) >= args.rows_per_shard:
            flush()
    if rows["label"]:
        flush()
    print(f"wrote {len(written)} shard(s) of {len(source)} rows to {args.output_dir}", flush=True)
    return written


if __name__ == "__main__":
    main(sys.argv[1:])
