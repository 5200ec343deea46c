"""IBQ class-conditional autoregressive image-token model (reference §4–§5), transformers-native.

A LlamaGen-style decoder (RMSNorm, SwiGLU, interleaved 2-D RoPE, one prepended class token) with VAR-style
adaLN: the class embedding modulates every block and the head norm. Sequence layout: position 0 is the class
token, position ``p >= 1`` holds image token ``p - 1`` (raster order on a ``grid_size × grid_size`` grid), and the
logits at position ``p`` predict image token ``p``. Submodule and parameter names are the original ones, so a
converted state dict is the original ``transformer.*`` one with the prefix stripped.

Generation (:meth:`IBQARForImageGeneration.generate`) runs its own loop on top of transformers ``Cache`` objects:
classifier-free guidance on a doubled batch (the unconditional rows use the null class as prefix token *and* as
adaLN condition), temperature / top-k / top-p, and one uniform draw per sample and step from that sample's own
``torch.Generator``, so a seed gives the same image whatever else is in the batch.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    GenerationConfig,
    GenerationMixin,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache, StaticCache
from transformers.generation.configuration_utils import CompileConfig
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..errors import CheckpointKeyError
from .configuration_ar import IBQARConfig
from .loading import quiet_small_load, resolve_pretrained

__all__ = [
    "IBQARForImageGeneration",
    "apply_rotary_emb_2d",
    "filter_top_k_top_p",
    "rope_2d_cos_sin",
]

GUIDANCE_SCHEDULES = ("constant", "linear")
CACHE_IMPLEMENTATIONS = ("dynamic", "static")


# --------------------------------------------------------------------------------------------------------------
# 2-D rotary embedding (interleaved pairs, class slot zeroed)
# --------------------------------------------------------------------------------------------------------------


def rope_2d_cos_sin(
    positions: torch.Tensor, grid_size: int, head_dim: int, base: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cos/sin of the original 2-D RoPE for sequence ``positions`` [L] → two fp32 tensors [L, head_dim/2].

    Rotation pair ``k < head_dim/4`` turns by ``row·f_k`` and pair ``head_dim/4 + k`` by ``col·f_k`` with
    ``f_k = base^(-k / (head_dim/4))``; image token ``i = p - 1`` sits at ``(i // grid, i % grid)``. Position 0
    (the class token) gets cos = sin = 0, so its rotated q and k are zero vectors, exactly as in LlamaGen/IBQ.
    """
    half = head_dim // 2
    freqs = 1.0 / (base ** (torch.arange(0, half, 2, device=positions.device)[: half // 2].float() / half))
    index = positions - 1
    row = torch.div(index, grid_size, rounding_mode="floor")
    col = index - row * grid_size
    angles = torch.cat([row[:, None].float() * freqs, col[:, None].float() * freqs], dim=-1)
    is_image = (positions > 0)[:, None]
    zero = torch.zeros((), device=positions.device)
    return torch.where(is_image, angles.cos(), zero), torch.where(is_image, angles.sin(), zero)


def apply_rotary_emb_2d(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs ``(2j, 2j+1)`` of ``x`` [..., L, D] in fp32 and cast back to ``x.dtype``."""
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs.unbind(-1)
    rotated = torch.stack([even * cos - odd * sin, odd * cos + even * sin], dim=-1)
    return rotated.flatten(-2).to(x.dtype)


# --------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------


class IBQARRMSNorm(nn.Module):
    """RMSNorm computed in fp32, cast back to the input dtype, then scaled by a learnable weight."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt((xf * xf).mean(dim=-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


class IBQARAdaLNLinear(nn.Linear):
    """The linear of an adaLN modulation. It carries its own init rule (reference §4.5): after the N(0, std)
    init, the first ``gamma_rows`` output rows are scaled by ``gamma_init`` (``alng``) and the others by 0.5."""

    def __init__(self, in_features: int, out_features: int, gamma_rows: int, gamma_init: float) -> None:
        super().__init__(in_features, out_features, bias=True)
        self.gamma_rows = gamma_rows
        self.gamma_init = gamma_init


class IBQARClassEmbedder(nn.Module):
    """Class embedding with ``num_classes + 1`` rows (the last is the null class) and training-time label dropout.

    Label dropout replaces each label by the null class with probability ``dropout_prob`` in training mode; it is
    what makes classifier-free guidance possible and is separate from the feature dropout ``token_dropout``.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """labels [B] → embeddings [B, C]."""
        if self.training and self.dropout_prob > 0:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        return self.embedding_table(labels)


def eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention (the ``"eager"`` implementation); ``attention_mask`` is additive.

    q [B,H,L,D], k/v [B,H,K,D] → output [B,L,H,D] and probabilities [B,H,L,K].
    """
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = torch.softmax(scores.float(), dim=-1).to(query.dtype)
    probs = F.dropout(probs, p=dropout, training=module.training)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


class IBQARAttention(nn.Module):
    """Multi-head self-attention with a fused ``wqkv`` ([q | k | v]), 2-D RoPE and a transformers KV cache."""

    def __init__(self, config: IBQARConfig, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.hidden_size = config.hidden_size
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        self.num_key_value_groups = 1
        self.attention_dropout = config.attention_dropout
        self.wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.wo = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.resid_dropout = nn.Dropout(config.resid_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        """hidden_states [B, L, C] → [B, L, C]; new keys/values are appended to ``cache`` when given."""
        batch, length, _ = hidden_states.shape
        qkv = self.wqkv(hidden_states).view(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = (t.transpose(1, 2) for t in qkv.unbind(2))
        query = apply_rotary_emb_2d(query, cos, sin)
        key = apply_rotary_emb_2d(key, cos, sin)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention
        )
        output, _ = attention(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
        )
        return self.resid_dropout(self.wo(output.reshape(batch, length, self.hidden_size)))


class IBQARFeedForward(nn.Module):
    """SwiGLU: ``w2(silu(w1 x) ⊙ w3 x)`` followed by dropout."""

    def __init__(self, config: IBQARConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w3 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.ffn_dropout = nn.Dropout(config.ffn_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn_dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class IBQARBlock(GradientCheckpointingLayer):
    """Pre-norm block modulated by the class embedding (VAR "AdaLNSelfAttn").

    ``ada_lin(cond)`` is split, in this order, into gamma1, gamma2, scale1, scale2, shift1, shift2 and:
    ``h = x + gamma1·attn(norm1(x)·(1 + scale1) + shift1)``, ``out = h + gamma2·ffn(norm2(h)·(1 + scale2) + shift2)``.
    """

    def __init__(self, config: IBQARConfig, layer_idx: int) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.hidden_size = hidden
        self.attention = IBQARAttention(config, layer_idx)
        self.feed_forward = IBQARFeedForward(config)
        self.attention_norm = IBQARRMSNorm(hidden, eps=config.rms_norm_eps)
        self.ffn_norm = IBQARRMSNorm(hidden, eps=config.rms_norm_eps)
        self.ada_lin = nn.Sequential(
            nn.SiLU(),
            IBQARAdaLNLinear(hidden, 6 * hidden, gamma_rows=2 * hidden, gamma_init=config.adaln_gamma_init),
        )

    def modulation(self, cond: torch.Tensor) -> torch.Tensor:
        """cond [B, C] → the six modulation vectors stacked as [B, 1, 6, C]."""
        return self.ada_lin(cond).view(-1, 1, 6, self.hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        cond: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        modulation: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """hidden_states [B, L, C], cond [B, C] → [B, L, C]. ``modulation`` may be precomputed (generation)."""
        if modulation is None:
            modulation = self.modulation(cond)
        gamma1, gamma2, scale1, scale2, shift1, shift2 = modulation.unbind(2)
        attn_in = self.attention_norm(hidden_states) * (1 + scale1) + shift1
        h = hidden_states + self.attention(attn_in, cos, sin, attention_mask, cache) * gamma1
        return h + self.feed_forward(self.ffn_norm(h) * (1 + scale2) + shift2) * gamma2


class IBQARAdaLNBeforeHead(nn.Module):
    """Final norm modulated by the class embedding: ``rmsnorm(h)·(1 + scale) + shift`` with ``[scale | shift]``."""

    def __init__(self, config: IBQARConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.hidden_size = hidden
        self.rmsnorm = IBQARRMSNorm(hidden, eps=config.rms_norm_eps)
        self.ada_lin = nn.Sequential(
            nn.SiLU(), IBQARAdaLNLinear(hidden, 2 * hidden, gamma_rows=0, gamma_init=1.0)
        )

    def modulation(self, cond: torch.Tensor) -> torch.Tensor:
        """cond [B, C] → [B, 1, 2, C] (scale, shift)."""
        return self.ada_lin(cond).view(-1, 1, 2, self.hidden_size)

    def forward(
        self, hidden_states: torch.Tensor, cond: torch.Tensor, modulation: torch.Tensor | None = None
    ) -> torch.Tensor:
        if modulation is None:
            modulation = self.modulation(cond)
        scale, shift = modulation.unbind(2)
        return self.rmsnorm(hidden_states) * (1 + scale) + shift


# --------------------------------------------------------------------------------------------------------------
# Sampling helpers
# --------------------------------------------------------------------------------------------------------------


def filter_top_k_top_p(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set logits outside the top-k / nucleus to -inf (HF semantics, as the reference); logits [B, V].

    Top-k keeps every logit >= the k-th largest (ties kept). Top-p keeps the smallest prefix of the sorted
    distribution whose mass reaches ``top_p``, including the token that crosses it; at least one token stays.
    """
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative > top_p
        remove_sorted[..., 1:] = remove_sorted[..., :-1].clone()
        remove_sorted[..., 0] = False
        remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def _sample_from_probs(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Categorical draw by inverse CDF: probs [B, V], uniforms [B] in [0, 1) → ids [B].

    One uniform per sample keeps each row's randomness in its own generator; a zero-probability id is never
    returned (its CDF step is empty).
    """
    cdf = probs.cumsum(dim=-1)
    target = uniforms[:, None].to(cdf.dtype) * cdf[:, -1:]
    ids = torch.searchsorted(cdf, target, right=True)
    return ids.clamp_(max=probs.shape[-1] - 1)[:, 0]


def _finite_number(name: str, value: Any) -> float:
    """``float(value)``, refusing NaN and ±inf: ``guidance_scale=nan`` would silently switch guidance off (every
    comparison with NaN is False) and ``inf`` or ``temperature=nan`` would turn every sample into one token."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__}).") from None
    if not math.isfinite(number):
        raise ValueError(
            f"{name} must be a finite number, got {number}; NaN or infinite sampling settings produce "
            "meaningless tokens. Pass a finite value (or leave it unset for the model's default)."
        )
    return number


def _whole_number(name: str, value: Any) -> int:
    """``int(value)`` for counts (``top_k``, ``guidance_cutoff``): ``top_k=1.5`` used to be truncated to 1 silently
    and ``True`` to read as 1; integral floats from configs (``2.0``) are accepted."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a whole number, got {value!r} ({type(value).__name__}).")
    number = _finite_number(name, value)
    if not number.is_integer():
        raise ValueError(f"{name} must be a whole number, got {value!r}; it counts tokens.")
    return int(number)


def _check_generator(generator: Any, batch: int) -> list[torch.Generator]:
    """A list with one ``torch.Generator`` per sample; anything else (``generator=5``, a seed) is a clear error."""
    if not isinstance(generator, (list, tuple)) or not all(isinstance(g, torch.Generator) for g in generator):
        raise ValueError(
            f"generator must be a torch.Generator or a list with one per sample, got {generator!r} "
            f"({type(generator).__name__}). For a seed, pass torch.Generator().manual_seed(seed); for a seed per "
            "sample, [torch.Generator().manual_seed(s) for s in seeds]."
        )
    if len(generator) != batch:
        raise ValueError(
            f"generator must be one torch.Generator or a list with one per sample; got {len(generator)} "
            f"entries for {batch} class labels."
        )
    return list(generator)


@dataclass(frozen=True)
class _GenerationSettings:
    guidance_scale: float
    guidance_schedule: str
    guidance_cutoff: int | None
    do_sample: bool
    temperature: float
    top_k: int
    top_p: float
    cache_implementation: str
    compile_config: CompileConfig | None

    def scale_at(self, step: int, num_steps: int) -> float:
        """Guidance scale for image token ``step`` (0-based) of ``num_steps``; 1.0 means "conditional only"."""
        if self.guidance_cutoff is not None and step >= self.guidance_cutoff:
            return 1.0
        if self.guidance_schedule == "linear":
            return 1.0 + (self.guidance_scale - 1.0) * (step + 1) / num_steps
        return self.guidance_scale


# --------------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------------


class IBQARForImageGeneration(PreTrainedModel, GenerationMixin):
    """IBQ class-conditional AR model over image-token ids.

    ``forward(input_ids [B, T], class_labels [B])`` returns logits [B, T + 1, V] (position 0 is the class token and
    predicts the first image token); ``generate(class_labels [B])`` returns image-token ids [B, grid_size²].
    """

    config_class = IBQARConfig
    config: IBQARConfig
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["IBQARBlock"]
    _supports_sdpa = True
    _can_compile_fullgraph = True

    def __init__(self, config: IBQARConfig) -> None:
        super().__init__(config)
        hidden = config.hidden_size
        self.tok_emb = nn.Embedding(config.vocab_size, hidden)
        self.class_emb = IBQARClassEmbedder(config.num_classes, hidden, config.class_dropout_prob)
        self.token_drop = nn.Dropout(config.token_dropout)
        self.blocks = nn.ModuleList([IBQARBlock(config, i) for i in range(config.num_hidden_layers)])
        self.head_nm = IBQARAdaLNBeforeHead(config)
        self.head = nn.Linear(hidden, config.vocab_size, bias=False)
        # Reused between `generate` calls (static cache) and compiled decode step; not part of the state dict.
        self._ibq_static_cache: tuple[tuple[Any, ...], StaticCache] | None = None
        self._ibq_compiled_decode: tuple[CompileConfig, Callable[..., torch.Tensor]] | None = None
        self.post_init()
        # A generation config of its own (not derived from the model config) so that extra fields such as
        # `guidance_schedule` survive save/load; from_pretrained replaces it with the saved one.
        self.generation_config = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0)

    # ---- weights ------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike | None, *model_args: Any, **kwargs: Any
    ) -> Any:
        """``PreTrainedModel.from_pretrained`` that refuses incomplete or mismatched weights instead of logging.

        transformers re-initialises missing parameters randomly and only logs a load report, so an AR checkpoint
        with a missing key samples garbage. Here any missing, unexpected or mis-shaped key raises
        :class:`~ibq_hf.errors.CheckpointKeyError` naming the keys. Two opt-outs, as in transformers:
        ``output_loading_info=True`` returns ``(model, loading_info)`` and raises nothing for missing/unexpected
        keys (what transformers' own model tests rely on); ``ignore_mismatched_sizes=True`` re-initialises
        mis-shaped parameters instead of raising for them.

        A path that looks local and does not exist raises :class:`~ibq_hf.errors.ModelFolderNotFoundError`; a repo
        id that cannot be loaded offline raises :class:`~ibq_hf.errors.HubModelUnavailableError`
        (:func:`ibq_hf.models.loading.resolve_pretrained`). Loads of small weights show no progress bars.
        """
        pretrained_model_name_or_path = resolve_pretrained(
            pretrained_model_name_or_path, "IBQ AR model (IBQARForImageGeneration)", "config.json", kwargs
        )
        with quiet_small_load(pretrained_model_name_or_path, kwargs):
            if kwargs.pop("output_loading_info", False):
                return super().from_pretrained(
                    pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
                )
            ignore_mismatched = bool(kwargs.pop("ignore_mismatched_sizes", False))
            model, info = super().from_pretrained(
                pretrained_model_name_or_path,
                *model_args,
                output_loading_info=True,
                ignore_mismatched_sizes=True,  # report mis-shaped keys (checked below), not a bare RuntimeError
                **kwargs,
            )
        missing, unexpected = info.get("missing_keys", ()), info.get("unexpected_keys", ())
        mismatched = [] if ignore_mismatched else list(info.get("mismatched_keys", ()))
        if missing or unexpected or mismatched:
            where = pretrained_model_name_or_path
            subfolder = kwargs.get("subfolder")
            raise CheckpointKeyError(
                f"IBQARForImageGeneration weights in {where}{f'/{subfolder}' if subfolder else ''}",
                missing=missing,
                unexpected=unexpected,
                mismatched=[(k, tuple(ckpt), tuple(own)) for k, ckpt, own in mismatched],
                hint="The weight file is incomplete or belongs to another architecture or config.json; re-save it "
                "with save_pretrained or re-run the conversion. Pass output_loading_info=True to load anyway "
                "and get the report.",
            )
        return model

    def _init_weights(self, module: nn.Module) -> None:
        """Reference init (§4.5): N(0, 0.02) linears/embeddings, adaLN gamma rows × ``alng`` and the rest × 0.5,
        zero biases, unit norms, and a zero output head (uniform initial logits)."""
        std = self.config.initializer_range
        if isinstance(module, IBQARAdaLNLinear):
            init.normal_(module.weight, mean=0.0, std=std)
            factors = torch.full(
                (module.out_features, 1), 0.5, dtype=module.weight.dtype, device=module.weight.device
            )
            factors[: module.gamma_rows] = module.gamma_init
            init.copy_(module.weight, module.weight * factors)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            if module is self.head:
                init.zeros_(module.weight)
            else:
                init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, IBQARRMSNorm):
            init.ones_(module.weight)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.tok_emb

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.tok_emb = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.head

    # ---- forward ------------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        class_labels: torch.LongTensor | Sequence[int] | None = None,
        labels: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        cache_position: torch.LongTensor | None = None,
        return_dict: bool | None = None,
    ) -> CausalLMOutputWithPast | tuple[Any, ...]:
        """Logits for image tokens, optionally continuing a KV cache.

        Args:
            input_ids: image-token ids [B, T] (T may be 0). Without a cache (or with an empty one) the class token
                is prepended, so the output has T + 1 positions; when continuing a non-empty cache it is not.
            class_labels: class ids [B] in [0, num_classes]; ``num_classes`` is the null class. In training mode
                they are replaced by the null class with probability ``config.class_dropout_prob``.
            labels: targets, either [B, T_out] (one per output position: ``input_ids = z[:, :-1]``,
                ``labels = z`` as in the original) or [B, T_out - 1] (causal-LM convention ``labels = input_ids``;
                the last position is not scored). -100 is ignored. The loss is the mean cross-entropy in fp32.
            cache: a transformers ``Cache`` (``DynamicCache``, ``StaticCache``) to read and extend.
            use_cache: create a ``DynamicCache`` when no cache is given.
            cache_position: sequence positions [T_out] of this call's outputs (0 = class token). Computed from
                the cache when omitted; pass it to avoid reading a static cache's length on the host.

        Returns:
            ``CausalLMOutputWithPast`` with ``logits`` [B, T_out, V], ``loss`` and ``cache``.
        """
        labels_b = self._as_class_labels(class_labels, allow_null=True)
        batch = labels_b.shape[0]
        if input_ids is None:
            input_ids = torch.zeros(batch, 0, dtype=torch.long, device=labels_b.device)
        self._check_input_ids(input_ids, batch)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)

        num_new = input_ids.shape[1]
        if cache_position is None:
            past = 0 if cache is None else cache.get_seq_length()
            past = int(past)
            prepend = past == 0
            cache_position = torch.arange(past, past + num_new + int(prepend), device=input_ids.device)
        else:
            if cache_position.ndim != 1 or cache_position.shape[0] not in (num_new, num_new + 1):
                raise ValueError(
                    f"cache_position must be 1-D with {num_new} entries (continuing a cache) or {num_new + 1} "
                    f"(sequence starting with the class token); got shape {tuple(cache_position.shape)}."
                )
            prepend = cache_position.shape[0] == num_new + 1
        if cache is None and not prepend:
            raise ValueError(
                "Without a cache the sequence must start with the class token; omit cache_position."
            )
        if not torch.compiler.is_compiling() and cache_position.numel() > 0:
            last = int(cache_position[-1])
            if last > self.config.num_image_tokens:
                raise ValueError(
                    f"The sequence reaches position {last}, but the model holds the class token plus "
                    f"{self.config.num_image_tokens} image tokens ({self.config.grid_size}×{self.config.grid_size}"
                    " grid); pass at most that many image tokens."
                )

        cond = self.class_emb(labels_b)
        hidden = self.tok_emb(input_ids)
        if prepend:
            hidden = torch.cat([cond[:, None, :].to(hidden.dtype), hidden], dim=1)
        hidden = self.token_drop(hidden)
        logits = self._transformer(hidden, cond, cache_position, cache)

        loss = None
        if labels is not None:
            loss = self._loss(logits, labels)
        output = CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()

    def _transformer(
        self,
        hidden: torch.Tensor,
        cond: torch.Tensor,
        positions: torch.Tensor,
        cache: Cache | None,
        modulations: tuple[Sequence[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Blocks + adaLN head: embedded sequence [B, L, C] at ``positions`` [L] → logits [B, L, V]."""
        cos, sin = rope_2d_cos_sin(
            positions, self.config.grid_size, self.config.head_dim, self.config.rope_base
        )
        mask = self._attention_mask(positions, cache, hidden.dtype)
        for i, block in enumerate(self.blocks):
            block_mod = None if modulations is None else modulations[0][i]
            hidden = block(hidden, cond, cos, sin, attention_mask=mask, cache=cache, modulation=block_mod)
        head_mod = None if modulations is None else modulations[1]
        return self.head(self.head_nm(hidden, cond, modulation=head_mod))

    def _attention_mask(
        self, positions: torch.Tensor, cache: Cache | None, dtype: torch.dtype
    ) -> torch.Tensor | None:
        """Mask [1, 1, L, K] letting query position p see key slots 0..p (bool for SDPA, additive otherwise).

        Without a cache SDPA uses its causal kernel (``None``). With a cache, slot j of the key tensor holds
        sequence position j (dynamic: K = past + L; static: K = max_cache_len, unwritten slots masked).
        """
        sdpa = self.config._attn_implementation == "sdpa"
        if cache is None:
            if sdpa:
                return None
            key_positions = positions
        else:
            kv_length = cache.get_mask_sizes(positions.shape[0], 0)[0]
            key_positions = torch.arange(kv_length, device=positions.device)
        allowed = (key_positions[None, :] <= positions[:, None])[None, None]
        if sdpa:
            return allowed
        return torch.zeros(allowed.shape, dtype=dtype, device=positions.device).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        batch, length, vocab = logits.shape
        if labels.ndim != 2 or labels.shape[0] != batch or labels.shape[1] not in (length, length - 1):
            raise ValueError(
                f"labels must be [B, {length}] (a target per output position) or [B, {length - 1}] "
                f"(labels = input_ids); got shape {tuple(labels.shape)} for logits {tuple(logits.shape)}."
            )
        scored = logits[:, : labels.shape[1]]
        return F.cross_entropy(scored.float().reshape(-1, vocab), labels.reshape(-1).to(logits.device))

    # ---- input checks ---------------------------------------------------------------------------------------

    def _as_class_labels(self, class_labels: Any, allow_null: bool) -> torch.Tensor:
        if class_labels is None:
            raise ValueError(
                "class_labels is required: pass one ImageNet-style class id per sample, shape [B]."
            )
        labels = torch.as_tensor(class_labels, device=self.device)
        if labels.ndim == 0:
            labels = labels[None]
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(
                f"class_labels must be integer class ids of shape [B]; got dtype {labels.dtype}, "
                f"shape {tuple(labels.shape)}."
            )
        labels = labels.long()
        if labels.numel() == 0:
            raise ValueError("class_labels is empty: pass at least one class id.")
        upper = self.config.num_classes + (1 if allow_null else 0)
        if not torch.compiler.is_compiling():
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= upper:
                allowed = (
                    f"[0, {self.config.num_classes}] ({self.config.num_classes} is the null class)"
                    if allow_null
                    else f"[0, {self.config.num_classes})"
                )
                raise ValueError(
                    f"class_labels must lie in {allowed}; got values from {low} to {high}. "
                    f"This model has {self.config.num_classes} classes."
                )
        return labels

    def _check_input_ids(self, input_ids: torch.Tensor, batch: int) -> None:
        if input_ids.ndim != 2 or input_ids.dtype.is_floating_point:
            raise ValueError(
                f"input_ids must be integer image-token ids of shape [B, T]; got dtype {input_ids.dtype}, "
                f"shape {tuple(input_ids.shape)}."
            )
        if input_ids.shape[0] != batch:
            raise ValueError(
                f"input_ids has batch size {input_ids.shape[0]} but class_labels has {batch}; pass one class "
                "label per sequence."
            )
        if input_ids.numel() > 0 and not torch.compiler.is_compiling():
            low, high = int(input_ids.min()), int(input_ids.max())
            if low < 0 or high >= self.config.vocab_size:
                raise ValueError(
                    f"input_ids must lie in [0, {self.config.vocab_size}) (the tokenizer's codebook); got values "
                    f"from {low} to {high}. Check that the tokenizer and the AR model use the same codebook size."
                )

    # ---- generation -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        class_labels: torch.LongTensor | Sequence[int] | int,
        guidance_scale: float | None = None,
        do_sample: bool | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        *,
        guidance_schedule: str | None = None,
        guidance_cutoff: int | None = None,
        cache_implementation: str | None = None,
        compile_config: CompileConfig | None = None,
        generation_config: GenerationConfig | None = None,
        step_callback: Callable[[int, torch.LongTensor], None] | None = None,
        **kwargs: Any,
    ) -> torch.LongTensor:
        """Sample image-token ids [B, grid_size²] for ``class_labels`` [B].

        Unset arguments come from ``generation_config`` (default: ``self.generation_config``, which the converter
        fills with the paper's per-size temperature and guidance), then from the built-in defaults below.

        Args:
            class_labels: class ids in [0, num_classes), shape [B] (an int or a list also works).
            guidance_scale: classifier-free guidance scale s (default 1.0 = off). For s > 1 the batch is doubled:
                the unconditional rows use the null class as prefix token and as adaLN condition, and the logits
                are ``u + s·(c − u)``. Values below 1 are rejected.
            do_sample: sample (default) or take the arg-max.
            temperature: divides the guided logits before filtering (default 1.0).
            top_k: keep the k most likely ids (0 = off, the default).
            top_p: nucleus mass (1.0 = off, the default).
            generator: one ``torch.Generator`` for the batch, or a list with one per sample; with a list, a sample's
                ids depend only on its class, its generator's seed and the settings, not on the rest of the batch.
            guidance_schedule: "constant" (default, as the paper) or "linear": image token n (0-based) of N uses
                ``1 + (s − 1)·(n + 1)/N``.
            guidance_cutoff: apply guidance to the first N image tokens only (afterwards conditional logits; with
                the dynamic cache the unconditional rows are dropped).
            cache_implementation: "dynamic" (default) or "static" (preallocated, reused between calls,
                compilable).
            compile_config: ``transformers.CompileConfig``: compile the decode step with ``torch.compile``
                (requires the static cache). The first call pays the compilation.
            generation_config: a ``GenerationConfig`` to read defaults from instead of ``self.generation_config``.
            step_callback: called as ``step_callback(step, tokens)`` after each sampled image token, with
                ``tokens`` [B, step + 1] the ids so far (a view: copy it to keep it). For progress bars and
                previews; it runs outside the compiled decode step and owns no shared state, so concurrent calls
                do not see each other's steps.

        Returns:
            LongTensor [B, grid_size²] of image-token ids in raster order.
        """
        if kwargs:
            raise ValueError(
                f"Unknown generate() arguments: {sorted(kwargs)}. Supported: class_labels, guidance_scale, "
                "do_sample, temperature, top_k, top_p, generator, guidance_schedule, guidance_cutoff, "
                "cache_implementation, compile_config, generation_config, step_callback."
            )
        settings = self._generation_settings(
            generation_config,
            guidance_scale=guidance_scale,
            guidance_schedule=guidance_schedule,
            guidance_cutoff=guidance_cutoff,
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            cache_implementation=cache_implementation,
            compile_config=compile_config,
        )
        labels = self._as_class_labels(class_labels, allow_null=False)
        batch = labels.shape[0]
        if generator is not None and not isinstance(generator, torch.Generator):
            _check_generator(generator, batch)  # also when greedy decoding ignores it
        num_steps = self.config.num_image_tokens
        uniforms = self._draw_uniforms(generator, batch, num_steps) if settings.do_sample else None

        was_training = self.training
        self.eval()
        try:
            return self._generate_tokens(labels, settings, uniforms, step_callback)
        finally:
            self.train(was_training)

    def _generate_tokens(
        self,
        labels: torch.Tensor,
        settings: _GenerationSettings,
        uniforms: torch.Tensor | None,
        step_callback: Callable[[int, torch.LongTensor], None] | None = None,
    ) -> torch.Tensor:
        batch = labels.shape[0]
        num_steps = self.config.num_image_tokens
        if settings.guidance_scale > 1.0 and settings.guidance_cutoff != 0:
            labels = torch.cat([labels, torch.full_like(labels, self.config.null_class_id)])
        rows = labels.shape[0]

        # The last sampled token is never fed back: the cache holds the class token + num_steps - 1 image tokens.
        cache = self._new_cache(settings.cache_implementation, rows, num_steps)
        decode = self._decode_step
        if settings.compile_config is not None:
            decode = self._compiled_decode(settings.compile_config)

        cond = self.class_emb(labels)
        modulations = ([block.modulation(cond) for block in self.blocks], self.head_nm.modulation(cond))
        prefill_positions = torch.zeros(1, dtype=torch.long, device=labels.device)
        logits = self._transformer(cond[:, None, :], cond, prefill_positions, cache, modulations)[:, -1]

        tokens = torch.empty(batch, num_steps, dtype=torch.long, device=labels.device)
        position = torch.zeros(1, dtype=torch.long, device=labels.device)
        for step in range(num_steps):
            logits = logits.float()
            if cond.shape[0] == 2 * batch:
                cond_logits, uncond_logits = logits[:batch], logits[batch:]
                scale = settings.scale_at(step, num_steps)
                logits = (
                    cond_logits if scale == 1.0 else uncond_logits + scale * (cond_logits - uncond_logits)
                )
            next_ids = self._next_ids(logits, settings, None if uniforms is None else uniforms[:, step])
            tokens[:, step] = next_ids
            if step_callback is not None:
                step_callback(step, tokens[:, : step + 1])
            if step == num_steps - 1:
                break
            cutoff = settings.guidance_cutoff
            guidance_over = cutoff is not None and step + 1 >= cutoff
            if guidance_over and cond.shape[0] == 2 * batch and isinstance(cache, DynamicCache):
                # Keep only the conditional rows to halve the remaining work (a static cache keeps its shape).
                cache.batch_select_indices(torch.arange(batch, device=labels.device))
                cond = cond[:batch]
                modulations = ([m[:batch] for m in modulations[0]], modulations[1][:batch])
            feed = torch.cat([next_ids, next_ids]) if cond.shape[0] == 2 * batch else next_ids
            position.add_(1)
            if settings.compile_config is not None:
                # CUDA-graph replays (mode="reduce-overhead") reuse output buffers: mark a new step explicitly.
                torch.compiler.cudagraph_mark_step_begin()
            logits = decode(feed[:, None], cond, position, cache, modulations)
        return tokens

    def _decode_step(
        self,
        input_ids: torch.Tensor,
        cond: torch.Tensor,
        position: torch.Tensor,
        cache: Cache,
        modulations: tuple[Sequence[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """One cached decode step: ids [R, 1] at sequence position ``position`` [1] → logits [R, V]."""
        hidden = self.token_drop(self.tok_emb(input_ids))
        return self._transformer(hidden, cond, position, cache, modulations)[:, -1]

    def _compiled_decode(self, compile_config: CompileConfig) -> Callable[..., torch.Tensor]:
        if self._ibq_compiled_decode is None or self._ibq_compiled_decode[0] != compile_config:
            compiled = torch.compile(self._decode_step, **compile_config.to_dict())
            self._ibq_compiled_decode = (compile_config, compiled)
        return self._ibq_compiled_decode[1]

    def _new_cache(self, implementation: str, rows: int, max_len: int) -> Cache:
        if implementation == "dynamic":
            return DynamicCache(config=self.config)
        key = (rows, max_len, self.dtype, self.device)
        if self._ibq_static_cache is not None and self._ibq_static_cache[0] == key:
            cache = self._ibq_static_cache[1]
            cache.reset()
            return cache
        cache = StaticCache(config=self.config, max_cache_len=max_len)
        cache.early_initialization(
            batch_size=rows,
            num_heads=self.config.num_attention_heads,
            head_dim=self.config.head_dim,
            dtype=self.dtype,
            device=self.device,
        )
        self._ibq_static_cache = (key, cache)
        return cache

    @staticmethod
    def _next_ids(
        logits: torch.Tensor, settings: _GenerationSettings, uniforms: torch.Tensor | None
    ) -> torch.Tensor:
        """Guided logits [B, V] (fp32) → next ids [B]: temperature, top-k/top-p, then draw (or arg-max)."""
        if not settings.do_sample:
            return logits.argmax(dim=-1)
        logits = filter_top_k_top_p(logits / settings.temperature, settings.top_k, settings.top_p)
        return _sample_from_probs(torch.softmax(logits, dim=-1), uniforms)

    def _draw_uniforms(
        self, generator: torch.Generator | Sequence[torch.Generator] | None, batch: int, num_steps: int
    ) -> torch.Tensor:
        """All uniforms of a call up front, [B, num_steps]: row b comes from its own generator when a list is given."""
        if generator is None:
            return torch.rand(batch, num_steps, device=self.device)
        if isinstance(generator, torch.Generator):
            return torch.rand(batch, num_steps, generator=generator, device=generator.device).to(self.device)
        generators = _check_generator(generator, batch)
        rows = [torch.rand(num_steps, generator=g, device=g.device).to(self.device) for g in generators]
        return torch.stack(rows)

    def _generation_settings(
        self, generation_config: GenerationConfig | None, **explicit: Any
    ) -> _GenerationSettings:
        config = generation_config if generation_config is not None else self.generation_config
        defaults: dict[str, Any] = {
            "guidance_scale": 1.0,
            "guidance_schedule": "constant",
            "guidance_cutoff": None,
            "do_sample": True,
            "temperature": 1.0,
            "top_k": 0,
            "top_p": 1.0,
            "cache_implementation": "dynamic",
            "compile_config": None,
        }
        values = {}
        for name, default in defaults.items():
            value = explicit.get(name)
            if value is None and config is not None:
                value = getattr(config, name, None)
            values[name] = default if value is None else value
        settings = _GenerationSettings(
            guidance_scale=_finite_number("guidance_scale", values["guidance_scale"]),
            guidance_schedule=str(values["guidance_schedule"]),
            guidance_cutoff=None
            if values["guidance_cutoff"] is None
            else _whole_number("guidance_cutoff", values["guidance_cutoff"]),
            do_sample=bool(values["do_sample"]),
            temperature=_finite_number("temperature", values["temperature"]),
            top_k=_whole_number("top_k", values["top_k"]),
            top_p=_finite_number("top_p", values["top_p"]),
            cache_implementation=str(values["cache_implementation"]),
            compile_config=values["compile_config"],
        )
        self._check_generation_settings(settings)
        return settings

    @staticmethod
    def _check_generation_settings(s: _GenerationSettings) -> None:
        if s.guidance_scale < 1.0:
            raise ValueError(
                f"guidance_scale={s.guidance_scale} is below 1. Classifier-free guidance runs the unconditional "
                "branch only for guidance_scale > 1 (logits = u + s·(c − u)); use 1.0 for no guidance or a value > 1."
            )
        if s.guidance_schedule not in GUIDANCE_SCHEDULES:
            raise ValueError(
                f"guidance_schedule must be one of {GUIDANCE_SCHEDULES}; got {s.guidance_schedule!r}."
            )
        if s.guidance_cutoff is not None and s.guidance_cutoff < 0:
            raise ValueError(
                f"guidance_cutoff must be >= 0 (a number of image tokens); got {s.guidance_cutoff}."
            )
        if s.do_sample and s.temperature <= 0:
            raise ValueError(
                f"temperature must be > 0 when sampling; got {s.temperature}. Use do_sample=False for arg-max."
            )
        if s.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it); got {s.top_k}.")
        if not 0.0 < s.top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1] (1.0 disables it); got {s.top_p}.")
        if s.cache_implementation not in CACHE_IMPLEMENTATIONS:
            raise ValueError(
                f"cache_implementation must be one of {CACHE_IMPLEMENTATIONS}; got {s.cache_implementation!r}."
            )
        if s.compile_config is not None:
            if not isinstance(s.compile_config, CompileConfig):
                raise ValueError(
                    f"compile_config must be a transformers.CompileConfig; got {type(s.compile_config).__name__}."
                )
            if s.cache_implementation != "static":
                raise ValueError(
                    "compile_config needs cache_implementation='static': a dynamic cache changes shape every "
                    "step and would recompile."
                )


AutoConfig.register(IBQARConfig.model_type, IBQARConfig, exist_ok=True)
AutoModel.register(IBQARConfig, IBQARForImageGeneration, exist_ok=True)
AutoModelForCausalLM.register(IBQARConfig, IBQARForImageGeneration, exist_ok=True)
