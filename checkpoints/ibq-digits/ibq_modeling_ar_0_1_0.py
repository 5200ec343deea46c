# Shipped by ibq-hf 0.1.0 from ibq_hf/models/modeling_ar.py (generated at save time; edit the package, not this file).
"""IBQ class-conditional autoregressive image-token model (reference §4–§5), transformers-native.

A LlamaGen-style decoder (RMSNorm, SwiGLU, interleaved 2-D RoPE, one prepended class token) with VAR-style
adaLN: the class embedding modulates every block and the head norm. Sequence layout: position 0 is the class
token, position ``p >= 1`` holds image token ``p - 1`` (raster order on a ``grid_size × grid_size`` grid), and the
logits at position ``p`` predict image token ``p``. Submodule and parameter names are the original ones, so a
converted state dict is the original ``transformer.*`` one with the prefix stripped.

This module is the network; ``generate()`` (the sampling loop: classifier-free guidance, logits processors,
per-sample generators, caches) comes from :class:`~ibq_hf.models.generation_ar.IBQARGenerationMixin`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    GenerationConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache, StaticCache
from transformers.generation.configuration_utils import CompileConfig
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils.deprecation import deprecate_kwarg

from .ibq_errors_0_1_0 import CheckpointKeyError
from .ibq_hub_utils_0_1_0 import IBQARHubMixin
from .ibq_configuration_ar_0_1_0 import IBQARConfig
from .ibq_generation_ar_0_1_0 import IBQARGenerationMixin
from .ibq_loading_0_1_0 import quiet_small_load, resolve_pretrained

__all__ = [
    "IBQARForImageGeneration",
    "apply_rotary_emb_2d",
    "rope_2d_cos_sin",
]

# --------------------------------------------------------------------------------------------------------------
# 2-D rotary embedding (interleaved pairs, class slot zeroed)
# --------------------------------------------------------------------------------------------------------------


def rope_2d_cos_sin(
    positions: torch.Tensor, grid_size: int, head_dim: int, base: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cos/sin of the original 2-D RoPE for sequence ``positions`` [L] (or [B, L], a position per row) → two fp32
    tensors [L, head_dim/2] (or [B, L, head_dim/2]).

    Rotation pair ``k < head_dim/4`` turns by ``row·f_k`` and pair ``head_dim/4 + k`` by ``col·f_k`` with
    ``f_k = base^(-k / (head_dim/4))``; image token ``i = p - 1`` sits at ``(i // grid, i % grid)``. Position 0
    (the class token) gets cos = sin = 0, so its rotated q and k are zero vectors, exactly as in LlamaGen/IBQ.
    """
    half = head_dim // 2
    freqs = 1.0 / (base ** (torch.arange(0, half, 2, device=positions.device)[: half // 2].float() / half))
    index = positions - 1
    row = torch.div(index, grid_size, rounding_mode="floor")
    col = index - row * grid_size
    angles = torch.cat([row[..., None].float() * freqs, col[..., None].float() * freqs], dim=-1)
    is_image = (positions > 0)[..., None]
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
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states [B, L, C] → output [B, L, C] and attention probabilities [B, H, L, K] or ``None``.

        New keys/values are appended to ``cache`` when given. The probabilities exist only with the eager
        implementation; ``output_attentions=True`` runs this call eagerly whatever the configured implementation
        (``attention_mask`` must then be the additive one, see ``IBQARForImageGeneration._attention_mask``).
        """
        batch, length, _ = hidden_states.shape
        qkv = self.wqkv(hidden_states).view(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = (t.transpose(1, 2) for t in qkv.unbind(2))
        query = apply_rotary_emb_2d(query, cos, sin)
        key = apply_rotary_emb_2d(key, cos, sin)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention)
        output, weights = attention(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
        )
        output = self.resid_dropout(self.wo(output.reshape(batch, length, self.hidden_size)))
        return output, weights


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
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states [B, L, C], cond [B, C] → [B, L, C] and the attention probabilities (``None`` unless
        ``output_attentions``). ``modulation`` may be precomputed (generation)."""
        if modulation is None:
            modulation = self.modulation(cond)
        gamma1, gamma2, scale1, scale2, shift1, shift2 = modulation.unbind(2)
        attn_in = self.attention_norm(hidden_states) * (1 + scale1) + shift1
        attn_out, weights = self.attention(attn_in, cos, sin, attention_mask, cache, output_attentions)
        h = hidden_states + attn_out * gamma1
        return h + self.feed_forward(self.ffn_norm(h) * (1 + scale2) + shift2) * gamma2, weights


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
# The model
# --------------------------------------------------------------------------------------------------------------


class IBQARForImageGeneration(IBQARHubMixin, PreTrainedModel, IBQARGenerationMixin):
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
        # The same two for speculative Jacobi decoding (`generate(jacobi_window=...)`).
        self._ibq_jacobi_cache: tuple[tuple[Any, ...], Any] | None = None
        self._ibq_compiled_jacobi: tuple[CompileConfig, Callable[..., torch.Tensor]] | None = None
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

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        """Replace the output head (``resize_token_embeddings`` resizes ``tok_emb`` and ``head`` together)."""
        self.head = new_embeddings

    # ---- forward ------------------------------------------------------------------------------------------

    @deprecate_kwarg("past_key_values", version="5.40.0", new_name="cache", raise_if_both_names=True)
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        class_labels: torch.LongTensor | Sequence[int] | None = None,
        labels: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        cache_position: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> CausalLMOutputWithPast | tuple[Any, ...]:
        """Logits for image tokens, optionally continuing a KV cache.

        ``past_key_values=`` is accepted as a deprecated alias of ``cache=`` (as in transformers 5.24's own models).

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
            output_attentions: also return each block's attention probabilities [B, H, T_out, K] (default
                ``config.output_attentions``). Only the eager implementation computes them: with SDPA this call
                runs eager attention (same outputs up to rounding), the model stays on SDPA.
            output_hidden_states: also return the hidden states [B, T_out, C], ``num_hidden_layers + 1`` of them
                (default ``config.output_hidden_states``): the embedded sequence, then each block's output, the
                last one after the adaLN head norm (what the head reads, as in transformers' decoders).
            return_dict: return a ``ModelOutput`` (default ``config.return_dict``) or a tuple of its non-``None``
                fields.

        Returns:
            ``CausalLMOutputWithPast`` with ``logits`` [B, T_out, V], ``loss``, ``cache``, ``hidden_states`` and
            ``attentions``.
        """
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
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
        logits, hidden_states, attentions = self._transformer_outputs(
            hidden,
            cond,
            cache_position,
            cache,
            output_hidden_states=bool(output_hidden_states),
            output_attentions=bool(output_attentions),
        )

        loss = None
        if labels is not None:
            loss = self._loss(logits, labels)
        output = CausalLMOutputWithPast(
            loss=loss, logits=logits, cache=cache, hidden_states=hidden_states, attentions=attentions
        )
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
        """Blocks + adaLN head: embedded sequence [B, L, C] at ``positions`` [L] (or [B, L], a position per row)
        → logits [B, L, V]."""
        return self._transformer_outputs(hidden, cond, positions, cache, modulations)[0]

    def _transformer_outputs(
        self,
        hidden: torch.Tensor,
        cond: torch.Tensor,
        positions: torch.Tensor,
        cache: Cache | None,
        modulations: tuple[Sequence[torch.Tensor], torch.Tensor] | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        """:meth:`_transformer` that also returns the hidden states (the block input, each block's output, the
        last one head-normed) and the attention probabilities per block when asked, else ``None`` for them."""
        cos, sin = rope_2d_cos_sin(
            positions, self.config.grid_size, self.config.head_dim, self.config.rope_base
        )
        if positions.ndim == 2:  # a position per row (speculative Jacobi decoding): broadcast over the heads
            cos, sin = cos[:, None], sin[:, None]
        implementation = "eager" if output_attentions else self.config._attn_implementation
        mask = self._attention_mask(positions, cache, hidden.dtype, implementation)
        all_hidden = [hidden] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for i, block in enumerate(self.blocks):
            block_mod = None if modulations is None else modulations[0][i]
            hidden, weights = block(
                hidden,
                cond,
                cos,
                sin,
                attention_mask=mask,
                cache=cache,
                modulation=block_mod,
                output_attentions=output_attentions,
            )
            if all_hidden is not None:
                all_hidden.append(hidden)
            if all_attentions is not None:
                all_attentions.append(weights)
        head_mod = None if modulations is None else modulations[1]
        hidden = self.head_nm(hidden, cond, modulation=head_mod)
        if all_hidden is not None:
            all_hidden[-1] = hidden
        logits = self.head(hidden)
        return (
            logits,
            None if all_hidden is None else tuple(all_hidden),
            None if all_attentions is None else tuple(all_attentions),
        )

    def _attention_mask(
        self,
        positions: torch.Tensor,
        cache: Cache | None,
        dtype: torch.dtype,
        implementation: str | None = None,
    ) -> torch.Tensor | None:
        """Mask [1, 1, L, K] letting query position p see key slots 0..p (bool for SDPA, additive otherwise).

        Without a cache SDPA uses its causal kernel (``None``). With a cache, slot j of the key tensor holds
        sequence position j (dynamic: K = past + L; static: K = max_cache_len, unwritten slots masked).
        ``positions`` [B, L] (a position per row, with a per-row cache) gives a mask [B, 1, L, K].
        ``implementation`` defaults to the configured attention implementation.
        """
        sdpa = (implementation or self.config._attn_implementation) == "sdpa"
        if cache is None:
            if sdpa and positions.ndim == 1:
                return None
            key_positions = positions
        else:
            kv_length = cache.get_mask_sizes(positions.shape[-1], 0)[0]
            key_positions = torch.arange(kv_length, device=positions.device)
        allowed = key_positions[..., None, :] <= positions[..., :, None]
        allowed = allowed[:, None] if allowed.ndim == 3 else allowed[None, None]
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

    def _input_device(self, given: Any) -> torch.device:
        """Device for the class labels: the class embedding's. Under accelerate's disk offload its weight is on
        ``meta`` (as is ``self.device``) and the offload hooks move inputs to the execution device, so a tensor then
        stays where it is and a list goes to the CPU."""
        device = self.class_emb.embedding_table.weight.device
        if device.type != "meta":
            return device
        return given.device if isinstance(given, torch.Tensor) else torch.device("cpu")

    def _as_class_labels(self, class_labels: Any, allow_null: bool) -> torch.Tensor:
        if class_labels is None:
            raise ValueError(
                "class_labels is required: pass one ImageNet-style class id per sample, shape [B]."
            )
        labels = torch.as_tensor(class_labels, device=self._input_device(class_labels))
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


# The Auto classes know the package's classes; code shipped next to weights is reached through `auto_map`.

# diffusers copies only the files a module imports itself; these complete the set it needs.
from .ibq_jacobi_decoding_0_1_0 import __name__ as _ibq_jacobi_decoding_0_1_0  # noqa: F401
from .ibq_sampling_0_1_0 import __name__ as _ibq_sampling_0_1_0  # noqa: F401
from .ibq_remote_code_0_1_0 import __name__ as _ibq_remote_code_0_1_0  # noqa: F401
