"""Inception-Score-style figure of the sample file's order on the bundled digits pipeline (docs/evaluation.md).

    python docs/scripts/sample_order_is.py --images-per-class 1000 --output /tmp/digits_samples.npz

Samples ``10 × images-per-class`` images with ``sample_for_fid`` (the ``ibq-hf evaluate sample`` loop: shuffled
file order, seed 42), then scores them with the Inception Score formula (exp E KL(p(y|x) ‖ p(y)) over contiguous
splits of 5,000, ADM's evaluator) in three orders of the *same* images: the file as written (shuffled), class
order (what the file held before the shuffle: image ``i`` of class ``i // images_per_class`` at position ``i``),
and random permutations. p(y|x) comes from a 10-way digits classifier (an RBF SVC, sigmoid-calibrated, fitted
on scikit-learn's 1,797 real digits) instead of Inception's 1008-way softmax: the Inception classifier weights
cannot be downloaded here, and the effect measured — how many classes one split sees — is the same.
``--skip-sampling`` scores an existing ``--output`` file (written by an earlier run with the same seed).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]


def _digits_module():
    spec = importlib.util.spec_from_file_location("check_digits", ROOT / "examples/digits/check_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def digit_probabilities(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] → p(y|x) [N, 10] from an RBF SVC fitted on the real digits (sigmoid-calibrated)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.datasets import load_digits
    from sklearn.svm import SVC

    module = _digits_module()
    digits = load_digits()
    classifier = CalibratedClassifierCV(SVC(gamma=0.001, C=10.0), ensemble=False)
    classifier.fit(digits.data, digits.target)
    parts = []
    for begin in range(0, len(images_uint8), 1000):
        batch = images_uint8[begin : begin + 1000].astype(np.float32) / 255.0
        parts.append(classifier.predict_proba(module.to_digit_features(batch)))
    return np.concatenate(parts)


def main() -> None:
    from ibq_hf.evaluation import inception_score, sample_for_fid, sample_order
    from ibq_hf.pipeline import IBQPipeline

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(ROOT / "checkpoints/ibq-digits"))
    parser.add_argument("--images-per-class", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--split-size", type=int, default=5000)
    parser.add_argument("--permutations", type=int, default=20)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest for this tiny model)"
    )
    parser.add_argument("--output", default="digits_samples.npz")
    parser.add_argument("--skip-sampling", action="store_true", help="score an existing --output file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if args.skip_sampling:
        settings = json.loads(Path(args.output + ".json").read_text())
        if settings["seed"] != args.seed or settings["images_per_class"] != args.images_per_class:
            raise SystemExit(f"{args.output} was sampled with other settings: {settings}")
    else:
        pipe = IBQPipeline.from_pretrained(args.model)
        pipe.set_progress_bar_config(disable=True)
        settings = sample_for_fid(
            pipe,
            args.output,
            images_per_class=args.images_per_class,
            batch_size=args.batch_size,
            seed=args.seed,
        )
    with np.load(args.output) as data:
        images, labels = data["arr_0"], data["arr_1"]
    probs_file = digit_probabilities(images)
    order = sample_order(args.seed, len(images))
    probs_class = np.empty_like(probs_file)
    probs_class[order] = probs_file  # row i = global image i: the class-sorted file of the old code
    labels_class = np.empty_like(labels)
    labels_class[order] = labels
    assert np.array_equal(labels_class, np.repeat(np.arange(10), args.images_per_class))

    def classes_per_split(lab: np.ndarray) -> list[int]:
        return [len(set(lab[b : b + args.split_size].tolist())) for b in range(0, len(lab), args.split_size)]

    rng = np.random.default_rng(0)
    permuted = [
        inception_score(probs_file[rng.permutation(len(images))], args.split_size)
        for _ in range(args.permutations)
    ]
    shuffled = inception_score(probs_file, args.split_size)
    sorted_ = inception_score(probs_class, args.split_size)
    result = {
        "model": args.model,
        "num_images": len(images),
        "split_size": args.split_size,
        "num_splits": -(-len(images) // args.split_size),
        "classifier": "RBF SVC (gamma 0.001, C 10, sigmoid-calibrated) on sklearn's 1,797 real digits",
        "accuracy_vs_requested_label": float((probs_file.argmax(1) == labels).mean()),
        "is_class_order": {
            "mean": sorted_[0],
            "split_std": sorted_[1],
            "classes_per_split": classes_per_split(labels_class),
        },
        "is_file_order_shuffled": {
            "mean": shuffled[0],
            "split_std": shuffled[1],
            "classes_per_split": classes_per_split(labels),
        },
        "is_random_permutations": {
            "mean": float(np.mean([m for m, _ in permuted])),
            "std_across_permutations": float(np.std([m for m, _ in permuted])),
            "mean_split_std": float(np.mean([s for _, s in permuted])),
            "count": args.permutations,
        },
        "sampling_settings": {
            k: settings[k] for k in ("guidance_scale", "temperature", "top_k", "top_p", "seed")
        },
        "sampling_seconds": settings["seconds"],
        "torch_threads": args.threads,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
