"""Evaluation of IBQ tokenizers and generators with the paper's protocol (reference §5.3, §6).

* FID features: `load_fid_inception` → `FIDInceptionV3` (TF FID InceptionV3, 2048-d pool3, 1008 logits when the
  weights have them); `FeatureStatistics` (streaming float64 mean/covariance) and `frechet_distance`;
  `InceptionFeatureAccumulator` (one Inception pass for FID, IS and precision/recall) and `fid_from_accumulators`.
* `inception_score`, `precision_recall` (ADM's k = 3 manifolds), `psnr_ssim` / `PSNRSSIM` (uint8 truncation +
  skimage), `load_lpips` (VGG / AlexNet; `WeightsUnavailableError` when weights are missing), codebook usage
  (`ibq_hf.models.quantizer.CodebookUsage`).
* ADM ``.npz`` batches: `NpzImageWriter`, `NpzImageReader`, `save_adm_npz`.
* Loops: `evaluate_tokenizer`, `sample_for_fid`, `evaluate_generation` (used by ``ibq-hf evaluate`` and examples/).
* `evaluate` modules shipped with the package: ``evaluate.load(metric_path("fid"))``, thin wrappers over the same
  accumulators (which merge across processes: ``merge(other)``).
* The LPIPS networks are the package's one implementation, `ibq_hf.lpips` (also the tokenizer's perceptual loss).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .._lazy import lazy_exports

METRICS = ("fid", "inception_score", "psnr_ssim", "lpips", "codebook_usage", "precision_recall")

# Lazy (see ibq_hf._lazy): ``import ibq_hf.evaluation`` imports no torch; each name loads its module on first use.
_EXPORTS = {
    ".errors": ["InceptionLogitsUnavailableError", "MetricUnavailableError", "WeightsUnavailableError"],
    ".features": ["InceptionFeatureAccumulator", "fid_from_accumulators", "images_to_unit_float"],
    ".fid": ["FeatureStatistics", "frechet_distance"],
    ".image_metrics": ["PSNRSSIM", "psnr_ssim", "psnr_uint8", "to_unit_range", "truncate_to_uint8"],
    ".inception": [
        "FID_WEIGHTS_URL",
        "FIDInceptionV3",
        "InceptionOutput",
        "convert_torchscript_state_dict",
        "fid_helper_weights_path",
        "load_fid_inception",
    ],
    ".inception_score": ["InceptionScore", "inception_score"],
    "..lpips": ["LPIPSAlex"],
    ".lpips": ["LPIPSMeter", "load_lpips"],
    ".npz": ["NpzImageReader", "NpzImageWriter", "save_adm_npz"],
    ".precision_recall": ["manifold_radii", "precision_recall"],
    ".runners": [
        "evaluate_generation",
        "evaluate_tokenizer",
        "image_seed",
        "results_markdown",
        "sample_for_fid",
        "sample_order",
        "write_results",
    ],
}

if TYPE_CHECKING:
    from ..lpips import LPIPSAlex
    from .errors import InceptionLogitsUnavailableError, MetricUnavailableError, WeightsUnavailableError
    from .features import InceptionFeatureAccumulator, fid_from_accumulators, images_to_unit_float
    from .fid import FeatureStatistics, frechet_distance
    from .image_metrics import PSNRSSIM, psnr_ssim, psnr_uint8, to_unit_range, truncate_to_uint8
    from .inception import (
        FID_WEIGHTS_URL,
        FIDInceptionV3,
        InceptionOutput,
        convert_torchscript_state_dict,
        fid_helper_weights_path,
        load_fid_inception,
    )
    from .inception_score import InceptionScore, inception_score
    from .lpips import LPIPSMeter, load_lpips
    from .npz import NpzImageReader, NpzImageWriter, save_adm_npz
    from .precision_recall import manifold_radii, precision_recall
    from .runners import (
        evaluate_generation,
        evaluate_tokenizer,
        image_seed,
        results_markdown,
        sample_for_fid,
        sample_order,
        write_results,
    )

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "FID_WEIGHTS_URL",
    "METRICS",
    "PSNRSSIM",
    "FIDInceptionV3",
    "FeatureStatistics",
    "InceptionFeatureAccumulator",
    "InceptionLogitsUnavailableError",
    "InceptionOutput",
    "InceptionScore",
    "LPIPSAlex",
    "LPIPSMeter",
    "MetricUnavailableError",
    "NpzImageReader",
    "NpzImageWriter",
    "WeightsUnavailableError",
    "convert_torchscript_state_dict",
    "evaluate_generation",
    "evaluate_tokenizer",
    "fid_from_accumulators",
    "fid_helper_weights_path",
    "frechet_distance",
    "image_seed",
    "images_to_unit_float",
    "inception_score",
    "load_fid_inception",
    "load_lpips",
    "manifold_radii",
    "metric_path",
    "precision_recall",
    "psnr_ssim",
    "psnr_uint8",
    "results_markdown",
    "sample_for_fid",
    "sample_order",
    "save_adm_npz",
    "to_unit_range",
    "truncate_to_uint8",
    "write_results",
]


def metric_path(name: str) -> str:
    """Local folder of a shipped `evaluate` module, for ``evaluate.load(metric_path(name))`` (works offline)."""
    if name not in METRICS:
        raise ValueError(f"Unknown metric {name!r}; the shipped evaluate modules are {list(METRICS)}.")
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "metrics", name)
