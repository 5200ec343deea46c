"""Shared pieces of the strict converters for the official SEED-Voken `.ckpt` files.

The original loaders use ``strict=False`` and silently drop whatever does not match. Everything here
does the opposite: every tensor of the source is either mapped or explicitly dropped, and any
missing, unexpected or mis-shaped key is an error that lists the keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointKeyError

__all__ = [
    "CheckpointKeyError",
    "assign_state_dict",
    "check_shapes",
    "load_original_checkpoint",
    "load_original_yaml",
]


def load_original_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an original ``.ckpt`` (Lightning layout or a raw state dict) with ``weights_only=True``.

    Returns the flat ``{name: tensor}`` state dict. Non-tensor entries of a Lightning wrapper
    (epoch, optimizer states, ...) are ignored because only ``state_dict`` is read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Checkpoint file not found: {path}. Pass the path of the original .ckpt file."
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler raises a variety of types
        raise ValueError(
            f"Could not read {path} with torch.load(weights_only=True): {err}. "
            "Only plain tensor checkpoints are accepted (arbitrary pickles are never executed); "
            "re-save the state dict with torch.save(model.state_dict(), path) if this is a trusted file."
        ) from err
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} does not hold a state dict (found {type(obj).__name__}).")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ValueError(f"{path} holds no tensors: it is not a model checkpoint.")
    return state


def load_original_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read an original SEED-Voken YAML config and return its ``model.init_args`` (or ``model.params``)."""
    import yaml

    with open(path, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    if not isinstance(cfg, Mapping) or "model" not in cfg:
        raise ValueError(f"{path} is not an original SEED-Voken config: it has no top-level 'model' section.")
    model = cfg["model"]
    args = model.get("init_args") or model.get("params")
    if not isinstance(args, Mapping):
        raise ValueError(f"{path}: 'model' has neither 'init_args' nor 'params'.")
    return dict(args)


def check_shapes(
    what: str,
    expected: Mapping[str, torch.Size | tuple[int, ...]],
    provided: Mapping[str, torch.Tensor],
    hint: str = "",
) -> None:
    """Raise :class:`CheckpointKeyError` unless ``provided`` has exactly the keys and shapes of ``expected``."""
    missing = set(expected) - set(provided)
    unexpected = set(provided) - set(expected)
    mismatched = [
        (k, tuple(provided[k].shape), tuple(expected[k]))
        for k in set(expected) & set(provided)
        if tuple(provided[k].shape) != tuple(expected[k])
    ]
    if missing or unexpected or mismatched:
        raise CheckpointKeyError(what, missing, unexpected, mismatched, hint)


def assign_state_dict(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str
) -> torch.nn.Module:
    """Adopt ``state`` into a model built on the meta device (no random init), strictly; returns it in eval mode."""
    model.load_state_dict({k: v.contiguous() for k, v in state.items()}, strict=True, assign=True)
    on_meta = [name for name, tensor in model.state_dict().items() if tensor.is_meta]
    if on_meta:
        raise RuntimeError(f"Conversion left {what} tensors on the meta device: {on_meta}.")
    return model.eval()
