# Shipped by ibq-hf: the IBQVQModel diffusers loads for this pipeline component (generated at save time).
"""Re-export of :class:`IBQVQModel` for ``model_index.json``; the code is in ``ibq_modeling_vq_0_1_0.py``."""

from .ibq_modeling_vq_0_1_0 import IBQVQModel

__all__ = ['IBQVQModel']
