# Shipped by ibq-hf 0.1.0 from ibq_hf/models/vanilla_quantizer.py (generated at save time; edit the package, not this file).
"""Vanilla VQ (VQ-VAE / taming VQGAN) quantizer: the baseline IBQ is measured against.

Not a product path: it exists so an experiment can swap the quantizer of :class:`~ibq_hf.IBQVQModel`
(``quantizer_type="vanilla"``) and change nothing else (``benchmarks/codebook_scaling.py``).

Formulation (van den Oord et al. 2017, as in taming-transformers' ``VectorQuantizer2`` with ``legacy=False``):

* ``k(t) = argmin_k ‖z_t − E_k‖²`` (nearest code by L2 distance);
* ``z_q = z + sg(E[k] − z)`` — straight-through: the encoder gets the decoder's gradient unchanged and
  **only the selected rows** ``E[k]`` of the codebook ever receive gradient (through the loss below);
* ``quant_loss = mse(E[k], sg(z)) + β·mse(z, sg(E[k]))`` (codebook term + β·commitment term).

No EMA codebook updates, no dead-code restarts, no entropy loss: those are the fixes for the collapse
this baseline is meant to show. Contrast with IBQ (:class:`~ibq_hf.IBQQuantizer`), where the
straight-through estimator runs over the one-hot of the full softmax, so every code gets gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .ibq_quantizer_0_1_0 import IBQQuantizerOutput

__all__ = ["VanillaVectorQuantizer", "nearest_code_indices_l2"]


def nearest_code_indices_l2(
    z: torch.Tensor, codebook: torch.Tensor, max_tile_elements: int = 2**24
) -> torch.Tensor:
    """``argmin_k ‖z_t − E_k‖²`` for ``z [T, D]``, ``codebook [K, D]``, in fp32 tiles of at most
    ``max_tile_elements`` distances (no ``[T, K]`` tensor for large codebooks). Returns ``[T]`` int64.

    ``‖z‖²`` is constant per token, so the argmin of ``‖E_k‖² − 2 z·E_k`` is the same; ties go to the
    lowest index, like ``torch.argmin``.
    """
    z = z.float()
    codebook = codebook.float()
    num_tokens, num_codes = z.shape[0], codebook.shape[0]
    code_norms = codebook.pow(2).sum(dim=1)  # [K]
    chunk = min(num_codes, max_tile_elements)
    token_block = max(1, max_tile_elements // chunk)
    out = torch.empty(num_tokens, dtype=torch.long, device=z.device)
    for t0 in range(0, num_tokens, token_block):
        zb = z[t0 : t0 + token_block]
        best_val = torch.full((zb.shape[0],), math.inf, device=z.device)
        best_idx = torch.zeros(zb.shape[0], dtype=torch.long, device=z.device)
        for c0 in range(0, num_codes, chunk):
            dist = code_norms[c0 : c0 + chunk] - 2.0 * (zb @ codebook[c0 : c0 + chunk].t())
            val, idx = dist.min(dim=-1)
            take = val < best_val  # strict: an equal distance in a later chunk keeps the lower index
            best_val = torch.where(take, val, best_val)
            best_idx = torch.where(take, idx + c0, best_idx)
        out[t0 : t0 + token_block] = best_idx
    return out


class VanillaVectorQuantizer(nn.Module):
    """Nearest-code vector quantizer with straight-through gradients (the VQGAN baseline).

    Same interface as :class:`~ibq_hf.IBQQuantizer` (``forward`` → :class:`~ibq_hf.models.quantizer.IBQQuantizerOutput`,
    ``nearest_indices``, ``lookup``, ``embedding``), so :class:`~ibq_hf.IBQVQModel` and the trainers use it
    unchanged. The entropy terms of the output are always ``None``.

    Parameters:
        num_embeddings: codebook size ``K``.
        embedding_dim: code width ``D``.
        beta: weight of the commitment term ``mse(z, sg(E[k]))``.
        max_tile_elements: largest ``tokens × codes`` distance tile computed at once.
    """

    def __init__(
        self, num_embeddings: int, embedding_dim: int, beta: float = 0.25, max_tile_elements: int = 2**24
    ) -> None:
        super().__init__()
        if num_embeddings < 1 or embedding_dim < 1:
            raise ValueError(
                f"num_embeddings and embedding_dim must be positive, got {num_embeddings}, {embedding_dim}."
            )
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.beta = beta
        self.use_entropy_loss = False
        self.max_tile_elements = max_tile_elements
        # taming's VectorQuantizer2 init: U(−1/K, 1/K).
        self.embedding = nn.Embedding(num_embeddings, embedding_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_embeddings, 1.0 / num_embeddings)

    def extra_repr(self) -> str:
        return f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}, beta={self.beta}"

    def _flat(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4 or z.shape[1] != self.embedding_dim:
            raise ValueError(
                f"VanillaVectorQuantizer expects latents [B, {self.embedding_dim}, H, W], got {tuple(z.shape)}."
            )
        return z.permute(0, 2, 3, 1).reshape(-1, self.embedding_dim)

    def forward(self, z: torch.Tensor, return_dict: bool = True) -> IBQQuantizerOutput | tuple:
        """Quantize ``z [B, D, H, W]``: straight-through latents, indices ``[B, H, W]`` and the VQ loss."""
        b, d, h, w = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            z_flat = self._flat(z).float()
            codebook = self.embedding.weight.float()
            with torch.no_grad():
                indices = nearest_code_indices_l2(z_flat, codebook, self.max_tile_elements)
            selected = codebook[indices]  # [T, D]: gradient reaches only these rows
            quant_loss = F.mse_loss(selected, z_flat.detach()) + self.beta * F.mse_loss(
                z_flat, selected.detach()
            )
            z_q = z_flat + (selected - z_flat).detach()
        quantized = z_q.reshape(b, h, w, d).permute(0, 3, 1, 2).to(z.dtype)
        indices = indices.reshape(b, h, w)
        if not return_dict:
            return quantized, indices, quant_loss, None, None, None
        return IBQQuantizerOutput(quantized=quantized, indices=indices, quant_loss=quant_loss)

    @torch.no_grad()
    def nearest_indices(self, z: torch.Tensor) -> torch.Tensor:
        """Inference path: indices ``[B, H, W]`` of ``z [B, D, H, W]``."""
        b, _, h, w = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat = self._flat(z)
            return nearest_code_indices_l2(flat, self.embedding.weight, self.max_tile_elements).reshape(
                b, h, w
            )

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors ``[B, D, H, W]`` for indices ``[B, H, W]``."""
        if indices.ndim != 3:
            raise ValueError(f"lookup expects indices of shape [B, H, W], got {tuple(indices.shape)}.")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_embeddings):
            raise ValueError(
                f"indices must lie in [0, {self.num_embeddings}), got values in "
                f"[{int(indices.min())}, {int(indices.max())}]."
            )
        return self.embedding(indices.long()).permute(0, 3, 1, 2)
