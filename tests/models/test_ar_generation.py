"""IBQARForImageGeneration: KV caches, classifier-free guidance, sampling, reproducibility, generate() errors."""

from __future__ import annotations

import pytest
import torch
from transformers import CompileConfig, DynamicCache, GenerationConfig, StaticCache

from conftest import TINY_AR_CONFIG
from ibq_hf.models.configuration_ar import IBQARConfig
from ibq_hf.models.generation_ar import build_logits_processor
from ibq_hf.models.modeling_ar import IBQARForImageGeneration
from ibq_hf.models.sampling import sample_from_probs

TINY = TINY_AR_CONFIG
NULL = 10
STEPS = 16


def tiny_model(seed: int = 0, **overrides) -> IBQARForImageGeneration:
    """Tiny model with random O(1)-scale weights so that logits are far from uniform."""
    torch.manual_seed(seed)
    model = IBQARForImageGeneration(IBQARConfig(**{**TINY, **overrides}))
    with torch.no_grad():
        for name, param in model.named_parameters():
            scale = 0.1 if "norm" in name else 0.15
            param.copy_((1.0 if "norm" in name else 0.0) + scale * torch.randn_like(param))
    return model.eval()


@pytest.fixture(scope="module")
def model() -> IBQARForImageGeneration:
    return tiny_model()


def make_cache(kind: str, config: IBQARConfig):
    return (
        DynamicCache(config=config) if kind == "dynamic" else StaticCache(config=config, max_cache_len=STEPS)
    )


def scale_at(n: int, scale: float, schedule: str = "constant", cutoff: int | None = None) -> float:
    if cutoff is not None and n >= cutoff:
        return 1.0
    return 1.0 + (scale - 1.0) * (n + 1) / STEPS if schedule == "linear" else scale


# ---- KV cache -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_cached_decoding_equals_full_forward_every_step(model, kind: str, cfg_scale: float) -> None:
    z = torch.randint(0, 64, (2, STEPS))
    labels = torch.tensor([3, 7])
    rows = torch.cat([labels, torch.full_like(labels, NULL)]) if cfg_scale > 1 else labels
    feed = torch.cat([z, z]) if cfg_scale > 1 else z

    def mix(logits: torch.Tensor) -> torch.Tensor:
        if cfg_scale == 1.0:
            return logits
        c, u = logits[:2], logits[2:]
        return u + cfg_scale * (c - u)

    full = mix(model(feed[:, :-1], rows).logits)  # [2, 16, V]: position n predicts token n
    cache = make_cache(kind, model.config)
    step = model(feed[:, :0], rows, cache=cache).logits
    assert step.shape == (rows.shape[0], 1, 64)
    torch.testing.assert_close(mix(step[:, -1]), full[:, 0], rtol=1e-5, atol=1e-5)
    for n in range(1, STEPS):
        step = model(feed[:, n - 1 : n], rows, cache=cache).logits
        torch.testing.assert_close(mix(step[:, -1]), full[:, n], rtol=1e-5, atol=1e-5, msg=f"step {n}")
    assert int(cache.get_seq_length()) == STEPS


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_chunked_prefill_and_explicit_cache_position(model, kind: str) -> None:
    z = torch.randint(0, 64, (2, STEPS))
    labels = torch.tensor([1, NULL])
    full = model(z[:, :-1], labels).logits
    cache = make_cache(kind, model.config)
    first = model(z[:, :6], labels, cache=cache).logits  # class token + 6 tokens
    torch.testing.assert_close(first, full[:, :7], rtol=1e-5, atol=1e-5)
    nxt = model(z[:, 6:10], labels, cache=cache, cache_position=torch.arange(7, 11)).logits
    torch.testing.assert_close(nxt, full[:, 7:11], rtol=1e-5, atol=1e-5)
    out = model(z[:, 10:11], labels, use_cache=True, cache=cache)
    assert out.cache is cache


def test_use_cache_creates_dynamic_cache(model) -> None:
    out = model(torch.randint(0, 64, (1, 3)), torch.tensor([2]), use_cache=True)
    assert isinstance(out.cache, DynamicCache) and out.cache.get_seq_length() == 4
    assert model(torch.randint(0, 64, (1, 3)), torch.tensor([2])).cache is None


# ---- generate vs a step-by-step reference loop ------------------------------------------------------------------


def reference_greedy(model, labels, scale, schedule="constant", cutoff=None) -> torch.Tensor:
    """Greedy decoding with full (uncached) forwards and CFG as in the reference: u + s·(c − u), s > 1 only."""
    seq = torch.zeros(labels.shape[0], 0, dtype=torch.long)
    null = torch.full_like(labels, NULL)
    for n in range(STEPS):
        c = model(seq, labels).logits[:, -1]
        s = scale_at(n, scale, schedule, cutoff)
        logits = c
        if scale > 1.0 and s != 1.0:
            u = model(seq, null).logits[:, -1]
            logits = u + s * (c - u)
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
    return seq


@pytest.mark.parametrize(
    ("scale", "schedule", "cutoff"),
    [(1.0, "constant", None), (3.0, "constant", None), (2.5, "linear", None), (4.0, "constant", 5)],
)
@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_greedy_generate_equals_reference_loop(model, kind, scale, schedule, cutoff) -> None:
    labels = torch.tensor([0, 4, 9])
    expected = reference_greedy(model, labels, scale, schedule, cutoff)
    got = model.generate(
        labels,
        guidance_scale=scale,
        do_sample=False,
        guidance_schedule=schedule,
        guidance_cutoff=cutoff,
        cache_implementation=kind,
    )
    assert got.shape == (3, STEPS) and got.dtype == torch.long
    assert torch.equal(got, expected)


def test_guidance_changes_tokens_and_uses_null_class_as_condition(model) -> None:
    labels = torch.tensor([2, 5])
    plain = model.generate(labels, do_sample=False)
    guided = model.generate(labels, guidance_scale=5.0, do_sample=False)
    assert not torch.equal(plain, guided)
    # First token: u must be the logits of the null class (prefix token and adaLN condition).
    c = model(None, labels).logits[:, -1]
    u = model(None, torch.full_like(labels, NULL)).logits[:, -1]
    assert torch.equal(guided[:, 0], (u + 5.0 * (c - u)).argmax(-1))


# ---- sampling ---------------------------------------------------------------------------------------------------


def reference_sample(model, labels, seeds, scale, temperature, top_k, top_p) -> torch.Tensor:
    """Sampling loop written from the spec: per row, uniform n of torch.rand(16, generator=seed) picks token n
    through the inverse CDF of softmax(filtered(CFG logits / T)); filtering by brute-force sorting."""
    rows = []
    for label, seed in zip(labels.tolist(), seeds):
        u_all = torch.rand(STEPS, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
        seq = torch.zeros(1, 0, dtype=torch.long)
        for n in range(STEPS):
            c = model(seq, torch.tensor([label])).logits[0, -1].double()
            logits = c
            if scale > 1:
                u = model(seq, torch.tensor([NULL])).logits[0, -1].double()
                logits = u + scale * (c - u)
            logits = logits / temperature
            order = torch.argsort(logits, descending=True)
            keep = torch.zeros_like(logits, dtype=torch.bool)
            probs_sorted = torch.softmax(logits[order], -1)
            mass = 0.0
            for rank, idx in enumerate(order.tolist()):
                if top_k > 0 and logits[idx] < logits[order[top_k - 1]]:
                    break
                keep[idx] = True
                mass += probs_sorted[rank].item()
                if top_p < 1.0 and mass > top_p:
                    break
            probs = torch.softmax(logits.masked_fill(~keep, float("-inf")), -1)
            cdf = probs.cumsum(0)
            token = int(torch.searchsorted(cdf, u_all[n].double() * cdf[-1], right=True))
            seq = torch.cat([seq, torch.tensor([[token]])], dim=1)
        rows.append(seq)
    return torch.cat(rows)


@pytest.mark.parametrize(
    ("scale", "temperature", "top_k", "top_p"), [(1.0, 1.0, 0, 1.0), (3.0, 1.3, 10, 1.0), (2.0, 0.9, 0, 0.8)]
)
def test_sampling_equals_reference_sampler(model, scale, temperature, top_k, top_p) -> None:
    labels = torch.tensor([1, 8])
    seeds = [11, 12]
    got = model.generate(
        labels,
        guidance_scale=scale,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
    )
    expected = reference_sample(model, labels, seeds, scale, temperature, top_k, top_p)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_seed_gives_same_image_whatever_the_batch(model, kind) -> None:
    def run(labels, seeds):
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        return model.generate(labels, guidance_scale=2.5, generator=gens, cache_implementation=kind)

    alone = run([3], [42])
    batch = run([5, 3, 9, 3], [1, 42, 2, 7])
    assert torch.equal(batch[1:2], alone)
    assert torch.equal(run([3], [42]), alone)  # determinism
    assert not torch.equal(batch[3:4], alone)  # same class, other seed
    other_kind = model.generate(
        [3],
        guidance_scale=2.5,
        generator=[torch.Generator().manual_seed(42)],
        cache_implementation="static" if kind == "dynamic" else "dynamic",
    )
    assert torch.equal(other_kind, alone)


def test_single_generator_and_global_seed_are_reproducible(model) -> None:
    a = model.generate([1, 2], guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    b = model.generate([1, 2], guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    torch.manual_seed(5)
    c = model.generate([1, 2], guidance_scale=2.0)
    torch.manual_seed(5)
    assert torch.equal(model.generate([1, 2], guidance_scale=2.0), c)
    # One generator for a batch of one equals a list holding that generator.
    d = model.generate([4], generator=torch.Generator().manual_seed(3))
    assert torch.equal(d, model.generate([4], generator=[torch.Generator().manual_seed(3)]))


def test_inverse_cdf_draw_follows_the_distribution() -> None:
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3, 0.0]])
    u = torch.rand(40000, generator=torch.Generator().manual_seed(0))
    ids = sample_from_probs(probs.expand(40000, -1), u)
    counts = torch.bincount(ids, minlength=5).double() / 40000
    assert counts[1] == 0 and counts[4] == 0
    torch.testing.assert_close(counts, probs[0].double(), atol=0.01, rtol=0)
    edge = sample_from_probs(probs, torch.tensor([0.9999999]))
    assert edge.item() == 3


def filter_top_k_top_p(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """What generate() applies when sampling at temperature 1: transformers' top-k warper, then our top-p."""
    return build_logits_processor(True, 1.0, top_k, top_p)(None, logits)


def test_top_k_top_p_filter_semantics() -> None:
    logits = torch.tensor([[2.0, 1.0, 3.0, 0.5, 1.0]])
    k2 = filter_top_k_top_p(logits, top_k=2)
    assert torch.isfinite(k2).tolist() == [[True, False, True, False, False]]
    ties = filter_top_k_top_p(logits, top_k=3)  # the 3rd largest (1.0) is tied: both kept
    assert torch.isfinite(ties).sum().item() == 4
    probs = torch.softmax(logits, -1)[0]  # sorted mass: 0.61 (id 2), then 0.22 (id 0), ...
    p = filter_top_k_top_p(logits, top_p=0.5)  # first token already crosses 0.5 and stays alone
    assert torch.isfinite(p).tolist() == [[False, False, True, False, False]]
    p = filter_top_k_top_p(logits, top_p=float(probs[2] + 0.01))
    assert torch.isfinite(p).tolist() == [[True, False, True, False, False]]
    assert torch.equal(filter_top_k_top_p(logits), logits)


# ---- defaults, modes, dtypes ----------------------------------------------------------------------------------


def test_defaults_come_from_generation_config() -> None:
    model = tiny_model()
    labels = torch.tensor([1, 6])
    explicit = model.generate(labels, guidance_scale=3.0, do_sample=False, guidance_schedule="linear")
    model.generation_config = GenerationConfig(
        do_sample=False, guidance_scale=3.0, guidance_schedule="linear", cache_implementation="static"
    )
    assert torch.equal(model.generate(labels), explicit)
    assert model._ibq_static_cache is not None  # cache_implementation came from the generation config
    # Explicit arguments override the generation config; a passed generation_config replaces the model's.
    assert torch.equal(model.generate(labels, guidance_scale=1.0), reference_greedy(model, labels, 1.0))
    other = GenerationConfig(do_sample=False, guidance_scale=3.0)
    assert torch.equal(model.generate(labels, generation_config=other), reference_greedy(model, labels, 3.0))


def test_generate_runs_in_eval_mode_and_restores_training() -> None:
    model = tiny_model(resid_dropout=0.5, ffn_dropout=0.5, token_dropout=0.5, class_dropout_prob=0.5)
    expected = model.generate([1, 2], guidance_scale=2.0, do_sample=False)
    model.train()
    assert torch.equal(model.generate([1, 2], guidance_scale=2.0, do_sample=False), expected)
    assert model.training


def test_static_cache_is_reused_between_calls(model) -> None:
    model.generate([1, 2], guidance_scale=2.0, cache_implementation="static")
    first = model._ibq_static_cache[1]
    model.generate([3, 4], guidance_scale=3.0, cache_implementation="static")
    assert model._ibq_static_cache[1] is first
    model.generate([3], guidance_scale=3.0, cache_implementation="static")
    assert model._ibq_static_cache[1] is not first  # other batch size: new cache


def test_bf16_generation() -> None:
    model = tiny_model().to(torch.bfloat16)
    for kind in ("dynamic", "static"):
        ids = model.generate(
            [1, 2], guidance_scale=2.0, cache_implementation=kind, generator=torch.Generator().manual_seed(0)
        )
        assert ids.shape == (2, STEPS) and int(ids.min()) >= 0 and int(ids.max()) < 64


# ---- errors -----------------------------------------------------------------------------------------------------


def test_generate_errors_are_clear(model) -> None:
    with pytest.raises(ValueError, match=r"class_labels must lie in \[0, 10\)"):
        model.generate([3, 10])
    with pytest.raises(ValueError, match=r"class_labels must lie in \[0, 10\)"):
        model.generate([-1])
    with pytest.raises(ValueError, match=r"guidance_scale=0\.5 is below 1"):
        model.generate([1], guidance_scale=0.5)
    with pytest.raises(ValueError, match="one per sample"):
        model.generate([1, 2], generator=[torch.Generator()])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        model.generate([1], temperature=0.0)
    with pytest.raises(ValueError, match=r"top_p must lie in \(0, 1\]"):
        model.generate([1], top_p=0.0)
    with pytest.raises(ValueError, match="top_k must be >= 0"):
        model.generate([1], top_k=-3)
    with pytest.raises(ValueError, match="guidance_schedule must be one of"):
        model.generate([1], guidance_scale=2.0, guidance_schedule="cosine")
    with pytest.raises(ValueError, match="cache_implementation must be one of"):
        model.generate([1], cache_implementation="offloaded")
    with pytest.raises(ValueError, match="needs cache_implementation='static'"):
        model.generate([1], compile_config=CompileConfig())
    with pytest.raises(ValueError, match="Unknown generate"):
        model.generate([1], max_new_tokens=5)


def test_generate_rough_inputs_are_clear(model) -> None:
    """Issue 13, item 9: generator=5 was "'int' object is not iterable"; top_k=1.5 was truncated to 1."""
    for generator in (5, [5], "seed"):
        with pytest.raises(ValueError, match=r"generator must be a torch\.Generator or a list .*manual_seed"):
            model.generate([1], generator=generator)
    with pytest.raises(ValueError, match=r"generator must be a torch\.Generator"):
        model.generate([1], generator=5, do_sample=False)  # checked even when greedy decoding ignores it
    for top_k in (1.5, True, "3"):
        with pytest.raises(ValueError, match="top_k must be a whole number"):
            model.generate([1], top_k=top_k)
    with pytest.raises(ValueError, match="guidance_cutoff must be a whole number"):
        model.generate([1], guidance_scale=2.0, guidance_cutoff=0.5)
    assert torch.equal(
        model.generate([1], top_k=4.0, generator=torch.Generator().manual_seed(0)),
        model.generate([1], top_k=4, generator=torch.Generator().manual_seed(0)),
    )


@pytest.mark.slow
def test_torch_compile_with_static_cache_matches_eager() -> None:
    model = tiny_model()
    labels = torch.tensor([1, 6])
    compile_config = CompileConfig(mode="default", fullgraph=True)
    eager_greedy = model.generate(labels, guidance_scale=3.0, do_sample=False, cache_implementation="static")
    compiled_greedy = model.generate(
        labels,
        guidance_scale=3.0,
        do_sample=False,
        cache_implementation="static",
        compile_config=compile_config,
    )
    assert torch.equal(compiled_greedy, eager_greedy)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (3, 4)]  # noqa: E731
    eager = model.generate(labels, guidance_scale=2.0, generator=gens(), cache_implementation="static")
    compiled = model.generate(
        labels,
        guidance_scale=2.0,
        generator=gens(),
        cache_implementation="static",
        compile_config=compile_config,
    )
    assert torch.equal(compiled, eager)


@pytest.mark.parametrize(
    "settings",
    [
        {"guidance_scale": float("nan")},
        {"guidance_scale": float("inf")},
        {"temperature": float("nan")},
        {"temperature": float("inf")},
        {"top_p": float("nan")},
        {"top_k": float("inf")},
        {"guidance_scale": 2.0, "guidance_cutoff": float("nan")},
    ],
    ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()),
)
def test_non_finite_settings_are_rejected(model, settings) -> None:
    """Issue 11, item 12: guidance_scale=nan silently equalled 1.0 (every comparison with NaN is False), and
    guidance_scale=inf or temperature=nan turned every sample into one token."""
    name = next(k for k, v in settings.items() if v != 2.0)
    with pytest.raises(ValueError, match=rf"{name} must be a finite number"):
        model.generate([1, 2], generator=[torch.Generator().manual_seed(i) for i in range(2)], **settings)


def test_non_finite_settings_from_the_generation_config_are_rejected() -> None:
    model = tiny_model()
    model.generation_config.temperature = float("nan")
    with pytest.raises(ValueError, match="temperature must be a finite number"):
        model.generate([1])
    with pytest.raises(ValueError, match="guidance_scale must be a number"):
        model.generate([1], temperature=1.0, guidance_scale="strong")
