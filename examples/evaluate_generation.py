"""gFID, Inception Score, precision and recall of generated images (an ADM ``.npz``).

    # against ADM's reference batch (download VIRTUAL_imagenet256_labeled.npz from the ADM evaluations page)
    python examples/evaluate_generation.py --samples samples.npz --reference VIRTUAL_imagenet256_labeled.npz

    # against a datasets split (center-cropped to the samples' size), e.g. real digits
    python examples/evaluate_generation.py --samples digits.npz --data-dir data/digits --split train

The reference's own numbers come from ADM's TensorFlow evaluator; this uses the same FID InceptionV3 weights in
PyTorch (see docs/evaluation.md for the differences). IS needs Inception weights with the classifier
(``--inception-weights pytorch-fid`` or a path to pt_inception-2015-12-05-6726825d.pth); with the fid-helper file
it is reported as unavailable. Same as ``ibq-hf evaluate generation``.
"""

import sys

from ibq_hf.cli.evaluate import generation_main

if __name__ == "__main__":
    sys.exit(generation_main())
