"""Tokenizer conversion from Lightning-style checkpoints built in the test."""

from __future__ import annotations

import pytest
import torch
import yaml

from ibq_hf import IBQVQModel
from ibq_hf.cli import main
from ibq_hf.conversion.common import CheckpointKeyError
from ibq_hf.conversion.tokenizer import (
    convert_tokenizer_checkpoint,
    ema_name_table,
    flat_ema_name,
    infer_config_from_weights,
)


def _lightning_checkpoint(model: IBQVQModel, with_raw=True, with_ema=True, extras=True, prefix=""):
    """A checkpoint laid out like SEED-Voken's: raw weights, model_ema.<flat> shadows, loss.* and EMA bookkeeping."""
    state = {}
    g = torch.Generator().manual_seed(123)
    for name, tensor in model.state_dict().items():
        if with_raw:
            state[prefix + name] = tensor.clone()
        if with_ema:  # EMA values differ from the raw ones
            state[prefix + "model_ema." + flat_ema_name(name)] = tensor + torch.randn(
                tensor.shape, generator=g
            )
    if extras:
        state["loss.discriminator.main.0.weight"] = torch.randn(64, 3, 4, 4)
        state["loss.discriminator.main.3.num_batches_tracked"] = torch.tensor(5)
        state["loss.perceptual_loss.scaling_layer.shift"] = torch.zeros(1, 3, 1, 1)
        state["model_ema.lossdiscriminatormain0weight"] = torch.randn(64, 3, 4, 4)
        state["model_ema.decay"] = torch.tensor(0.999)
        state["model_ema.num_updates"] = torch.tensor(-1, dtype=torch.int32)
    return {"epoch": 3, "global_step": 10, "state_dict": state}


@pytest.fixture
def source_model(tiny_tokenizer_config):
    torch.manual_seed(0)
    return IBQVQModel(**tiny_tokenizer_config)


def _expected_ema(model, ckpt, prefix=""):
    return {
        name: ckpt["state_dict"][prefix + "model_ema." + flat_ema_name(name)] for name in model.state_dict()
    }


def test_converts_ema_weights_by_default_and_round_trips(source_model, tmp_path, images):
    ckpt = _lightning_checkpoint(source_model)
    path = tmp_path / "imagenet.ckpt"
    torch.save(ckpt, path)
    out_dir = tmp_path / "converted"
    model = convert_tokenizer_checkpoint(path, out_dir, resolution=16)
    expected = _expected_ema(source_model, ckpt)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert dict(model.config)["ch_mult"] == (1, 2) or list(model.config.ch_mult) == [1, 2]
    loaded = IBQVQModel.from_pretrained(out_dir).eval()
    with torch.no_grad():
        assert torch.equal(loaded(images).sample, model(images).sample)
    assert (out_dir / "diffusion_pytorch_model.safetensors").is_file()
    card = (out_dir / "README.md").read_text()
    assert "license: apache-2.0" in card and "imagenet.ckpt" in card and "EMA" in card


def test_no_ema_converts_raw_weights(source_model, tmp_path):
    path = tmp_path / "x.ckpt"
    torch.save(_lightning_checkpoint(source_model), path)
    model = convert_tokenizer_checkpoint(path, use_ema=False, resolution=16)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, source_model.state_dict()[name]), name


def test_raw_only_checkpoint(source_model, tmp_path):
    path = tmp_path / "raw.ckpt"
    torch.save(_lightning_checkpoint(source_model, with_ema=False)["state_dict"], path)  # bare state dict
    model = convert_tokenizer_checkpoint(path, resolution=16)
    assert all(torch.equal(v, source_model.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointKeyError, match="no EMA weights"):
        convert_tokenizer_checkpoint(path, use_ema=True, resolution=16)


def test_ema_only_checkpoint_of_the_released_architecture(tmp_path):
    with torch.device("meta"):
        reference = IBQVQModel.from_preset(1024)
    table = ema_name_table(list(reference.state_dict()))
    assert len(table) == 543  # flattening is one-to-one for the released architecture
    state = {"model_ema.quantizeembeddingweight": torch.zeros(1024, 256)}
    config = infer_config_from_weights(state)
    assert config["num_embeddings"] == 1024 and tuple(config["ch_mult"]) == (1, 1, 2, 2, 4)
    assert tuple(config["attn_resolutions"]) == (16,)


def test_embedded_first_stage_of_an_ar_checkpoint(source_model, tmp_path):
    state = {"first_stage_model." + k: v.clone() for k, v in source_model.state_dict().items()}
    state["transformer.tok_emb.weight"] = torch.zeros(4, 4)
    path = tmp_path / "ar.ckpt"
    torch.save({"state_dict": state}, path)
    model = convert_tokenizer_checkpoint(path, resolution=16)
    assert all(torch.equal(v, source_model.state_dict()[k]) for k, v in model.state_dict().items())


def test_inferred_architecture_equals_source(source_model, tiny_tokenizer_config):
    config = infer_config_from_weights(source_model.state_dict(), resolution=16)
    for key in (
        "ch",
        "ch_mult",
        "num_res_blocks",
        "attn_resolutions",
        "z_channels",
        "embed_dim",
        "num_embeddings",
    ):
        assert (
            tuple(config[key]) == tuple(tiny_tokenizer_config[key])
            if isinstance(config[key], tuple)
            else (config[key] == tiny_tokenizer_config[key])
        ), key


def test_original_yaml_config(source_model, tiny_tokenizer_config, tmp_path):
    cfg = tiny_tokenizer_config
    original = {
        "model": {
            "class_path": "src.IBQ.models.ibqgan.IBQ",
            "init_args": {
                "ddconfig": {
                    "double_z": False, "z_channels": cfg["z_channels"], "resolution": cfg["resolution"],
                    "in_channels": 3, "out_ch": 3, "ch": cfg["ch"], "ch_mult": list(cfg["ch_mult"]),
                    "num_res_blocks": cfg["num_res_blocks"], "attn_resolutions": list(cfg["attn_resolutions"]),
                    "dropout": 0.0,
                },
                "n_embed": cfg["num_embeddings"], "embed_dim": cfg["embed_dim"], "use_entropy_loss": True,
                "entropy_temperature": 0.02, "beta": 0.3,
            },
        }
    }  # fmt: skip
    yaml_path = tmp_path / "imagenet_ibqgan.yaml"
    yaml_path.write_text(yaml.safe_dump(original))
    path = tmp_path / "x.ckpt"
    torch.save(_lightning_checkpoint(source_model), path)
    model = convert_tokenizer_checkpoint(path, config_path=yaml_path)
    assert model.config.entropy_temperature == 0.02 and model.config.beta == 0.3


def test_missing_key_is_listed(source_model, tmp_path):
    ckpt = _lightning_checkpoint(source_model, with_ema=False)
    del ckpt["state_dict"]["decoder.conv_out.bias"]
    path = tmp_path / "x.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointKeyError) as info:
        convert_tokenizer_checkpoint(path, resolution=16)
    assert info.value.missing == ["decoder.conv_out.bias"]


def test_missing_ema_shadow_is_listed(source_model, tmp_path):
    ckpt = _lightning_checkpoint(source_model)
    del ckpt["state_dict"]["model_ema.post_quant_convbias"]
    path = tmp_path / "x.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointKeyError, match=r"post_quant_conv\.bias"):
        convert_tokenizer_checkpoint(path, resolution=16)


def test_unexpected_key_is_listed(source_model, tmp_path):
    ckpt = _lightning_checkpoint(source_model)
    ckpt["state_dict"]["encoder.extra_block.weight"] = torch.zeros(3)
    path = tmp_path / "x.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointKeyError) as info:
        convert_tokenizer_checkpoint(path, resolution=16)
    assert info.value.unexpected == ["encoder.extra_block.weight"]


def test_misshaped_key_is_listed(source_model, tmp_path):
    ckpt = _lightning_checkpoint(source_model, with_ema=False)
    ckpt["state_dict"]["quant_conv.bias"] = torch.zeros(17)
    path = tmp_path / "x.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointKeyError) as info:
        convert_tokenizer_checkpoint(path, resolution=16)
    assert info.value.mismatched == [("quant_conv.bias", (17,), (16,))]


class _Payload:
    """An arbitrary pickled object: must never be unpickled by the converter."""


def test_non_tensor_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": _Payload()}}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        convert_tokenizer_checkpoint(path)


def test_cli_convert_tokenizer(source_model, tmp_path, capsys):
    path = tmp_path / "x.ckpt"
    torch.save(_lightning_checkpoint(source_model), path)
    out = tmp_path / "cli"
    assert (
        main(["convert", "tokenizer", "--checkpoint", str(path), "--output", str(out), "--resolution", "16"])
        == 0
    )
    assert "Saved IBQVQModel (64 codes" in capsys.readouterr().out
    assert IBQVQModel.from_pretrained(out).config.num_embeddings == 64
    assert main(["convert", "tokenizer", "--checkpoint", str(path), "--output", str(out / "raw"),
                 "--resolution", "16", "--no-ema"]) == 0  # fmt: skip
    raw = IBQVQModel.from_pretrained(out / "raw")
    assert torch.equal(raw.quantize.embedding.weight, source_model.quantize.embedding.weight)


def test_cli_errors_are_one_clear_message(tmp_path, capsys):
    assert (
        main(["convert", "tokenizer", "--checkpoint", str(tmp_path / "nope.ckpt"), "--output", str(tmp_path)])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("ibq-hf: error: Checkpoint file not found") and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["convert", "tokenizer", "--help"])
    assert "--no-ema" in capsys.readouterr().out
