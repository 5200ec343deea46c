"""`evaluate.Metric` wrappers behind the shipped modules (``evaluate.load(metric_path(name))``).

Each is a thin wrapper over the library accumulator that the runners (`ibq_hf.evaluation.runners`) use — one
implementation per metric: `InceptionFeatureAccumulator` + `fid_from_accumulators` (FID), its `InceptionScore`
(IS), `precision_recall` on its kept features, `PSNRSSIM`, `LPIPSMeter`, `CodebookUsage`. The wrapper only turns
``evaluate``'s inputs (PIL lists, arrays, tensors) into batches, feeds them to the accumulator and returns its
result as a dict, so a module and the runners give the same numbers on the same images.

Unlike stock `evaluate` metrics, these do not write predictions to an Arrow cache: ``add_batch`` folds each
batch into the accumulator right away (Inception features, PSNR/SSIM sums, code counts), so 50k images never
sit in memory or on disk. ``compute`` returns the result and resets the state. They are single-process; for
several processes use the accumulators themselves, which merge (``merge(other)``), as the runners do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import evaluate
import numpy as np
import torch

from ..image_processing import to_rgb
from ..models.quantizer import CodebookUsage
from .errors import InceptionLogitsUnavailableError
from .features import InceptionFeatureAccumulator, fid_from_accumulators
from .image_metrics import PSNRSSIM
from .inception import load_fid_inception
from .lpips import LPIPSMeter, load_lpips
from .precision_recall import precision_recall

__all__ = [
    "CodebookUsageMetric",
    "FIDMetric",
    "InceptionScoreMetric",
    "LPIPSMetric",
    "PSNRSSIMMetric",
    "PrecisionRecallMetric",
]

_IMAGES_DOC = (
    "images: a list of PIL images (same size), a uint8 array [B, H, W, 3] or [B, 3, H, W], or a float tensor "
    "[B, 3, H, W] in the metric's value range"
)


def as_image_batch(images: Any) -> torch.Tensor | np.ndarray:
    """PIL list / arrays / tensors → one batch (uint8 array or tensor)."""
    if isinstance(images, torch.Tensor):
        return images
    if isinstance(images, np.ndarray):
        return images
    if isinstance(images, Sequence) and len(images) and isinstance(images[0], torch.Tensor):
        return torch.stack(list(images))
    # PIL images through the one mode conversion (16-bit PNGs scaled to 8 bits, not clipped to white).
    arrays = [np.asarray(to_rgb(im) if hasattr(im, "convert") else im) for im in images]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"All images of a batch must have the same size, got shapes {sorted(shapes)}.")
    return np.stack(arrays)


class _StreamingMetric(evaluate.Metric):
    """Base: subclasses define ``_options`` (init kwargs and defaults), ``_setup``, ``_update``, ``_result``."""

    _options: dict[str, Any] = {}
    _description = ""
    _inputs = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.options = {k: kwargs.pop(k, v) for k, v in self._options.items()}
        super().__init__(*args, **kwargs)
        self._setup()
        self.reset()

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=self._description,
            citation="",
            inputs_description=self._inputs,
            features=datasets.Features(
                {"predictions": datasets.Value("float32"), "references": datasets.Value("float32")}
            ),
        )

    def _compute(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """evaluate's hook; ``compute`` is overridden to read the running state, which is what this returns."""
        return self._result()

    def _setup(self) -> None:
        """Build models once (they survive reset())."""

    def reset(self) -> None:
        """Empty the running state; every metric defines its own."""
        raise NotImplementedError(f"{type(self).__name__} must define reset()")

    def add_batch(self, *, predictions: Any = None, references: Any = None, **kwargs: Any) -> None:
        """Fold one batch into the running state (nothing is stored)."""
        self._update(predictions, references)

    def add(self, *, prediction: Any = None, reference: Any = None, **kwargs: Any) -> None:
        """Fold one example into the running state."""
        self._update(None if prediction is None else [prediction], None if reference is None else [reference])

    def compute(self, *, predictions: Any = None, references: Any = None, **kwargs: Any) -> dict[str, Any]:
        """Result over everything added (plus this call's inputs); resets the state afterwards."""
        if predictions is not None or references is not None:
            self._update(predictions, references)
        result = self._result()
        self.reset()
        return result


class _InceptionMetric(_StreamingMetric):
    """Options: ``inception_weights`` (see `load_fid_inception`), ``device``, ``batch_size``, or an already
    loaded ``inception`` module (shared between metrics, or a stand-in in tests)."""

    _options = {"inception_weights": "auto", "device": None, "batch_size": 50, "inception": None}

    def _setup(self) -> None:
        self.inception = self.options["inception"] or load_fid_inception(
            self.options["inception_weights"], device=self.options["device"]
        )


class FIDMetric(_InceptionMetric):
    """FID between ``predictions`` (e.g. generated or reconstructed images) and ``references`` (real images)."""

    _description = "Fréchet Inception Distance with the TF FID InceptionV3 (pool3, 2048-d), streamed."
    _inputs = f"predictions, references: {_IMAGES_DOC} ([0, 1] for floats). Returns fid, num_predictions, num_references."

    def reset(self) -> None:
        bs = self.options["batch_size"]
        self._pred = InceptionFeatureAccumulator(self.inception, batch_size=bs)
        self._ref = InceptionFeatureAccumulator(self.inception, batch_size=bs)

    def _update(self, predictions: Any, references: Any) -> None:
        if predictions is not None:
            self._pred.update(as_image_batch(predictions))
        if references is not None:
            self._ref.update(as_image_batch(references))

    def _result(self) -> dict[str, Any]:
        fid = fid_from_accumulators(predictions=self._pred, references=self._ref)
        return {"fid": fid, "num_predictions": self._pred.count, "num_references": self._ref.count}


class InceptionScoreMetric(_InceptionMetric):
    """Inception Score of ``predictions`` (needs weights with the 1008-way classifier)."""

    _options = {**_InceptionMetric._options, "split_size": 5000}
    _description = "Inception Score (ADM convention: splits of 5,000 images)."
    _inputs = f"predictions: {_IMAGES_DOC} ([0, 1] for floats). Returns inception_score, inception_score_std."

    def _setup(self) -> None:
        super()._setup()
        if not self.inception.has_logits:
            raise InceptionLogitsUnavailableError(self.inception.source)

    def reset(self) -> None:
        self._acc = InceptionFeatureAccumulator(
            self.inception, inception_score=True, batch_size=self.options["batch_size"]
        )
        assert self._acc.inception_score is not None
        self._acc.inception_score.split_size = self.options["split_size"]

    def _update(self, predictions: Any, references: Any) -> None:
        if predictions is not None:
            self._acc.update(as_image_batch(predictions))

    def _result(self) -> dict[str, Any]:
        assert self._acc.inception_score is not None
        return {**self._acc.inception_score.compute(), "num_predictions": self._acc.count}


class PrecisionRecallMetric(_InceptionMetric):
    """Improved precision/recall (k-NN manifolds on Inception features); keeps features (8 KB per image)."""

    _options = {**_InceptionMetric._options, "k": 3}
    _description = "Improved precision and recall (Kynkäänniemi et al.), ADM's k = 3."
    _inputs = f"predictions, references: {_IMAGES_DOC} ([0, 1] for floats). Returns precision, recall."

    def reset(self) -> None:
        bs = self.options["batch_size"]
        self._pred = InceptionFeatureAccumulator(self.inception, keep_features=True, batch_size=bs)
        self._ref = InceptionFeatureAccumulator(self.inception, keep_features=True, batch_size=bs)

    _update = FIDMetric._update

    def _result(self) -> dict[str, Any]:
        return precision_recall(self._ref.features, self._pred.features, k=self.options["k"])


class PSNRSSIMMetric(_StreamingMetric):
    """PSNR and SSIM as the reference (uint8 truncation, skimage, 7×7 uniform SSIM window)."""

    _options = {"value_range": (-1.0, 1.0)}
    _description = "PSNR / SSIM with the IBQ reference protocol."
    _inputs = (
        f"predictions (reconstructions), references (originals): {_IMAGES_DOC} (floats in value_range, "
        "default [-1, 1]). Returns psnr (dB), ssim, count."
    )

    def reset(self) -> None:
        self._acc = PSNRSSIM(tuple(self.options["value_range"]))

    def _update(self, predictions: Any, references: Any) -> None:
        if (predictions is None) != (references is None):
            raise ValueError("PSNR/SSIM need predictions and references together (pairs).")
        if predictions is not None:
            self._acc.update(as_image_batch(references), as_image_batch(predictions))

    def _result(self) -> dict[str, Any]:
        return self._acc.compute()


class LPIPSMetric(_StreamingMetric):
    """LPIPS v0.1 (net "vgg" or "alex"); building it without weights raises `WeightsUnavailableError`."""

    _options = {
        "net": "vgg", "backbone_path": None, "heads_path": None, "allow_download": False,
        "random_weights": False, "device": None,
    }  # fmt: skip
    _description = "LPIPS v0.1 (mean over images), VGG16 or AlexNet backbone."
    _inputs = "predictions, references: float tensors [B, 3, H, W] in [-1, 1]. Returns lpips, count."

    def _setup(self) -> None:
        o = self.options
        model = load_lpips(
            o["net"], o["backbone_path"], o["heads_path"], o["allow_download"], o["random_weights"]
        )
        self.model = model.to(o["device"] or "cpu")

    def reset(self) -> None:
        self._meter = LPIPSMeter(self.model)

    def _update(self, predictions: Any, references: Any) -> None:
        if (predictions is None) != (references is None):
            raise ValueError("LPIPS needs predictions and references together (pairs).")
        if predictions is not None:
            x, y = (torch.as_tensor(np.array(as_image_batch(v))) if not isinstance(v, torch.Tensor) else v
                    for v in (predictions, references))  # fmt: skip
            if not (x.is_floating_point() and y.is_floating_point()):
                raise ValueError(
                    f"LPIPS expects float images in [-1, 1], got {x.dtype} / {y.dtype}; map uint8 images with "
                    "x / 127.5 - 1 (as [B, 3, H, W] tensors)."
                )
            self._meter.update(x.float(), y.float())

    def _result(self) -> dict[str, Any]:
        return {"lpips": self._meter.compute(), "count": self._meter.count}


class CodebookUsageMetric(_StreamingMetric):
    """Codebook utilisation (distinct codes / K) and perplexity of token ids."""

    _options = {"num_embeddings": None}
    _description = "Codebook usage of an IBQ tokenizer."
    _inputs = "predictions: integer token ids (any shape). Returns utilization, used, perplexity, num_tokens."

    def _setup(self) -> None:
        if not isinstance(self.options["num_embeddings"], int) or self.options["num_embeddings"] < 1:
            raise ValueError(
                "codebook_usage needs num_embeddings=<codebook size>: evaluate.load(path, num_embeddings=K)."
            )

    def reset(self) -> None:
        self._usage = CodebookUsage(self.options["num_embeddings"])

    def _update(self, predictions: Any, references: Any) -> None:
        if predictions is not None:
            self._usage.update(
                torch.as_tensor(
                    np.asarray(predictions) if not isinstance(predictions, torch.Tensor) else predictions
                )
            )

    def _result(self) -> dict[str, Any]:
        out = self._usage.compute()
        return {
            "utilization": out["utilization"],
            "used": out["used"],
            "perplexity": out["perplexity"],
            "num_tokens": int(self._usage.counts.sum()),
        }
