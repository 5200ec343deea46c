"""Strict conversion of an official AR checkpoint (``AR_256_{B,L,XL,XXL}.ckpt``) into a whole :class:`IBQPipeline`.

One AR checkpoint holds both halves: ``transformer.*`` (the AR model) and ``first_stage_model.*`` (the EMA
weights of the 16384-code tokenizer it was trained with, under the plain generator names). The file is read
once; each half goes through the same strict mapping as its own converter (every tensor mapped or dropped
on purpose, any other key, missing key or shape mismatch is an error listing the keys).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..models.configuration_ar import preset_name
from ..models.modeling_vq import IBQVQModel
from ..pipeline import IBQPipeline
from .ar import (
    IGNORED_PREFIXES,
    ar_model_from_state_dict,
    converted_card_facts,
    split_ar_state_dict,
)
from .common import (
    CheckpointKeyError,
    assign_state_dict,
    check_output_dir,
    load_original_checkpoint,
    staged_output_dir,
)
from .tokenizer import EMA_PREFIX, EMBEDDED_PREFIX, infer_config_from_weights, select_generator_weights

__all__ = ["convert_pipeline_checkpoint", "pipeline_from_original_state_dict"]

logger = logging.getLogger(__name__)


def _tokenizer_from_embedded(state: dict[str, torch.Tensor], resolution: int) -> IBQVQModel:
    embedded = {k[len(EMBEDDED_PREFIX) :]: v for k, v in state.items() if k.startswith(EMBEDDED_PREFIX)}
    if not embedded:
        raise CheckpointKeyError(
            "IBQ pipeline (AR checkpoint with an embedded tokenizer)",
            missing=[EMBEDDED_PREFIX + "*"],
            hint="The file has no first_stage_model.* tensors, so it does not carry its tokenizer. Convert the AR "
            "model with `ibq-hf convert ar` and the tokenizer with `ibq-hf convert tokenizer`, then build "
            "IBQPipeline(vqvae=..., transformer=...) from the two.",
        )
    # The released files store the EMA tokenizer under the plain names: those are the weights the AR model was
    # trained with, so they are the ones converted. Shadows, if a file has any, are reported, not used.
    shadows = sum(k.startswith(EMA_PREFIX) for k in embedded)
    if shadows:
        logger.warning(
            "Ignoring %d first_stage_model.model_ema.* tensors: the AR model was trained with the plain "
            "first_stage_model.* weights, which are converted.",
            shadows,
        )
    with torch.device("meta"):
        vqvae = IBQVQModel(**infer_config_from_weights(embedded, resolution=resolution))
    weights, _ = select_generator_weights(embedded, vqvae, use_ema=False)
    return assign_state_dict(vqvae, weights, "tokenizer")


def pipeline_from_original_state_dict(
    state: dict[str, torch.Tensor],
    config_path: str | os.PathLike | None = None,
    *,
    resolution: int = 256,
    num_attention_heads: int | None = None,
    grid_size: int | None = None,
) -> IBQPipeline:
    """Build the pipeline from an already loaded original state dict (``transformer.*`` + ``first_stage_model.*``).

    Args:
        state: the flat state dict of an AR checkpoint (as returned by ``load_original_checkpoint``).
        config_path: the original AR training YAML; needed only when the AR weights are not a released size.
        resolution: tokenizer training resolution, used to place its attention layers (256 for the releases).
        num_attention_heads: AR head count, for non-released sizes without a YAML.
        grid_size: AR token-grid side, for non-released sizes without a YAML.
    """
    ar_state, dropped = split_ar_state_dict(state)  # first: its errors say when this is not an AR checkpoint
    vqvae = _tokenizer_from_embedded(state, resolution)
    transformer, _ = ar_model_from_state_dict(
        ar_state, config_path, num_attention_heads=num_attention_heads, grid_size=grid_size
    )
    kv_buffers = sum(not k.startswith(IGNORED_PREFIXES) for k in dropped)
    logger.info(
        "Converted %d AR tensors and %d tokenizer tensors; dropped %d KV-cache buffers.",
        len(ar_state),
        len(vqvae.state_dict()),
        kv_buffers,
    )
    # IBQPipeline.__init__ refuses a tokenizer whose codebook differs from the AR vocabulary.
    return IBQPipeline(vqvae=vqvae, transformer=transformer)


def convert_pipeline_checkpoint(
    checkpoint_path: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    config_path: str | os.PathLike | None = None,
    *,
    resolution: int = 256,
    num_attention_heads: int | None = None,
    grid_size: int | None = None,
    overwrite: bool = False,
) -> IBQPipeline:
    """Convert one official AR checkpoint into an :class:`IBQPipeline` and save it (read once, strictly).

    Writes ``model_index.json``, ``vqvae/`` and ``transformer/`` (safetensors; the transformer's
    ``generation_config.json`` holds the paper's sampling settings for a released size) and a model card with
    the reported FID/IS when the size is a released one. Nothing is written when ``output_dir`` is ``None``.
    ``output_dir`` must be new or empty unless ``overwrite``, which replaces its whole contents; either way the
    folder is written to a staging folder next to it and renamed into place only when complete.

    Returns:
        The converted pipeline (``IBQPipeline.from_pretrained(output_dir)`` loads the same weights).
    """
    checkpoint_path = Path(checkpoint_path)
    if output_dir is not None:
        check_output_dir(output_dir, overwrite, inputs=[checkpoint_path, config_path])
    state = load_original_checkpoint(checkpoint_path)
    pipe = pipeline_from_original_state_dict(
        state,
        config_path,
        resolution=resolution,
        num_attention_heads=num_attention_heads,
        grid_size=grid_size,
    )
    del state
    if output_dir is not None:
        size = preset_name(pipe.transformer.config)
        card = {**converted_card_facts(checkpoint_path.name, size), "name": Path(output_dir).name}
        with staged_output_dir(output_dir, overwrite) as staging:
            pipe.save_pretrained(staging, model_card=card)
    return pipe
