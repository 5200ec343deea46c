"""Fast mirror of the key checks of transformers' common model tests for ``IBQARForImageGeneration``.

The full ``ModelTesterMixin`` suite runs from the transformers sdist in ``test_ar_transformers_common.py`` (slow,
skipped offline); these tests keep the behaviours it found missing under the default suite: hidden states and
attentions (argument and config default), SDPA vs eager, the ``past_key_values`` alias, output-embedding
resizing, inputs and labels under full disk offload, and the save/load round trip of all of it.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import DynamicCache

from conftest import TINY_AR_CONFIG
from ibq_hf.models.configuration_ar import IBQARConfig
from ibq_hf.models.modeling_ar import IBQARForImageGeneration

pytestmark = pytest.mark.usefixtures("one_thread")

NO_DROPOUT = {"resid_dropout": 0.0, "ffn_dropout": 0.0, "token_dropout": 0.0, "class_dropout_prob": 0.0}


def tiny_model(attn: str = "sdpa", seed: int = 0, **overrides) -> IBQARForImageGeneration:
    """Tiny model with O(1) random weights (the reference init zeroes the head, so every logit would be 0)."""
    torch.manual_seed(seed)
    config = IBQARConfig(**{**TINY_AR_CONFIG, **NO_DROPOUT, **overrides})
    model = IBQARForImageGeneration._from_config(config, attn_implementation=attn)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_((1.0 if name.endswith("norm.weight") else 0.0) + 0.1 * torch.randn_like(param))
    return model.eval()


def inputs(batch: int = 2, length: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, TINY_AR_CONFIG["vocab_size"], (batch, length), generator=g)
    classes = torch.randint(0, TINY_AR_CONFIG["num_classes"], (batch,), generator=g)
    return ids, classes


def test_hidden_states_shapes_content_and_config_default() -> None:
    model = tiny_model()
    ids, classes = inputs()
    out = model(ids, classes, output_hidden_states=True)
    cfg = model.config
    assert len(out.hidden_states) == cfg.num_hidden_layers + 1
    assert all(h.shape == (2, ids.shape[1] + 1, cfg.hidden_size) for h in out.hidden_states)
    # First: the embedded sequence (class embedding, then image-token embeddings); last: what the head reads.
    expected_first = torch.cat([model.class_emb(classes)[:, None], model.tok_emb(ids)], dim=1)
    torch.testing.assert_close(out.hidden_states[0], expected_first)
    torch.testing.assert_close(model.head(out.hidden_states[-1]), out.logits)
    # The middle one is the first block's output on the embedded sequence.
    torch.testing.assert_close(out.hidden_states[1], _block_output(model, 0, out.hidden_states[0], classes))

    assert model(ids, classes).hidden_states is None
    model.config.output_hidden_states = True
    assert len(model(ids, classes).hidden_states) == cfg.num_hidden_layers + 1
    assert model(ids, classes, output_hidden_states=False).hidden_states is None


def _block_output(model, index, hidden, classes):
    from ibq_hf.models.modeling_ar import rope_2d_cos_sin

    positions = torch.arange(hidden.shape[1])
    cos, sin = rope_2d_cos_sin(positions, model.config.grid_size, model.config.head_dim)
    mask = model._attention_mask(positions, None, hidden.dtype)
    return model.blocks[index](hidden, model.class_emb(classes), cos, sin, attention_mask=mask)[0]


def test_attentions_are_causal_probabilities_and_follow_the_config() -> None:
    model = tiny_model("eager")
    ids, classes = inputs()
    out = model(ids, classes, output_attentions=True)
    cfg = model.config
    length = ids.shape[1] + 1
    assert len(out.attentions) == cfg.num_hidden_layers
    for probs in out.attentions:
        assert probs.shape == (2, cfg.num_attention_heads, length, length)
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, cfg.num_attention_heads, length))
        assert torch.all(probs.triu(diagonal=1) == 0)  # no position sees a later one
    assert model(ids, classes).attentions is None
    model.config.output_attentions = True
    assert len(model(ids, classes).attentions) == cfg.num_hidden_layers


def test_output_attentions_with_sdpa_runs_that_call_eagerly() -> None:
    sdpa, eager = tiny_model("sdpa"), tiny_model("eager")
    ids, classes = inputs()
    out_sdpa = sdpa(ids, classes, output_attentions=True, output_hidden_states=True)
    out_eager = eager(ids, classes, output_attentions=True, output_hidden_states=True)
    assert sdpa.config._attn_implementation == "sdpa"  # the model itself stays on SDPA
    for a, b in zip(out_sdpa.attentions, out_eager.attentions, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(out_sdpa.logits, out_eager.logits)
    # transformers' own guard: config.output_attentions needs the eager implementation
    with pytest.raises(ValueError, match="eager"):
        sdpa.config.output_attentions = True


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sdpa_matches_eager_on_hidden_states_with_and_without_cache(dtype) -> None:
    sdpa, eager = tiny_model("sdpa").to(dtype), tiny_model("eager").to(dtype)
    tol = {"atol": 1e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 3e-2, "rtol": 3e-2}
    ids, classes = inputs(length=8)
    full_sdpa = sdpa(ids, classes, output_hidden_states=True)
    full_eager = eager(ids, classes, output_hidden_states=True)
    for a, b in zip(full_sdpa.hidden_states, full_eager.hidden_states, strict=True):
        torch.testing.assert_close(a, b, **tol)
    # prefill 5 positions, then continue the cache with the remaining tokens one at a time
    steps = {}
    for name, model in (("sdpa", sdpa), ("eager", eager)):
        cache = DynamicCache(config=model.config)
        first = model(ids[:, :4], classes, cache=cache, output_hidden_states=True)
        rest = [
            model(ids[:, t : t + 1], classes, cache=cache, output_hidden_states=True) for t in range(4, 8)
        ]
        steps[name] = [first.hidden_states[-1]] + [r.hidden_states[-1] for r in rest]
        torch.testing.assert_close(torch.cat(steps[name], dim=1), full_eager.hidden_states[-1], **tol)
    for a, b in zip(steps["sdpa"], steps["eager"], strict=True):
        torch.testing.assert_close(a, b, **tol)


def test_past_key_values_is_a_deprecated_alias_of_cache() -> None:
    model = tiny_model()
    ids, classes = inputs()
    with pytest.warns(FutureWarning, match="`past_key_values` is deprecated"):
        old = model(ids, classes, past_key_values=DynamicCache(config=model.config))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name warns about nothing
        new = model(ids, classes, cache=DynamicCache(config=model.config))
    assert old.cache.get_seq_length() == new.cache.get_seq_length() == ids.shape[1] + 1
    torch.testing.assert_close(old.logits, new.logits)
    # continuing through the alias reads the cache it is given
    with pytest.warns(FutureWarning):
        step = model(ids[:, :1], classes, past_key_values=old.cache)
    assert step.logits.shape[1] == 1 and old.cache.get_seq_length() == ids.shape[1] + 2
    with pytest.raises(ValueError, match="past_key_values"):
        model(ids, classes, cache=DynamicCache(), past_key_values=DynamicCache())


def test_set_output_embeddings_and_resize_token_embeddings() -> None:
    model = tiny_model()
    ids, classes = inputs()
    before = model(ids, classes).logits
    old_in, old_head = model.tok_emb.weight.clone(), model.head.weight.clone()
    old_classes = model.class_emb.embedding_table.weight.clone()
    vocab = model.config.vocab_size

    replacement = torch.nn.Linear(model.config.hidden_size, vocab, bias=False)
    model.set_output_embeddings(replacement)
    assert model.get_output_embeddings() is replacement and model.head is replacement
    model.set_output_embeddings(torch.nn.Linear(model.config.hidden_size, vocab, bias=False))
    with torch.no_grad():
        model.head.weight.copy_(old_head)

    model.resize_token_embeddings(vocab + 8)
    assert model.config.vocab_size == vocab + 8
    assert model.tok_emb.weight.shape == (vocab + 8, model.config.hidden_size)
    assert model.head.weight.shape == (vocab + 8, model.config.hidden_size)
    torch.testing.assert_close(model.tok_emb.weight[:vocab], old_in)
    torch.testing.assert_close(model.head.weight[:vocab], old_head)
    torch.testing.assert_close(model.class_emb.embedding_table.weight, old_classes)  # classes are not tokens
    after = model(ids, classes).logits
    assert after.shape[-1] == vocab + 8
    torch.testing.assert_close(after[..., :vocab], before)
    new_ids = torch.full_like(ids, vocab + 7)  # a new id is accepted and embedded
    assert torch.isfinite(model(new_ids, classes, labels=new_ids).loss)

    model.resize_token_embeddings(vocab - 4)
    assert model.config.vocab_size == vocab - 4 and model.head.out_features == vocab - 4
    with pytest.raises(ValueError, match="input_ids must lie in"):
        model(torch.full_like(ids, vocab - 4), classes)


def test_inputs_and_labels_follow_the_execution_device_under_full_disk_offload(tmp_path) -> None:
    """With every weight offloaded to disk the parameters (and ``model.device``) are on ``meta``; the class labels
    must not be sent there and the labels meet the logits wherever accelerate computes them."""
    pytest.importorskip("accelerate")
    model = tiny_model()
    ids, classes = inputs()
    expected = model(ids, classes, labels=ids)
    model.save_pretrained(tmp_path / "model")
    offloaded = IBQARForImageGeneration.from_pretrained(
        tmp_path / "model", device_map={"": "disk"}, offload_folder=tmp_path / "offload"
    )
    assert offloaded.device.type == "meta"
    for class_labels in (classes, classes.tolist()):
        out = offloaded(ids, class_labels, labels=ids)
        assert out.logits.device.type == "cpu"
        torch.testing.assert_close(out.logits, expected.logits)
        torch.testing.assert_close(out.loss, expected.loss)


def test_save_load_round_trip_keeps_outputs_and_output_defaults(tmp_path) -> None:
    model = tiny_model("eager", output_hidden_states=True)
    ids, classes = inputs()
    before = model(ids, classes, labels=ids, output_attentions=True)
    model.save_pretrained(tmp_path)
    loaded = IBQARForImageGeneration.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert loaded.config.output_hidden_states is True
    after = loaded(ids, classes, labels=ids, output_attentions=True)
    for field in ("loss", "logits"):
        torch.testing.assert_close(getattr(after, field), getattr(before, field))
    for a, b in zip(
        after.hidden_states + after.attentions, before.hidden_states + before.attentions, strict=True
    ):
        torch.testing.assert_close(a, b)
    # the tuple form keeps the ModelOutput order of the fields that are set
    as_tuple = loaded(ids, classes, labels=ids, output_attentions=True, return_dict=False)
    assert [t.shape for t in as_tuple[:2]] == [after.loss.shape, after.logits.shape]
    assert len(as_tuple[2]) == len(after.hidden_states) and len(as_tuple[3]) == len(after.attentions)


def test_init_weights_covers_every_weight_of_a_model_loaded_without_weights(monkeypatch) -> None:
    """``from_pretrained`` with no weights (the ``output_loading_info`` opt-out) must initialise every parameter
    from meta exactly as ``__init__`` does: same seed before each init, same tensors."""
    from transformers import PreTrainedModel, set_seed

    original = PreTrainedModel._initialize_weights

    def seeded(*args, **kwargs):
        set_seed(42)
        return original(*args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "_initialize_weights", seeded)
    config = IBQARConfig(**TINY_AR_CONFIG)
    from_init = IBQARForImageGeneration(config)
    from_nothing, info = IBQARForImageGeneration.from_pretrained(
        None, config=config, state_dict={}, output_loading_info=True
    )
    assert len(info["missing_keys"]) == len(from_init.state_dict())
    assert not [name for name, p in from_nothing.named_parameters() if p.device.type == "meta"]
    for name, value in from_init.state_dict().items():
        assert torch.equal(from_nothing.state_dict()[name], value), name
