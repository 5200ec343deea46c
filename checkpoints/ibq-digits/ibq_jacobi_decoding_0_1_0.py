# Shipped by ibq-hf 0.1.0 from ibq_hf/models/jacobi_decoding.py (generated at save time; edit the package, not this file).
"""Speculative Jacobi decoding (SJD; Teng et al. 2024, arXiv 2410.01699): several image tokens per forward pass,
with the model's sampling distribution kept exactly.

Why: sequential sampling runs one forward pass per image token (256 for a 16×16 grid), and each pass is tiny.
SJD feeds a window of ``L`` draft tokens after the accepted prefix and verifies them all in one pass, so a pass
can yield up to ``L + 1`` tokens.

One pass, for a sample with ``n`` accepted image tokens (sequence position ``p >= 1`` holds image token ``p - 1``,
position 0 the class token, and the logits at position ``p`` predict image token ``p``):

* input ``[x_{n-1}, d_n, …, d_{n+L-1}]`` at positions ``n … n + L`` (``x_{-1}`` is the class token); the cache
  holds positions ``0 … n - 1``. Output: the target distributions ``p_n … p_{n+L}`` (after guidance, temperature,
  top-k/top-p: exactly what sequential sampling draws from), each conditioned on the drafts before it;
* drafts are accepted left to right with probability ``min(1, p(d)/q(d))`` (``q``: the exact distribution the
  draft was drawn from). At the first rejection, at token ``n + m``, that token is drawn from
  ``normalize(max(0, p − q))`` (from ``p`` where that residual has no mass); if all ``L`` are accepted, token
  ``n + L`` is drawn from ``p_{n+L}`` (a free token). Either way the pass yields ``m + 1`` tokens;
* the Jacobi update: the next window's drafts ``n + m + 1 … n + L`` are drawn from this pass's ``p`` at those
  positions (conditioned on the old drafts: a proposal, whose exact distribution is kept as their ``q``); the
  positions beyond the evaluated window are drawn from the last evaluated ``p`` (``p_{n+L}``). The first window
  is drawn uniformly over the vocabulary. Greedy decoding (``do_sample=False``) is plain Jacobi: a draft is
  accepted while it equals the arg-max, and the first mismatch is replaced by the arg-max.

Each sample advances by its own accepted length: the KV cache (:class:`PerSamplePositionCache`) stores every row's
keys at that row's own sequence positions, and the attention mask and 2-D RoPE take positions per row, so an
image depends only on its class, its generator and the settings, never on the rest of the batch. Stale keys of
rejected drafts need no trimming: slot ``j`` is visible only to queries at positions ``>= j``, and every pass
rewrites all slots from the sample's first unaccepted position on before reading them. Every pass has the same
shape ``[rows, L + 1]`` (finished samples are dropped with the dynamic cache, frozen with the static one), so a
compiled pass never recompiles.

Random numbers: one block of ``2L + 1`` uniforms per sample and pass (``L`` acceptance tests, one corrected or
free token, ``L`` new drafts) plus ``L`` for the first drafts, all drawn up front from the sample's generator.
The same seed therefore gives a different image with and without SJD (the streams are used differently), and
the same image for the same window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers.cache_utils import Cache, StaticLayer

from .ibq_sampling_0_1_0 import sample_from_probs

if TYPE_CHECKING:
    from transformers.generation.logits_process import LogitsProcessorList
    from transformers.generation.streamers import BaseStreamer

__all__ = [
    "JacobiStatistics",
    "PerSamplePositionCache",
    "accept_drafts",
    "jacobi_decode",
    "residual_distribution",
]

#: A residual ``max(0, p − q)`` with less total mass than this is round-off: the token is then drawn from ``p``.
RESIDUAL_MASS_FLOOR = 1e-6


# --------------------------------------------------------------------------------------------------------------
# The per-sample cache
# --------------------------------------------------------------------------------------------------------------


class PerSamplePositionLayer(StaticLayer):
    """A preallocated layer cache [R, H, max_len, D] where row ``r``'s new keys go to slots ``positions[r]``.

    transformers' caches keep one length for the whole batch; SJD samples advance by different amounts, so the
    slots written by a pass come from the owning cache's ``write_positions`` [R, L] instead.
    """

    def __init__(self, max_cache_len: int, owner: PerSamplePositionCache) -> None:
        super().__init__(max_cache_len=max_cache_len)
        self._owner = owner

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        index = self._owner.write_positions[:, None, :, None]
        self.keys.scatter_(2, index.expand_as(key_states), key_states)
        self.values.scatter_(2, index.expand_as(value_states), value_states)
        return self.keys, self.values

    def select_rows(self, rows: torch.Tensor) -> None:
        if self.is_initialized:
            self.keys = self.keys.index_select(0, rows)
            self.values = self.values.index_select(0, rows)


class PerSamplePositionCache(Cache):
    """KV cache with a write position per row and per token, for decoding where rows advance independently.

    Set :attr:`write_positions` [R, L] (sequence positions of the ``L`` tokens each row feeds) before a forward
    pass; the attention mask must let a query at position ``p`` see slots ``0 … p`` of its own row only.
    """

    def __init__(self, num_layers: int, max_cache_len: int) -> None:
        self.max_cache_len = max_cache_len
        self.write_positions = torch.zeros(1, 1, dtype=torch.long)
        super().__init__(layers=[PerSamplePositionLayer(max_cache_len, self) for _ in range(num_layers)])

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (finished samples, or the unconditional half after the guidance cutoff)."""
        for layer in self.layers:
            layer.select_rows(rows)


# --------------------------------------------------------------------------------------------------------------
# Verification rules (module functions, so a test can swap in deliberately wrong ones and see them fail)
# --------------------------------------------------------------------------------------------------------------


def accept_drafts(p_draft: torch.Tensor, q_draft: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Speculative acceptance of each draft: ``u < min(1, p(d)/q(d))`` with ``u`` uniform in [0, 1).

    ``p_draft``/``q_draft``: the target and draft probability of each draft token [B, L]; ``q > 0`` always (a
    draft is never drawn where its ``q`` is zero). Returns bool [B, L]. Since ``u < 1``, comparing with ``p/q``
    directly is the same test as with ``min(1, p/q)``.
    """
    return uniforms < p_draft / q_draft


def residual_distribution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Where a rejected position's token comes from: ``max(0, p − q)`` [..., V], or ``p`` where that has no mass.

    Unnormalized (the inverse-CDF draw normalizes). ``p ≤ q`` everywhere happens only up to round-off (both sum
    to 1), where a rejection has probability ~0; drawing from ``p`` there keeps the draw defined.
    """
    residual = (p - q).clamp_(min=0.0)
    empty = residual.sum(dim=-1, keepdim=True) <= RESIDUAL_MASS_FLOOR
    return torch.where(empty, p, residual)


# --------------------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------------------


@dataclass
class JacobiStatistics:
    """What a decoding call cost: batched forward passes, passes per sample [B], and per window index ``j`` how
    often a draft was verified (``drafts_verified`` [L]) and accepted (``drafts_accepted`` [L])."""

    num_forward_passes: int
    forward_passes_per_sample: torch.Tensor
    drafts_verified: torch.Tensor
    drafts_accepted: torch.Tensor


@dataclass
class _Rows:
    """The state of the samples still being decoded (row ``i`` is sample ``sample[i]``)."""

    sample: torch.Tensor  # [A] original sample index
    accepted: torch.Tensor  # [A] n: image tokens accepted so far
    last: torch.Tensor  # [A] the last accepted token (fed at position n); unused while n == 0
    drafts: torch.Tensor  # [A, L]
    draft_probs: torch.Tensor | None  # [A, L, V]: q of each draft (None when greedy)


def jacobi_decode(
    model: Any,
    labels: torch.Tensor,
    settings: Any,
    window: int,
    uniforms: torch.Tensor | None,
    processors: LogitsProcessorList,
    user_processors: Sequence[Callable[[torch.LongTensor, torch.Tensor], torch.Tensor]] | None,
    check_finite: bool,
    streamer: BaseStreamer | None,
    step_callback: Callable[[int, torch.LongTensor], None] | None,
) -> tuple[torch.Tensor, JacobiStatistics]:
    """Decode image tokens [B, N] for ``labels`` [B] with a draft window of ``window`` tokens.

    ``uniforms``: [B, 1 + N, 2·window + 1] from each sample's generator (``None`` when greedy): row 0 holds the
    first drafts' uniforms, row ``k + 1`` those of pass ``k``. ``processors`` are the built-in warpers (they
    ignore ``input_ids``); ``user_processors`` run afterwards per sample and window position with that
    position's exact prefix (accepted tokens + the drafts before it), as in sequential decoding.
    """
    batch = labels.shape[0]
    num_steps = model.config.num_image_tokens
    vocab = model.config.vocab_size
    device = labels.device
    width = window + 1
    greedy = uniforms is None
    static = settings.cache_implementation == "static"
    offsets = torch.arange(width, device=device)

    guided = settings.guided
    scales = torch.tensor(
        [settings.scale_at(t, num_steps) if guided else 1.0 for t in range(num_steps)] + [1.0] * width,
        device=device,
    )
    all_labels = (
        torch.cat([labels, torch.full_like(labels, model.config.null_class_id)]) if guided else labels
    )
    cond = model.class_emb(all_labels)
    modulations = ([block.modulation(cond) for block in model.blocks], model.head_nm.modulation(cond))
    cache = _jacobi_cache(model, static, cond.shape[0], num_steps + width, window)

    pass_fn = model._jacobi_pass
    if settings.compile_config is not None:
        pass_fn = model._compiled_jacobi_pass(settings.compile_config)

    # The first drafts: uniform over the vocabulary.
    if greedy:
        first = torch.zeros(batch, window, dtype=torch.long, device=device)
        first_q = None
    else:
        first_q = torch.full((batch, window, vocab), 1.0 / vocab, device=device)
        first = sample_from_probs(first_q, uniforms[:, 0, :window])
    rows = _Rows(
        sample=torch.arange(batch, device=device),
        accepted=torch.zeros(batch, dtype=torch.long, device=device),
        last=torch.zeros(batch, dtype=torch.long, device=device),
        drafts=first,
        draft_probs=first_q,
    )
    tokens = torch.zeros(batch, num_steps + width, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    # Statistics stay on the device (no host sync per pass); they move to the CPU once, at the end.
    passes_per_sample = torch.zeros(batch, dtype=torch.long, device=device)
    verified = torch.zeros(window, dtype=torch.long, device=device)
    accepted_count = torch.zeros(window, dtype=torch.long, device=device)
    emitted = 0
    num_passes = 0

    while not bool(done.all()):
        live = ~done[rows.sample]  # all True with the dynamic cache (finished rows are dropped)
        positions = rows.accepted.clamp(max=num_steps - 1)[:, None] + offsets  # [A, L+1]
        ids = torch.cat([rows.last[:, None], rows.drafts], dim=1)
        two_halves = cond.shape[0] == 2 * rows.sample.shape[0]
        feed_ids = torch.cat([ids, ids]) if two_halves else ids
        feed_positions = torch.cat([positions, positions]) if two_halves else positions
        if settings.compile_config is not None:
            torch.compiler.cudagraph_mark_step_begin()
        logits = pass_fn(feed_ids, feed_positions, cond, cache, modulations).float()  # [R, L+1, V]
        num_passes += 1
        passes_per_sample[rows.sample] += live.long()

        # Target distributions of tokens n … n+L.
        if two_halves:
            cond_logits, uncond_logits = logits.chunk(2)
            scale = scales[positions][..., None]
            logits = torch.where(
                scale == 1.0, cond_logits, uncond_logits + scale * (cond_logits - uncond_logits)
            )
        scores = _process(processors, user_processors, logits, tokens, rows, check_finite)

        remaining = num_steps - rows.accepted  # [A]
        if greedy:
            best = scores.argmax(dim=-1)  # [A, L+1]
            accept = rows.drafts == best[:, :window]
        else:
            probs = torch.softmax(scores, dim=-1)  # [A, L+1, V]
            block = uniforms[rows.sample, num_passes]  # [A, 2L+1]
            p_draft = probs[:, :window].gather(-1, rows.drafts[..., None])[..., 0]
            q_draft = rows.draft_probs.gather(-1, rows.drafts[..., None])[..., 0]
            accept = accept_drafts(p_draft, q_draft, block[:, :window])
        leading = accept.long().cumprod(dim=1)
        num_accepted = leading.sum(dim=1)  # m [A]
        reached = torch.cat([torch.ones_like(leading[:, :1]), leading[:, :-1]], dim=1).bool()
        reached &= offsets[None, :window] < remaining[:, None]
        verified += (reached & live[:, None]).sum(dim=0)
        accepted_count += (reached & accept & live[:, None]).sum(dim=0)

        # The token at the first rejection (or the free token after a fully accepted window).
        at = num_accepted[:, None]
        if greedy:
            next_ids = best.gather(1, at)[:, 0]
        else:
            p_at = probs.gather(1, at[..., None].expand(-1, 1, vocab))[:, 0]
            q_at = rows.draft_probs.gather(1, at.clamp(max=window - 1)[..., None].expand(-1, 1, vocab))[:, 0]
            source = torch.where((num_accepted < window)[:, None], residual_distribution(p_at, q_at), p_at)
            next_ids = sample_from_probs(source, block[:, window])
        produced = torch.cat([rows.drafts, rows.drafts[:, :1]], dim=1).scatter(1, at, next_ids[:, None])
        count = torch.minimum(num_accepted + 1, remaining)
        # Positions past the produced ones get stand-ins; the next pass rewrites them before anything reads them.
        write = rows.accepted[:, None] + offsets
        tokens[rows.sample[live][:, None], write[live]] = produced[live]

        # The Jacobi update: next drafts from this pass's distributions, shifted past the produced tokens.
        source_index = (num_accepted[:, None] + 1 + offsets[None, :window]).clamp(max=window)
        if greedy:
            drafts = best.gather(1, source_index)
            draft_probs = None
        else:
            draft_probs = probs.gather(1, source_index[..., None].expand(-1, -1, vocab))
            drafts = sample_from_probs(draft_probs, block[:, window + 1 :])
        finished_now = live & (count >= remaining)
        accepted = rows.accepted + torch.where(live, count, torch.zeros_like(count))
        last = torch.where(live, produced.gather(1, (count - 1).clamp(min=0)[:, None])[:, 0], rows.last)
        done[rows.sample[finished_now]] = True
        rows = _Rows(rows.sample, accepted, last, drafts, draft_probs)

        # Stream the steps every sample has reached.
        complete = int(torch.where(done, num_steps, 0).index_put((rows.sample,), rows.accepted).min())
        for step in range(emitted, complete):
            if streamer is not None:
                streamer.put(tokens[:, step].cpu())
            if step_callback is not None:
                step_callback(step, tokens[:, : step + 1])
        emitted = complete

        if not static:
            rows, cond, modulations = _drop_rows(rows, done, cond, modulations, cache, settings, num_steps)
    if streamer is not None:
        streamer.end()
    statistics = JacobiStatistics(num_passes, passes_per_sample.cpu(), verified.cpu(), accepted_count.cpu())
    return tokens[:, :num_steps].contiguous(), statistics


def _process(
    processors: LogitsProcessorList,
    user_processors: Sequence[Callable[[torch.LongTensor, torch.Tensor], torch.Tensor]] | None,
    logits: torch.Tensor,
    tokens: torch.Tensor,
    rows: _Rows,
    check_finite: bool,
) -> torch.Tensor:
    """Guided logits [A, L+1, V] → processed scores, as sequential decoding processes each token's logits."""
    active, width, vocab = logits.shape
    flat = logits.reshape(active * width, vocab)
    scores = processors(flat.new_empty(flat.shape[0], 0, dtype=torch.long), flat).view(active, width, vocab)
    if user_processors:
        scores = scores.clone()
        for i in range(active):
            n = int(rows.accepted[i])
            prefix = torch.cat([tokens[rows.sample[i], :n], rows.drafts[i]])
            for j in range(width):
                row = scores[i, j][None]
                for processor in user_processors:
                    row = processor(prefix[None, : n + j], row)
                scores[i, j] = row[0]
    if check_finite and not bool(torch.isfinite(scores).any(dim=-1).all()):
        raise ValueError(
            "The logits processors removed every token of a row (all scores -inf or NaN); make the "
            "logits_processor entries keep at least one finite score per row."
        )
    return scores


def _drop_rows(
    rows: _Rows,
    done: torch.Tensor,
    cond: torch.Tensor,
    modulations: tuple[Sequence[torch.Tensor], torch.Tensor],
    cache: PerSamplePositionCache,
    settings: Any,
    num_steps: int,
) -> tuple[_Rows, torch.Tensor, tuple[Sequence[torch.Tensor], torch.Tensor]]:
    """Dynamic cache only: drop finished samples, and the unconditional rows once every sample is past the
    guidance cutoff (the remaining tokens use conditional logits only)."""
    keep = ~done[rows.sample]
    active = rows.sample.shape[0]
    two_halves = cond.shape[0] == 2 * active
    cutoff = settings.guidance_cutoff
    drop_uncond = (
        two_halves and cutoff is not None and bool(keep.any()) and int(rows.accepted[keep].min()) >= cutoff
    )
    if bool(keep.all()) and not drop_uncond:
        return rows, cond, modulations
    index = keep.nonzero()[:, 0]
    cache_rows = torch.cat([index, index + active]) if two_halves and not drop_uncond else index
    cache.select_rows(cache_rows)
    cond = cond[cache_rows]
    modulations = ([m[cache_rows] for m in modulations[0]], modulations[1][cache_rows])
    rows = _Rows(
        rows.sample[index],
        rows.accepted[index],
        rows.last[index],
        rows.drafts[index],
        None if rows.draft_probs is None else rows.draft_probs[index],
    )
    return rows, cond, modulations


def _jacobi_cache(model: Any, static: bool, rows: int, max_len: int, window: int) -> PerSamplePositionCache:
    """A fresh cache (dynamic), or the model's preallocated one reused between calls (static)."""
    if static:
        key = (rows, max_len, window, model.dtype, model.device)
        reused = getattr(model, "_ibq_jacobi_cache", None)
        if reused is not None and reused[0] == key:
            return reused[1]
    cache = PerSamplePositionCache(model.config.num_hidden_layers, max_len)
    cache.write_positions = torch.zeros(rows, window + 1, dtype=torch.long, device=model.device)
    if static:
        cache.early_initialization(
            batch_size=rows,
            num_heads=model.config.num_attention_heads,
            head_dim=model.config.head_dim,
            dtype=model.dtype,
            device=model.device,
        )
        model._ibq_jacobi_cache = (key, cache)
    return cache
