"""IBQARConfig / IBQARForImageGeneration: architecture, parity with an independent reference, training forward."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from conftest import TINY_AR_CONFIG
from ibq_hf.models.configuration_ar import IBQ_AR_PRESETS, IBQARConfig, preset_name, swiglu_hidden_size
from ibq_hf.models.modeling_ar import (
    IBQARForImageGeneration,
    IBQARRMSNorm,
    apply_rotary_emb_2d,
    rope_2d_cos_sin,
)

TINY = TINY_AR_CONFIG
NO_DROPOUT = {"resid_dropout": 0.0, "ffn_dropout": 0.0, "token_dropout": 0.0, "class_dropout_prob": 0.0}


def tiny_model(seed: int = 0, **overrides) -> IBQARForImageGeneration:
    """Tiny model with O(1)-scale random weights (the reference init has a zero head: logits would all be 0)."""
    torch.manual_seed(seed)
    model = IBQARForImageGeneration(IBQARConfig(**{**TINY, **overrides}))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("rmsnorm.weight"):
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
            else:
                param.copy_(0.1 * torch.randn_like(param))
    return model.eval()


# ---- an independent, straightforward reference of the original forward pass (reference §4.2–§4.4) ------------


def reference_logits(
    model: IBQARForImageGeneration, tokens: torch.Tensor, labels: torch.Tensor, zero_inputs: bool = False
) -> torch.Tensor:
    """float64 re-implementation from the spec: [cls, tok_emb(tokens)] → logits [B, T+1, V]."""
    cfg = model.config
    sd = {k: v.double() for k, v in model.state_dict().items()}
    C, H = cfg.hidden_size, cfg.num_attention_heads
    D, G = C // H, cfg.grid_size
    eps = cfg.rms_norm_eps

    # LlamaGen-style table [1 + G², D/2, 2]: row 0 (class token) zeros, then raster (r, c) with pairs
    # 0..D/4-1 turned by r·f_k and pairs D/4..D/2-1 by c·f_k, f_k = base^(-2k/(D/2)).
    quarter = D // 4
    freqs = [cfg.rope_base ** (-(2 * k) / (D // 2)) for k in range(quarter)]
    table = torch.zeros(1 + G * G, D // 2, 2, dtype=torch.float64)
    for r in range(G):
        for c in range(G):
            angles = [r * f for f in freqs] + [c * f for f in freqs]
            for j, a in enumerate(angles):
                table[1 + r * G + c, j, 0] = math.cos(a)
                table[1 + r * G + c, j, 1] = math.sin(a)

    def rms(x, w):
        return x / torch.sqrt((x**2).mean(-1, keepdim=True) + eps) * w

    def rotate(x):  # x [B, L, H, D], interleaved pairs
        L = x.shape[1]
        t = table[:L].view(1, L, 1, D // 2, 2)
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = torch.empty_like(x)
        out[..., 0::2] = x0 * t[..., 0] - x1 * t[..., 1]
        out[..., 1::2] = x1 * t[..., 0] + x0 * t[..., 1]
        return out

    cond = sd["class_emb.embedding_table.weight"][labels]  # [B, C]
    x = torch.cat([cond[:, None], sd["tok_emb.weight"][tokens]], dim=1)
    if zero_inputs:
        x = torch.zeros_like(x)
    B, L, _ = x.shape
    causal = torch.tril(torch.ones(L, L, dtype=torch.bool))
    silu_cond = F.silu(cond)
    for i in range(cfg.num_hidden_layers):
        p = f"blocks.{i}."
        mod = silu_cond @ sd[p + "ada_lin.1.weight"].T + sd[p + "ada_lin.1.bias"]
        g1, g2, s1, s2, b1, b2 = (mod[:, k * C : (k + 1) * C][:, None] for k in range(6))
        a_in = rms(x, sd[p + "attention_norm.weight"]) * (1 + s1) + b1
        qkv = a_in @ sd[p + "attention.wqkv.weight"].T
        q, k, v = (qkv[..., j * C : (j + 1) * C].reshape(B, L, H, D) for j in range(3))
        q, k = rotate(q), rotate(k)
        scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(D)
        scores = scores.masked_fill(~causal, float("-inf"))
        attn = torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), v).reshape(B, L, C)
        h = x + g1 * (attn @ sd[p + "attention.wo.weight"].T)
        f_in = rms(h, sd[p + "ffn_norm.weight"]) * (1 + s2) + b2
        ffn = (
            F.silu(f_in @ sd[p + "feed_forward.w1.weight"].T) * (f_in @ sd[p + "feed_forward.w3.weight"].T)
        ) @ sd[p + "feed_forward.w2.weight"].T
        x = h + g2 * ffn
    head_mod = silu_cond @ sd["head_nm.ada_lin.1.weight"].T + sd["head_nm.ada_lin.1.bias"]
    scale, shift = head_mod[:, None, :C], head_mod[:, None, C:]
    x = rms(x, sd["head_nm.rmsnorm.weight"]) * (1 + scale) + shift
    return x @ sd["head.weight"].T


# ---- config and presets --------------------------------------------------------------------------------------

EXPECTED_PARAMS = {"B": 342_994_944, "L": 649_640_960, "XL": 1_076_103_168, "XXL": 2_063_331_840}
EXPECTED_FFN = {"B": 2816, "L": 3584, "XL": 4096, "XXL": 5120}
EXPECTED_LAYERS = {"B": (16, 1024), "L": (20, 1280), "XL": (24, 1536), "XXL": (30, 1920)}


def appendix_c_shapes(
    n_layer: int, C: int, hid: int, vocab: int = 16384, classes: int = 1000
) -> dict[str, tuple]:
    """Original key → shape, transcribed from reference Appendix C (prefix `transformer.` removed)."""
    shapes = {
        "tok_emb.weight": (vocab, C),
        "class_emb.embedding_table.weight": (classes + 1, C),
        "head_nm.rmsnorm.weight": (C,),
        "head_nm.ada_lin.1.weight": (2 * C, C),
        "head_nm.ada_lin.1.bias": (2 * C,),
        "head.weight": (vocab, C),
    }
    for i in range(n_layer):
        shapes |= {
            f"blocks.{i}.attention.wqkv.weight": (3 * C, C),
            f"blocks.{i}.attention.wo.weight": (C, C),
            f"blocks.{i}.feed_forward.w1.weight": (hid, C),
            f"blocks.{i}.feed_forward.w3.weight": (hid, C),
            f"blocks.{i}.feed_forward.w2.weight": (C, hid),
            f"blocks.{i}.attention_norm.weight": (C,),
            f"blocks.{i}.ffn_norm.weight": (C,),
            f"blocks.{i}.ada_lin.1.weight": (6 * C, C),
            f"blocks.{i}.ada_lin.1.bias": (6 * C,),
        }
    return shapes


@pytest.mark.parametrize("name", list(IBQ_AR_PRESETS))
def test_preset_parameter_counts_and_keys_match_reference(name: str) -> None:
    config = IBQARConfig.from_preset(name)
    assert config.intermediate_size == EXPECTED_FFN[name]
    assert config.head_dim == 64 and config.grid_size == 16 and config.num_image_tokens == 256
    with torch.device("meta"):
        model = IBQARForImageGeneration(config)
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS[name]
    n_layer, C = EXPECTED_LAYERS[name]
    expected = appendix_c_shapes(n_layer, C, EXPECTED_FFN[name])
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected
    assert len(got) == 6 + 9 * n_layer
    assert preset_name(config) == name


def test_config_validation_and_derived_fields() -> None:
    assert swiglu_hidden_size(64, 32) == 192 and swiglu_hidden_size(1024) == 2816
    config = IBQARConfig(**TINY)
    assert config.null_class_id == 10 and config.num_image_tokens == 16 and preset_name(config) is None
    with pytest.raises(ValueError, match="divisible by num_attention_heads"):
        IBQARConfig(hidden_size=60, num_attention_heads=7)
    with pytest.raises(ValueError, match="multiple of 4"):
        IBQARConfig(hidden_size=12, num_attention_heads=2)
    with pytest.raises(ValueError, match="probability"):
        IBQARConfig(**TINY, token_dropout=1.5)
    with pytest.raises(ValueError, match="Unknown IBQ AR preset"):
        IBQARConfig.from_preset("M")
    assert IBQARConfig.from_preset("xl", num_classes=10).adaln_gamma_init == 1e-4


def test_config_json_round_trip(tmp_path) -> None:
    config = IBQARConfig(**TINY, class_dropout_prob=0.2)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, IBQARConfig)
    assert loaded.to_diff_dict() == config.to_diff_dict()
    assert loaded.intermediate_size == 192 and loaded.class_dropout_prob == 0.2


# ---- architecture ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_forward_matches_independent_reference(attn: str) -> None:
    model = tiny_model()
    model.set_attn_implementation(attn)
    tokens = torch.randint(0, 64, (3, 15))
    labels = torch.tensor([1, 7, 10])  # 10 = null class
    logits = model(tokens, labels).logits
    assert logits.shape == (3, 16, 64) and logits.dtype == torch.float32
    ref = reference_logits(model, tokens, labels)
    torch.testing.assert_close(logits.double(), ref, rtol=1e-5, atol=1e-5)


def test_rope_table_layout_and_zero_class_slot() -> None:
    grid, head_dim = 4, 16
    positions = torch.arange(grid * grid + 1)
    cos, sin = rope_2d_cos_sin(positions, grid, head_dim)
    assert cos.shape == (17, 8) and cos.dtype == torch.float32
    assert torch.all(cos[0] == 0) and torch.all(sin[0] == 0)
    freqs = torch.tensor([10000 ** (-k / 4) for k in range(4)])
    for r in range(grid):
        for c in range(grid):
            p = 1 + r * grid + c
            torch.testing.assert_close(cos[p], torch.cat([torch.cos(r * freqs), torch.cos(c * freqs)]))
            torch.testing.assert_close(sin[p], torch.cat([torch.sin(r * freqs), torch.sin(c * freqs)]))
    # Interleaved pairs: dims (0, 1) rotate together; a zero table zeroes q/k of the class token.
    x = torch.zeros(1, 1, 1, head_dim)
    x[..., 0] = 1.0
    theta = 0.3
    c = torch.zeros(1, head_dim // 2)
    s = torch.zeros(1, head_dim // 2)
    c[0, 0], s[0, 0] = math.cos(theta), math.sin(theta)
    out = apply_rotary_emb_2d(x, c, s)
    torch.testing.assert_close(out[0, 0, 0, :2], torch.tensor([math.cos(theta), math.sin(theta)]))
    assert torch.all(out[..., 2:] == 0)
    assert torch.all(apply_rotary_emb_2d(torch.randn(2, 3, 1, head_dim), cos[:1], sin[:1]) == 0)


def test_adaln_chunk_order_gammas_first() -> None:
    """With the first 2C outputs (gamma1, gamma2) zero a block is the identity, whatever the other chunks are."""
    model = tiny_model()
    block = model.blocks[0]
    C = model.config.hidden_size
    with torch.no_grad():
        block.ada_lin[1].weight[: 2 * C] = 0
        block.ada_lin[1].bias[: 2 * C] = 0
    x = torch.randn(2, 5, C)
    cond = torch.randn(2, C)
    cos, sin = rope_2d_cos_sin(torch.arange(5), 4, model.config.head_dim)
    torch.testing.assert_close(block(x, cond, cos, sin)[0], x)
    with torch.no_grad():  # gamma2 = 1, scale2/shift2 = 0, gamma1 = 0 → out = x + ffn(norm(x))
        block.ada_lin[1].weight.zero_()
        block.ada_lin[1].bias.zero_()
        block.ada_lin[1].bias[C : 2 * C] = 1.0
    expected = x + block.feed_forward(block.ffn_norm(x))
    torch.testing.assert_close(block(x, cond, cos, sin)[0], expected)


def test_reference_initialisation() -> None:
    torch.manual_seed(0)
    config = IBQARConfig(**{**TINY, "hidden_size": 128, "num_attention_heads": 2}, adaln_gamma_init=1e-3)
    model = IBQARForImageGeneration(config)
    C = 128
    assert torch.all(model.head.weight == 0)
    ada = model.blocks[1].ada_lin[1]
    assert torch.all(ada.bias == 0) and torch.all(model.head_nm.ada_lin[1].bias == 0)
    assert ada.weight[: 2 * C].std().item() == pytest.approx(0.02 * 1e-3, rel=0.05)
    assert ada.weight[2 * C :].std().item() == pytest.approx(0.01, rel=0.05)
    assert model.head_nm.ada_lin[1].weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert model.blocks[0].attention.wqkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.class_emb.embedding_table.weight.shape == (11, C)
    assert all(torch.all(m.weight == 1) for m in model.modules() if isinstance(m, IBQARRMSNorm))
    # Zero head: uniform initial predictions.
    logits = model.eval()(torch.randint(0, 64, (2, 5)), torch.tensor([0, 3])).logits
    assert torch.all(logits == 0)


def test_rmsnorm_in_fp32_then_cast_then_weight() -> None:
    norm = IBQARRMSNorm(8)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, 8))
    x = (torch.randn(4, 8) * 100).to(torch.bfloat16)
    xf = x.float()
    expected = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(torch.bfloat16) * norm.weight
    assert torch.equal(norm(x), expected)


# ---- training forward -------------------------------------------------------------------------------------------


def test_loss_matches_cross_entropy_for_both_label_layouts() -> None:
    model = tiny_model()
    z = torch.randint(0, 64, (3, 16))
    labels = torch.tensor([0, 4, 9])
    out = model(z[:, :-1], labels, labels=z)  # original layout: input z[:, :-1], targets z
    expected = F.cross_entropy(out.logits.reshape(-1, 64), z.reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    out2 = model(z, labels, labels=z)  # causal-LM convention: labels = input_ids, last position unscored
    torch.testing.assert_close(out2.loss, F.cross_entropy(out2.logits[:, :16].reshape(-1, 64), z.reshape(-1)))
    masked = z.clone()
    masked[:, :8] = -100
    out3 = model(z[:, :-1], labels, labels=masked)
    torch.testing.assert_close(
        out3.loss, F.cross_entropy(out.logits[:, 8:].reshape(-1, 64), z[:, 8:].reshape(-1))
    )
    with pytest.raises(ValueError, match="labels must be"):
        model(z[:, :-1], labels, labels=z[:, :5])


def test_class_label_dropout_in_training_mode_only() -> None:
    tokens = torch.randint(0, 64, (4, 15))
    labels = torch.tensor([1, 2, 3, 4])
    model = tiny_model(**{**NO_DROPOUT, "class_dropout_prob": 1.0})
    null = torch.full_like(labels, 10)
    eval_null = model(tokens, null).logits
    eval_cond = model(tokens, labels).logits
    model.train()
    torch.testing.assert_close(model(tokens, labels).logits, eval_null)
    model.class_emb.dropout_prob = 0.0
    torch.testing.assert_close(model(tokens, labels).logits, eval_cond)
    # p = 0.1 (default): about 10% of labels are dropped.
    model.class_emb.dropout_prob = 0.1
    torch.manual_seed(0)
    many = torch.zeros(20000, dtype=torch.long)
    with torch.no_grad():
        emb = model.class_emb(many)
    dropped = (emb == model.class_emb.embedding_table.weight[10]).all(-1).float().mean().item()
    assert dropped == pytest.approx(0.1, abs=0.01)


def test_token_dropout_acts_on_embedded_sequence_not_on_condition() -> None:
    model = tiny_model(**{**NO_DROPOUT, "token_dropout": 1.0}).train()
    tokens = torch.randint(0, 64, (2, 15))
    labels = torch.tensor([3, 10])
    ref = reference_logits(model, tokens, labels, zero_inputs=True)
    torch.testing.assert_close(model(tokens, labels).logits.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_recomputes_and_gives_same_grads(use_reentrant: bool) -> None:
    model = tiny_model(**NO_DROPOUT).train()
    z = torch.randint(0, 64, (2, 16))
    labels = torch.tensor([1, 2])
    model(z[:, :-1], labels, labels=z).loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    calls = []
    hook = model.blocks[0].feed_forward.register_forward_hook(lambda *a: calls.append(1))
    model.activation_checkpointing_enable({"use_reentrant": use_reentrant})
    model(z[:, :-1], labels, labels=z).loss.backward()
    hook.remove()
    assert len(calls) == 2  # forward + recompute in backward
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, grads[name], msg=name)


def test_bf16_forward_and_backward() -> None:
    model = tiny_model()
    z = torch.randint(0, 64, (2, 16))
    labels = torch.tensor([1, 2])
    ref = model(z[:, :-1], labels, labels=z)
    model = model.to(torch.bfloat16).train()
    out = model(z[:, :-1], labels, labels=z)
    assert out.logits.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
    assert torch.isfinite(out.logits).all()
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    logits = model(z[:, :-1], labels).logits.float()
    assert (logits - ref.logits).abs().max().item() < 0.05 * ref.logits.abs().max().item()


def test_model_metadata() -> None:
    assert IBQARForImageGeneration._no_split_modules == ["IBQARBlock"]
    assert IBQARForImageGeneration.supports_gradient_checkpointing
    assert IBQARForImageGeneration.can_generate()
    model = tiny_model()
    assert model.get_input_embeddings() is model.tok_emb and model.get_output_embeddings() is model.head


# ---- input errors ---------------------------------------------------------------------------------------------


def test_forward_errors_are_clear() -> None:
    model = tiny_model()
    tokens = torch.randint(0, 64, (2, 5))
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 64\)"):
        model(torch.tensor([[3, 64]]), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"input_ids must lie in"):
        model(torch.tensor([[-1, 2]]), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"class_labels must lie in \[0, 10\]"):
        model(tokens, torch.tensor([1, 11]))
    with pytest.raises(ValueError, match="class_labels is required"):
        model(tokens)
    with pytest.raises(ValueError, match="batch size 2 but class_labels has 3"):
        model(tokens, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="class token plus 16 image tokens"):
        model(torch.randint(0, 64, (1, 17)), torch.tensor([1]))
    with pytest.raises(ValueError, match="integer class ids"):
        model(tokens, torch.tensor([1.0, 2.0]))


# ---- save / load / Auto -----------------------------------------------------------------------------------------


def test_save_load_round_trip_and_auto_classes(tmp_path) -> None:
    model = tiny_model()
    model.generation_config.guidance_scale = 3.0
    model.generation_config.guidance_schedule = "linear"
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    tokens = torch.randint(0, 64, (2, 7))
    labels = torch.tensor([0, 5])
    expected = model(tokens, labels).logits
    for loader in (IBQARForImageGeneration, AutoModel, AutoModelForCausalLM):
        loaded = loader.from_pretrained(tmp_path)
        assert isinstance(loaded, IBQARForImageGeneration) and not loaded.training
        state = loaded.state_dict()
        assert state.keys() == model.state_dict().keys()
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
        torch.testing.assert_close(loaded(tokens, labels).logits, expected, rtol=0, atol=0)
        assert loaded.generation_config.guidance_scale == 3.0
        assert loaded.generation_config.guidance_schedule == "linear"
    assert isinstance(AutoConfig.from_pretrained(tmp_path), IBQARConfig)


# ---- strict loading (issue 11, item 11) ------------------------------------------------------------------------


def _rewrite_weights(folder, mutate) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    state = load_file(path)
    mutate(state)
    save_file(state, path, metadata={"format": "pt"})


@pytest.mark.parametrize(
    ("mutate", "attribute", "key"),
    [
        (lambda s: s.pop("blocks.1.attention.wqkv.weight"), "missing", "blocks.1.attention.wqkv.weight"),
        (
            lambda s: s.update({"blocks.0.extra.weight": torch.zeros(3)}),
            "unexpected",
            "blocks.0.extra.weight",
        ),
        (lambda s: s.update({"head.weight": torch.zeros(64, 32)}), "mismatched", "head.weight"),
    ],
    ids=["missing", "unexpected", "mis-shaped"],
)
def test_loading_a_checkpoint_with_bad_keys_raises_and_names_them(tmp_path, mutate, attribute, key) -> None:
    """transformers only logs a load report and re-initialises missing weights randomly (the pipeline then samples
    garbage); our from_pretrained raises, naming the keys, through every loading entry point."""
    from ibq_hf.errors import CheckpointKeyError

    tiny_model().save_pretrained(tmp_path)
    _rewrite_weights(tmp_path, mutate)
    for loader in (IBQARForImageGeneration, AutoModel, AutoModelForCausalLM):
        with pytest.raises(CheckpointKeyError, match=key.replace(".", r"\.")) as info:
            loader.from_pretrained(tmp_path)
        found = getattr(info.value, attribute)
        assert [k if attribute != "mismatched" else k[0] for k in found] == [key]
        assert str(tmp_path) in str(info.value)


def test_output_loading_info_returns_the_report_instead_of_raising(tmp_path) -> None:
    """What transformers' own model tests rely on: the caller asks for the report and gets it."""
    tiny_model().save_pretrained(tmp_path)
    _rewrite_weights(tmp_path, lambda s: (s.pop("head.weight"), s.update({"extra.bias": torch.zeros(2)})))
    model, info = IBQARForImageGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(model, IBQARForImageGeneration)
    assert set(info["missing_keys"]) == {"head.weight"} and set(info["unexpected_keys"]) == {"extra.bias"}
    # a clean folder with output_loading_info=False loads normally
    tiny_model().save_pretrained(tmp_path / "clean")
    assert isinstance(
        IBQARForImageGeneration.from_pretrained(tmp_path / "clean", output_loading_info=False),
        IBQARForImageGeneration,
    )


def test_ignore_mismatched_sizes_still_reinitialises_only_mis_shaped_keys(tmp_path) -> None:
    from ibq_hf.errors import CheckpointKeyError

    tiny_model().save_pretrained(tmp_path)
    _rewrite_weights(tmp_path, lambda s: s.update({"head.weight": torch.zeros(64, 32)}))
    model = IBQARForImageGeneration.from_pretrained(tmp_path, ignore_mismatched_sizes=True)
    assert model.head.weight.shape == (64, 64)
    _rewrite_weights(tmp_path, lambda s: s.pop("tok_emb.weight"))
    with pytest.raises(CheckpointKeyError, match=r"tok_emb\.weight"):
        IBQARForImageGeneration.from_pretrained(tmp_path, ignore_mismatched_sizes=True)


@pytest.mark.parametrize("field", ["grid_size", "num_attention_heads", "rope_base", "vocab_size"])
def test_saved_config_without_a_required_field_raises_instead_of_defaulting(tmp_path, field) -> None:
    """A config.json without grid_size used to load as the "B" default (16×16) and sample garbage."""
    import json

    tiny_model().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config.pop(field)
    path.write_text(json.dumps(config))
    for load in (
        IBQARConfig.from_pretrained,
        AutoConfig.from_pretrained,
        IBQARForImageGeneration.from_pretrained,
    ):
        with pytest.raises(ValueError, match=rf"lacks \['{field}'\]"):
            load(tmp_path)
    # an explicit keyword supplies it; a freshly built config keeps its defaults
    value = getattr(IBQARConfig(**TINY), field)
    assert getattr(IBQARConfig.from_pretrained(tmp_path, **{field: value}), field) == value
    assert IBQARConfig().grid_size == 16 and IBQARConfig().num_attention_heads == 16


def test_intermediate_size_may_come_from_multiple_of(tmp_path) -> None:
    import json

    IBQARConfig(**TINY).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config.pop("intermediate_size")
    path.write_text(json.dumps(config))
    assert IBQARConfig.from_pretrained(tmp_path).intermediate_size == 192
    config.pop("multiple_of")
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="intermediate_size"):
        IBQARConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("grid_size", "4"),
        ("hidden_size", 64.0),
        ("num_classes", True),
        ("rope_base", "x"),
        ("rms_norm_eps", math.nan),
    ],
)
def test_config_field_types_are_checked(field, value) -> None:
    """A string where the config expects an int (e.g. a hand-edited config.json) is one clear ValueError."""
    with pytest.raises(ValueError, match=rf"IBQARConfig\.{field} must be"):
        IBQARConfig(**{**TINY, field: value})


def test_bundled_digits_config_has_every_required_field() -> None:
    import json
    from pathlib import Path

    from ibq_hf.models.configuration_ar import REQUIRED_CONFIG_FIELDS

    path = Path(__file__).resolve().parents[2] / "checkpoints/ibq-digits/transformer/config.json"
    assert set(REQUIRED_CONFIG_FIELDS) <= set(json.loads(path.read_text()))
