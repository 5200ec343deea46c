"""Issue 15, item 6: the two "Pretrain" tokenizers (``IBQ_pretrain_{16384,262144}.ckpt``, reference §7.3).

Same architecture and key layout as the ImageNet tokenizers, but written by ``ibqgan_pretrain.IBQ``: Lightning may
have saved its extra schedule arguments among the hyper-parameters, its YAMLs name the wrong class
(``ibqgan.IBQ``) and ``npu/pretrain_ibqgan_16384.yaml`` says ``n_embed: 262144``. The checkpoints here are built
that way from a tiny model; the codebook and the quant convs (which the original's own loader drops on re-load)
must be converted like every other tensor.
"""

from __future__ import annotations

import logging

import pytest
import torch
import yaml
from huggingface_hub import metadata_load

from conftest import TINY_TOKENIZER_CONFIG
from ibq_hf import IBQVQModel
from ibq_hf.cli import main
from ibq_hf.cli.flags import PROTOCOLS as CLI_PROTOCOLS
from ibq_hf.conversion.tokenizer import (
    PRETRAIN_SCHEDULE_ARGUMENTS,
    convert_tokenizer_checkpoint,
    detect_protocol,
    flat_ema_name,
)
from ibq_hf.image_processing import PROTOCOLS

pytestmark = pytest.mark.usefixtures("one_thread")

# ibqgan_pretrain.IBQ's schedule arguments as configs/IBQ/*/pretrain_ibqgan_*.yaml set them (reference §7.3).
SCHEDULE = {"wp": 0, "wp0": 0.005, "wpe": 0.01, "max_iter": 1500000, "sche_type": None, "wp_iter": None,
            "use_shared_epoch": True, "lr_drop_iter": [50, 100], "lr_drop_rate": 0.1}  # fmt: skip
DDCONFIG = {
    "double_z": False, "z_channels": TINY_TOKENIZER_CONFIG["z_channels"], "resolution": 16, "in_channels": 3,
    "out_ch": 3, "ch": TINY_TOKENIZER_CONFIG["ch"], "ch_mult": list(TINY_TOKENIZER_CONFIG["ch_mult"]),
    "num_res_blocks": TINY_TOKENIZER_CONFIG["num_res_blocks"],
    "attn_resolutions": list(TINY_TOKENIZER_CONFIG["attn_resolutions"]), "dropout": 0.0,
}  # fmt: skip
LOSSCONFIG = {
    "class_path": "src.IBQ.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
    "init_args": {"disc_conditional": False, "disc_in_channels": 3, "disc_start": 0, "disc_weight": 0.4,
                  "quant_loss_weight": 1.0, "entropy_loss_weight": 0.05, "gen_loss_weight": 0.1},
}  # fmt: skip


def init_args(n_embed: int) -> dict:
    """``model.init_args`` of a pretrain YAML (and the hyper-parameters LightningCLI records from it)."""
    return {"ddconfig": dict(DDCONFIG), "lossconfig": LOSSCONFIG, "n_embed": n_embed,
            "embed_dim": TINY_TOKENIZER_CONFIG["embed_dim"], "learning_rate": 1e-4, "scheduler_type": "None",
            "use_ema": True, "use_entropy_loss": True, "sample_minimization_weight": 1.0,
            "batch_maximization_weight": 1.0, "entropy_temperature": 0.02, "beta": 0.3, **SCHEDULE}  # fmt: skip


def pretrain_state(model: IBQVQModel) -> dict[str, torch.Tensor]:
    """The state dict a Lightning run of ``ibqgan_pretrain.IBQ`` saves: raw weights, ``model_ema.<flat>`` shadows
    (different values), the loss (discriminator with BatchNorm, LPIPS) and LitEma's bookkeeping."""
    g = torch.Generator().manual_seed(7)
    state = {}
    for name, tensor in model.state_dict().items():
        state[name] = tensor.clone()
        state["model_ema." + flat_ema_name(name)] = tensor + torch.randn(tensor.shape, generator=g)
    state["loss.discriminator.main.0.weight"] = torch.randn(64, 3, 4, 4)
    state["loss.discriminator.main.3.num_batches_tracked"] = torch.tensor(5)
    state["loss.perceptual_loss.scaling_layer.shift"] = torch.zeros(1, 3, 1, 1)
    state["model_ema.lossdiscriminatormain0weight"] = torch.randn(64, 3, 4, 4)
    state["model_ema.decay"] = torch.tensor(0.999)
    state["model_ema.num_updates"] = torch.tensor(-1, dtype=torch.int32)
    return state


def lightning_checkpoint(model: IBQVQModel, hyper_parameters: dict | None) -> dict:
    """A whole Lightning 2.x checkpoint (what ``ModelCheckpoint`` writes), not just the state dict."""
    ckpt = {
        "epoch": 0,
        "global_step": 5005,
        "pytorch-lightning_version": "2.2.1",
        "state_dict": pretrain_state(model),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 1, "completed": 0}}}},
        "callbacks": {"ModelCheckpoint{'monitor': None, 'mode': 'min'}": {
            "best_model_score": None, "best_model_path": "", "dirpath": "../../checkpoints/vqgan/test",
            "kth_value": torch.tensor(float("inf")), "best_k_models": {}, "last_model_path": ""}},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(3)}},
                              "param_groups": [{"lr": 1e-4, "betas": (0.5, 0.9), "params": [0]}]}],
        "lr_schedulers": [],
    }  # fmt: skip
    if hyper_parameters is not None:
        ckpt["hparams_name"] = "kwargs"
        ckpt["hyper_parameters"] = hyper_parameters
    return ckpt


@pytest.fixture(scope="module")
def source_model() -> IBQVQModel:
    torch.manual_seed(0)
    return IBQVQModel(**TINY_TOKENIZER_CONFIG)


def assert_converted_ema(model: IBQVQModel, state: dict[str, torch.Tensor]) -> None:
    """Every tensor — codebook and quant convs included — is the checkpoint's EMA shadow."""
    for name in (
        "quantize.embedding.weight",
        "quant_conv.weight",
        "quant_conv.bias",
        "post_quant_conv.weight",
    ):
        assert torch.equal(model.state_dict()[name], state["model_ema." + flat_ema_name(name)]), name
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state["model_ema." + flat_ema_name(name)]), name


@pytest.mark.parametrize("layout", ["flat", "class_path"])
def test_lightning_checkpoint_with_schedule_hyper_parameters(source_model, tmp_path, images, layout):
    """Lightning's hyper-parameters of ``ibqgan_pretrain.IBQ`` (LightningCLI's flat form with ``_class_path``, or
    ``{"class_path", "init_args"}``) are read: they give the architecture and the quantizer settings that the
    weights cannot (resolution, entropy temperature, beta) and mark the tokenizer as a Pretrain one."""
    args = init_args(TINY_TOKENIZER_CONFIG["num_embeddings"])
    hparams = (
        {"_class_path": "src.IBQ.models.ibqgan_pretrain.IBQ", **args}
        if layout == "flat"
        else {"class_path": "src.IBQ.models.ibqgan_pretrain.IBQ", "init_args": args}
    )
    ckpt = lightning_checkpoint(source_model, hparams)
    path = tmp_path / "last.ckpt"  # the name says nothing: the hyper-parameters do
    torch.save(ckpt, path)
    out = tmp_path / "converted"
    model = convert_tokenizer_checkpoint(path, out)  # default resolution=256: the hyper-parameters say 16
    assert model.config.resolution == 16 and tuple(model.config.attn_resolutions) == (8,)
    assert model.config.entropy_temperature == 0.02 and model.config.beta == 0.3
    assert_converted_ema(model, ckpt["state_dict"])
    loaded = IBQVQModel.from_pretrained(out).eval()
    with torch.no_grad():
        assert torch.equal(loaded(images).sample, model(images).sample)
    card = (out / "README.md").read_text()
    assert metadata_load(out / "README.md")["preprocessing_protocol"] == "pretrain"
    assert "IBQ Pretrain tokenizer (64 codes)" in card and "--protocol pretrain" in card
    assert "Resize(16) + CenterCrop(16)" in card  # the checkpoint's resolution (hyper-parameters)


def test_pretrain_yaml_with_wrong_class_and_wrong_n_embed(tmp_path, caplog, capsys):
    """configs/IBQ/npu/pretrain_ibqgan_16384.yaml: class ``ibqgan.IBQ`` (which would reject the schedule arguments)
    and ``n_embed: 262144`` for the 16384-code checkpoint. The converter ignores the class, takes the codebook
    size from the weights (with a warning) and records the pretrain protocol."""
    torch.manual_seed(1)
    source = IBQVQModel(**{**TINY_TOKENIZER_CONFIG, "num_embeddings": 16384})
    original = {
        "seed_everything": True,
        "trainer": {"accelerator": "npu", "devices": 8, "num_nodes": 4, "precision": "bf16-mixed",
                    "max_steps": 1500000, "val_check_interval": 5005},
        "model": {"class_path": "src.IBQ.models.ibqgan.IBQ", "init_args": init_args(262144)},
        "data": {"class_path": "main.DataModuleFromConfig", "init_args": {
            "batch_size": 8,
            "train": {"target": "src.Open_MAGVIT2.data.pretrain.LAIONCombineTrain", "params": {"config": {"size": 256}}},
            "validation": {"target": "src.Open_MAGVIT2.data.imagenet.ImageNetValidation",
                           "params": {"config": {"size": 256}}}}},
    }  # fmt: skip
    yaml_path = tmp_path / "pretrain_ibqgan_16384.yaml"
    yaml_path.write_text(yaml.safe_dump(original, sort_keys=False))
    ckpt_path = tmp_path / "tokenizer.ckpt"  # the released files keep only the state dict
    state = pretrain_state(source)
    torch.save({"state_dict": state}, ckpt_path)
    out = tmp_path / "converted"
    with caplog.at_level(logging.WARNING, logger="ibq_hf.conversion.tokenizer"):
        code = main(["convert", "tokenizer", "--checkpoint", str(ckpt_path), "--config", str(yaml_path),
                     "--output", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "n_embed=262144" in caplog.text and "16384 entries" in caplog.text
    model = IBQVQModel.from_pretrained(out)
    assert model.config.num_embeddings == 16384 and model.config.entropy_temperature == 0.02
    assert_converted_ema(model, state)
    assert metadata_load(out / "README.md")["preprocessing_protocol"] == "pretrain"
    card = (out / "README.md").read_text()
    # the authors' numbers for the 16384-code Pretrain tokenizer (reference §7.3), not the ImageNet one's
    assert "TencentARC/IBQ-Tokenizer-16384-Pretrain" in card and "7.67" in card and "2.06" in card
    assert "1.37" not in card


def test_a_different_embed_dim_is_still_an_error(source_model, tmp_path):
    """Only ``n_embed`` is corrected from the weights: any other disagreement is a listed shape mismatch."""
    args = init_args(TINY_TOKENIZER_CONFIG["num_embeddings"])
    yaml_path = tmp_path / "x.yaml"
    yaml_path.write_text(yaml.safe_dump({"model": {"init_args": {**args, "embed_dim": 8}}}))
    torch.save({"state_dict": pretrain_state(source_model)}, tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="quant_conv"):
        convert_tokenizer_checkpoint(tmp_path / "x.ckpt", config_path=yaml_path)


def test_protocol_detection_and_override(source_model, tmp_path):
    # the evidence, in order: schedule arguments or class, in the hyper-parameters or the YAML; the file name
    assert detect_protocol("last.ckpt", {"lr_drop_iter": [50, 100]})[0] == "pretrain"
    assert (
        detect_protocol("last.ckpt", {"_class_path": "src.IBQ.models.ibqgan_pretrain.IBQ"})[0] == "pretrain"
    )
    assert detect_protocol("x.ckpt", None, "src.IBQ.models.ibqgan.IBQ", {"max_iter": 10})[0] == "pretrain"
    assert detect_protocol("IBQ_pretrain_262144.ckpt")[0] == "pretrain"
    assert detect_protocol(
        "imagenet256_16384.ckpt", None, "src.IBQ.models.ibqgan.IBQ", {"n_embed": 16384}
    ) == (
        "reference",
        "no sign of a Pretrain tokenizer (the ImageNet tokenizers' protocol)",
    )
    assert set(SCHEDULE) == set(PRETRAIN_SCHEDULE_ARGUMENTS)
    assert CLI_PROTOCOLS == PROTOCOLS  # the CLI's spelled-out choices are the library's protocols

    path = tmp_path / "IBQ_pretrain_16384.ckpt"
    torch.save({"state_dict": pretrain_state(source_model)}, path)
    convert_tokenizer_checkpoint(path, tmp_path / "auto", resolution=16)
    assert metadata_load(tmp_path / "auto" / "README.md")["preprocessing_protocol"] == "pretrain"
    convert_tokenizer_checkpoint(path, tmp_path / "forced", resolution=16, protocol="reference")
    assert metadata_load(tmp_path / "forced" / "README.md")["preprocessing_protocol"] == "reference"
    with pytest.raises(ValueError, match="Unknown preprocessing protocol 'imagenet'"):
        convert_tokenizer_checkpoint(path, resolution=16, protocol="imagenet")


def test_cli_protocol_flag_overrides_detection(source_model, tmp_path):
    from ibq_hf.cli import main

    path = tmp_path / "IBQ_pretrain_16384.ckpt"
    torch.save({"state_dict": pretrain_state(source_model)}, path)
    out = tmp_path / "out"
    code = main(["convert", "tokenizer", "--checkpoint", str(path), "--output", str(out), "--resolution", "16",
                 "--protocol", "reference"])  # fmt: skip
    assert code == 0
    assert metadata_load(out / "README.md")["preprocessing_protocol"] == "reference"
