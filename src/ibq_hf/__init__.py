"""ibq-hf: a Hugging Face-native IBQ (Index Backpropagation Quantization) visual tokenizer and AR image model.

Importing the package registers ``IBQARConfig`` / ``IBQARForImageGeneration`` with the transformers Auto
classes (``model_type="ibq_ar"``).
"""

from .imagenet_labels import imagenet_id2label
from .models.ar_model import IBQARForImageGeneration
from .models.configuration_ar import IBQARConfig
from .models.vq_model import IBQVQDecoderOutput, IBQVQEncoderOutput, IBQVQModel, IBQVQModelOutput
from .pipeline import IBQPipeline, IBQReconstructionOutput
from .quantizer import CodebookUsage, IBQQuantizer, IBQQuantizerOutput, codebook_usage

__version__ = "0.1.0"

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
