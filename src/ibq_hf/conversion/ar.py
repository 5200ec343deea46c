"""Strict converter for the official class-conditional AR checkpoints (``AR_256_{B,L,XL,XXL}.ckpt``).

An AR checkpoint is a Lightning dict whose ``state_dict`` holds ``transformer.*`` (the AR model) and
``first_stage_model.*`` (an EMA copy of the 16384-code tokenizer, converted by the tokenizer/pipeline converters).
The HF model keeps every original module name, so the key mapping is "strip ``transformer.``" with no renames;
KV-cache buffers saved after ``setup_caches`` are dropped, ``first_stage_model.*`` is ignored, and any other key,
a missing key or a shape mismatch is an error listing the keys.

The architecture comes from the weights when they match a released size (B, L, XL, XXL), otherwise from the
original YAML (``model.init_args.transformer_config.params``): head count and grid size are not stored in weights.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..hub_utils import ReportedResults
from ..models.configuration_ar import (
    IBQ_AR_PRESETS,
    IBQARConfig,
    config_from_original,
    preset_name,
    recommended_generation_config,
)
from ..models.modeling_ar import IBQARForImageGeneration
from .common import (
    CheckpointKeyError,
    assign_state_dict,
    check_output_dir,
    check_shapes,
    config_float,
    config_int,
    load_original_checkpoint,
    load_original_yaml,
    staged_output_dir,
)

logger = logging.getLogger(__name__)

TRANSFORMER_PREFIX = "transformer."
# The tokenizer embedded in every AR checkpoint (EMA weights under the normal names): not part of the AR model.
IGNORED_PREFIXES = ("first_stage_model.",)
# KV caches only exist in a checkpoint saved after `setup_caches`; they are inference scratch space, not weights.
_KV_CACHE_KEY = re.compile(r"^blocks\.\d+\.attention\.kv_cache\.(k_cache|v_cache)$")

# Reference §7.2: ADM FID / IS on 50k samples with the §5.3 sampling settings.
REPORTED_RESULTS: dict[str, dict[str, Any]] = {
    "B": {"params": "342M", "fid": 2.88, "inception_score": 254.73},
    "L": {"params": "649M", "fid": 2.45, "inception_score": 267.48},
    "XL": {"params": "1.1B", "fid": 2.14, "inception_score": 278.99},
    "XXL": {"params": "2.1B", "fid": 2.05, "inception_score": 286.73},
}

# Arguments of the original `GPT(...)` with their defaults when a YAML omits them (`vocab_size` and `block_size`
# are required). Values that change the architecture away from the released models are rejected below.
_ORIGINAL_GPT_DEFAULTS: dict[str, Any] = {
    "n_layer": 12,
    "n_head": 8,
    "n_embd": 256,
    "cond_dim": 256,
    "embd_pdrop": 0.0,
    "resid_dropout_p": 0.0,
    "attn_dropout_p": 0.0,
    "ffn_dropout_p": 0.1,
    "drop_path_rate": 0.0,
    "n_unmasked": 0,
    "max_batch_size": 32,
    "max_seq_len": 2048,
    "class_num": 1000,
    "token_drop": 0.1,
    "cls_token_num": 1,
    "rope_base": 10000,
    "norm_eps": 1e-5,
    "ffn_dim_multiplier": None,
    "initalizer_range": 0.02,
    "multiple_of": 256,
    "n_kv_head": None,
    "shared_aln": False,
    "alng": 1e-3,
    "use_pretrained_codebook": False,
    "codebook_ckpt_path": None,
    "n_codebook_embd": 256,
}


def original_to_hf_key(key: str) -> str | None:
    """HF key of an original checkpoint key, or ``None`` when the key is not part of the AR model.

    Raises :class:`CheckpointKeyError` for keys of unknown origin (neither AR model nor embedded tokenizer).
    """
    if key.startswith(IGNORED_PREFIXES):
        return None
    if not key.startswith(TRANSFORMER_PREFIX):
        raise CheckpointKeyError(
            "IBQ AR checkpoint layout",
            unexpected=[key],
            hint="Expected only 'transformer.*' (the AR model) and 'first_stage_model.*' (the tokenizer) keys.",
        )
    name = key[len(TRANSFORMER_PREFIX) :]
    return None if _KV_CACHE_KEY.match(name) else name


def split_ar_state_dict(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Original checkpoint → (HF-named AR state dict, sorted list of dropped or ignored original keys)."""
    foreign = sorted(k for k in state if not k.startswith((TRANSFORMER_PREFIX, *IGNORED_PREFIXES)))
    if foreign:
        raise CheckpointKeyError(
            "IBQ AR checkpoint layout",
            unexpected=foreign,
            hint="Expected only 'transformer.*' (the AR model) and 'first_stage_model.*' (the tokenizer) keys; "
            "is this an AR checkpoint (AR_256_*.ckpt)?",
        )
    mapped: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, tensor in state.items():
        name = original_to_hf_key(key)
        if name is None:
            dropped.append(key)
        else:
            mapped[name] = tensor
    if not mapped:
        raise CheckpointKeyError(
            "IBQ AR model",
            missing=["transformer.*"],
            hint="The file has no 'transformer.*' tensors: it is probably a tokenizer checkpoint, not an AR one.",
        )
    return mapped, sorted(dropped)


def ar_config_from_original_yaml(path: str | os.PathLike) -> IBQARConfig:
    """Build the config from an original YAML's ``model.init_args.transformer_config.params``."""
    args = load_original_yaml(path)
    transformer = args.get("transformer_config")
    if not isinstance(transformer, Mapping) or not isinstance(transformer.get("params"), Mapping):
        raise ValueError(
            f"{path} has no 'model.init_args.transformer_config.params': it is not an AR training config "
            "(e.g. configs/IBQ/gpu/imagenet_conditional_llama_B.yaml)."
        )
    target = str(transformer.get("target", ""))
    if target and not target.endswith("transformer.llama.GPT"):
        raise ValueError(
            f"{path}: transformer_config.target is {target!r}; only the IBQ llama.GPT is supported."
        )
    return ar_config_from_original_params(transformer["params"], source=str(path))


def ar_config_from_original_params(
    params: Mapping[str, Any], source: str = "the original config"
) -> IBQARConfig:
    """Translate original ``GPT(...)`` arguments into an :class:`IBQARConfig` (strictly: unknown or unsupported
    settings are errors)."""
    unknown = sorted(set(params) - set(_ORIGINAL_GPT_DEFAULTS) - {"vocab_size", "block_size"})
    if unknown:
        raise ValueError(
            f"{source}: unknown transformer parameters {unknown}; they are not arguments of llama.GPT."
        )
    missing = [k for k in ("vocab_size", "block_size") if k not in params]
    if missing:
        raise ValueError(f"{source}: transformer parameters {missing} are required.")
    p = {**_ORIGINAL_GPT_DEFAULTS, **params}
    for key in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "cond_dim", "class_num", "multiple_of",
                "cls_token_num"):  # fmt: skip
        p[key] = config_int(p[key], key, source)
    for key in ("rope_base", "norm_eps", "resid_dropout_p", "ffn_dropout_p", "attn_dropout_p", "token_drop",
                "initalizer_range", "alng", "drop_path_rate"):  # fmt: skip
        p[key] = config_float(p[key], key, source)
    if p["ffn_dim_multiplier"] is not None:
        p["ffn_dim_multiplier"] = config_float(p["ffn_dim_multiplier"], "ffn_dim_multiplier", source)
    if p["block_size"] <= 0:
        raise ValueError(
            f"{source}: block_size must be a positive square number (grid_size²), got {p['block_size']}."
        )
    grid = math.isqrt(int(p["block_size"]))
    unsupported = {
        "cond_dim": (p["cond_dim"] == p["n_embd"], "must equal n_embd (the class embedding drives adaLN)"),
        "n_kv_head": (p["n_kv_head"] in (None, p["n_head"]), "grouped-query attention is not supported"),
        "shared_aln": (not p["shared_aln"], "shared adaLN is not supported"),
        "cls_token_num": (p["cls_token_num"] == 1, "exactly one class token is supported"),
        "use_pretrained_codebook": (
            not p["use_pretrained_codebook"],
            "codebook-initialised embeddings are not supported",
        ),
        "drop_path_rate": (float(p["drop_path_rate"]) == 0.0, "stochastic depth is not implemented"),
        "block_size": (grid * grid == int(p["block_size"]), "must be a square number (grid_size²)"),
    }
    bad = [f"{k}={p[k]!r} ({why})" for k, (ok, why) in unsupported.items() if not ok]
    if bad:
        raise ValueError(f"{source}: unsupported settings: {'; '.join(bad)}.")
    return config_from_original(p)


def infer_ar_config(
    state: Mapping[str, torch.Tensor], num_attention_heads: int | None = None, grid_size: int | None = None
) -> IBQARConfig:
    """Config from the shapes of an HF-named AR state dict (only shapes are read; meta tensors work).

    A released size is recognised from its shapes; anything else needs ``num_attention_heads`` and ``grid_size``
    because neither is stored in the weights.
    """
    needed = ["tok_emb.weight", "class_emb.embedding_table.weight", "blocks.0.feed_forward.w1.weight"]
    absent = [k for k in needed if k not in state]
    if absent:
        raise CheckpointKeyError(
            "IBQ AR model", missing=absent, hint="Cannot infer the model size without them."
        )
    vocab, hidden = state["tok_emb.weight"].shape
    shapes = {
        "vocab_size": int(vocab),
        "hidden_size": int(hidden),
        "num_classes": int(state["class_emb.embedding_table.weight"].shape[0]) - 1,
        "num_hidden_layers": len({k.split(".")[1] for k in state if k.startswith("blocks.")}),
        "intermediate_size": int(state["blocks.0.feed_forward.w1.weight"].shape[0]),
    }
    name = preset_name(shapes, fields=shapes)
    if name is not None:
        overrides = {
            k: v
            for k, v in (("num_attention_heads", num_attention_heads), ("grid_size", grid_size))
            if v is not None
        }
        return IBQARConfig.from_preset(name, **overrides)
    if num_attention_heads is None or grid_size is None:
        found = ", ".join(f"{k}={v}" for k, v in shapes.items())
        raise ValueError(
            f"The weights ({found}) do not match a released size ({', '.join(IBQ_AR_PRESETS)}), and the number of "
            "attention heads and the grid size are not stored in weights. Pass the original training YAML with "
            "--config ORIGINAL.yaml (or num_attention_heads= and grid_size= from Python)."
        )
    return IBQARConfig(**shapes, num_attention_heads=num_attention_heads, grid_size=grid_size)


def load_ar_state_dict(state: Mapping[str, torch.Tensor], config: IBQARConfig) -> IBQARForImageGeneration:
    """Build the model on the meta device and adopt ``state`` (HF names) strictly, without a random init."""
    with torch.device("meta"):
        model = IBQARForImageGeneration(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    check_shapes(
        "IBQ AR model",
        expected,
        state,
        hint="If the architecture comes from a YAML, check that it is the config this checkpoint was trained with.",
    )
    return assign_state_dict(model, state, "AR model")


def ar_model_from_state_dict(
    state: Mapping[str, torch.Tensor],
    config_path: str | os.PathLike | None = None,
    *,
    num_attention_heads: int | None = None,
    grid_size: int | None = None,
) -> tuple[IBQARForImageGeneration, str | None]:
    """The AR model from its HF-named weights: architecture from the YAML or the shapes, the paper's sampling
    defaults for a released size. Returns ``(model, size)`` (``size`` is None for a non-released architecture)."""
    if config_path is not None:
        config = ar_config_from_original_yaml(config_path)
    else:
        config = infer_ar_config(state, num_attention_heads=num_attention_heads, grid_size=grid_size)
    model = load_ar_state_dict(state, config)
    size = preset_name(config)
    if size is not None:
        model.generation_config = recommended_generation_config(size)
    return model, size


def convert_ar_checkpoint(
    checkpoint_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    config_path: str | os.PathLike | None = None,
    *,
    num_attention_heads: int | None = None,
    grid_size: int | None = None,
    overwrite: bool = False,
) -> IBQARForImageGeneration:
    """Convert an original ``AR_256_*.ckpt`` into a ``save_pretrained`` directory and return the model.

    Writes ``model.safetensors``, ``config.json``, ``generation_config.json`` (the paper's temperature and CFG
    scale for a released size) and a model card (``README.md``) with the reported FID/IS for that size.

    Args:
        checkpoint_path: the original Lightning checkpoint (read with ``torch.load(weights_only=True)``).
        output_dir: destination directory (created if needed); must be new or empty unless ``overwrite``.
        config_path: the original training YAML; needed only when the weights are not a released size.
        num_attention_heads: head count for non-released sizes without a YAML (Python use).
        grid_size: token-grid side for non-released sizes without a YAML (Python use).
        overwrite: replace a non-empty ``output_dir`` as a whole (its old files are deleted); the folder is
            written to a staging folder and renamed into place either way.
    """
    checkpoint_path = Path(checkpoint_path)
    check_output_dir(output_dir, overwrite, inputs=[checkpoint_path, config_path])
    state, dropped = split_ar_state_dict(load_original_checkpoint(checkpoint_path))
    model, size = ar_model_from_state_dict(
        state, config_path, num_attention_heads=num_attention_heads, grid_size=grid_size
    )
    ignored = sum(k.startswith(IGNORED_PREFIXES) for k in dropped)
    logger.info(
        "Converted %d AR tensors; ignored %d first_stage_model.* tensors; dropped %d KV-cache buffers.",
        len(state),
        ignored,
        len(dropped) - ignored,
    )

    output_dir = Path(output_dir)
    with staged_output_dir(output_dir, overwrite) as staging:
        model.save_pretrained(
            staging, model_card={**converted_card_facts(checkpoint_path.name, size), "name": output_dir.name}
        )
    return model


def converted_card_facts(source_file: str, size: str | None) -> dict[str, Any]:
    """Model-card facts of a model or pipeline converted from ``source_file`` (an ``AR_256_*.ckpt``): for a released
    ``size``, its Hub repo and the authors' FID/IS (measured with the sampling defaults the converter saves)."""
    if size is None:
        return {"source_file": source_file}
    reported = REPORTED_RESULTS[size]
    return {
        "source_file": source_file,
        "size": size,
        "base_model": f"TencentARC/IBQ-AR-{size}",
        "reported": ReportedResults(
            "Reported by the authors for class-conditional ImageNet 256×256",
            ["Model", "Params", "FID (ADM, 50k)", "IS"],
            [[f"IBQ-AR-{size}", reported["params"], reported["fid"], reported["inception_score"]]],
        ),
    }
