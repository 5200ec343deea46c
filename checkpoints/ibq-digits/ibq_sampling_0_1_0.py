# Shipped by ibq-hf 0.1.0 from ibq_hf/models/sampling.py (generated at save time; edit the package, not this file).
"""The categorical draw both decoders use (sequential in ``generation_ar``, speculative in ``jacobi_decoding``).

Inverse CDF from one uniform per draw: each sample's randomness then comes from its own ``torch.Generator`` as a
plain stream of uniforms, drawn up front, so a seed gives the same tokens whatever else is in the batch.
"""

from __future__ import annotations

import torch

__all__ = ["sample_from_probs"]


def sample_from_probs(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Categorical draw by inverse CDF: probs [..., V] (need not be normalized), uniforms [...] in [0, 1) → ids [...].

    A zero-probability id is never returned (its CDF step is empty); the last id absorbs round-off at the top.
    """
    cdf = probs.cumsum(dim=-1)
    target = uniforms[..., None].to(cdf.dtype) * cdf[..., -1:]
    ids = torch.searchsorted(cdf, target, right=True)
    return ids.clamp_(max=probs.shape[-1] - 1)[..., 0]
