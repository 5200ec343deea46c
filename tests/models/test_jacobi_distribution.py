"""Speculative Jacobi decoding keeps the sampling distribution: counts of 20,000 sampled sequences against the exact
distribution enumerated from the model's conditionals, for sequential decoding and several windows, with CFG,
temperature, top-k, top-p and a guidance schedule with a cutoff. Deliberately broken verification rules must fail
the same test (it is sharp), and rejections must actually occur in these runs."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy.stats import chi2

from ibq_hf.models import jacobi_decoding
from ibq_hf.models.configuration_ar import IBQARConfig
from ibq_hf.models.generation_ar import build_logits_processor
from ibq_hf.models.modeling_ar import IBQARForImageGeneration

VOCAB = 4
GRID = 2  # 4 image tokens: 4**4 = 256 sequences
NUM_SAMPLES = 20_000
CONFIGS = {
    "cfg+temperature": {"guidance_scale": 2.0, "temperature": 0.8},
    "top_k": {"guidance_scale": 1.5, "top_k": 2},
    "top_p": {"top_p": 0.7},
    "linear_schedule+cutoff": {
        "guidance_scale": 3.0,
        "guidance_schedule": "linear",
        "guidance_cutoff": 2,
        "temperature": 1.2,
    },
}
METHODS = {"sequential": 0, "window 1": 1, "window 2": 2, "window all": 4}
# Bonferroni over every (configuration, method) pair tested here.
ALPHA = 1e-3 / (len(CONFIGS) * len(METHODS))
CLASS = 1


@pytest.fixture(scope="module")
def peaky_model() -> IBQARForImageGeneration:
    """Random weights scaled so that the conditionals are far from uniform (sequence probabilities up to ~0.26, entropies 2–3.8 nats)."""
    torch.manual_seed(0)
    config = IBQARConfig(
        vocab_size=VOCAB,
        num_classes=3,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        grid_size=GRID,
        multiple_of=32,
    )
    model = IBQARForImageGeneration(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("rmsnorm.weight"):
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
            else:
                param.copy_(0.15 * torch.randn_like(param))
        model.head.weight.mul_(2.0)
    return model.eval()


def exact_distribution(model: IBQARForImageGeneration, settings: dict) -> torch.Tensor:
    """P(sequence) for all VOCAB**N sequences [VOCAB**N] (index = base-VOCAB number, first token most significant),
    from full forward passes without a cache: the product of each token's processed conditional."""
    num_steps = GRID * GRID
    sequences = torch.tensor(list(itertools.product(range(VOCAB), repeat=num_steps)))
    labels = torch.full((sequences.shape[0],), CLASS)
    scale = settings.get("guidance_scale", 1.0)
    schedule = settings.get("guidance_schedule", "constant")
    cutoff = settings.get("guidance_cutoff")
    with torch.no_grad():
        cond = model(input_ids=sequences[:, :-1], class_labels=labels).logits.float()  # [S, N, V]
        uncond = model(
            input_ids=sequences[:, :-1], class_labels=torch.full_like(labels, model.config.null_class_id)
        ).logits.float()
    processors = build_logits_processor(
        True, settings.get("temperature", 1.0), settings.get("top_k", 0), settings.get("top_p", 1.0)
    )
    log_p = torch.zeros(sequences.shape[0], dtype=torch.float64)
    for step in range(num_steps):
        s = scale
        if schedule == "linear":
            s = 1.0 + (scale - 1.0) * (step + 1) / num_steps
        if cutoff is not None and step >= cutoff:
            s = 1.0
        logits = cond[:, step] if s == 1.0 else uncond[:, step] + s * (cond[:, step] - uncond[:, step])
        probs = torch.softmax(processors(sequences[:, :step], logits), dim=-1).double()
        log_p += probs.gather(1, sequences[:, step : step + 1])[:, 0].log()
    return log_p.exp()


def sample_counts(
    model: IBQARForImageGeneration, settings: dict, window: int, seed: int, num_samples: int = NUM_SAMPLES
) -> tuple[torch.Tensor, ...]:
    out = model.generate(
        [CLASS] * num_samples,
        generator=torch.Generator().manual_seed(seed),
        jacobi_window=window,
        return_dict_in_generate=True,
        **settings,
    )
    weights = VOCAB ** torch.arange(GRID * GRID - 1, -1, -1)
    index = (out.sequences * weights).sum(dim=1)
    return torch.bincount(index, minlength=VOCAB ** (GRID * GRID)), out


def g_test(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """p-value of a G-test of ``counts`` against ``probs``, cells with expected count < 5 pooled into one.

    A sample in a cell of probability 0 (outside top-k/top-p support) is an immediate failure (p-value 0)."""
    if int(counts[probs == 0].sum()) > 0:
        return 0.0
    expected = probs * counts.sum()
    big = expected >= 5
    observed = torch.cat([counts[big].double(), counts[~big].sum(dim=0, keepdim=True).double()])
    expected = torch.cat([expected[big], expected[~big].sum(dim=0, keepdim=True)])
    keep = expected > 0
    observed, expected = observed[keep], expected[keep]
    nonzero = observed > 0
    g = 2.0 * float((observed[nonzero] * (observed[nonzero] / expected[nonzero]).log()).sum())
    return float(chi2.sf(g, df=int(keep.sum()) - 1))


@pytest.fixture(scope="module")
def exact(peaky_model) -> dict[str, torch.Tensor]:
    return {name: exact_distribution(peaky_model, settings) for name, settings in CONFIGS.items()}


def test_the_exact_distribution_is_a_distribution_and_not_degenerate(exact) -> None:
    for name, probs in exact.items():
        assert math.isclose(float(probs.sum()), 1.0, abs_tol=1e-5), name  # fp32 softmax
        assert float(probs.max()) < 0.5, name  # the chi-square test has many informative cells


def test_quick_check_window_2_with_guidance_and_temperature(peaky_model, exact) -> None:
    """The default suite's share of the slow test below: one configuration, 4,000 samples."""
    counts, out = sample_counts(peaky_model, CONFIGS["cfg+temperature"], 2, seed=5, num_samples=4000)
    assert g_test(counts, exact["cfg+temperature"]) > ALPHA
    assert float(out.acceptance_rate_by_position.min()) < 1.0


@pytest.mark.slow  # 16 runs of 20,000 samples: ~1 min on 2 cores
@pytest.mark.parametrize("config", list(CONFIGS))
def test_sampling_matches_the_exact_distribution_with_and_without_sjd(peaky_model, exact, config) -> None:
    p_values = {}
    for offset, (method, window) in enumerate(METHODS.items()):
        counts, out = sample_counts(peaky_model, CONFIGS[config], window, seed=1000 + offset)
        p_values[method] = g_test(counts, exact[config])
        if window > 0:
            rates = out.acceptance_rate_by_position
            assert bool((rates[~rates.isnan()] < 1.0).any()), f"{method}: no draft was ever rejected"
            assert out.mean_tokens_per_pass > 1.1, f"{method}: SJD hardly ever decoded two tokens in a pass"
    failed = {m: p for m, p in p_values.items() if p < ALPHA}
    assert not failed, f"{config}: p-values {p_values} (Bonferroni threshold {ALPHA:.2e})"


def _residual_from_p(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return p


def _accept_with_p_only(p_draft: torch.Tensor, q_draft: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    return uniforms < p_draft


@pytest.mark.slow  # 8 runs of 20,000 samples
@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(("residual_distribution", _residual_from_p), id="corrected-token-drawn-from-p"),
        pytest.param(("accept_drafts", _accept_with_p_only), id="acceptance-ignores-q"),
    ],
)
def test_the_test_is_sharp_broken_rules_fail_it(peaky_model, exact, monkeypatch, broken) -> None:
    """A correct rule passes every configuration above; each broken one must be rejected in at least one."""
    name, rule = broken
    monkeypatch.setattr(jacobi_decoding, name, rule)
    p_values = {
        config: g_test(sample_counts(peaky_model, CONFIGS[config], 2, seed=7)[0], exact[config])
        for config in CONFIGS
    }
    assert min(p_values.values()) < ALPHA, f"broken rule {name} went undetected: {p_values}"
