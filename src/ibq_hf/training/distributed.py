"""Multi-process helpers for the training scripts."""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["check_ranks_in_sync"]


def check_ranks_in_sync(weights: torch.nn.Module | Iterable[torch.Tensor]) -> None:
    """Under DDP, raise when the ranks' final weights differ (a broken all-reduce or a diverged rank).

    ``weights`` is a module (its parameters and buffers) or any iterable of tensors (e.g. EMA shadows).
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    if isinstance(weights, torch.nn.Module):
        weights = [*weights.parameters(), *weights.buffers()]
    flat = torch.cat([t.detach().double().reshape(-1).cpu() for t in weights])
    if torch.distributed.get_backend() == "nccl":  # NCCL collectives need CUDA tensors
        flat = flat.to(torch.device("cuda", torch.cuda.current_device()))
    fingerprint = torch.stack(
        [flat.sum(), (flat * flat).sum(), (flat * torch.arange(flat.numel(), device=flat.device)).sum()]
    )
    gathered = [torch.zeros_like(fingerprint) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(gathered, fingerprint)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError(
            f"Ranks ended with different weights: fingerprints {[g.tolist() for g in gathered]}."
        )
    print(f"rank {torch.distributed.get_rank()}: all {len(gathered)} ranks in sync", flush=True)
