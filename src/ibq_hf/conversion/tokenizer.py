"""Strict conversion of the official IBQ tokenizer checkpoints to :class:`~ibq_hf.IBQVQModel`.

Accepted layouts (reference §1.6):

* a Lightning checkpoint (``{"state_dict": ...}``) or a bare state dict;
* raw generator weights (``encoder.*``, ``decoder.*``, ``quantize.embedding.weight``, ``quant_conv.*``,
  ``post_quant_conv.*``) and/or their EMA shadows ``model_ema.<name without dots>``;
* the tokenizer embedded in an AR checkpoint under ``first_stage_model.`` (``transformer.*`` ignored);
* the two "Pretrain" tokenizers (``IBQ_pretrain_{16384,262144}.ckpt``, reference §7.3): same architecture and
  key layout, written by ``ibqgan_pretrain.IBQ``, whose schedule arguments (``wp``, ``max_iter``, ``lr_drop_iter``,
  ...) may sit in the checkpoint's hyper-parameters and in the YAML. Their YAMLs name the wrong class
  (``ibqgan.IBQ``) and ``npu/pretrain_ibqgan_16384.yaml`` says ``n_embed: 262144``: the class is not trusted and
  the codebook size is read from the weights. Unlike the original's ``init_from_ckpt``, the codebook and the
  quant convs are converted like every other tensor.

Architecture, in order: ``--config`` (the original YAML), the checkpoint's Lightning hyper-parameters (when
they hold a ``ddconfig``), else inferred from the weight shapes.

Dropped on purpose: ``loss.*`` (discriminator, LPIPS), ``model_ema.decay``, ``model_ema.num_updates``,
EMA shadows of the loss, ``colorize``. Every other key must map one-to-one onto the model.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..hub_utils import ReportedResults
from ..image_processing import PROTOCOLS
from ..models.modeling_vq import _IMAGENET_ARCH, IBQVQModel
from .common import (
    CheckpointKeyError,
    check_output_dir,
    check_shapes,
    config_float,
    config_int,
    read_original_checkpoint,
    read_original_yaml,
    staged_output_dir,
)

logger = logging.getLogger(__name__)

EMA_PREFIX = "model_ema."
EMBEDDED_PREFIX = "first_stage_model."
_GENERATOR_ROOTS = ("encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.")
_EMA_BOOKKEEPING = {"model_ema.decay", "model_ema.num_updates"}

#: Reported numbers of the released ImageNet-256 tokenizers (reference §7.1).
REPORTED_TOKENIZER_RESULTS: dict[int, dict[str, Any]] = {
    1024: {"repo": "TencentARC/IBQ-Tokenizer-1024", "rFID": 2.24, "LPIPS": 0.2580, "usage": "99%"},
    8192: {"repo": "TencentARC/IBQ-Tokenizer-8192", "rFID": 1.87, "LPIPS": 0.2437, "usage": "98%"},
    16384: {"repo": "TencentARC/IBQ-Tokenizer-16384", "rFID": 1.37, "LPIPS": 0.2235, "usage": "96%"},
    262144: {"repo": "TencentARC/IBQ-Tokenizer-262144", "rFID": 1.00, "LPIPS": 0.2030, "usage": "84%"},
}

#: Reported numbers of the two general-domain "Pretrain" tokenizers (reference §7.3): (rFID, PSNR, SSIM).
REPORTED_PRETRAIN_RESULTS: dict[int, dict[str, Any]] = {
    16384: {"repo": "TencentARC/IBQ-Tokenizer-16384-Pretrain", "COCO": (7.67, 21.58, 0.62), "ImageNet": (2.06, 22.01, 0.61)},
    262144: {"repo": "TencentARC/IBQ-Tokenizer-262144-Pretrain", "COCO": (6.79, 22.28, 0.65), "ImageNet": (1.53, 22.69, 0.64)},
}  # fmt: skip

#: Constructor arguments that only ``ibqgan_pretrain.IBQ`` takes (its iteration-based schedule, reference §7.3).
#: The ImageNet class ``ibqgan.IBQ`` rejects them, so finding one identifies a Pretrain tokenizer's config.
PRETRAIN_SCHEDULE_ARGUMENTS = (
    "wp", "wp0", "wpe", "max_iter", "sche_type", "wp_iter", "use_shared_epoch", "lr_drop_iter", "lr_drop_rate",
)  # fmt: skip

#: What each preprocessing protocol is, for model cards (``ibq_hf.image_processing.PROTOCOLS``; ``{R}``: resolution).
PROTOCOL_DESCRIPTIONS = {
    "reference": "shortest side → {R} with bilinear resampling without antialiasing (cv2 INTER_LINEAR, as the "
    "ImageNet tokenizers were trained and evaluated), centre crop {R}×{R}, [-1, 1]",
    "pretrain": "torchvision Resize({R}) + CenterCrop({R}) on the PIL image (PIL bilinear, antialiased), as the "
    "Pretrain tokenizers were trained and evaluated, [-1, 1]",
}


def flat_ema_name(name: str) -> str:
    """``encoder.down.0.block.0.norm1.weight`` -> ``encoderdown0block0norm1weight`` (LitEma's naming)."""
    return name.replace(".", "")


def ema_name_table(param_names: list[str]) -> dict[str, str]:
    """Map ``model_ema.<flat>`` keys to dotted parameter names; fails if two names flatten alike."""
    table: dict[str, str] = {}
    for name in param_names:
        flat = EMA_PREFIX + flat_ema_name(name)
        if flat in table:
            raise ValueError(
                f"EMA names are ambiguous for this architecture: {table[flat]!r} and {name!r} both flatten "
                f"to {flat!r}, so EMA weights cannot be assigned. Convert the raw weights with use_ema=False."
            )
        table[flat] = name
    return table


def _strip_embedding_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Use the tokenizer embedded in an AR checkpoint when there is no top-level generator."""
    has_plain = any(k.startswith(_GENERATOR_ROOTS) or k.startswith(EMA_PREFIX) for k in state)
    if has_plain or not any(k.startswith(EMBEDDED_PREFIX) for k in state):
        return state
    logger.info("Using the tokenizer embedded under %r (AR checkpoint).", EMBEDDED_PREFIX)
    return {k[len(EMBEDDED_PREFIX) :]: v for k, v in state.items() if k.startswith(EMBEDDED_PREFIX)}


def _is_dropped(key: str) -> bool:
    return (
        key.startswith("loss.")
        or key in _EMA_BOOKKEEPING
        or key.startswith(EMA_PREFIX + "loss")
        or key.startswith("colorize")
        or ".kv_cache." in key
    )


def config_from_original_yaml(args: Mapping[str, Any], source: str = "the original config") -> dict[str, Any]:
    """IBQVQModel config from the original ``model.init_args`` (``ddconfig``, ``n_embed``, ``embed_dim``, ...).

    Types are checked here (``ch: "128"`` or ``n_embed: 16384.5`` is a ``ValueError`` naming the field), so a
    malformed YAML never reaches the model constructor.
    """
    dd = args.get("ddconfig")
    if not isinstance(dd, Mapping):
        raise ValueError(f"{source} has no model.init_args.ddconfig section: it is not a tokenizer config.")
    if dd.get("double_z", False):
        raise ValueError(
            f"{source}: ddconfig.double_z=True (a KL autoencoder layout) is not an IBQ tokenizer."
        )
    required = [f"ddconfig.{k}" for k in ("ch", "ch_mult", "num_res_blocks", "z_channels") if k not in dd]
    required += [f"init_args.{k}" for k in ("embed_dim", "n_embed") if k not in args]
    if required:
        raise ValueError(f"{source} lacks {required}, which define the tokenizer's architecture.")

    def ints(name: str, value: Any) -> tuple[int, ...]:
        if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
            raise ValueError(f"{source}: {name} must be a list of integers, got {value!r}.")
        return tuple(config_int(v, f"{name} entries", source) for v in value)

    config = {
        "in_channels": config_int(dd.get("in_channels", 3), "ddconfig.in_channels", source),
        "out_channels": config_int(dd.get("out_ch", 3), "ddconfig.out_ch", source),
        "resolution": config_int(dd.get("resolution", 256), "ddconfig.resolution", source),
        "ch": config_int(dd["ch"], "ddconfig.ch", source),
        "ch_mult": ints("ddconfig.ch_mult", dd["ch_mult"]),
        "num_res_blocks": config_int(dd["num_res_blocks"], "ddconfig.num_res_blocks", source),
        "attn_resolutions": ints("ddconfig.attn_resolutions", dd.get("attn_resolutions", ())),
        "dropout": config_float(dd.get("dropout", 0.0), "ddconfig.dropout", source),
        "z_channels": config_int(dd["z_channels"], "ddconfig.z_channels", source),
        "embed_dim": config_int(args["embed_dim"], "embed_dim", source),
        "num_embeddings": config_int(args["n_embed"], "n_embed", source),
    }
    for key in ("beta", "entropy_temperature", "sample_minimization_weight", "batch_maximization_weight"):
        if key in args:
            config[key] = config_float(args[key], key, source)
    if "use_entropy_loss" in args:
        if not isinstance(args["use_entropy_loss"], bool):
            raise ValueError(
                f"{source}: use_entropy_loss must be true or false, got {args['use_entropy_loss']!r}."
            )
        config["use_entropy_loss"] = args["use_entropy_loss"]
    return config


def _codebook_shape(state: Mapping[str, torch.Tensor]) -> tuple[int, ...] | None:
    """Shape of the checkpoint's codebook (raw weights first, else the EMA shadow); ``None`` when absent."""
    for key in ("quantize.embedding.weight", EMA_PREFIX + "quantizeembeddingweight"):
        if key in state and state[key].dim() == 2:
            return tuple(state[key].shape)
    return None


def reconcile_codebook_size(
    config: dict[str, Any], state: Mapping[str, torch.Tensor], source: str
) -> dict[str, Any]:
    """Take the codebook size from the weights when a config disagrees (``n_embed`` decides no other shape).

    ``configs/IBQ/npu/pretrain_ibqgan_16384.yaml`` says ``n_embed: 262144`` for the 16384-code Pretrain
    tokenizer (reference §7.3). The weights are the truth: the size is corrected with a warning. A different
    ``embed_dim`` is left alone (it changes ``quant_conv`` too), so the strict shape check reports it.
    """
    shape = _codebook_shape(state)
    if shape is None or shape[1] != config.get("embed_dim") or shape[0] == config.get("num_embeddings"):
        return config
    logger.warning(
        "%s says n_embed=%s but the checkpoint's codebook has %d entries; using %d (configs/IBQ/npu/"
        "pretrain_ibqgan_16384.yaml has this known copy-paste error).",
        source,
        config.get("num_embeddings"),
        shape[0],
        shape[0],
    )
    return {**config, "num_embeddings": shape[0]}


def detect_protocol(
    checkpoint_path: str | os.PathLike,
    hyper_parameters: Mapping[str, Any] | None = None,
    yaml_class_path: str | None = None,
    yaml_args: Mapping[str, Any] | None = None,
) -> tuple[str, str]:
    """The preprocessing protocol a tokenizer was trained and evaluated with, and the evidence: ``(protocol, why)``.

    The weights of a Pretrain tokenizer look exactly like those of an ImageNet one, so the signs are, in order:
    ``ibqgan_pretrain.IBQ``'s schedule arguments or class name in the checkpoint's hyper-parameters or in the
    YAML, else a file name containing ``pretrain`` (``IBQ_pretrain_16384.ckpt``). Without any, ``"reference"``.
    """
    for where, class_path, args in (
        ("the checkpoint's hyper-parameters", (hyper_parameters or {}).get("_class_path"), hyper_parameters),
        ("the --config YAML", yaml_class_path, yaml_args),
    ):
        found = [k for k in PRETRAIN_SCHEDULE_ARGUMENTS if k in (args or {})]
        if found:
            return "pretrain", f"{where} has ibqgan_pretrain.IBQ's schedule arguments ({', '.join(found)})"
        if isinstance(class_path, str) and "ibqgan_pretrain" in class_path:
            return "pretrain", f"{where} names {class_path}"
    name = Path(checkpoint_path).name
    if "pretrain" in name.lower():
        return "pretrain", f"the file name {name!r} names a Pretrain tokenizer"
    return "reference", "no sign of a Pretrain tokenizer (the ImageNet tokenizers' protocol)"


def infer_config_from_weights(state: Mapping[str, torch.Tensor], resolution: int = 256) -> dict[str, Any]:
    """Recover the architecture from raw generator weights (``resolution`` only places attention).

    Falls back to the ImageNet architecture with the checkpoint's codebook size when only EMA weights
    are present (every released tokenizer shares that architecture; the strict shape check catches
    anything else and asks for ``--config``).
    """
    config = {**_IMAGENET_ARCH, "resolution": resolution}
    if "encoder.conv_in.weight" not in state:
        ema_codebook = state.get(EMA_PREFIX + "quantizeembeddingweight")
        if ema_codebook is None:
            raise CheckpointKeyError(
                "IBQ tokenizer",
                missing=["quantize.embedding.weight", EMA_PREFIX + "quantizeembeddingweight"],
                hint="No generator weights were found; is this a tokenizer (or AR) checkpoint?",
            )
        config.update(num_embeddings=ema_codebook.shape[0], embed_dim=ema_codebook.shape[1])
        return config

    conv_in = state["encoder.conv_in.weight"]
    ch = conv_in.shape[0]
    levels = sorted({int(m.group(1)) for k in state if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))}
    ch_mult = tuple(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in levels)
    attn_levels = [i for i in levels if f"encoder.down.{i}.attn.0.q.weight" in state]
    z_channels = state["encoder.conv_out.weight"].shape[0]
    if "decoder.conv_in.weight" in state and state["decoder.conv_in.weight"].shape[1] != z_channels:
        raise ValueError(
            "encoder.conv_out and decoder.conv_in disagree on z_channels (double_z layout?); "
            "pass the original YAML with --config."
        )
    codebook = state["quantize.embedding.weight"]
    config.update(
        in_channels=conv_in.shape[1],
        out_channels=state["decoder.conv_out.weight"].shape[0] if "decoder.conv_out.weight" in state else 3,
        ch=ch,
        ch_mult=ch_mult,
        num_res_blocks=len(blocks),
        attn_resolutions=tuple(resolution // 2**i for i in attn_levels),
        z_channels=z_channels,
        embed_dim=codebook.shape[1],
        num_embeddings=codebook.shape[0],
    )
    return config


def select_generator_weights(
    state: Mapping[str, torch.Tensor], model: IBQVQModel, use_ema: bool | None = None
) -> tuple[dict[str, torch.Tensor], bool]:
    """Pick the raw or the EMA weights of every generator parameter, strictly.

    ``use_ema=None`` takes the EMA shadows when the checkpoint has any (what the published numbers
    used), the raw weights otherwise. Returns ``(state_dict, used_ema)``.
    """
    expected = {k: v.shape for k, v in model.state_dict().items()}
    table = ema_name_table(list(expected))
    raw, ema, unexpected = {}, {}, []
    for key, value in state.items():
        if key in expected:
            raw[key] = value
        elif key in table:
            ema[table[key]] = value
        elif not _is_dropped(key):
            unexpected.append(key)
    if use_ema is None:
        use_ema = bool(ema)
    if use_ema and not ema:
        raise CheckpointKeyError(
            "IBQ tokenizer",
            missing=[EMA_PREFIX + "<flattened parameter names>"],
            hint="The checkpoint has no EMA weights (model_ema.*); convert the raw weights with --no-ema.",
        )
    chosen = ema if use_ema else raw
    which = "EMA" if use_ema else "raw"
    missing = set(expected) - set(chosen)
    if unexpected or missing:
        raise CheckpointKeyError(
            f"IBQ tokenizer ({which} weights)",
            missing=[k if not use_ema else f"{k} (as {EMA_PREFIX}{flat_ema_name(k)})" for k in missing],
            unexpected=unexpected,
            hint="If the architecture differs from the released one, pass the original YAML with --config.",
        )
    check_shapes(
        f"IBQ tokenizer ({which} weights)",
        expected,
        chosen,
        hint="Codebook or channel sizes differ from the inferred architecture; pass --config ORIGINAL.yaml.",
    )
    return chosen, use_ema


def convert_tokenizer_checkpoint(
    checkpoint_path: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    config_path: str | os.PathLike | None = None,
    use_ema: bool | None = None,
    resolution: int = 256,
    *,
    overwrite: bool = False,
    protocol: str | None = None,
) -> IBQVQModel:
    """Convert an official IBQ tokenizer ``.ckpt`` into an :class:`IBQVQModel` (and save it).

    Args:
        checkpoint_path: the original checkpoint (tokenizer or AR; read with ``weights_only=True``).
        output_dir: where to write ``config.json``, ``diffusion_pytorch_model.safetensors`` and a model
            card; nothing is written when ``None``. It must be new or empty unless ``overwrite``.
        config_path: the original YAML (``model.init_args.ddconfig``, ``n_embed``, ...) for
            architectures that cannot be inferred from the weights. Its ``class_path`` and arguments this port
            does not need (schedules, losses) are ignored; a codebook size that disagrees with the weights is
            corrected with a warning (see :func:`reconcile_codebook_size`).
        use_ema: ``True`` EMA weights (required), ``False`` raw weights, ``None`` EMA when present.
        resolution: training resolution used to place attention when inferring from weights.
        overwrite: replace a non-empty ``output_dir`` as a whole (its old files are deleted); the folder is
            written to a staging folder and renamed into place either way.
        protocol: the preprocessing protocol the tokenizer was trained and evaluated with (``"reference"`` or
            ``"pretrain"``), recorded in the model card; ``None`` detects it (:func:`detect_protocol`).

    Returns:
        The loaded model, in eval mode.
    """
    if protocol is not None and protocol not in PROTOCOLS:
        raise ValueError(
            f"Unknown preprocessing protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}."
        )
    if output_dir is not None:
        check_output_dir(output_dir, overwrite, inputs=[checkpoint_path, config_path])
    yaml = read_original_yaml(config_path) if config_path is not None else None  # a bad YAML fails first
    checkpoint = read_original_checkpoint(checkpoint_path)
    state = _strip_embedding_prefix(checkpoint.state)
    hparams = checkpoint.hyper_parameters
    if yaml is not None:
        config = config_from_original_yaml(yaml.init_args, source=str(config_path))
        config = reconcile_codebook_size(config, state, source=str(config_path))
    elif hparams is not None and "ddconfig" in hparams:
        source = f"{Path(checkpoint_path).name} (Lightning hyper_parameters)"
        config = reconcile_codebook_size(config_from_original_yaml(hparams, source=source), state, source)
    else:
        config = infer_config_from_weights(state, resolution=resolution)
    if protocol is None:
        protocol, why = detect_protocol(
            checkpoint_path, hparams, yaml.class_path if yaml else None, yaml.init_args if yaml else None
        )
        logger.info("Preprocessing protocol %r: %s.", protocol, why)
    model = IBQVQModel(**config)
    weights, used_ema = select_generator_weights(state, model, use_ema)
    model.load_state_dict(weights, strict=True)
    model.eval()
    if output_dir is not None:
        with staged_output_dir(output_dir, overwrite) as staging:
            save_converted_tokenizer(
                model,
                staging,
                source=Path(checkpoint_path).name,
                used_ema=used_ema,
                protocol=protocol,
                name=Path(output_dir).name,
            )
    return model


def save_converted_tokenizer(
    model: IBQVQModel,
    output_dir: str | os.PathLike,
    source: str,
    used_ema: bool,
    protocol: str = "reference",
    name: str | None = None,
) -> None:
    """Write safetensors weights, the config and a model card for a converted tokenizer.

    The card names the preprocessing ``protocol`` in words and as ``preprocessing_protocol`` in its metadata,
    which ``ibq-hf evaluate tokenizer`` reads as its default ``--protocol``; ``name`` is the folder or repo id its
    usage snippet loads (default: ``output_dir``'s name).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"Unknown preprocessing protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}."
        )
    k = model.config.num_embeddings
    reported = None
    if protocol == "pretrain":
        numbers = REPORTED_PRETRAIN_RESULTS.get(k)
        if numbers is not None:
            reported = ReportedResults(
                "Reported by the IBQ authors at 256×256 (COCO and ImageNet val)",
                ["codebook", "data", "rFID", "PSNR", "SSIM"],
                [[k, data, *numbers[data]] for data in ("COCO", "ImageNet")],
            )
    else:
        numbers = REPORTED_TOKENIZER_RESULTS.get(k)
        if numbers is not None:
            reported = ReportedResults(
                "Reported by the IBQ authors on ImageNet 256×256 val (50k images, EMA weights)",
                ["codebook", "rFID", "LPIPS", "codebook usage"],
                [[k, numbers["rFID"], numbers["LPIPS"], numbers["usage"]]],
            )
    card = {
        "name": name,
        "source_file": source,
        "base_model": numbers["repo"] if numbers else None,
        "ema_weights": used_ema,
        "protocol": protocol,
        "protocol_description": PROTOCOL_DESCRIPTIONS[protocol].format(R=model.config.resolution),
        "reported": reported,
    }
    model.save_pretrained(output_dir, safe_serialization=True, model_card=card)
