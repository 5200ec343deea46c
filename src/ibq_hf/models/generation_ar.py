"""The sampling loop of :class:`~ibq_hf.models.modeling_ar.IBQARForImageGeneration`, on transformers' parts.

What transformers provides is used as is: settings are merged in a ``GenerationConfig`` (call arguments over the
``generation_config`` argument over the model's ``generation_config``) and checked by its ``validate()``; logits go
through a ``LogitsProcessorList`` with transformers' ``TemperatureLogitsWarper`` and ``TopKLogitsWarper``; user
``logits_processor=`` lists and ``streamer=`` objects (the ``BaseStreamer`` protocol) plug in as in
``GenerationMixin.generate``.

What is IBQ-specific stays here: classifier-free guidance on a batch doubled with the null class (which is both the
prefix token and the adaLN condition of the unconditional rows) with its schedules and cutoff; one uniform per
sample and step drawn up front from that sample's own ``torch.Generator`` and turned into a token by inverse CDF
(so a seed gives the same image whatever else is in the batch); our own top-p (:class:`IBQTopPLogitsWarper`, the
reference's boundary rule); a static cache reused between calls and an optionally compiled decode step; and
argument checks stricter than ``GenerationConfig.validate()`` (it accepts NaN temperatures, ``top_k=1.5`` and
guidance below 1).

:func:`resolve_generation_settings` is the one place where generation defaults are merged: the model, the demo's
controls and the evaluation runners' recorded settings all read it.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers import GenerationConfig, GenerationMixin
from transformers.cache_utils import Cache, DynamicCache, StaticCache
from transformers.generation.configuration_utils import CompileConfig
from transformers.generation.logits_process import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
)
from transformers.utils import ModelOutput

from .jacobi_decoding import jacobi_decode
from .sampling import sample_from_probs

if TYPE_CHECKING:
    from transformers.generation.streamers import BaseStreamer

__all__ = [
    "CACHE_IMPLEMENTATIONS",
    "GENERATION_DEFAULTS",
    "GUIDANCE_SCHEDULES",
    "IBQARGenerationMixin",
    "IBQGenerateOutput",
    "IBQTopPLogitsWarper",
    "build_logits_processor",
    "resolve_generation_settings",
]

GUIDANCE_SCHEDULES = ("constant", "linear")
CACHE_IMPLEMENTATIONS = ("dynamic", "static")

#: Built-in value of every generation setting, used when neither the call nor the generation config sets it.
#: Each one is the neutral value ("off") of its setting, except ``do_sample``.
GENERATION_DEFAULTS: dict[str, Any] = {
    "guidance_scale": 1.0,
    "guidance_schedule": "constant",
    "guidance_cutoff": None,
    "do_sample": True,
    "temperature": 1.0,
    "top_k": 0,
    "top_p": 1.0,
    "cache_implementation": "dynamic",
    "compile_config": None,
    "jacobi_window": 0,
}


# --------------------------------------------------------------------------------------------------------------
# Settings: one merge, our checks, then transformers' own
# --------------------------------------------------------------------------------------------------------------


def resolve_generation_settings(
    generation_config: GenerationConfig | None = None, **overrides: Any
) -> dict[str, Any]:
    """The settings a ``generate()`` call samples with, checked: ``overrides`` > ``generation_config`` > defaults.

    ``overrides`` are settings named in :data:`GENERATION_DEFAULTS`; ``None`` means "unset". They are merged into a
    copy of ``generation_config`` (the caller's is not modified), and unset fields fall back to
    :data:`GENERATION_DEFAULTS`. Values are converted (``top_k=4.0`` → 4) and checked with messages that name the
    fix: non-finite numbers, fractional counts, ``guidance_scale < 1``, ``temperature <= 0`` when sampling, ``top_p``
    outside (0, 1], unknown schedules or caches, a compile config without the static cache. The merged config then
    goes through ``GenerationConfig.validate()``, which warns only about flags the call set itself.

    Returns:
        ``{name: value}`` for every key of :data:`GENERATION_DEFAULTS`: what the model uses, what the demo shows as
        defaults and what the evaluation runners record.
    """
    unknown = sorted(set(overrides) - set(GENERATION_DEFAULTS))
    if unknown:
        raise ValueError(
            f"Unknown generation settings {unknown}; the settings are {sorted(GENERATION_DEFAULTS)}."
        )
    merged = copy.deepcopy(generation_config) if generation_config is not None else GenerationConfig()
    user_set = set()
    for name, value in overrides.items():
        if value is not None:
            setattr(merged, name, value)
            # A neutral value ("off") conflicts with nothing; `validate` would warn about top_k=0 with do_sample=False.
            if not _is_neutral(value, GENERATION_DEFAULTS[name]):
                user_set.add(name)
    values = {}
    for name, default in GENERATION_DEFAULTS.items():
        value = getattr(merged, name, None)
        values[name] = default if value is None else value
    settings = {
        "guidance_scale": _finite_number("guidance_scale", values["guidance_scale"]),
        "guidance_schedule": str(values["guidance_schedule"]),
        "guidance_cutoff": None
        if values["guidance_cutoff"] is None
        else _whole_number("guidance_cutoff", values["guidance_cutoff"]),
        "do_sample": bool(values["do_sample"]),
        "temperature": _finite_number("temperature", values["temperature"]),
        "top_k": _whole_number("top_k", values["top_k"]),
        "top_p": _finite_number("top_p", values["top_p"]),
        "cache_implementation": str(values["cache_implementation"]),
        "compile_config": values["compile_config"],
        "jacobi_window": _whole_number("jacobi_window", values["jacobi_window"]),
    }
    _check_settings(settings)
    merged.validate(user_set_attributes=user_set)
    return settings


def _is_neutral(value: Any, default: Any) -> bool:
    """Whether ``value`` is the built-in "off" value of its setting (``top_k=0``, ``top_p=1.0``, ...)."""
    return isinstance(value, (int, float, str)) and not isinstance(value, bool) and value == default


def _check_settings(s: dict[str, Any]) -> None:
    if s["guidance_scale"] < 1.0:
        raise ValueError(
            f"guidance_scale={s['guidance_scale']} is below 1. Classifier-free guidance runs the unconditional "
            "branch only for guidance_scale > 1 (logits = u + s·(c − u)); use 1.0 for no guidance or a value > 1."
        )
    if s["guidance_schedule"] not in GUIDANCE_SCHEDULES:
        raise ValueError(
            f"guidance_schedule must be one of {GUIDANCE_SCHEDULES}; got {s['guidance_schedule']!r}."
        )
    if s["guidance_cutoff"] is not None and s["guidance_cutoff"] < 0:
        raise ValueError(
            f"guidance_cutoff must be >= 0 (a number of image tokens); got {s['guidance_cutoff']}."
        )
    if s["do_sample"] and s["temperature"] <= 0:
        raise ValueError(
            f"temperature must be > 0 when sampling; got {s['temperature']}. Use do_sample=False for arg-max."
        )
    if s["top_k"] < 0:
        raise ValueError(f"top_k must be >= 0 (0 disables it); got {s['top_k']}.")
    if not 0.0 < s["top_p"] <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1] (1.0 disables it); got {s['top_p']}.")
    if s["jacobi_window"] < 0:
        raise ValueError(
            f"jacobi_window must be >= 0 (draft tokens verified per forward pass; 0 = sequential decoding); "
            f"got {s['jacobi_window']}."
        )
    if s["cache_implementation"] not in CACHE_IMPLEMENTATIONS:
        raise ValueError(
            f"cache_implementation must be one of {CACHE_IMPLEMENTATIONS}; got {s['cache_implementation']!r}."
        )
    compile_config = s["compile_config"]
    if compile_config is not None:
        if not isinstance(compile_config, CompileConfig):
            raise ValueError(
                f"compile_config must be a transformers.CompileConfig; got {type(compile_config).__name__}."
            )
        if s["cache_implementation"] != "static":
            raise ValueError(
                "compile_config needs cache_implementation='static': a dynamic cache changes shape every "
                "step and would recompile."
            )


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


@dataclass(frozen=True)
class _GenerationSettings:
    """The checked settings of one call (:func:`resolve_generation_settings` as attributes)."""

    guidance_scale: float
    guidance_schedule: str
    guidance_cutoff: int | None
    do_sample: bool
    temperature: float
    top_k: int
    top_p: float
    cache_implementation: str
    compile_config: CompileConfig | None
    jacobi_window: int

    @property
    def guided(self) -> bool:
        """Whether the call runs the unconditional rows at all."""
        return self.guidance_scale > 1.0 and self.guidance_cutoff != 0

    def scale_at(self, step: int, num_steps: int) -> float:
        """Guidance scale for image token ``step`` (0-based) of ``num_steps``; 1.0 means "conditional only"."""
        if self.guidance_cutoff is not None and step >= self.guidance_cutoff:
            return 1.0
        if self.guidance_schedule == "linear":
            return 1.0 + (self.guidance_scale - 1.0) * (step + 1) / num_steps
        return self.guidance_scale


# --------------------------------------------------------------------------------------------------------------
# Logits processing and the draw
# --------------------------------------------------------------------------------------------------------------


class IBQTopPLogitsWarper(LogitsProcessor):
    """Nucleus filtering with the reference's boundary rule: keep the smallest prefix of the descending-sorted
    distribution whose mass reaches ``top_p``, *including* the token that crosses it (at least one token stays).

    transformers' ``TopPLogitsWarper`` removes, from the ascending side, the tokens whose cumulative mass is
    ``<= 1 - top_p``; at an exact-mass boundary the two disagree: probabilities [.5, .25, .125, .125] with
    ``top_p=0.75`` keep 3 tokens here and in the original IBQ/LlamaGen code, 2 there. Scores [B, V] → [B, V].
    """

    def __init__(self, top_p: float, filter_value: float = -float("inf")) -> None:
        top_p = float(top_p)
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1] (1.0 disables it); got {top_p}.")
        self.top_p = top_p
        self.filter_value = filter_value

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if self.top_p >= 1.0:
            return scores
        sorted_logits, sorted_idx = torch.sort(scores, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative > self.top_p
        remove_sorted[..., 1:] = remove_sorted[..., :-1].clone()  # keep the token that crosses top_p
        remove_sorted[..., 0] = False
        remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
        return scores.masked_fill(remove, self.filter_value)


def build_logits_processor(
    do_sample: bool,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    logits_processor: Sequence[Callable[[torch.LongTensor, torch.Tensor], torch.Tensor]] | None = None,
) -> LogitsProcessorList:
    """The processors applied to the guided logits of every step, in order.

    Sampling: ``TemperatureLogitsWarper`` (unless 1.0), ``TopKLogitsWarper`` (unless 0),
    :class:`IBQTopPLogitsWarper` (unless 1.0) — the reference's order. Greedy decoding takes the arg-max and uses
    none of them. The user's ``logits_processor`` entries come last in both modes.
    """
    processors = LogitsProcessorList()
    if do_sample:
        if temperature != 1.0:
            processors.append(TemperatureLogitsWarper(float(temperature)))
        if top_k > 0:
            processors.append(TopKLogitsWarper(int(top_k)))
        if top_p < 1.0:
            processors.append(IBQTopPLogitsWarper(top_p))
    if logits_processor is not None:
        processors.extend(logits_processor)
    return processors


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


def _check_streamer(streamer: Any) -> None:
    if streamer is None:
        return
    if not (callable(getattr(streamer, "put", None)) and callable(getattr(streamer, "end", None))):
        raise ValueError(
            f"streamer must have put(tokens) and end() methods (transformers.generation.BaseStreamer); got "
            f"{type(streamer).__name__}."
        )


# --------------------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------------------


@dataclass
class IBQGenerateOutput(ModelOutput):
    """``generate(..., return_dict_in_generate=True)``: the tokens and what decoding them cost.

    Args:
        sequences: image-token ids [B, grid_size²] in raster order.
        num_forward_passes: batched forward passes of the transformer (sequential decoding: one per image token).
        forward_passes_per_sample: passes each sample took part in until it was complete [B] (CPU LongTensor).
        mean_tokens_per_pass: image tokens per forward pass, averaged over the samples' passes
            (``B·N / forward_passes_per_sample.sum()``; 1.0 for sequential decoding).
        acceptance_rate_by_position: speculative Jacobi decoding only, else ``None``: for each draft index ``j``
            of the window, the fraction of verified drafts that were accepted [L] (fp32, NaN where none was
            verified). A draft is verified only when every draft before it was accepted.
    """

    sequences: torch.LongTensor | None = None
    num_forward_passes: int | None = None
    forward_passes_per_sample: torch.LongTensor | None = None
    mean_tokens_per_pass: float | None = None
    acceptance_rate_by_position: torch.Tensor | None = None


class IBQARGenerationMixin(GenerationMixin):
    """``generate()`` for :class:`~ibq_hf.models.modeling_ar.IBQARForImageGeneration`.

    It relies on the model's network methods: ``_as_class_labels``, ``class_emb``, ``blocks[i].modulation``,
    ``head_nm.modulation``, ``tok_emb``, ``token_drop`` and ``_transformer(hidden, cond, positions, cache,
    modulations)``. It keeps a static cache and a compiled decode step between calls in ``_ibq_static_cache`` and
    ``_ibq_compiled_decode`` (not part of the state dict).
    """

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
        logits_processor: Sequence[Callable[[torch.LongTensor, torch.Tensor], torch.Tensor]] | None = None,
        streamer: BaseStreamer | None = None,
        step_callback: Callable[[int, torch.LongTensor], None] | None = None,
        jacobi_window: int | None = None,
        return_dict_in_generate: bool = False,
        **kwargs: Any,
    ) -> torch.LongTensor | IBQGenerateOutput:
        """Sample image-token ids [B, grid_size²] for ``class_labels`` [B].

        Unset arguments come from ``generation_config`` (default: ``self.generation_config``, which the converter
        fills with the paper's per-size temperature and guidance), then from the built-in defaults below
        (:func:`resolve_generation_settings`).

        Args:
            class_labels: class ids in [0, num_classes), shape [B] (an int or a list also works).
            guidance_scale: classifier-free guidance scale s (default 1.0 = off). For s > 1 the batch is doubled:
                the unconditional rows use the null class as prefix token and as adaLN condition, and the logits
                are ``u + s·(c − u)``. Values below 1 are rejected.
            do_sample: sample (default) or take the arg-max.
            temperature: divides the guided logits before filtering (default 1.0).
            top_k: keep the k most likely ids (0 = off, the default).
            top_p: nucleus mass (1.0 = off, the default); the token that crosses ``top_p`` is kept
                (:class:`IBQTopPLogitsWarper`).
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
            logits_processor: transformers ``LogitsProcessor`` objects (or callables ``(input_ids, scores) ->
                scores``) applied after temperature / top-k / top-p (greedy: before the arg-max) to the guided
                fp32 logits [B, V]; ``input_ids`` are the image tokens sampled so far [B, step].
            streamer: an object with ``put(tokens)`` and ``end()`` (transformers' ``BaseStreamer``): ``put`` gets
                each step's image tokens, a CPU LongTensor [B], right after they are drawn, and ``end()`` follows
                the last one. No prompt is ``put`` first (the class token is not an image token).
            step_callback: called as ``step_callback(step, tokens)`` after each sampled image token, with
                ``tokens`` [B, step + 1] the ids so far (a view: copy it to keep it). For progress bars and
                previews; it runs outside the compiled decode step and owns no shared state, so concurrent calls
                do not see each other's steps.
            jacobi_window: speculative Jacobi decoding with this many draft tokens verified per forward pass
                (:mod:`~ibq_hf.models.jacobi_decoding`); ``None`` (the generation config's value, default 0) or 0
                is sequential decoding. Sampling keeps exactly the distribution of sequential decoding, with fewer
                passes; greedy decoding gives the same tokens. Windows longer than ``grid_size² − 1`` are
                shortened to it. A seed gives a different image than without it (the random numbers are used
                differently), the same image for the same window, and with a list of generators an image still
                depends only on its class, generator and settings. ``streamer`` and ``step_callback`` then get
                each image token once every sample of the batch has it (possibly several per pass).
            return_dict_in_generate: return an :class:`IBQGenerateOutput` (tokens, forward passes, tokens per
                pass, acceptance by window position) instead of the tokens alone.

        Returns:
            LongTensor [B, grid_size²] of image-token ids in raster order, or an :class:`IBQGenerateOutput`.
        """
        if kwargs:
            raise ValueError(
                f"Unknown generate() arguments: {sorted(kwargs)}. Supported: class_labels, guidance_scale, "
                "do_sample, temperature, top_k, top_p, generator, guidance_schedule, guidance_cutoff, "
                "cache_implementation, compile_config, generation_config, logits_processor, streamer, "
                "step_callback, jacobi_window, return_dict_in_generate."
            )
        settings = _GenerationSettings(
            **resolve_generation_settings(
                generation_config if generation_config is not None else self.generation_config,
                guidance_scale=guidance_scale,
                guidance_schedule=guidance_schedule,
                guidance_cutoff=guidance_cutoff,
                do_sample=do_sample,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                cache_implementation=cache_implementation,
                compile_config=compile_config,
                jacobi_window=jacobi_window,
            )
        )
        _check_streamer(streamer)
        # The built-in warpers ignore `input_ids`; the user's processors may not, so SJD runs them per position.
        warpers = build_logits_processor(
            settings.do_sample, settings.temperature, settings.top_k, settings.top_p
        )
        user_processors = list(logits_processor) if logits_processor is not None else []
        labels = self._as_class_labels(class_labels, allow_null=False)
        batch = labels.shape[0]
        if generator is not None and not isinstance(generator, torch.Generator):
            _check_generator(generator, batch)  # also when greedy decoding ignores it
        num_steps = self.config.num_image_tokens
        window = min(settings.jacobi_window, num_steps - 1)
        has_user_processors = len(user_processors) > 0

        was_training = self.training
        self.eval()
        try:
            if window > 0:
                uniforms = None
                if settings.do_sample:
                    block = 2 * window + 1
                    uniforms = self._draw_uniforms(generator, batch, (1 + num_steps) * block)
                    uniforms = uniforms.view(batch, 1 + num_steps, block)
                tokens, statistics = jacobi_decode(
                    self,
                    labels,
                    settings,
                    window,
                    uniforms,
                    warpers,
                    user_processors or None,
                    check_finite=has_user_processors,
                    streamer=streamer,
                    step_callback=step_callback,
                )
                num_passes = statistics.num_forward_passes
                per_sample = statistics.forward_passes_per_sample
                verified = statistics.drafts_verified.float()
                rates = statistics.drafts_accepted.float() / verified.masked_fill(verified == 0, float("nan"))
            else:
                uniforms = self._draw_uniforms(generator, batch, num_steps) if settings.do_sample else None
                tokens = self._generate_tokens(
                    labels,
                    settings,
                    uniforms,
                    LogitsProcessorList([*warpers, *user_processors]),
                    check_finite=has_user_processors,
                    streamer=streamer,
                    step_callback=step_callback,
                )
                num_passes, per_sample, rates = num_steps, torch.full((batch,), num_steps), None
        finally:
            self.train(was_training)
        if not return_dict_in_generate:
            return tokens
        return IBQGenerateOutput(
            sequences=tokens,
            num_forward_passes=num_passes,
            forward_passes_per_sample=per_sample,
            mean_tokens_per_pass=batch * num_steps / float(per_sample.sum()),
            acceptance_rate_by_position=rates,
        )

    def _generate_tokens(
        self,
        labels: torch.Tensor,
        settings: _GenerationSettings,
        uniforms: torch.Tensor | None,
        processors: LogitsProcessorList,
        check_finite: bool = False,
        streamer: BaseStreamer | None = None,
        step_callback: Callable[[int, torch.LongTensor], None] | None = None,
    ) -> torch.Tensor:
        batch = labels.shape[0]
        num_steps = self.config.num_image_tokens
        if settings.guided:
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
            next_ids = self._next_ids(
                processors(tokens[:, :step], logits),
                None if uniforms is None else uniforms[:, step],
                check_finite,
            )
            tokens[:, step] = next_ids
            if streamer is not None:
                streamer.put(next_ids.cpu())
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
        if streamer is not None:
            streamer.end()
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

    def _jacobi_pass(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        cond: torch.Tensor,
        cache: Cache,
        modulations: tuple[Sequence[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """One speculative Jacobi pass: ids [R, L+1] at per-row ``positions`` [R, L+1] → logits [R, L+1, V].

        Position 0 is the class token: its input is the class embedding, whatever id stands there.
        """
        hidden = self.token_drop(self.tok_emb(input_ids))
        hidden = torch.where((positions == 0)[..., None], cond[:, None, :].to(hidden.dtype), hidden)
        if cache.write_positions.shape == positions.shape:
            cache.write_positions.copy_(positions)  # in place: a compiled pass keeps its static addresses
        else:
            cache.write_positions = positions.clone()
        return self._transformer(hidden, cond, positions, cache, modulations)

    def _compiled_jacobi_pass(self, compile_config: CompileConfig) -> Callable[..., torch.Tensor]:
        compiled = getattr(self, "_ibq_compiled_jacobi", None)
        if compiled is None or compiled[0] != compile_config:
            compiled = (compile_config, torch.compile(self._jacobi_pass, **compile_config.to_dict()))
            self._ibq_compiled_jacobi = compiled
        return compiled[1]

    def _compiled_decode(self, compile_config: CompileConfig) -> Callable[..., torch.Tensor]:
        compiled = getattr(self, "_ibq_compiled_decode", None)
        if compiled is None or compiled[0] != compile_config:
            compiled = (compile_config, torch.compile(self._decode_step, **compile_config.to_dict()))
            self._ibq_compiled_decode = compiled
        return compiled[1]

    def _new_cache(self, implementation: str, rows: int, max_len: int) -> Cache:
        if implementation == "dynamic":
            return DynamicCache(config=self.config)
        key = (rows, max_len, self.dtype, self.device)
        reused = getattr(self, "_ibq_static_cache", None)
        if reused is not None and reused[0] == key:
            cache = reused[1]
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
        logits: torch.Tensor, uniforms: torch.Tensor | None, check_finite: bool = False
    ) -> torch.Tensor:
        """Processed logits [B, V] (fp32) → next ids [B]: the arg-max (``uniforms`` None) or an inverse-CDF draw."""
        if check_finite and not bool(torch.isfinite(logits).any(dim=-1).all()):
            raise ValueError(
                "The logits processors removed every token of a row (all scores -inf or NaN); make the "
                "logits_processor entries keep at least one finite score per row."
            )
        if uniforms is None:
            return logits.argmax(dim=-1)
        return sample_from_probs(torch.softmax(logits, dim=-1), uniforms)

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
