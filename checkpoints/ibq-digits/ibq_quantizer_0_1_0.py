# Shipped by ibq-hf 0.1.0 from ibq_hf/models/quantizer.py (generated at save time; edit the package, not this file).
"""Index Backpropagation Quantization (IBQ), exact to the released SEED-Voken code.

The reference quantizer (`IndexPropagationQuantize`) computes logits ``z·Eᵀ`` over the whole codebook,
a softmax ``P``, the hard one-hot ``H`` of the argmax and the straight-through one-hot
``O = H - sg(P) + P``; the quantized vector is ``O·E`` (value ``E[ind]``), so every code receives
gradient through ``P``. Done densely this materialises several ``[tokens, codebook]`` tensors
(gigabytes at 2^18 codes). :class:`IBQQuantizer` keeps that dense path for small problems and as the
reference, and uses a chunked :class:`torch.autograd.Function` otherwise: it streams the codebook in
chunks with an online log-sum-exp, keeps only per-token statistics, and recomputes the logits in
backward. Values, losses and gradients (w.r.t. ``z`` and the codebook) equal the dense path to fp32
round-off.

Notation used below: ``T`` tokens (``B·H·W``, flattened in (b, h, w) order as the reference does),
``K`` codes, ``D`` code width, ``ℓ = z·Eᵀ`` the logits, ``τ`` the entropy temperature and
``a = ℓ/τ`` the sharpened logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.utils import BaseOutput
from torch import nn

__all__ = ["CodebookUsage", "IBQQuantizer", "IBQQuantizerOutput", "codebook_usage"]

# eps of the reference entropy loss (inside log(p̄ + eps); the one added to the logits is a no-op).
ENTROPY_EPS = 1e-5
# Exponents are clamped here before exp(): e^-87 ≈ 1.6e-38 is below anything that survives a sum with
# the row maximum (e^0 = 1) in fp32, and exp() of far more negative inputs takes a slow path on CPU
# (about 4x slower), which at τ = 0.01 is nearly every element.
EXP_FLOOR = -87.0


@dataclass
class IBQQuantizerOutput(BaseOutput):
    """Output of :class:`IBQQuantizer`.

    Args:
        quantized: ``[B, D, H, W]`` code vectors (value ``E[indices]``), straight-through to all codes.
        indices: ``[B, H, W]`` int64 code indices.
        quant_loss: scalar ``mse(z_q, z) + mse(sg(E[ind]), z) + β·mse(E[ind], sg(z))``.
        sample_entropy: scalar mean per-token entropy of ``softmax(ℓ/τ)`` (``None`` when entropy loss is off).
        avg_entropy: scalar entropy of the batch-averaged ``softmax(ℓ/τ)`` (``None`` when off).
        entropy_loss: ``w_sample·sample_entropy − w_batch·avg_entropy`` (``None`` when off).
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    quant_loss: torch.Tensor | None = None
    sample_entropy: torch.Tensor | None = None
    avg_entropy: torch.Tensor | None = None
    entropy_loss: torch.Tensor | None = None


# --------------------------------------------------------------------------------------------------
# Dense reference path
# --------------------------------------------------------------------------------------------------


def dense_ibq(
    z: torch.Tensor, codebook: torch.Tensor, compute_entropy: bool, temperature: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The reference computation on flat fp32 inputs, with ordinary autograd.

    Args:
        z: ``[T, D]`` encoder outputs. codebook: ``[K, D]``.

    Returns:
        ``(z_q, z_q2, indices, sample_entropy, avg_entropy)`` where ``z_q = O·E`` (straight-through) and
        ``z_q2 = H·E`` (gradient to the selected rows only).
    """
    logits = z @ codebook.t()  # [T, K]
    soft = logits.softmax(dim=-1)
    indices = soft.argmax(dim=-1)
    hard = torch.zeros_like(logits).scatter_(1, indices[:, None], 1.0)
    one_hot = hard - soft.detach() + soft
    z_q = one_hot @ codebook
    z_q2 = hard @ codebook
    sample_entropy = avg_entropy = None
    if compute_entropy:
        sample_entropy, avg_entropy = dense_entropy_terms(logits, temperature)
    return z_q, z_q2, indices, sample_entropy, avg_entropy


def dense_entropy_terms(logits: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """MAGVIT-v2 entropy terms exactly as the reference computes them from ``[T, K]`` logits."""
    sharpened = logits / temperature
    probs = sharpened.softmax(dim=-1)
    log_probs = (sharpened + ENTROPY_EPS).log_softmax(dim=-1)
    avg_probs = probs.mean(dim=0)
    avg_entropy = -(avg_probs * torch.log(avg_probs + ENTROPY_EPS)).sum()
    sample_entropy = -(probs * log_probs).sum(dim=-1).mean()
    return sample_entropy, avg_entropy


# --------------------------------------------------------------------------------------------------
# Chunked path
# --------------------------------------------------------------------------------------------------


def _blocks(total: int, size: int):
    """Half-open ranges [start, end) covering range(total) in steps of size."""
    for start in range(0, total, size):
        yield start, min(start + size, total)


def _forward_statistics(
    z: torch.Tensor,
    codebook: torch.Tensor,
    compute_entropy: bool,
    temperature: float,
    chunk_size: int,
    token_block: int,
) -> tuple[torch.Tensor, ...]:
    """Per-token statistics of the two softmaxes, streaming the codebook in chunks.

    Returns ``indices [T]``, ``row_max [T]`` (max of ℓ), ``log_sum [T]`` (so that
    ``log P = (ℓ − row_max) − log_sum``), and when ``compute_entropy``: ``log_sum_sharp [T]`` (so that
    ``log p = (ℓ − row_max)/τ − log_sum_sharp`` for ``p = softmax(ℓ/τ)``), ``token_entropy [T]`` and
    ``avg_probs [K]`` (mean of ``p`` over tokens). Backward recomputes the log-probabilities with the
    same arithmetic, so they match the forward ones bit for bit rather than to the rounding of
    ``|ℓ|/τ`` (which is large at τ = 0.01).

    Tiles are ``[chunk, token_block]`` (codebook-major: ``E_c·zᵀ`` is the fast GEMM layout on CPU) and
    reuse two preallocated buffers; nothing of size ``[T, K]`` exists. Per token block the codebook is
    scanned once with an online log-sum-exp (running max, sums rescaled when it grows); ``avg_probs``
    needs the final ``log_sum_sharp`` and so a second scan, skipped when the codebook is one chunk.
    """
    num_tokens, num_codes = z.shape[0], codebook.shape[0]
    inv_tau = 1.0 / temperature
    dtype, device = z.dtype, z.device
    indices = torch.empty(num_tokens, dtype=torch.long, device=device)
    row_max = torch.empty(num_tokens, dtype=dtype, device=device)
    log_sum = torch.empty_like(row_max)
    log_sum_sharp = token_entropy = avg_probs = None
    if compute_entropy:
        log_sum_sharp = torch.empty_like(row_max)
        token_entropy = torch.empty_like(row_max)
        avg_probs = torch.zeros(num_codes, dtype=dtype, device=device)
    chunks = list(_blocks(num_codes, chunk_size))
    single = len(chunks) == 1
    work_x = torch.empty(
        min(chunk_size, num_codes) * min(token_block, num_tokens), dtype=dtype, device=device
    )
    work_e = torch.empty_like(work_x)

    for t0, t1 in _blocks(num_tokens, token_block):
        zb = z[t0:t1]
        rows = t1 - t0
        m = torch.full((rows,), -math.inf, dtype=dtype, device=device)  # running max of ℓ
        best = torch.zeros(rows, dtype=torch.long, device=device)
        s = torch.zeros(rows, dtype=dtype, device=device)  # Σ exp(ℓ - m)
        s_sharp = torch.zeros_like(s)  # Σ exp(a - m/τ)
        w_sharp = torch.zeros_like(s)  # Σ exp(a - m/τ)·(a - m/τ)
        for c0, c1 in chunks:
            x = torch.mm(codebook[c0:c1], zb.t(), out=work_x[: (c1 - c0) * rows].view(c1 - c0, rows))  # ℓᵀ
            e = work_e[: (c1 - c0) * rows].view(c1 - c0, rows)
            chunk_max, chunk_arg = x.max(dim=0)
            new_m = torch.maximum(m, chunk_max)
            best = torch.where(chunk_max > m, chunk_arg + c0, best)  # strict '>': first occurrence wins
            x.sub_(new_m)  # ℓ - m ≤ 0
            s = s * torch.exp(m - new_m) + torch.clamp(x, min=EXP_FLOOR, out=e).exp_().sum(dim=0)
            if compute_entropy:
                shift = (m - new_m) * inv_tau  # ≤ 0; -inf on the first chunk
                scale = torch.exp(shift)
                x.mul_(inv_tau).clamp_(min=EXP_FLOOR)  # a - m/τ
                torch.exp(x, out=e)
                # w' = Σ e·(a - m'): moving the reference point adds shift·s' to the old terms
                w_old = torch.where(s_sharp > 0, (w_sharp + shift * s_sharp) * scale, torch.zeros_like(s))
                w_sharp = w_old + x.mul_(e).sum(dim=0)
                s_sharp = s_sharp * scale + e.sum(dim=0)
                if single:  # log_sum_sharp is final already: fold in the batch average now
                    avg_probs.addmv_(e, 1.0 / s_sharp)
            m = new_m
        indices[t0:t1] = best
        row_max[t0:t1] = m
        log_sum[t0:t1] = torch.log(s)
        if not compute_entropy:
            continue
        log_sum_sharp[t0:t1] = torch.log(s_sharp)
        token_entropy[t0:t1] = torch.log(s_sharp) - w_sharp / s_sharp  # -Σ p·(a - lse_a)
        if not single:
            for c0, c1 in chunks:
                x = torch.mm(codebook[c0:c1], zb.t(), out=work_x[: (c1 - c0) * rows].view(c1 - c0, rows))
                x.sub_(m).mul_(inv_tau).sub_(log_sum_sharp[t0:t1]).clamp_(min=EXP_FLOOR).exp_()
                avg_probs[c0:c1] += x.sum(dim=1)

    if compute_entropy:
        avg_probs /= num_tokens
    return indices, row_max, log_sum, log_sum_sharp, token_entropy, avg_probs


class ChunkedIBQFunction(torch.autograd.Function):
    """Memory-efficient IBQ: ``(z, E) -> (z_q, z_q2, indices, sample_entropy, avg_entropy)``.

    Forward values: ``z_q = z_q2 = E[indices]`` and the two entropy scalars. Backward reproduces the
    dense reference's gradients:

    * through ``z_q`` (straight-through softmax ``P``): ``dℓ = P ⊙ (G·Eᵀ − ⟨G, P·E⟩)`` plus the direct
      ``E[ind] += G`` of the one-hot's forward value;
    * through ``z_q2``: ``E[ind] += G2`` only;
    * through the entropies (with ``p = softmax(a)``, ``logp = log p``, ``H_t`` the token entropy,
      ``g = ∂H_avg/∂p̄ = −log(p̄+ε) − p̄/(p̄+ε)`` and ``ḡ_t = Σ_k g_k p_tk``):
      ``∂H_sample/∂a_tk = −p_tk (logp_tk + H_t)/T`` and ``∂H_avg/∂a_tk = p_tk (g_k − ḡ_t)/T``;

    then ``dz = dℓ·E`` and ``dE += dℓᵀ·z``, tile by tile in four reused buffers. When the codebook is
    one chunk the row sums ``⟨G, P·E⟩`` and ``ḡ`` come from the same tile; otherwise a first scan
    gathers them.
    """

    @staticmethod
    def forward(ctx, z, codebook, compute_entropy, temperature, chunk_size, token_block):
        indices, row_max, log_sum, log_sum_sharp, token_entropy, avg_probs = _forward_statistics(
            z, codebook, compute_entropy, temperature, chunk_size, token_block
        )
        z_q = codebook[indices]
        z_q2 = z_q.clone()
        if compute_entropy:
            sample_entropy = token_entropy.mean()
            avg_entropy = -(avg_probs * torch.log(avg_probs + ENTROPY_EPS)).sum()
        else:
            sample_entropy = avg_entropy = z.new_zeros(())
        ctx.save_for_backward(z, codebook, indices, row_max, log_sum, log_sum_sharp, token_entropy, avg_probs)
        ctx.compute_entropy = compute_entropy
        ctx.temperature = temperature
        ctx.chunk_size = chunk_size
        ctx.token_block = token_block
        ctx.mark_non_differentiable(indices)
        ctx.set_materialize_grads(False)
        return z_q, z_q2, indices, sample_entropy, avg_entropy

    @staticmethod
    def backward(ctx, grad_zq, grad_zq2, _grad_indices, grad_sample, grad_avg):
        z, codebook, indices, row_max, log_sum, log_sum_sharp, token_entropy, avg_probs = ctx.saved_tensors
        num_tokens = z.shape[0]
        inv_tau = 1.0 / ctx.temperature
        need_z, need_e = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        use_st = grad_zq is not None
        use_ent = ctx.compute_entropy and (grad_sample is not None or grad_avg is not None)
        grad_z = torch.zeros_like(z) if need_z else None
        grad_e = torch.zeros_like(codebook) if need_e else None

        if (use_st or use_ent) and (need_z or need_e):
            c_sample = c_avg = 0.0
            g = None
            if use_ent:
                c_sample = float(grad_sample) / num_tokens if grad_sample is not None else 0.0
                c_avg = float(grad_avg) / num_tokens if grad_avg is not None else 0.0
                g = -torch.log(avg_probs + ENTROPY_EPS) - avg_probs / (avg_probs + ENTROPY_EPS)  # [K]
            _backward_tiles(
                z, codebook, grad_zq if use_st else None, g, c_sample, c_avg, inv_tau,
                row_max, log_sum, log_sum_sharp, token_entropy, ctx.chunk_size, ctx.token_block,
                grad_z, grad_e,
            )  # fmt: skip

        if need_e:
            direct = grad_zq
            if grad_zq2 is not None:
                direct = grad_zq2 if direct is None else direct + grad_zq2
            if direct is not None:
                # index_put_ with accumulate: same sums as index_add_, much faster on CPU for few rows
                grad_e.index_put_((indices,), direct, accumulate=True)
        return grad_z, grad_e, None, None, None, None


def _backward_tiles(
    z, codebook, grad_zq, g, c_sample, c_avg, inv_tau,
    row_max, log_sum, log_sum_sharp, token_entropy, chunk_size, token_block,
    grad_z, grad_e,
) -> None:  # fmt: skip
    """Accumulate ``dz = dℓ·E`` and ``dE += dℓᵀ·z`` tile by tile (see :class:`ChunkedIBQFunction`)."""
    num_tokens, num_codes = z.shape[0], codebook.shape[0]
    use_st, use_ent = grad_zq is not None, g is not None
    chunks = list(_blocks(num_codes, chunk_size))
    single = len(chunks) == 1
    size = min(chunk_size, num_codes) * min(token_block, num_tokens)
    buffers = [torch.empty(size, dtype=z.dtype, device=z.device) for _ in range(4)]

    def views(k, rows):
        return [b[: k * rows].view(k, rows) for b in buffers]

    def shifted_logits(out, e_chunk, zb, rows):  # (ℓ − row_max)ᵀ, recomputed exactly as in forward
        return torch.mm(e_chunk, zb.t(), out=out).sub_(row_max[rows])

    def sharp_log_probs(out, shifted, rows):  # log p, clamped like forward's exponent
        return torch.mul(shifted, inv_tau, out=out).sub_(log_sum_sharp[rows]).clamp_(min=EXP_FLOOR)

    def soft_probs(shifted, rows):  # P = softmax(ℓ), in place of the shifted logits
        return shifted.sub_(log_sum[rows]).clamp_(min=EXP_FLOOR).exp_()

    for t0, t1 in _blocks(num_tokens, token_block):
        rows = slice(t0, t1)
        n = t1 - t0
        zb = z[rows]
        gb = grad_zq[rows] if use_st else None
        row_dot = g_bar = None
        if not single:  # first scan: the row sums over the whole codebook
            row_dot = torch.zeros(n, dtype=z.dtype, device=z.device)
            g_bar = torch.zeros_like(row_dot)
            for c0, c1 in chunks:
                buf_s, buf_d, buf_l, _ = views(c1 - c0, n)
                e_chunk = codebook[c0:c1]
                shifted = shifted_logits(buf_s, e_chunk, zb, rows)
                if use_ent:
                    g_bar.addmv_(sharp_log_probs(buf_l, shifted, rows).exp_().t(), g[c0:c1])
                if use_st:
                    d_p = torch.mm(e_chunk, gb.t(), out=buf_d)
                    row_dot += soft_probs(shifted, rows).mul_(d_p).sum(dim=0)
        for c0, c1 in chunks:
            buf_s, buf_d, buf_l, buf_p = views(c1 - c0, n)
            e_chunk = codebook[c0:c1]
            shifted = shifted_logits(buf_s, e_chunk, zb, rows)
            d_logits = None
            if use_ent:
                log_p = sharp_log_probs(buf_l, shifted, rows)
                p = torch.exp(log_p, out=buf_p)
                if single:
                    g_bar = p.t() @ g
                # τ·∂L/∂ℓ = p ⊙ (−c_s·logp + (−c_s·H − c_a·ḡ) + c_a·g), built in place of log p
                row_term = -c_sample * token_entropy[rows] - c_avg * g_bar
                log_p.mul_(-c_sample).add_(row_term).add_(g[c0:c1, None], alpha=c_avg)
                d_logits = log_p.mul_(p).mul_(inv_tau)
            if use_st:
                d_p = torch.mm(e_chunk, gb.t(), out=buf_d)
                soft = soft_probs(shifted, rows)
                if single:
                    row_dot = torch.mul(soft, d_p, out=buf_p).sum(dim=0)
                d_p.sub_(row_dot).mul_(soft)
                d_logits = d_p if d_logits is None else d_p.add_(d_logits)
            if grad_z is not None:
                grad_z[rows].addmm_(d_logits.t(), e_chunk)
            if grad_e is not None:
                grad_e[c0:c1].addmm_(d_logits, zb)


# --------------------------------------------------------------------------------------------------
# Inference path
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def nearest_code_indices(
    z: torch.Tensor, codebook: torch.Tensor, max_tile_elements: int = 2**24
) -> torch.Tensor:
    """``argmax_k z·E_k`` for ``z [T, D]`` in fp32 tiles: no softmax, no loss, no autograd."""
    num_tokens, num_codes = z.shape[0], codebook.shape[0]
    z = z.float()
    codebook = codebook.float()
    chunk = min(num_codes, max_tile_elements)
    token_block = max(1, max_tile_elements // chunk)
    out = torch.empty(num_tokens, dtype=torch.long, device=z.device)
    for t0, t1 in _blocks(num_tokens, token_block):
        zb = z[t0:t1]
        best_val = torch.full((t1 - t0,), -math.inf, device=z.device)
        best_idx = torch.zeros(t1 - t0, dtype=torch.long, device=z.device)
        for c0, c1 in _blocks(num_codes, chunk):
            val, idx = (zb @ codebook[c0:c1].t()).max(dim=-1)
            take = val > best_val
            best_val = torch.where(take, val, best_val)
            best_idx = torch.where(take, idx + c0, best_idx)
        out[t0:t1] = best_idx
    return out


# --------------------------------------------------------------------------------------------------
# Module
# --------------------------------------------------------------------------------------------------


class IBQQuantizer(nn.Module):
    """IBQ vector quantizer (the reference ``IndexPropagationQuantize``).

    Parameters:
        num_embeddings: codebook size ``K``.
        embedding_dim: code width ``D``.
        beta: weight of the codebook term ``mse(E[ind], sg(z))`` (the reference/"legacy" placement, which
            trained the released weights; the paper writes β on the commitment term instead).
        use_entropy_loss: compute the MAGVIT-v2 entropy terms.
        entropy_temperature: ``τ`` of the entropy softmax.
        sample_minimization_weight: weight of the per-token (sample) entropy term.
        batch_maximization_weight: weight of the batch-mean (codebook) entropy term.
        chunk_size: codebook entries per chunk of the memory-efficient path. ``None`` picks automatically:
            the dense reference path for small ``tokens × codebook`` problems, otherwise the chunked path
            with tiles of at most ``max_tile_elements`` logits.
        max_tile_elements: size (in logits) of the largest tile the chunked path allocates.
        dense_max_elements: ``tokens × codebook`` size up to which ``chunk_size=None`` uses the dense path.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        beta: float = 0.25,
        use_entropy_loss: bool = False,
        entropy_temperature: float = 0.01,
        sample_minimization_weight: float = 1.0,
        batch_maximization_weight: float = 1.0,
        chunk_size: int | None = None,
        max_tile_elements: int = 2**24,
        dense_max_elements: int = 2**20,
    ) -> None:
        super().__init__()
        if num_embeddings < 1 or embedding_dim < 1:
            raise ValueError(
                f"num_embeddings and embedding_dim must be positive, got {num_embeddings}, {embedding_dim}."
            )
        if entropy_temperature <= 0:
            raise ValueError(f"entropy_temperature must be > 0, got {entropy_temperature}.")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of codes or None, got {chunk_size}.")
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.beta = beta
        self.use_entropy_loss = use_entropy_loss
        self.entropy_temperature = entropy_temperature
        self.sample_minimization_weight = sample_minimization_weight
        self.batch_maximization_weight = batch_maximization_weight
        self.chunk_size = chunk_size
        self.max_tile_elements = max_tile_elements
        self.dense_max_elements = dense_max_elements
        # N(0, 1) init, as the reference (the default nn.Embedding init).
        self.embedding = nn.Embedding(num_embeddings, embedding_dim)

    def extra_repr(self) -> str:
        return (
            f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}, beta={self.beta}, "
            f"use_entropy_loss={self.use_entropy_loss}, entropy_temperature={self.entropy_temperature}"
        )

    # -- helpers ------------------------------------------------------------------------------------

    def _check_latents(self, z: torch.Tensor) -> None:
        if z.ndim != 4:
            raise ValueError(
                f"IBQQuantizer expects latents of shape [B, D, H, W], got a {z.ndim}-D tensor {tuple(z.shape)}."
            )
        if z.shape[1] != self.embedding_dim:
            raise ValueError(
                f"IBQQuantizer expects {self.embedding_dim} latent channels, got {z.shape[1]} (shape {tuple(z.shape)})."
            )

    def _tiling(self, num_tokens: int) -> tuple[int, int]:
        chunk = self.chunk_size or min(self.num_embeddings, self.max_tile_elements)
        chunk = min(chunk, self.num_embeddings)
        token_block = max(1, min(num_tokens, self.max_tile_elements // chunk))
        return chunk, token_block

    def resolve_implementation(self, num_tokens: int) -> str:
        """``"dense"`` or ``"chunked"``: what ``forward(implementation="auto")`` runs for ``num_tokens``."""
        if self.chunk_size is None and num_tokens * self.num_embeddings <= self.dense_max_elements:
            return "dense"
        return "chunked"

    # -- API ----------------------------------------------------------------------------------------

    def forward(
        self, z: torch.Tensor, implementation: str = "auto", return_dict: bool = True
    ) -> IBQQuantizerOutput | tuple:
        """Quantize ``z [B, D, H, W]``; returns quantized latents, indices ``[B, H, W]`` and the losses.

        ``implementation`` is ``"auto"``, ``"dense"`` (the reference computation) or ``"chunked"``.
        Logits, losses and the codebook are computed in fp32 even under autocast.
        """
        self._check_latents(z)
        b, d, h, w = z.shape
        num_tokens = b * h * w
        if implementation == "auto":
            implementation = self.resolve_implementation(num_tokens)
        if implementation not in ("dense", "chunked"):
            raise ValueError(f"implementation must be 'auto', 'dense' or 'chunked', got {implementation!r}.")

        with torch.autocast(device_type=z.device.type, enabled=False):
            z_flat = z.permute(0, 2, 3, 1).reshape(num_tokens, d).float()
            codebook = self.embedding.weight.float()
            if implementation == "dense":
                z_q, z_q2, indices, sample_entropy, avg_entropy = dense_ibq(
                    z_flat, codebook, self.use_entropy_loss, self.entropy_temperature
                )
            else:
                chunk, token_block = self._tiling(num_tokens)
                z_q, z_q2, indices, sample_entropy, avg_entropy = ChunkedIBQFunction.apply(
                    z_flat, codebook, self.use_entropy_loss, self.entropy_temperature, chunk, token_block
                )
            quant_loss = (
                F.mse_loss(z_q, z_flat)
                + F.mse_loss(z_q2.detach(), z_flat)
                + self.beta * F.mse_loss(z_q2, z_flat.detach())
            )
            entropy_loss = None
            if self.use_entropy_loss:
                entropy_loss = (
                    self.sample_minimization_weight * sample_entropy
                    - self.batch_maximization_weight * avg_entropy
                )
            else:
                sample_entropy = avg_entropy = None

        quantized = z_q.reshape(b, h, w, d).permute(0, 3, 1, 2).to(z.dtype)
        indices = indices.reshape(b, h, w)
        if not return_dict:
            return quantized, indices, quant_loss, sample_entropy, avg_entropy, entropy_loss
        return IBQQuantizerOutput(
            quantized=quantized,
            indices=indices,
            quant_loss=quant_loss,
            sample_entropy=sample_entropy,
            avg_entropy=avg_entropy,
            entropy_loss=entropy_loss,
        )

    @torch.no_grad()
    def nearest_indices(self, z: torch.Tensor) -> torch.Tensor:
        """Inference path: indices ``[B, H, W]`` of ``z [B, D, H, W]`` (chunked argmax, no softmax or loss)."""
        self._check_latents(z)
        b, d, h, w = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat = z.permute(0, 2, 3, 1).reshape(-1, d)
            indices = nearest_code_indices(flat, self.embedding.weight, self.max_tile_elements)
        return indices.reshape(b, h, w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors ``[B, D, H, W]`` for indices ``[B, H, W]`` (the reference ``get_codebook_entry``)."""
        if indices.ndim != 3:
            raise ValueError(
                f"lookup expects indices of shape [B, H, W], got {tuple(indices.shape)}; "
                "reshape flat raster-order tokens with indices.view(B, H, W)."
            )
        if indices.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"indices must be an integer tensor, got dtype {indices.dtype}.")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_embeddings):
            raise ValueError(
                f"indices must lie in [0, {self.num_embeddings}), got values in "
                f"[{int(indices.min())}, {int(indices.max())}]: they do not come from this codebook."
            )
        return self.embedding(indices.long()).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------------------------------
# Codebook usage
# --------------------------------------------------------------------------------------------------


def codebook_usage(indices: torch.Tensor, num_embeddings: int) -> dict[str, float | torch.Tensor]:
    """Usage statistics of one batch of indices.

    Returns ``counts [K]`` (int64), ``used`` (number of distinct codes), ``utilization`` (used / K) and
    ``perplexity`` (``exp`` of the entropy of the empirical code distribution; K when uniform, 1 when
    collapsed).
    """
    counts = torch.bincount(indices.reshape(-1).long().cpu(), minlength=num_embeddings)
    if counts.numel() > num_embeddings:
        raise ValueError(f"indices contain values >= num_embeddings={num_embeddings}.")
    return _usage_from_counts(counts)


def _usage_from_counts(counts: torch.Tensor) -> dict[str, float | torch.Tensor]:
    total = int(counts.sum())
    used = int((counts > 0).sum())
    if total == 0:
        return {"counts": counts, "used": 0, "utilization": 0.0, "perplexity": 0.0}
    q = counts.double() / total
    entropy = -(q[q > 0] * q[q > 0].log()).sum()
    return {
        "counts": counts,
        "used": used,
        "utilization": used / counts.numel(),
        "perplexity": float(entropy.exp()),
    }


class CodebookUsage:
    """Accumulates code counts over many batches (training logs, tokenizer evaluation).

    Example::

        usage = CodebookUsage(model.config.num_embeddings)
        for batch in loader:
            usage.update(model.tokenize(batch))
        usage.compute()  # {"used": ..., "utilization": ..., "perplexity": ...}
    """

    def __init__(self, num_embeddings: int) -> None:
        self.num_embeddings = num_embeddings
        self.counts = torch.zeros(num_embeddings, dtype=torch.int64)

    def update(self, indices: torch.Tensor) -> None:
        """Count the code indices of one batch (any shape); values must lie in ``[0, num_embeddings)``."""
        flat = indices.reshape(-1).long()
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.num_embeddings):
            raise ValueError(f"indices must lie in [0, {self.num_embeddings}).")
        self.counts += torch.bincount(flat.cpu(), minlength=self.num_embeddings)

    def merge(self, other: CodebookUsage) -> None:
        """Add the counts of another accumulator (e.g. gathered from another process)."""
        if other.num_embeddings != self.num_embeddings:
            raise ValueError("Cannot merge CodebookUsage accumulators of different codebook sizes.")
        self.counts += other.counts

    def all_reduce(self) -> None:
        """Sum the counts over all processes of an initialised ``torch.distributed`` group (no-op otherwise)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            backend = torch.distributed.get_backend()
            device = (
                torch.device("cuda", torch.cuda.current_device())
                if backend == "nccl"
                else torch.device("cpu")
            )
            counts = self.counts.to(device)
            torch.distributed.all_reduce(counts)
            self.counts = counts.cpu()

    def reset(self) -> None:
        """Set every count back to zero."""
        self.counts.zero_()

    def compute(self) -> dict[str, float]:
        """``used`` (distinct codes seen), ``utilization`` (used / codebook size), ``perplexity`` so far."""
        stats = _usage_from_counts(self.counts)
        return {"used": stats["used"], "utilization": stats["utilization"], "perplexity": stats["perplexity"]}
