"""Shared pieces of the strict converters for the official SEED-Voken `.ckpt` files.

The original loaders use ``strict=False`` and silently drop whatever does not match. Everything here
does the opposite: every tensor of the source is either mapped or explicitly dropped, and any
missing, unexpected or mis-shaped key is an error that lists the keys.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointKeyError
from ..file_utils import fsync_dir, fsync_tree

__all__ = [
    "CheckpointKeyError",
    "OriginalCheckpoint",
    "OriginalConfig",
    "assign_state_dict",
    "check_output_dir",
    "check_shapes",
    "config_float",
    "config_int",
    "load_original_checkpoint",
    "load_original_yaml",
    "read_original_checkpoint",
    "read_original_yaml",
    "staged_output_dir",
]


@dataclass(frozen=True)
class OriginalCheckpoint:
    """What the converters read from an original ``.ckpt``.

    ``state`` is the flat ``{name: tensor}`` state dict. ``hyper_parameters`` are the model's constructor
    arguments when Lightning saved them (``checkpoint["hyper_parameters"]``, flattened from LightningCLI's
    ``{"class_path", "init_args"}`` form; ``_class_path`` names the class), else ``None``.
    """

    state: dict[str, torch.Tensor]
    hyper_parameters: dict[str, Any] | None = None


@dataclass(frozen=True)
class OriginalConfig:
    """The ``model`` section of an original YAML: ``class_path`` (``target`` in older configs; may be ``None``)
    and its ``init_args`` (``params``)."""

    class_path: str | None
    init_args: dict[str, Any]


def load_original_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an original ``.ckpt`` (Lightning layout or a raw state dict) with ``weights_only=True``.

    Returns the flat ``{name: tensor}`` state dict. Non-tensor entries of a Lightning wrapper
    (epoch, optimizer states, hyper-parameters, ...) are ignored because only ``state_dict`` is read; see
    :func:`read_original_checkpoint` for the hyper-parameters too.
    """
    return read_original_checkpoint(path).state


def read_original_checkpoint(path: str | os.PathLike) -> OriginalCheckpoint:
    """:func:`load_original_checkpoint` plus the Lightning ``hyper_parameters``, when the file has them.

    Hyper-parameters are plain containers (what ``weights_only=True`` accepts); anything else there is ignored,
    never executed. LightningCLI's ``{"class_path": ..., "init_args": {...}}`` form is flattened to the arguments
    with ``_class_path`` added, the form Lightning itself saves.
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
    hyper_parameters = None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        hyper_parameters = _flat_hyper_parameters(obj.get("hyper_parameters"))
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} does not hold a state dict (found {type(obj).__name__}).")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ValueError(f"{path} holds no tensors: it is not a model checkpoint.")
    return OriginalCheckpoint(state=state, hyper_parameters=hyper_parameters)


def _flat_hyper_parameters(hparams: Any) -> dict[str, Any] | None:
    """Lightning's saved constructor arguments as one flat dict (``None`` when absent or not a mapping)."""
    if not isinstance(hparams, Mapping) or not hparams:
        return None
    flat = {str(k): v for k, v in hparams.items()}
    init_args = flat.get("init_args")
    if isinstance(init_args, Mapping) and "class_path" in flat:  # {"class_path", "init_args"} (LightningCLI)
        flat = {"_class_path": flat["class_path"], **{str(k): v for k, v in init_args.items()}}
    return flat


def load_original_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read an original SEED-Voken YAML config and return its ``model.init_args`` (or ``model.params``).

    Parsed with ``yaml.safe_load``: a syntax error or a tag that would construct Python objects
    (``!!python/object...``) is a ``ValueError`` naming the file and the line, never executed.
    """
    return read_original_yaml(path).init_args


def read_original_yaml(path: str | os.PathLike) -> OriginalConfig:
    """:func:`load_original_yaml` plus the model's ``class_path`` (``target``), which is reported, not trusted:
    the Pretrain tokenizers' configs name ``ibqgan.IBQ`` for a model built by ``ibqgan_pretrain.IBQ``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Config file not found: {path}. Pass the original training YAML with --config."
        )
    try:
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(
            f"{path} is not a readable YAML config{where}: {problem}. Only plain YAML is accepted (no "
            "!!python tags); pass the original SEED-Voken training config."
        ) from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text YAML file; pass the original training config.") from None
    if not isinstance(cfg, Mapping) or "model" not in cfg:
        raise ValueError(f"{path} is not an original SEED-Voken config: it has no top-level 'model' section.")
    model = cfg["model"]
    args = (model.get("init_args") or model.get("params")) if isinstance(model, Mapping) else None
    if not isinstance(args, Mapping):
        raise ValueError(f"{path}: 'model' has neither 'init_args' nor 'params'.")
    class_path = model.get("class_path") or model.get("target")
    return OriginalConfig(
        class_path=class_path if isinstance(class_path, str) else None, init_args=dict(args)
    )


def config_int(value: Any, name: str, source: str) -> int:
    """An integer field of an original config; refuses strings, floats and booleans with a message naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"{source}: {name} must be an integer, got {value!r} ({type(value).__name__}); write it without "
            "quotes or decimals."
        )
    return value


def config_float(value: Any, name: str, source: str) -> float:
    """A real-number field of an original config. Ints are fine, and so are numeric strings: YAML 1.1 reads
    ``1e-5`` (no decimal point) as the string ``"1e-5"``. Other strings, booleans, NaN and inf are errors."""
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value)
    if number is None or not math.isfinite(number):
        raise ValueError(f"{source}: {name} must be a finite number, got {value!r} ({type(value).__name__}).")
    return number


def check_output_dir(
    output_dir: str | os.PathLike, overwrite: bool, inputs: Sequence[str | os.PathLike | None] = ()
) -> Path:
    """Refuse to convert into a non-empty folder unless ``overwrite``; called before any work is done.

    With ``overwrite`` the folder is replaced as a whole (see :func:`staged_output_dir`), so it must not hold the
    converter's own inputs (``inputs``: the checkpoint, the YAML), which would be deleted with it.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"--output {output_dir} exists and is not a folder; choose a folder path.")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"--output {output_dir} is not empty. Converting into it would mix the new files with the old "
                "ones; choose a new or empty folder, or pass --overwrite (overwrite=True) to replace its whole "
                "contents with the converted model."
            )
        resolved = output_dir.resolve()
        for source in inputs:
            if source is not None and resolved in Path(source).resolve().parents:
                raise ValueError(
                    f"--overwrite would delete {source}, which lies inside --output {output_dir}; write the "
                    "converted model to another folder."
                )
    return output_dir


@contextlib.contextmanager
def staged_output_dir(output_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder next to ``output_dir``; on success, publish it as ``output_dir`` by renames.

    Like the training checkpoints (``ibq_hf.training.checkpointing``): files are written to
    ``<parent>/.<name>.staging-<id>``, flushed to disk, and only then renamed into place, so a failed or
    interrupted conversion never leaves a half-written or mixed folder (stale shards, an old ``.index.json``, the
    user's ``README.md``). An existing ``output_dir`` is moved aside first and deleted after the swap, so with
    ``overwrite`` the folder holds exactly the new artefact's files. On error the staging folder is removed and
    ``output_dir`` is left untouched.

    When the folder itself cannot be renamed (a mount point) or its parent is not writable, the staging folder
    lives inside ``output_dir`` and the entries are moved one by one: the result is the same, but a crash during
    those moves can leave a mix.
    """
    output_dir = check_output_dir(output_dir, overwrite)
    parent = output_dir.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    staging = parent / f".{output_dir.name}.staging-{tag}"
    try:
        staging.mkdir()
    except OSError:
        if not output_dir.is_dir():
            raise
        staging = output_dir / f".staging-{tag}"  # parent not writable: stage inside the existing folder
        staging.mkdir()
    try:
        yield staging
        fsync_tree(staging)
        if staging.parent == output_dir or not _swap(
            staging, output_dir, parent / f".{output_dir.name}.replaced-{tag}"
        ):
            _publish_in_place(staging, output_dir, tag)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap(staging: Path, output_dir: Path, old: Path) -> bool:
    """Rename ``staging`` to ``output_dir`` (an existing one is renamed to ``old`` first, then deleted).

    Returns False, with nothing changed, when ``output_dir`` cannot be renamed (e.g. it is a mount point).
    """
    replaced = output_dir.exists()
    if replaced:
        try:
            os.replace(output_dir, old)
        except OSError:
            return False
    try:
        os.replace(staging, output_dir)
    except BaseException:
        if replaced:
            os.replace(old, output_dir)  # put the user's folder back
        raise
    fsync_dir(output_dir.absolute().parent)
    if replaced:
        shutil.rmtree(old, ignore_errors=True)
    return True


def _publish_in_place(staging: Path, output_dir: Path, tag: str) -> None:
    """Replace the contents of ``output_dir`` by those of ``staging``, entry by entry (not atomic)."""
    aside = output_dir / f".replaced-{tag}"
    aside.mkdir()
    for entry in list(output_dir.iterdir()):
        if entry not in (aside, staging):
            os.replace(entry, aside / entry.name)
    for entry in list(staging.iterdir()):
        shutil.move(os.fspath(entry), os.fspath(output_dir / entry.name))
    fsync_dir(output_dir)
    shutil.rmtree(aside, ignore_errors=True)


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
