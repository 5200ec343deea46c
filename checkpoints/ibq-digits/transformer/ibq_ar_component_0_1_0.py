# Shipped by ibq-hf: the IBQARForImageGeneration diffusers loads for this pipeline component (generated at save time).
"""Re-export of :class:`IBQARForImageGeneration` for ``model_index.json``; the code is in ``ibq_modeling_ar_0_1_0.py``."""

from .ibq_modeling_ar_0_1_0 import IBQARForImageGeneration

__all__ = ['IBQARForImageGeneration']
