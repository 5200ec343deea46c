"""Training components: data streaming, losses, EMA, schedules and Trainer subclasses.

``datasets`` (the ``train`` extra) is only needed to call `load_image_dataset`; the rest imports and
runs with the inference-only install.
"""

from ibq_hf.data import (
    DataStats,
    GatedDatasetError,
    ImageBatches,
    ImageStream,
    ImageTransform,
    collate_images,
    image_transform,
    load_image_dataset,
)
from ibq_hf.lpips import LPIPS
from ibq_hf.training.ema import EMAModel
from ibq_hf.training.losses import (
    LeCamRegularizer,
    NLayerDiscriminator,
    hinge_d_loss,
    non_saturating_g_loss,
)

__all__ = [
    "LPIPS",
    "DataStats",
    "EMAModel",
    "GatedDatasetError",
    "ImageBatches",
    "ImageStream",
    "ImageTransform",
    "LeCamRegularizer",
    "NLayerDiscriminator",
    "collate_images",
    "hinge_d_loss",
    "image_transform",
    "load_image_dataset",
    "non_saturating_g_loss",
]
