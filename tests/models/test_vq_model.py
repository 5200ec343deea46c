"""IBQVQModel: architecture parity with the original generator, API, round trips, errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ibq_hf import IBQVQModel
from ibq_hf.errors import CheckpointKeyError
from ibq_hf.models.modeling_vq import TOKENIZER_PRESETS

DATA = Path(__file__).resolve().parents[1] / "data"


def _reference_state_dict_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in (DATA / "ibq_tokenizer_16384_state_dict.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, shape = line.split()
            shapes[name] = tuple(int(x) for x in shape.split(","))
    return shapes


@pytest.mark.parametrize(
    "codebook,expected",
    [(1024, 107_049_859), (8192, 108_884_867), (16384, 110_982_019), (262144, 173_896_579)],
)
def test_parameter_counts_match_reference(codebook, expected):
    with torch.device("meta"):
        model = IBQVQModel.from_preset(codebook)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert len(model.state_dict()) == 543


def test_component_parameter_counts():
    with torch.device("meta"):
        model = IBQVQModel.from_preset("imagenet-16384")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model.encoder) == 46_752_256
    assert count(model.decoder) == 59_903_875
    assert count(model.quant_conv) == count(model.post_quant_conv) == 65_792


def test_state_dict_keys_and_shapes_equal_the_original_generator():
    with torch.device("meta"):
        model = IBQVQModel.from_preset(16384)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == _reference_state_dict_shapes()
    assert not list(model.buffers())


def test_presets():
    assert set(TOKENIZER_PRESETS) == {"imagenet-1024", "imagenet-8192", "imagenet-16384", "imagenet-262144"}
    with torch.device("meta"):
        model = IBQVQModel.from_preset("8192", dropout=0.1)
    assert model.config.num_embeddings == 8192 and model.config.dropout == 0.1
    with pytest.raises(ValueError, match="Unknown tokenizer preset"):
        IBQVQModel.from_preset(4096)


def test_shapes_and_api_consistency(tiny_tokenizer, images):
    model = tiny_tokenizer
    with torch.no_grad():
        enc = model.encode(images)
        out = model(images)
        indices = model.tokenize(images)
        from_latents = model.decode(enc.latents).sample
        from_indices = model.decode_indices(indices)
    assert enc.latents.shape == (2, 16, 8, 8) and enc.indices.shape == (2, 8, 8)
    assert enc.indices.dtype == torch.int64
    assert out.sample.shape == images.shape
    assert torch.equal(indices, enc.indices)
    torch.testing.assert_close(from_indices, from_latents)
    torch.testing.assert_close(out.sample, from_latents)
    assert out.quant_loss.ndim == 0 and out.entropy_loss is not None
    # quantized latents are exactly the selected code vectors
    codes = model.quantize.embedding.weight[enc.indices].permute(0, 3, 1, 2)
    torch.testing.assert_close(enc.latents, codes)


def test_return_dict_false(tiny_tokenizer, images):
    with torch.no_grad():
        as_dict = tiny_tokenizer(images)
        as_tuple = tiny_tokenizer(images, return_dict=False)
        dec = tiny_tokenizer.decode(as_dict.latents, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_dict.sample)
    assert torch.equal(as_tuple[1], as_dict.indices)
    torch.testing.assert_close(dec[0], as_dict.sample)


def test_attention_block_equals_explicit_softmax_attention(tiny_tokenizer):
    """SDPA in AttnBlock equals the reference's bmm formulation with scale C^-1/2."""
    block = tiny_tokenizer.encoder.mid.attn_1
    x = torch.randn(2, 64, 4, 4)
    b, c, h, w = x.shape
    y = block.norm(x)
    q = block.q(y).reshape(b, c, h * w).permute(0, 2, 1)
    k = block.k(y).reshape(b, c, h * w)
    attn = torch.softmax(torch.bmm(q, k) * c**-0.5, dim=2)
    v = block.v(y).reshape(b, c, h * w)
    ref = x + block.proj_out(torch.bmm(v, attn.permute(0, 2, 1)).reshape(b, c, h, w))
    torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)


def test_downsample_pads_right_and_bottom(tiny_tokenizer):
    down = tiny_tokenizer.encoder.down[0].downsample
    x = torch.randn(1, 32, 6, 6)
    padded = torch.zeros(1, 32, 7, 7)
    padded[..., :6, :6] = x
    ref = torch.nn.functional.conv2d(padded, down.conv.weight, down.conv.bias, stride=2)
    torch.testing.assert_close(down(x), ref)
    assert down(x).shape == (1, 32, 3, 3)


def test_save_load_round_trip(tiny_tokenizer, images, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = IBQVQModel.from_pretrained(tmp_path, local_files_only=True).eval()
    assert loaded.config.num_embeddings == 64 and tuple(loaded.config.ch_mult) == (1, 2)
    with torch.no_grad():
        a, b = tiny_tokenizer(images), loaded(images)
    assert torch.equal(a.indices, b.indices)
    assert torch.equal(a.sample, b.sample)


def test_empty_weight_file_reports_every_parameter_missing(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    save_file({}, os.fspath(tmp_path / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointKeyError) as info:
        IBQVQModel.from_pretrained(tmp_path)
    assert set(info.value.missing) == set(tiny_tokenizer.state_dict())
    assert "Missing keys (155)" in str(info.value)


def test_extra_key_in_weight_file_is_an_error(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    state = {k: v.contiguous() for k, v in tiny_tokenizer.state_dict().items()}
    state["decoder.extra.weight"] = torch.zeros(2)
    save_file(state, os.fspath(tmp_path / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointKeyError) as info:
        IBQVQModel.from_pretrained(tmp_path)
    assert info.value.unexpected == ["decoder.extra.weight"]


def test_dtype_round_trip_keeps_codebook_fp32(tiny_tokenizer, images, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    model = IBQVQModel.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert model.encoder.conv_in.weight.dtype == torch.bfloat16
    assert model.quantize.embedding.weight.dtype == torch.float32
    with torch.no_grad():
        out = model(images.bfloat16())
        ref = tiny_tokenizer(images)
        decoded = model.decode_indices(ref.indices)  # fp32 codes feed the bf16 decoder
    assert out.sample.dtype == decoded.dtype == torch.bfloat16
    assert (out.indices == ref.indices).float().mean() > 0.75  # random tiny model: small logit margins
    torch.testing.assert_close(decoded.float(), ref.sample, rtol=0.05, atol=0.05)
    # bf16 save/load keeps the dtypes
    model.save_pretrained(tmp_path / "bf16")
    again = IBQVQModel.from_pretrained(tmp_path / "bf16", dtype=torch.bfloat16)
    assert again.decoder.conv_out.weight.dtype == torch.bfloat16
    assert torch.equal(again.decoder.conv_out.weight, model.decoder.conv_out.weight)


def test_dtype_cast_with_to_keeps_the_quantizer_fp32_without_a_warning(tiny_tokenizer, images, capfd):
    """Issue 13, item 6: diffusers' ModelMixin.to warned "should be kept in float32" on every dtype cast (also to
    fp32) and then cast the codebook as well."""
    capfd.readouterr()
    assert tiny_tokenizer.to(torch.bfloat16) is tiny_tokenizer
    assert (
        tiny_tokenizer.encoder.conv_in.weight.dtype
        == tiny_tokenizer.decoder.conv_out.weight.dtype
        == torch.bfloat16
    )
    assert tiny_tokenizer.quantize.embedding.weight.dtype == torch.float32
    tiny_tokenizer.to(device="cpu", dtype=torch.float16)
    assert tiny_tokenizer.decoder.conv_out.weight.dtype == torch.float16
    assert tiny_tokenizer.quantize.embedding.weight.dtype == torch.float32
    tiny_tokenizer.to("cpu")  # a device move alone changes no dtype
    assert tiny_tokenizer.decoder.conv_out.weight.dtype == torch.float16
    tiny_tokenizer.to(torch.float32)
    assert all(p.dtype == torch.float32 for p in tiny_tokenizer.parameters())
    assert "kept in float32" not in capfd.readouterr().err
    with torch.no_grad():
        assert tiny_tokenizer(images).sample.dtype == torch.float32


def test_decode_indices_builds_no_graph(tiny_tokenizer):
    """Issue 13, item 6: decode_indices (an inference path, like tokenize) returned requires_grad=True outputs."""
    assert all(p.requires_grad for p in tiny_tokenizer.parameters())
    pixels = tiny_tokenizer.decode_indices(torch.zeros(1, 8, 8, dtype=torch.long))
    assert not pixels.requires_grad and pixels.grad_fn is None
    codes = tiny_tokenizer.quantize.lookup(torch.zeros(1, 8, 8, dtype=torch.long))
    assert tiny_tokenizer.decode(codes).sample.requires_grad  # the differentiable route stays differentiable


def test_layerwise_casting_skips_the_quantizer(tiny_tokenizer, images):
    tiny_tokenizer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    assert tiny_tokenizer.encoder.conv_in.weight.dtype == torch.float8_e4m3fn
    assert tiny_tokenizer.quantize.embedding.weight.dtype == torch.float32
    with torch.no_grad():
        out = tiny_tokenizer(images)
    assert torch.isfinite(out.sample).all()


def test_deterministic_init_and_forward(tiny_tokenizer_config, images):
    torch.manual_seed(5)
    a = IBQVQModel(**tiny_tokenizer_config).eval()
    torch.manual_seed(5)
    b = IBQVQModel(**tiny_tokenizer_config).eval()
    with torch.no_grad():
        oa, ob, oa2 = a(images), b(images), a(images)
    assert torch.equal(oa.sample, ob.sample) and torch.equal(oa.sample, oa2.sample)


def test_gradient_checkpointing_gives_identical_gradients(tiny_tokenizer_config, images):
    torch.manual_seed(0)
    model = IBQVQModel(**tiny_tokenizer_config).train()

    def grads():
        model.zero_grad()
        out = model(images)
        (out.sample.abs().mean() + out.quant_loss + 0.05 * out.entropy_loss).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    model.enable_gradient_checkpointing()
    assert model.encoder.gradient_checkpointing and model.decoder.gradient_checkpointing
    checkpointed = grads()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], msg=name)


def test_bad_inputs_raise_clear_errors(tiny_tokenizer):
    m = tiny_tokenizer
    with pytest.raises(ValueError, match="4-D"):
        m.encode(torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="has 1 channels but the tokenizer expects 3"):
        m.tokenize(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="not divisible by the downsampling factor 2"):
        m(torch.zeros(1, 3, 15, 16))
    with pytest.raises(ValueError, match="floating-point"):
        m.tokenize(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        m.decode_indices(torch.full((1, 8, 8), 64))
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        m.decode_indices(torch.full((1, 8, 8), -1))
    with pytest.raises(ValueError, match=r"indices must have shape \[B, h, w\]"):
        m.decode_indices(torch.zeros(1, 64, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        m.decode_indices(torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="decode_indices"):
        m.decode(torch.zeros(1, 8, 8, dtype=torch.long))


def test_out_of_range_values_warn_once(tiny_tokenizer):
    images = torch.rand(1, 3, 16, 16) * 255
    with pytest.warns(UserWarning, match=r"outside \[-1, 1\]"):
        tiny_tokenizer.tokenize(images)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_tokenizer.tokenize(images)  # second call: no warning


def test_non_square_inputs(tiny_tokenizer):
    with torch.no_grad():
        out = tiny_tokenizer(torch.rand(1, 3, 16, 32) * 2 - 1)
    assert out.indices.shape == (1, 8, 16) and out.sample.shape == (1, 3, 16, 32)


# ---- hostile inputs and strict loading (issue 11, items 11 and 12) ----------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_pixels_are_rejected_by_every_entry_point(tiny_tokenizer, images, bad):
    """One NaN pixel used to make tokenize() return all zeros (argmin over NaN distances) and decode to a
    normal-looking image; encode, tokenize and forward now refuse it with a count of the bad values."""
    x = images.clone()
    x[1, 2, 3, 4] = bad
    for entry in (tiny_tokenizer.tokenize, tiny_tokenizer.encode, tiny_tokenizer):
        with pytest.raises(ValueError, match=r"pixel_values contains 1 non-finite value"):
            entry(x)
    with pytest.raises(ValueError, match="non-finite"):
        tiny_tokenizer.tokenize(x.bfloat16().float())


def test_finite_pixels_whose_fp32_sum_overflows_are_not_rejected(tiny_tokenizer):
    """The cheap check sums in fp32; an overflowing sum of finite values falls back to the exact test."""
    x = torch.full((1, 3, 16, 16), 3e37)
    with pytest.warns(UserWarning, match="far outside"):
        assert tiny_tokenizer.tokenize(x).shape == (1, 8, 8)


@pytest.mark.parametrize("field", ["num_embeddings", "attn_resolutions", "resolution", "ch_mult"])
def test_saved_config_without_an_architecture_field_raises(tiny_tokenizer, tmp_path, field):
    import json

    tiny_tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop(field)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"lacks \['{field}'\]"):
        IBQVQModel.from_pretrained(tmp_path)
    # fields with a documented default (loss weights, quantizer implementation) may be absent
    config[field] = dict(tiny_tokenizer.config)[field]
    for optional in ("beta", "entropy_temperature", "quantizer_chunk_size", "dropout"):
        config.pop(optional)
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert IBQVQModel.from_pretrained(tmp_path).config.beta == 0.25
    assert IBQVQModel.from_config(tiny_tokenizer.config).config.ch == 32  # an in-memory config is complete


def test_output_loading_info_returns_the_report_instead_of_raising(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    state = {k: v.contiguous() for k, v in tiny_tokenizer.state_dict().items() if k != "quant_conv.bias"}
    save_file(state, os.fspath(tmp_path / "diffusion_pytorch_model.safetensors"))
    model, info = IBQVQModel.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(model, IBQVQModel) and info["missing_keys"] == ["quant_conv.bias"]
    with pytest.raises(CheckpointKeyError, match=r"quant_conv\.bias"):
        IBQVQModel.from_pretrained(tmp_path)


@pytest.mark.parametrize(("field", "value"), [("ch", "32"), ("num_embeddings", 64.0), ("ch_mult", "12")])
def test_config_field_types_are_checked(tiny_tokenizer_config, field, value):
    with pytest.raises(ValueError, match=f"config field {field} must be"):
        IBQVQModel(**{**tiny_tokenizer_config, field: value})
