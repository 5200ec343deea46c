"""ibq-hf: a Hugging Face-native IBQ (Index Backpropagation Quantization) visual tokenizer and AR image model."""

from .models.vq_model import IBQVQDecoderOutput, IBQVQEncoderOutput, IBQVQModel, IBQVQModelOutput
from .quantizer import CodebookUsage, IBQQuantizer, IBQQuantizerOutput, codebook_usage

__version__ = "0.1.0"

__all__ = [
    "CodebookUsage",
    "IBQQuantizer",
    "IBQQuantizerOutput",
    "IBQVQDecoderOutput",
    "IBQVQEncoderOutput",
    "IBQVQModel",
    "IBQVQModelOutput",
    "codebook_usage",
]
