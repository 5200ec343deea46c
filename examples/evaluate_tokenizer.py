"""Evaluate an IBQ tokenizer with the paper's protocol (reference §6): rFID, PSNR, SSIM, LPIPS, codebook usage.

    # ImageNet val (50,000 images, streamed; gated: accept the terms on the Hub and log in first)
    python examples/evaluate_tokenizer.py --model TencentARC-IBQ-16384-converted --output-dir results/

    # any imagefolder / datasets split, here the first 200 images
    python examples/evaluate_tokenizer.py --model checkpoints/ibq-digits --data-dir data/digits --split train \
        --max-images 200 --batch-size 16 --output-dir results/

Images: shortest side → the tokenizer's resolution (bilinear, no antialias), center crop, [-1, 1]; ``--protocol
pretrain`` for the Pretrain tokenizers (Resize + CenterCrop, PIL bilinear antialiased; the default when the
tokenizer's model card says so). rFID compares float originals and reconstructions (Inception weights: see
``--inception-weights``); PSNR/SSIM truncate to uint8 first; LPIPS needs the torchvision VGG16 / AlexNet files
(``--lpips-vgg``, ``--lpips-alex``) and is reported as unavailable without them. Writes ``tokenizer_eval.json``
and ``tokenizer_eval.md`` under ``--output-dir``. Same as ``ibq-hf evaluate tokenizer``.
"""

import sys

from ibq_hf.cli.evaluate import tokenizer_main

if __name__ == "__main__":
    sys.exit(tokenizer_main())
