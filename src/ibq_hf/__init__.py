"""ibq-hf: a Hugging Face-native IBQ (Index Backpropagation Quantization) visual tokenizer and AR image model.

The package namespace is lazy: ``import ibq_hf`` imports neither torch, transformers nor diffusers, and each
public name below is imported on first use (``ibq_hf.IBQPipeline``, ``from ibq_hf import IBQVQModel``), so the
``ibq-hf`` command line starts fast. ``IBQARConfig`` / ``IBQARForImageGeneration`` are registered with the
transformers Auto classes (``model_type="ibq_ar"``) when their module is imported: by the first use of
``ibq_hf.IBQARConfig``, ``ibq_hf.IBQARForImageGeneration`` or ``ibq_hf.IBQPipeline``, or by
``import ibq_hf.models.modeling_ar``.
"""

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    ".imagenet_labels": ["imagenet_id2label"],
    ".models.modeling_ar": ["IBQARForImageGeneration"],
    ".models.configuration_ar": ["IBQARConfig"],
    ".models.modeling_vq": ["IBQVQDecoderOutput", "IBQVQEncoderOutput", "IBQVQModel", "IBQVQModelOutput"],
    ".pipeline": ["IBQPipeline", "IBQReconstructionOutput"],
    ".models.quantizer": ["CodebookUsage", "IBQQuantizer", "IBQQuantizerOutput", "codebook_usage"],
}

if TYPE_CHECKING:
    from .imagenet_labels import imagenet_id2label
    from .models.configuration_ar import IBQARConfig
    from .models.modeling_ar import IBQARForImageGeneration
    from .models.modeling_vq import IBQVQDecoderOutput, IBQVQEncoderOutput, IBQVQModel, IBQVQModelOutput
    from .models.quantizer import CodebookUsage, IBQQuantizer, IBQQuantizerOutput, codebook_usage
    from .pipeline import IBQPipeline, IBQReconstructionOutput

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "CodebookUsage",
    "IBQARConfig",
    "IBQARForImageGeneration",
    "IBQPipeline",
    "IBQQuantizer",
    "IBQQuantizerOutput",
    "IBQReconstructionOutput",
    "IBQVQDecoderOutput",
    "IBQVQEncoderOutput",
    "IBQVQModel",
    "IBQVQModelOutput",
    "codebook_usage",
    "imagenet_id2label",
]
