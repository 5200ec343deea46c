"""generate() on transformers' parts: GenerationConfig merging and validation, logits processors, streamers."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, TopPLogitsWarper
from transformers.generation.streamers import BaseStreamer

from conftest import TINY_AR_CONFIG
from ibq_hf.models.configuration_ar import IBQARConfig
from ibq_hf.models.generation_ar import (
    GENERATION_DEFAULTS,
    IBQTopPLogitsWarper,
    build_logits_processor,
    resolve_generation_settings,
)
from ibq_hf.models.modeling_ar import IBQARForImageGeneration

NULL = 10
STEPS = 16
VOCAB = 64


@pytest.fixture(scope="module")
def model() -> IBQARForImageGeneration:
    """Tiny model with O(1)-scale random weights, so that logits are far from uniform."""
    torch.manual_seed(0)
    model = IBQARForImageGeneration(IBQARConfig(**TINY_AR_CONFIG))
    with torch.no_grad():
        for name, param in model.named_parameters():
            scale = 0.1 if "norm" in name else 0.15
            param.copy_((1.0 if "norm" in name else 0.0) + scale * torch.randn_like(param))
    return model.eval()


def seeds(*values: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(v) for v in values]


# ---- top-p: ours, not transformers' ----------------------------------------------------------------------------


def test_top_p_keeps_the_crossing_token_where_transformers_does_not() -> None:
    """Probabilities [.5, .25, .125, .125], top_p 0.75: the reference keeps 3 tokens, TopPLogitsWarper 2."""
    scores = torch.tensor([[0.5, 0.25, 0.125, 0.125]]).log()
    ours = IBQTopPLogitsWarper(0.75)(None, scores.clone())
    theirs = TopPLogitsWarper(0.75)(None, scores.clone())
    assert torch.isfinite(ours).tolist() == [[True, True, True, False]]
    assert torch.isfinite(theirs).tolist() == [[True, True, False, False]]
    # Away from the boundary both keep as many tokens (which of two tied ones differs: sort order).
    for top_p, kept in ((0.6, 2), (0.8, 3), (0.9, 4)):
        assert int(torch.isfinite(IBQTopPLogitsWarper(top_p)(None, scores.clone())).sum()) == kept
        assert int(torch.isfinite(TopPLogitsWarper(top_p)(None, scores.clone())).sum()) == kept


def test_sampling_processors_are_transformers_warpers_in_reference_order() -> None:
    processors = build_logits_processor(True, temperature=0.7, top_k=5, top_p=0.9)
    assert [type(p).__name__ for p in processors] == [
        "TemperatureLogitsWarper",
        "TopKLogitsWarper",
        "IBQTopPLogitsWarper",
    ]
    assert list(build_logits_processor(True)) == []  # neutral values add nothing
    assert list(build_logits_processor(False, temperature=0.7, top_k=5, top_p=0.9)) == []  # arg-max
    extra = LogitsProcessorList([lambda ids, scores: scores])
    assert build_logits_processor(False, logits_processor=extra)[-1] is extra[0]
    assert build_logits_processor(True, top_k=3, logits_processor=extra)[-1] is extra[0]  # after ours


# ---- settings: one merge, our checks on top of GenerationConfig.validate() -----------------------------------


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"temperature": float("nan")}, "temperature must be a finite number"),
        ({"top_k": 1.5}, "top_k must be a whole number"),
        ({"guidance_scale": 0.5}, r"guidance_scale=0\.5 is below 1"),
    ],
)
def test_our_checks_refuse_what_generation_config_validate_accepts(setting, message) -> None:
    GenerationConfig(do_sample=True, **setting).validate(strict=True)  # transformers lets it through
    with pytest.raises(ValueError, match=message):
        resolve_generation_settings(GenerationConfig(do_sample=True, **setting))
    with pytest.raises(ValueError, match=message):
        resolve_generation_settings(None, **setting)


def test_resolve_generation_settings_precedence_and_defaults() -> None:
    assert resolve_generation_settings() == GENERATION_DEFAULTS
    config = GenerationConfig(do_sample=True, temperature=1.2, guidance_scale=2.0, guidance_schedule="linear")
    settings = resolve_generation_settings(config, temperature=0.8, top_k=4.0, guidance_cutoff=None)
    assert settings == {
        **GENERATION_DEFAULTS,
        "guidance_scale": 2.0,
        "guidance_schedule": "linear",
        "temperature": 0.8,
        "top_k": 4,
    }
    assert isinstance(settings["top_k"], int)
    assert config.temperature == 1.2 and config.top_k is None  # the caller's config is not modified
    with pytest.raises(ValueError, match=r"Unknown generation settings \['max_new_tokens'\]"):
        resolve_generation_settings(config, max_new_tokens=3)


def test_transformers_validation_still_runs() -> None:
    """Checks that are not ours come from GenerationConfig.validate() (here: an invalid num_return_sequences)."""
    with pytest.raises(ValueError, match="num_return_sequences"):
        resolve_generation_settings(GenerationConfig(do_sample=False, num_return_sequences=2))


def test_greedy_call_does_not_warn_about_inherited_sampling_flags(model, caplog) -> None:
    config = GenerationConfig(do_sample=True, temperature=0.7, top_k=0, top_p=0.9)
    caplog.set_level("WARNING")
    model.generate([1], do_sample=False, top_k=0, generation_config=config)
    assert not [r for r in caplog.records if "may be ignored" in r.getMessage()]


def test_generation_config_argument_overrides_the_models_and_kwargs_override_both(model) -> None:
    greedy = GenerationConfig(do_sample=False, guidance_scale=3.0)
    from_config = model.generate([2, 7], generation_config=greedy)
    assert torch.equal(from_config, model.generate([2, 7], do_sample=False, guidance_scale=3.0))
    overridden = model.generate([2, 7], generation_config=greedy, guidance_scale=1.0)
    assert torch.equal(overridden, model.generate([2, 7], do_sample=False, guidance_scale=1.0))
    assert not torch.equal(overridden, from_config)
    assert greedy.guidance_scale == 3.0


# ---- logits_processor= ----------------------------------------------------------------------------------------


class Recorder(LogitsProcessor):
    """Records what it is called with and passes the scores through."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        self.calls.append((input_ids.clone(), scores.clone()))
        return scores


def test_user_processor_sees_guided_processed_logits_and_the_tokens_so_far(model) -> None:
    labels = torch.tensor([3, 8])
    recorder = Recorder()
    tokens = model.generate(
        labels,
        guidance_scale=3.0,
        temperature=0.5,
        top_k=7,
        generator=seeds(1, 2),
        logits_processor=[recorder],
    )
    # A pass-through processor changes nothing.
    assert torch.equal(
        tokens, model.generate(labels, guidance_scale=3.0, temperature=0.5, top_k=7, generator=seeds(1, 2))
    )
    assert len(recorder.calls) == STEPS
    for step, (input_ids, _) in enumerate(recorder.calls):
        assert torch.equal(input_ids, tokens[:, :step])
    # Step 0: guided logits u + s·(c − u), divided by the temperature, top-7 kept.
    c = model(None, labels).logits[:, -1].float()
    u = model(None, torch.full_like(labels, NULL)).logits[:, -1].float()
    expected = (u + 3.0 * (c - u)) / 0.5
    kept = torch.isfinite(recorder.calls[0][1])
    assert kept.sum(-1).tolist() == [7, 7]
    torch.testing.assert_close(recorder.calls[0][1][kept], expected[kept])


@pytest.mark.parametrize("do_sample", [True, False])
def test_user_processor_steers_sampling_and_greedy_decoding(model, do_sample) -> None:
    class OnlyEvenIds(LogitsProcessor):
        def __call__(self, input_ids, scores):
            return scores.masked_fill(torch.arange(scores.shape[-1]) % 2 == 1, float("-inf"))

    tokens = model.generate(
        [1, 4, 6], guidance_scale=2.0, do_sample=do_sample, generator=seeds(0, 1, 2),
        logits_processor=LogitsProcessorList([OnlyEvenIds()]),
    )  # fmt: skip
    assert (tokens % 2 == 0).all()


def test_a_processor_that_removes_every_token_is_an_error(model) -> None:
    def nothing_left(input_ids, scores):
        return torch.full_like(scores, float("-inf"))

    with pytest.raises(ValueError, match="removed every token"):
        model.generate([1], generator=seeds(0), logits_processor=[nothing_left])


# ---- streamer= ------------------------------------------------------------------------------------------------


class TokenStreamer(BaseStreamer):
    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []
        self.ended = 0

    def put(self, value: torch.Tensor) -> None:
        assert self.ended == 0, "put after end"
        self.steps.append(value)

    def end(self) -> None:
        self.ended += 1


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_streamer_gets_each_steps_tokens_then_end(model, kind) -> None:
    streamer = TokenStreamer()
    tokens = model.generate(
        [5, 0, 9], guidance_scale=2.0, guidance_cutoff=6, generator=seeds(3, 4, 5), streamer=streamer,
        cache_implementation=kind,
    )  # fmt: skip
    assert streamer.ended == 1 and len(streamer.steps) == STEPS
    assert all(s.shape == (3,) and s.dtype == torch.long and s.device.type == "cpu" for s in streamer.steps)
    assert torch.equal(torch.stack(streamer.steps, dim=1), tokens)
    assert torch.equal(
        tokens,
        model.generate([5, 0, 9], guidance_scale=2.0, guidance_cutoff=6, generator=seeds(3, 4, 5)),
    )


def test_streamer_must_have_put_and_end(model) -> None:
    with pytest.raises(ValueError, match=r"streamer must have put\(tokens\) and end\(\)"):
        model.generate([1], streamer=object())


def test_generate_signature_lists_the_new_arguments(model) -> None:
    with pytest.raises(ValueError, match="logits_processor, streamer"):
        model.generate([1], max_new_tokens=3)
    assert math.isclose(resolve_generation_settings(model.generation_config)["top_p"], 1.0)
