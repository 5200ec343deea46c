"""Speculative Jacobi decoding in ``generate(jacobi_window=...)``: greedy Jacobi gives sequential greedy's tokens
(near-ties detected and reported), per-sample generators keep their promise, the per-row cache and positions, the
streamer and step callback, statistics, settings. Its sampling distribution is tested in
``test_jacobi_distribution.py``."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from transformers import CompileConfig, GenerationConfig
from transformers.generation.streamers import BaseStreamer

from conftest import TINY_AR_CONFIG
from ibq_hf.models.configuration_ar import IBQARConfig
from ibq_hf.models.jacobi_decoding import PerSamplePositionCache
from ibq_hf.models.modeling_ar import IBQARForImageGeneration

BUNDLED_TRANSFORMER = Path(__file__).resolve().parents[2] / "checkpoints" / "ibq-digits" / "transformer"
NEAR_TIE = (
    1e-4  # top-2 logit gap (fp32) under which kernels of different shapes may order the two differently
)


def random_model(seed: int = 0, **overrides) -> IBQARForImageGeneration:
    torch.manual_seed(seed)
    model = IBQARForImageGeneration(IBQARConfig(**{**TINY_AR_CONFIG, **overrides}))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
            else:
                param.copy_(0.1 * torch.randn_like(param))
    return model.eval()


@pytest.fixture(scope="module")
def model() -> IBQARForImageGeneration:
    return random_model()


def guided_logits(model, labels, tokens, scale, schedule="constant", cutoff=None) -> torch.Tensor:
    """Full forward (no cache) of ``tokens`` [B, N]: the guided logits predicting every image token [B, N, V]."""
    num_steps = tokens.shape[1]
    with torch.no_grad():
        cond = model(input_ids=tokens[:, :-1], class_labels=labels).logits.float()
        if scale == 1.0:
            return cond
        uncond = model(
            input_ids=tokens[:, :-1], class_labels=torch.full_like(labels, model.config.null_class_id)
        ).logits.float()
    out = cond.clone()
    for step in range(num_steps):
        s = scale if schedule == "constant" else 1.0 + (scale - 1.0) * (step + 1) / num_steps
        if cutoff is None or step < cutoff:
            out[:, step] = uncond[:, step] + s * (cond[:, step] - uncond[:, step])
    return out


def assert_equal_or_near_tie(model, labels, sequential, jacobi, scale, **guidance) -> None:
    """Tokens must be equal; where a row differs, the first difference must sit at a floating-point near-tie of
    the two top logits (reported as a warning, never hidden)."""
    differing = (sequential != jacobi).any(dim=1).nonzero()[:, 0].tolist()
    if not differing:
        return
    logits = guided_logits(model, torch.as_tensor(labels), sequential, scale, **guidance)
    for row in differing:
        step = int((sequential[row] != jacobi[row]).nonzero()[0, 0])
        top2 = logits[row, step].topk(2).values
        gap = float(top2[0] - top2[1])
        assert gap < NEAR_TIE, (
            f"row {row}: Jacobi differs from sequential at token {step}, top-2 gap {gap:.3g}"
        )
        warnings.warn(f"near-tie at row {row} token {step}: top-2 logit gap {gap:.2e}", stacklevel=2)


@pytest.mark.parametrize(
    "seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)]
)
@pytest.mark.parametrize(
    "guidance",
    [
        {"guidance_scale": 1.0},
        {"guidance_scale": 3.0},
        {"guidance_scale": 4.0, "guidance_schedule": "linear", "guidance_cutoff": 5},
    ],
    ids=["no-cfg", "cfg", "linear+cutoff"],
)
def test_greedy_jacobi_equals_sequential_greedy_on_random_models(seed, guidance) -> None:
    model = random_model(seed)
    labels = [1, 4, 7]
    sequential = model.generate(labels, do_sample=False, **guidance)
    for kind in ("dynamic", "static"):
        for window in (1, 3, 15):
            jacobi = model.generate(
                labels, do_sample=False, jacobi_window=window, cache_implementation=kind, **guidance
            )
            assert_equal_or_near_tie(
                model,
                labels,
                sequential,
                jacobi,
                guidance["guidance_scale"],
                schedule=guidance.get("guidance_schedule", "constant"),
                cutoff=guidance.get("guidance_cutoff"),
            )


def test_greedy_jacobi_equals_sequential_greedy_on_the_bundled_digits_model() -> None:
    model = IBQARForImageGeneration.from_pretrained(BUNDLED_TRANSFORMER).eval()
    labels = list(range(10))
    sequential = model.generate(labels, do_sample=False, guidance_scale=2.0)
    for window in (4, 16):
        out = model.generate(
            labels, do_sample=False, guidance_scale=2.0, jacobi_window=window, return_dict_in_generate=True
        )
        assert_equal_or_near_tie(model, labels, sequential, out.sequences, 2.0)
        # A trained model's arg-max drafts are often right: far fewer passes than 64.
        assert out.num_forward_passes < 40


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_seed_gives_the_same_image_whatever_the_batch(model, kind) -> None:
    settings = {"guidance_scale": 2.5, "temperature": 0.9, "top_k": 40, "top_p": 0.95, "guidance_cutoff": 9}

    def run(labels, seeds, window=4, cache=kind):
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        return model.generate(
            labels, generator=gens, jacobi_window=window, cache_implementation=cache, **settings
        )

    alone = run([3], [42])
    batch = run([5, 3, 9, 3], [1, 42, 2, 7])
    assert torch.equal(batch[1:2], alone)
    assert torch.equal(run([3], [42]), alone)  # determinism
    assert not torch.equal(batch[3:4], alone)  # same class, other seed
    assert torch.equal(run([3], [42], cache="static" if kind == "dynamic" else "dynamic"), alone)
    # Other random streams than sequential decoding and than another window (documented).
    sequential = model.generate([3], generator=[torch.Generator().manual_seed(42)], **settings)
    assert not torch.equal(sequential, alone)
    assert not torch.equal(run([3], [42], window=2), alone)


def test_single_generator_is_reproducible(model) -> None:
    def run():
        return model.generate(
            [1, 2], guidance_scale=2.0, generator=torch.Generator().manual_seed(0), jacobi_window=3
        )

    assert torch.equal(run(), run())


class Recorder(BaseStreamer):
    def __init__(self) -> None:
        self.puts: list[torch.Tensor] = []
        self.ended = 0

    def put(self, value: torch.Tensor) -> None:
        assert self.ended == 0
        self.puts.append(value.clone())

    def end(self) -> None:
        self.ended += 1


def test_streamer_and_step_callback_get_every_token_once_in_order(model) -> None:
    streamer, steps = Recorder(), []
    out = model.generate(
        [1, 2, 3],
        guidance_scale=2.0,
        generator=[torch.Generator().manual_seed(s) for s in range(3)],
        jacobi_window=5,
        streamer=streamer,
        step_callback=lambda step, tokens: steps.append((step, tokens.clone())),
        return_dict_in_generate=True,
    )
    tokens = out.sequences
    num_steps = model.config.num_image_tokens
    assert streamer.ended == 1
    assert torch.equal(torch.stack(streamer.puts, dim=1), tokens)
    assert [s for s, _ in steps] == list(range(num_steps))
    for step, seen in steps:
        assert torch.equal(seen, tokens[:, : step + 1])
    assert out.num_forward_passes < num_steps  # several tokens per pass, so several puts per pass


def test_statistics_of_sequential_and_jacobi_decoding(model) -> None:
    num_steps = model.config.num_image_tokens
    sequential = model.generate(
        [1, 2], return_dict_in_generate=True, generator=torch.Generator().manual_seed(0)
    )
    assert sequential.num_forward_passes == num_steps
    assert sequential.mean_tokens_per_pass == 1.0
    assert sequential.acceptance_rate_by_position is None
    assert sequential.forward_passes_per_sample.tolist() == [num_steps, num_steps]

    out = model.generate(
        [1, 2], return_dict_in_generate=True, jacobi_window=4, generator=torch.Generator().manual_seed(0)
    )
    per_sample = out.forward_passes_per_sample
    assert out.num_forward_passes == int(per_sample.max())
    assert out.mean_tokens_per_pass == pytest.approx(2 * num_steps / float(per_sample.sum()))
    assert 1.0 <= out.mean_tokens_per_pass <= 5.0
    rates = out.acceptance_rate_by_position
    assert rates.shape == (4,) and bool(((rates >= 0) & (rates <= 1)).all())
    assert torch.equal(
        out.sequences, model.generate([1, 2], jacobi_window=4, generator=torch.Generator().manual_seed(0))
    )


def test_window_longer_than_the_grid_is_shortened(model) -> None:
    num_steps = model.config.num_image_tokens
    gens = lambda: [torch.Generator().manual_seed(1)]  # noqa: E731
    longest = model.generate([2], generator=gens(), jacobi_window=num_steps - 1, return_dict_in_generate=True)
    longer = model.generate([2], generator=gens(), jacobi_window=10 * num_steps, return_dict_in_generate=True)
    assert torch.equal(longest.sequences, longer.sequences)
    assert longest.acceptance_rate_by_position.shape == (num_steps - 1,)


def test_a_logits_processor_sees_each_position_s_exact_prefix(model) -> None:
    """A processor that depends on ``input_ids`` (here: never repeat the previous token) gives sequential greedy's
    tokens under Jacobi decoding too: each window position is processed with its own prefix."""
    seen_lengths: set[int] = set()

    def no_repeat(input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        seen_lengths.add(input_ids.shape[1])
        if input_ids.shape[1] == 0:
            return scores
        return scores.scatter(1, input_ids[:, -1:], float("-inf"))

    labels = [1, 5]
    sequential = model.generate(labels, do_sample=False, guidance_scale=2.0, logits_processor=[no_repeat])
    assert bool((sequential[:, 1:] != sequential[:, :-1]).all())
    jacobi = model.generate(
        labels, do_sample=False, guidance_scale=2.0, jacobi_window=4, logits_processor=[no_repeat]
    )
    assert torch.equal(jacobi, sequential)
    assert max(seen_lengths) >= model.config.num_image_tokens - 1


def test_the_window_comes_from_the_generation_config_and_bad_windows_are_rejected(model) -> None:
    gens = lambda: [torch.Generator().manual_seed(3)]  # noqa: E731
    explicit = model.generate([4], generator=gens(), jacobi_window=3)
    from_config = model.generate([4], generator=gens(), generation_config=GenerationConfig(jacobi_window=3))
    assert torch.equal(explicit, from_config)
    sequential = model.generate(
        [4], generator=gens(), generation_config=GenerationConfig(jacobi_window=3), jacobi_window=0
    )
    assert torch.equal(sequential, model.generate([4], generator=gens()))
    with pytest.raises(ValueError, match="jacobi_window must be >= 0"):
        model.generate([4], jacobi_window=-1)
    with pytest.raises(ValueError, match="jacobi_window must be a whole number"):
        model.generate([4], jacobi_window=2.5)


def test_rows_at_different_positions_attend_only_to_their_own_prefix(model) -> None:
    """The per-row cache: two rows fed at different positions in one pass give each row's full-forward logits."""
    tokens = torch.randint(
        0,
        model.config.vocab_size,
        (2, model.config.num_image_tokens),
        generator=torch.Generator().manual_seed(0),
    )
    labels = torch.tensor([2, 6])
    full = guided_logits(model, labels, tokens, 1.0)  # [2, N, V]
    cond = model.class_emb(labels)
    modulations = ([b.modulation(cond) for b in model.blocks], model.head_nm.modulation(cond))
    cache = PerSamplePositionCache(model.config.num_hidden_layers, model.config.num_image_tokens + 4)
    width = 3
    # Row 0 advances by 3 positions per pass, row 1 by 1: after the first pass they are at different positions.
    starts = [[0, 0], [3, 1], [6, 2], [9, 3]]
    with torch.no_grad():
        for start in starts:
            positions = torch.tensor(start)[:, None] + torch.arange(width)
            # The input at position p >= 1 is image token p - 1 (position 0 is the class token, its id unused).
            ids = torch.stack([tokens[r].roll(1)[positions[r]] for r in range(2)])
            logits = model._jacobi_pass(ids, positions, cond, cache, modulations)
            for r in range(2):
                for j in range(width):
                    p = int(positions[r, j])
                    torch.testing.assert_close(logits[r, j], full[r, p], rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # torch.compile: ~30 s
def test_compiled_jacobi_pass_with_static_cache_matches_eager(model) -> None:
    compile_config = CompileConfig(mode="default", fullgraph=False)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (3, 4)]  # noqa: E731
    kwargs = {"guidance_scale": 2.0, "jacobi_window": 4, "cache_implementation": "static"}
    eager = model.generate([1, 6], generator=gens(), **kwargs)
    compiled = model.generate([1, 6], generator=gens(), compile_config=compile_config, **kwargs)
    again = model.generate([1, 6], generator=gens(), compile_config=compile_config, **kwargs)
    assert torch.equal(compiled, eager) and torch.equal(again, eager)
