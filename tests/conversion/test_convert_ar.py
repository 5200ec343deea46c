"""Strict conversion of original AR checkpoints (AR_256_*.ckpt) into IBQARForImageGeneration directories."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from ibq_hf.conversion.ar import (
    ar_config_from_original_yaml,
    convert_ar_checkpoint,
    converted_card_facts,
    infer_ar_config,
    split_ar_state_dict,
)
from ibq_hf.conversion.common import CheckpointKeyError
from ibq_hf.models.configuration_ar import IBQ_AR_PRESETS, IBQARConfig, recommended_generation_config
from ibq_hf.models.modeling_ar import IBQARForImageGeneration

TINY = {
    "vocab_size": 64,
    "num_classes": 10,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "grid_size": 4,
}
TINY_YAML_PARAMS = {
    "vocab_size": 64,
    "block_size": 16,
    "n_layer": 2,
    "n_head": 2,
    "n_embd": 64,
    "cond_dim": 64,
    "resid_dropout_p": 0.1,
    "ffn_dropout_p": 0.1,
    "token_drop": 0.1,
    "drop_path_rate": 0.0,
    "alng": 1e-4,
    "class_num": 10,
}


def random_model(seed: int = 0) -> IBQARForImageGeneration:
    torch.manual_seed(seed)
    model = IBQARForImageGeneration(IBQARConfig(**TINY))
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.1)
    return model.eval()


def lightning_checkpoint(model: IBQARForImageGeneration, extra: dict | None = None) -> dict:
    """The layout of AR_256_*.ckpt: transformer.* + an embedded tokenizer + Lightning metadata."""
    state = {f"transformer.{k}": v.clone() for k, v in model.state_dict().items()}
    state["first_stage_model.quantize.embedding.weight"] = torch.randn(64, 8)
    state["first_stage_model.encoder.conv_in.weight"] = torch.randn(4, 3, 3, 3)
    state.update(extra or {})
    return {"state_dict": state, "epoch": 299, "global_step": 12345}


def write_yaml(path, params: dict) -> None:
    config = {
        "model": {
            "class_path": "src.IBQ.models.cond_transformer_llama.Net2NetTransformer",
            "init_args": {
                "learning_rate": 3e-4,
                "transformer_config": {"target": "src.IBQ.modules.transformer.llama.GPT", "params": params},
                "first_stage_config": {"target": "src.IBQ.models.ibqgan.IBQ", "params": {"n_embed": 64}},
            },
        }
    }
    path.write_text(yaml.safe_dump(config))


def test_convert_with_yaml_round_trip(tmp_path) -> None:
    model = random_model()
    kv = {"transformer.blocks.1.attention.kv_cache.k_cache": torch.zeros(2, 2, 24, 32)}
    kv["transformer.blocks.1.attention.kv_cache.v_cache"] = torch.zeros(2, 2, 24, 32)
    torch.save(lightning_checkpoint(model, kv), tmp_path / "AR_tiny.ckpt")
    write_yaml(tmp_path / "config.yaml", TINY_YAML_PARAMS)

    converted = convert_ar_checkpoint(tmp_path / "AR_tiny.ckpt", tmp_path / "out", tmp_path / "config.yaml")
    out = tmp_path / "out"
    for name in ("model.safetensors", "config.json", "generation_config.json", "README.md"):
        assert (out / name).is_file(), name
    assert not converted.training
    assert converted.config.adaln_gamma_init == 1e-4 and converted.config.grid_size == 4

    loaded = IBQARForImageGeneration.from_pretrained(out)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    tokens = torch.randint(0, 64, (2, 15))
    labels = torch.tensor([3, 10])
    torch.testing.assert_close(loaded(tokens, labels).logits, model(tokens, labels).logits, rtol=0, atol=0)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "ibq_ar" and config["architectures"] == ["IBQARForImageGeneration"]
    card = (out / "README.md").read_text()
    assert "AR_tiny.ckpt" in card and "IBQARForImageGeneration.from_pretrained" in card


def test_convert_from_shapes_raw_state_dict(tmp_path) -> None:
    model = random_model(1)
    torch.save(lightning_checkpoint(model)["state_dict"], tmp_path / "raw.ckpt")  # no Lightning wrapper
    converted = convert_ar_checkpoint(
        tmp_path / "raw.ckpt", tmp_path / "out", num_attention_heads=2, grid_size=4
    )
    assert converted.config.num_attention_heads == 2 and converted.config.intermediate_size == 256
    assert all(torch.equal(converted.state_dict()[k], v) for k, v in model.state_dict().items())
    # A non-released size keeps neutral sampling defaults.
    generation = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert generation.get("guidance_scale") is None and generation["top_k"] == 0


def test_non_released_size_without_yaml_asks_for_config(tmp_path) -> None:
    torch.save(lightning_checkpoint(random_model()), tmp_path / "AR.ckpt")
    with pytest.raises(ValueError, match=r"--config ORIGINAL\.yaml"):
        convert_ar_checkpoint(tmp_path / "AR.ckpt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("mutate", "attribute", "key"),
    [
        (lambda s: s.pop("transformer.blocks.0.ffn_norm.weight"), "missing", "blocks.0.ffn_norm.weight"),
        (
            lambda s: s.update({"transformer.blocks.0.extra.weight": torch.ones(3)}),
            "unexpected",
            "blocks.0.extra.weight",
        ),
        (lambda s: s.update({"transformer.head.weight": torch.ones(64, 32)}), "mismatched", "head.weight"),
        (
            lambda s: s.update({"model_ema.tok_emb.weight": torch.ones(3)}),
            "unexpected",
            "model_ema.tok_emb.weight",
        ),
        (
            lambda s: s.update({"loss.discriminator.weight": torch.ones(3)}),
            "unexpected",
            "loss.discriminator.weight",
        ),
    ],
)
def test_bad_keys_are_errors_that_name_them(tmp_path, mutate, attribute, key) -> None:
    checkpoint = lightning_checkpoint(random_model())
    mutate(checkpoint["state_dict"])
    torch.save(checkpoint, tmp_path / "AR.ckpt")
    write_yaml(tmp_path / "config.yaml", TINY_YAML_PARAMS)
    with pytest.raises(CheckpointKeyError) as info:
        convert_ar_checkpoint(tmp_path / "AR.ckpt", tmp_path / "out", tmp_path / "config.yaml")
    listed = [entry[0] if isinstance(entry, tuple) else entry for entry in getattr(info.value, attribute)]
    assert key in listed
    assert key in str(info.value)
    assert not (tmp_path / "out").exists()


def test_tokenizer_checkpoint_is_rejected(tmp_path) -> None:
    torch.save({"state_dict": {"encoder.conv_in.weight": torch.ones(2)}}, tmp_path / "tok.ckpt")
    with pytest.raises(CheckpointKeyError, match="AR checkpoint"):
        convert_ar_checkpoint(tmp_path / "tok.ckpt", tmp_path / "out")
    torch.save(
        {"state_dict": {"first_stage_model.encoder.conv_in.weight": torch.ones(2)}}, tmp_path / "fs.ckpt"
    )
    with pytest.raises(CheckpointKeyError, match="no 'transformer"):
        convert_ar_checkpoint(tmp_path / "fs.ckpt", tmp_path / "out")


def test_split_drops_kv_cache_and_ignores_tokenizer() -> None:
    state = {
        "transformer.tok_emb.weight": torch.ones(2),
        "transformer.blocks.3.attention.kv_cache.k_cache": torch.ones(1),
        "transformer.blocks.3.attention.kv_cache.v_cache": torch.ones(1),
        "first_stage_model.decoder.conv_out.bias": torch.ones(1),
    }
    mapped, dropped = split_ar_state_dict(state)
    assert list(mapped) == ["tok_emb.weight"]
    assert dropped == sorted(k for k in state if k != "transformer.tok_emb.weight")


@pytest.mark.parametrize("name", list(IBQ_AR_PRESETS))
def test_released_sizes_are_recognised_from_shapes(name: str) -> None:
    with torch.device("meta"):
        reference = IBQARForImageGeneration(IBQARConfig.from_preset(name))
    config = infer_ar_config(reference.state_dict())
    assert config.to_diff_dict() == IBQARConfig.from_preset(name).to_diff_dict()
    assert config.num_attention_heads == IBQ_AR_PRESETS[name]["num_attention_heads"]


def test_released_size_card_reports_fid_and_is(tmp_path) -> None:
    with torch.device("meta"):
        model = IBQARForImageGeneration(IBQARConfig.from_preset("XL"))
    model.generation_config = recommended_generation_config("XL")  # what the converter saves with it
    card = model.write_model_card(tmp_path, **converted_card_facts("AR_256_XL.ckpt", "XL")).read_text()
    assert "2.14" in card and "278.99" in card and "base_model: TencentARC/IBQ-AR-XL" in card
    assert "1,076,103,168 parameters" in card and "temperature 1.15" in card and "guidance 2.35" in card
    assert "# IBQ-AR-XL" in card and "defaults in `generation_config.json`" in card


def test_yaml_translation_and_rejections(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    write_yaml(path, {**TINY_YAML_PARAMS, "rope_base": 500, "norm_eps": 1e-6, "attn_dropout_p": 0.05})
    config = ar_config_from_original_yaml(path)
    assert (config.rope_base, config.rms_norm_eps, config.attention_dropout) == (500.0, 1e-6, 0.05)
    assert (config.hidden_size, config.num_hidden_layers, config.num_classes, config.vocab_size) == (
        64,
        2,
        10,
        64,
    )
    assert config.intermediate_size == 256  # find_multiple(int(2·4·64/3), 256)
    for bad, message in [
        ({"shared_aln": True}, "shared adaLN"),
        ({"n_kv_head": 1}, "grouped-query"),
        ({"cond_dim": 32}, "must equal n_embd"),
        ({"block_size": 15}, "square"),
        ({"drop_path_rate": 0.1}, "stochastic depth"),
        ({"mystery": 1}, "unknown transformer parameters"),
    ]:
        write_yaml(path, {**TINY_YAML_PARAMS, **bad})
        with pytest.raises(ValueError, match=message):
            ar_config_from_original_yaml(path)
    path.write_text(yaml.safe_dump({"model": {"init_args": {"ddconfig": {}}}}))
    with pytest.raises(ValueError, match="not an AR training config"):
        ar_config_from_original_yaml(path)


def test_yaml_that_does_not_match_the_weights_is_an_error(tmp_path) -> None:
    torch.save(lightning_checkpoint(random_model()), tmp_path / "AR.ckpt")
    write_yaml(tmp_path / "config.yaml", {**TINY_YAML_PARAMS, "n_layer": 3})
    with pytest.raises(CheckpointKeyError, match="YAML"):
        convert_ar_checkpoint(tmp_path / "AR.ckpt", tmp_path / "out", tmp_path / "config.yaml")


def test_released_size_gets_recommended_sampling_and_card(tmp_path, monkeypatch) -> None:
    """End-to-end path of a released checkpoint, with "B" shrunk to 2 × 64 so the test stays small."""
    tiny_b = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "adaln_gamma_init": 1e-3}
    monkeypatch.setitem(IBQ_AR_PRESETS, "B", tiny_b)
    torch.manual_seed(0)
    model = IBQARForImageGeneration(IBQARConfig(**tiny_b))  # vocab 16384, 1000 classes, 16×16 grid
    torch.save(lightning_checkpoint(model), tmp_path / "AR_256_B.ckpt")
    converted = convert_ar_checkpoint(tmp_path / "AR_256_B.ckpt", tmp_path / "out")
    assert converted.config.num_attention_heads == 2
    generation = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert generation["temperature"] == 1.10 and generation["guidance_scale"] == 2.25
    assert generation["top_k"] == 0 and generation["top_p"] == 1.0 and generation["do_sample"] is True
    loaded = IBQARForImageGeneration.from_pretrained(tmp_path / "out")
    assert loaded.generation_config.guidance_scale == 2.25
    card = (tmp_path / "out" / "README.md").read_text()
    assert "IBQ-AR-B" in card and "2.88" in card and "254.73" in card
