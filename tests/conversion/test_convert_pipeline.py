"""Whole-pipeline conversion from one AR checkpoint (transformer.* + embedded first_stage_model.* tokenizer)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from conftest import TINY_PIPELINE_AR_CONFIG, TINY_TOKENIZER_CONFIG
from ibq_hf import IBQVQModel
from ibq_hf.cli import main
from ibq_hf.conversion.ar import converted_card_facts
from ibq_hf.conversion.common import CheckpointKeyError
from ibq_hf.conversion.pipeline import convert_pipeline_checkpoint
from ibq_hf.models.configuration_ar import IBQARConfig, recommended_generation_config
from ibq_hf.models.modeling_ar import IBQARForImageGeneration
from ibq_hf.pipeline import IBQPipeline

TINY_AR = TINY_PIPELINE_AR_CONFIG
# The same architecture as the original GPT(...) arguments of an AR training YAML.
TINY_YAML_PARAMS = {"vocab_size": 64, "block_size": 64, "n_layer": 1, "n_head": 2, "n_embd": 32, "cond_dim": 32,
                    "multiple_of": 32, "class_num": 10, "resid_dropout_p": 0.1, "ffn_dropout_p": 0.1}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test in this module runs single-threaded (see conftest.one_thread)."""


def sources(vocab_size: int = 64) -> tuple[IBQVQModel, IBQARForImageGeneration]:
    torch.manual_seed(0)
    vqvae = IBQVQModel(**TINY_TOKENIZER_CONFIG).eval()
    ar = IBQARForImageGeneration(IBQARConfig(**{**TINY_AR, "vocab_size": vocab_size}))
    with torch.no_grad():
        for param in ar.parameters():
            param.normal_(0.0, 0.3)
    return vqvae, ar.eval()


def ar_checkpoint(vqvae, ar, extra: dict | None = None, drop: tuple[str, ...] = ()) -> dict:
    """The layout of AR_256_*.ckpt: transformer.*, the tokenizer under first_stage_model.*, a KV cache buffer."""
    state = {f"transformer.{k}": v.clone() for k, v in ar.state_dict().items()}
    state.update({f"first_stage_model.{k}": v.clone() for k, v in vqvae.state_dict().items()})
    state["transformer.blocks.0.attention.kv_cache.k_cache"] = torch.zeros(2, 2, 65, 16)
    state.update(extra or {})
    for key in drop:
        del state[key]
    return {"state_dict": state, "epoch": 3, "global_step": 100}


def write_yaml(path, params: dict) -> None:
    transformer = {"target": "src.IBQ.modules.transformer.llama.GPT", "params": params}
    path.write_text(yaml.safe_dump({"model": {"init_args": {"transformer_config": transformer}}}))


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_converts_both_halves_and_round_trips(tmp_path):
    vqvae, ar = sources()
    torch.save(ar_checkpoint(vqvae, ar), tmp_path / "AR_tiny.ckpt")
    out = tmp_path / "pipe"
    pipe = convert_pipeline_checkpoint(
        tmp_path / "AR_tiny.ckpt", out, resolution=16, num_attention_heads=2, grid_size=8
    )
    for name, tensor in vqvae.state_dict().items():
        assert torch.equal(pipe.vqvae.state_dict()[name], tensor), name
    for name, tensor in ar.state_dict().items():
        assert torch.equal(pipe.transformer.state_dict()[name], tensor), name
    assert list(pipe.vqvae.config.attn_resolutions) == [8]  # attention placed from resolution=16

    reference = IBQPipeline(vqvae=vqvae, transformer=ar)
    loaded = IBQPipeline.from_pretrained(out, local_files_only=True)
    for p in (reference, loaded):
        p.set_progress_bar_config(disable=True)
    expected = reference([1, 7], guidance_scale=2.0, generator=gens(0, 1), output_type="np").images
    got = loaded([1, 7], guidance_scale=2.0, generator=gens(0, 1), output_type="np").images
    assert (got == expected).all()
    assert json.loads((out / "model_index.json").read_text())["_class_name"][1] == "IBQPipeline"
    card = (out / "README.md").read_text()
    assert "AR_tiny.ckpt" in card and "license: apache-2.0" in card


def test_cli_convert_pipeline_with_original_yaml(tmp_path, capsys):
    vqvae, ar = sources()
    torch.save(ar_checkpoint(vqvae, ar), tmp_path / "AR_tiny.ckpt")
    write_yaml(tmp_path / "ar.yaml", TINY_YAML_PARAMS)
    out = tmp_path / "cli"
    args = ["convert", "pipeline", "--checkpoint", str(tmp_path / "AR_tiny.ckpt"), "--output", str(out),
            "--config", str(tmp_path / "ar.yaml"), "--resolution", "16"]  # fmt: skip
    assert main(args) == 0
    assert "Saved IBQPipeline (tokenizer with 64 codes" in capsys.readouterr().out
    loaded = IBQPipeline.from_pretrained(out)
    assert torch.equal(loaded.transformer.tok_emb.weight, ar.tok_emb.weight)
    assert torch.equal(loaded.vqvae.quantize.embedding.weight, vqvae.quantize.embedding.weight)
    with pytest.raises(SystemExit):
        main(["convert", "pipeline", "--help"])
    assert "first_stage_model" in capsys.readouterr().out


@pytest.mark.parametrize(
    "mutation,attribute,expected",
    [
        ({"drop": ("first_stage_model.decoder.conv_out.bias",)}, "missing", ["decoder.conv_out.bias"]),
        ({"extra": {"first_stage_model.decoder.extra.weight": torch.zeros(2)}}, "unexpected",
         ["decoder.extra.weight"]),
        ({"extra": {"cond_stage_model.weight": torch.zeros(2)}}, "unexpected", ["cond_stage_model.weight"]),
        ({"drop": ("transformer.head.weight",)}, "missing", ["head.weight"]),
    ],
)  # fmt: skip
def test_bad_keys_are_errors_that_name_them(tmp_path, mutation, attribute, expected):
    vqvae, ar = sources()
    torch.save(ar_checkpoint(vqvae, ar, **mutation), tmp_path / "AR.ckpt")
    with pytest.raises(CheckpointKeyError) as info:
        convert_pipeline_checkpoint(
            tmp_path / "AR.ckpt", None, resolution=16, num_attention_heads=2, grid_size=8
        )
    assert getattr(info.value, attribute) == expected


def test_checkpoint_without_embedded_tokenizer_is_refused(tmp_path):
    vqvae, ar = sources()
    state = {k: v for k, v in ar_checkpoint(vqvae, ar)["state_dict"].items() if k.startswith("transformer.")}
    torch.save({"state_dict": state}, tmp_path / "AR.ckpt")
    with pytest.raises(CheckpointKeyError, match="does not carry its tokenizer"):
        convert_pipeline_checkpoint(
            tmp_path / "AR.ckpt", tmp_path / "out", num_attention_heads=2, grid_size=8
        )
    assert not (tmp_path / "out").exists()


def test_tokenizer_checkpoint_is_refused(tmp_path):
    vqvae, _ = sources()
    torch.save({"state_dict": vqvae.state_dict()}, tmp_path / "tok.ckpt")
    with pytest.raises(CheckpointKeyError, match="is this an AR checkpoint"):
        convert_pipeline_checkpoint(tmp_path / "tok.ckpt", None, resolution=16)


def test_codebook_and_vocabulary_must_agree(tmp_path):
    vqvae, _ = sources()
    _, ar32 = sources(vocab_size=32)
    torch.save(ar_checkpoint(vqvae, ar32), tmp_path / "AR.ckpt")
    with pytest.raises(ValueError, match="codebook has 64 codes but the transformer's vocabulary has 32"):
        convert_pipeline_checkpoint(
            tmp_path / "AR.ckpt", None, resolution=16, num_attention_heads=2, grid_size=8
        )


def test_released_size_card_reports_fid_and_source(tmp_path):
    with torch.device("meta"):
        pipe = IBQPipeline(vqvae=IBQVQModel.from_preset(16384), transformer=IBQARForImageGeneration(
            IBQARConfig.from_preset("B")))  # fmt: skip
    pipe.transformer.generation_config = recommended_generation_config(
        "B"
    )  # what the converter saves with it
    path = pipe.write_model_card(tmp_path, **converted_card_facts("AR_256_B.ckpt", "B"))
    card = path.read_text()
    assert "base_model: TencentARC/IBQ-AR-B" in card and "| 2.88 | 254.73 |" in card
    assert "AR_256_B.ckpt" in card and "temperature 1.1" in card and "guidance 2.25" in card
    assert "ImageNet-1k class ids" in card and 'class_labels=[207, "otter"]' in card
