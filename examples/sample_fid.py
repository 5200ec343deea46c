"""Sample images for FID with the ADM protocol (reference §5.3) into an ADM ``.npz``.

    # 50 images per class, per-model temperature / CFG from the pipeline's generation_config
    python examples/sample_fid.py --model DIR --output samples/ibq_ar_xl.npz
    # several GPUs: the same images, faster
    accelerate launch --num_processes 8 examples/sample_fid.py --model DIR --output samples/ibq_ar_xl.npz

Image i (class ``i // 50``) is drawn with its own generator seeded from (``--seed``, i), so the file is identical
for any number of processes or batch size (the reference seeds once per process, so its samples depend on the
number of GPUs). The file order is a permutation seeded by ``--seed`` (so Inception Score's splits of 5,000 each
see every class; ``--no-shuffle`` keeps class order). Each process writes a shard; process 0 merges them in file
order into ``arr_0`` (uint8 [N, H, W, 3]) and ``arr_1`` (class labels), and the settings into ``<output>.json``. ``--rounding truncate``
reproduces the reference's uint8 truncation; the default rounds (what a saved PNG holds).
Same as ``ibq-hf evaluate sample``.
"""

import sys

from ibq_hf.cli.evaluate import sample_main

if __name__ == "__main__":
    sys.exit(sample_main())
