# Shipped by ibq-hf 0.1.0 from ibq_hf/models/loading.py (generated at save time; edit the package, not this file).
"""The front door of every ``from_pretrained``: where the weights are, and how loud loading them is.

diffusers and transformers treat any string that is not an existing folder as a Hub repo id, so a mistyped local
path used to come back as a Hub problem ("Couldn't connect to the Hub", the repo-id naming rules, or 25 s of
retries). :func:`resolve_pretrained` decides first:

* a path that looks local (``./x``, ``../x``, ``/x``, a home-folder path, a ``Path``, or a name whose parent
  folder exists) must exist → otherwise :class:`~ibq_hf.errors.ModelFolderNotFoundError` ("folder not found:
  ...");
* anything else is a repo id; when the Hub cannot be reached (offline, ``local_files_only``) and the repo is not
  in the local cache → :class:`~ibq_hf.errors.HubModelUnavailableError` saying so and how to point at a folder.
  When the Hub is unreachable but the repo is cached, loading continues from the cache without retries.

:func:`quiet_small_load` hides the "Loading pipeline components" / "Loading weights" bars of loads that finish in
a blink (weights under :data:`LONG_LOAD_BYTES` on disk); large or downloading loads keep them.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .ibq_errors_0_1_0 import HubModelUnavailableError, ModelFolderNotFoundError

__all__ = ["LONG_LOAD_BYTES", "looks_local", "quiet_small_load", "resolve_pretrained"]

logger = logging.getLogger(__name__)

#: Loads with at least this many bytes of weights (or of unknown size: a download) keep their progress bars.
LONG_LOAD_BYTES = 1 << 30

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def looks_local(name: str | os.PathLike) -> bool:
    """True for what can only be meant as a path: ``./x``, ``../x``, ``/x``, a home-folder path, a ``Path``, or
    ``a/b`` when the folder ``a`` exists (a Hub id ``owner/name`` rarely shares its owner with a folder next to
    you)."""
    if not isinstance(name, str):
        return True
    if name.startswith(("./", "../", "/", "~", ".\\", "..\\")) or name in (".", "..") or os.path.isabs(name):
        return True
    parent = os.path.dirname(name)
    return bool(parent) and os.path.isdir(os.path.expanduser(parent))


def _folder_not_found(name: str | os.PathLike, path: Path, what: str) -> ModelFolderNotFoundError:
    given = os.fspath(name)
    message = f"folder not found: {given}" + (f" ({path})" if given != str(path) else "") + "."
    parent = path.parent
    if parent.is_dir():
        siblings = [p.name for p in parent.iterdir() if p.is_dir()]
        close = difflib.get_close_matches(path.name, siblings, n=3, cutoff=0.6)
        if close:
            message += " Did you mean " + " or ".join(
                repr(os.path.join(os.path.dirname(given), c)) for c in close
            )
            message += "?"
    else:
        missing = parent
        while not missing.parent.is_dir() and missing.parent != missing:
            missing = missing.parent
        message += f" Its parent folder {missing} does not exist either."
    return ModelFolderNotFoundError(
        f"{message} Expected a folder saved with save_pretrained (or written by `ibq-hf convert`) holding the "
        f"{what}. A model on the Hub is named by its repo id, owner/name."
    )


def _check_folder(
    name: str | os.PathLike, path: Path, what: str, config_names: tuple[str, ...], subfolder: str | None
) -> None:
    if not path.exists():
        raise _folder_not_found(name, path, what)
    if not path.is_dir():
        raise ModelFolderNotFoundError(
            f"{os.fspath(name)} is a file, not a folder: pass the folder that holds the {what} (its "
            f"{config_names[0]} and weights), e.g. {path.parent}."
        )
    folder = path / subfolder if subfolder else path
    if any((folder / config_name).is_file() for config_name in config_names):
        return
    where = f"{path}/{subfolder}" if subfolder else str(path)
    hint = ""
    if (path / "model_index.json").is_file() and not subfolder:
        hint = (
            " It is a pipeline folder: load a component with subfolder='vqvae' or subfolder='transformer', or the "
            "whole pipeline with IBQPipeline.from_pretrained."
        )
    elif config_names == ("model_index.json",) and (path / "config.json").is_file():
        hint = (
            " It holds a single model (config.json), not a pipeline: load it with IBQVQModel or "
            "IBQARForImageGeneration.from_pretrained."
        )
    raise ModelFolderNotFoundError(
        f"{where} has no {' or '.join(config_names)}, so it is not a saved {what}.{hint}"
    )


def _cached_file(repo_id: str, filename: str, kwargs: dict[str, Any]) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        repo_id, filename, cache_dir=kwargs.get("cache_dir"), revision=kwargs.get("revision")
    )
    return found if isinstance(found, str) else None


def _unavailable(repo_id: str, what: str, why: str) -> HubModelUnavailableError:
    local = ""
    if not os.path.exists(repo_id):
        local = f" There is no folder {repo_id} here either"
        parent = os.path.dirname(repo_id) or "."
        if os.path.isdir(parent):
            siblings = [entry.name for entry in os.scandir(parent) if entry.is_dir()]
            close = difflib.get_close_matches(os.path.basename(repo_id), siblings, n=1, cutoff=0.6)
            if close:
                local += f" (did you mean ./{os.path.normpath(os.path.join(parent, close[0]))}?)"
        local += "."
    return HubModelUnavailableError(
        f"{repo_id!r} is read as a Hugging Face Hub repo id, and {why}.{local} If the {what} is on this machine, "
        "pass its folder path instead (starting with ./ or /, e.g. ./my-model); otherwise download it once while "
        f"online (`hf download {repo_id}`) and load it again."
    )


def resolve_pretrained(
    name_or_path: str | os.PathLike | None,
    what: str,
    config_name: str | tuple[str, ...],
    kwargs: dict[str, Any],
) -> str | os.PathLike | None:
    """Check ``name_or_path`` before diffusers / transformers see it; returns what to pass them.

    ``what`` names the artefact in messages ("IBQ pipeline"), ``config_name`` is its marker file
    (``model_index.json`` or ``config.json``, looked up under ``kwargs["subfolder"]``; a tuple accepts any).
    ``kwargs`` (the ``from_pretrained`` keyword arguments) may be updated in place: ``local_files_only=True`` when
    the Hub cannot be reached but the repo is cached. A local path comes back with the home folder expanded.
    """
    if name_or_path is None:
        return None
    subfolder = kwargs.get("subfolder") or None
    config_names = (config_name,) if isinstance(config_name, str) else tuple(config_name)
    if looks_local(name_or_path) or os.path.isdir(os.fspath(name_or_path)):
        path = Path(os.path.expanduser(os.fspath(name_or_path)))
        _check_folder(name_or_path, path.absolute(), what, config_names, subfolder)
        return os.fspath(path) if isinstance(name_or_path, str) else path

    from huggingface_hub import constants
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    repo_id = os.fspath(name_or_path)
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise ModelFolderNotFoundError(
            f"{repo_id!r} is neither an existing folder nor a valid Hub repo id (owner/name: letters, digits, "
            "'-', '_', '.'); check the path."
        ) from None
    markers = [f"{subfolder}/{name}" if subfolder else name for name in config_names]
    cached = any(_cached_file(repo_id, marker, kwargs) is not None for marker in markers)
    if kwargs.get("local_files_only") or constants.is_offline_mode():
        if not cached:
            reason = "local_files_only=True" if kwargs.get("local_files_only") else "HF_HUB_OFFLINE is set"
            raise _unavailable(
                repo_id, what, f"it is not in the local Hub cache while the Hub is off ({reason})"
            )
        return repo_id

    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        HfApi().model_info(repo_id, revision=kwargs.get("revision"), token=kwargs.get("token"), timeout=10)
    except RepositoryNotFoundError:
        raise _unavailable(
            repo_id, what, "the Hub has no such repo (or it is private: log in with `hf auth login`)"
        ) from None
    except RevisionNotFoundError:
        raise _unavailable(repo_id, what, f"it has no revision {kwargs.get('revision')!r}") from None
    except HfHubHTTPError:
        pass  # reachable; gated repos and the like are the library's to report
    except Exception as error:  # network failures come as many types (httpx, OSError, timeouts)
        if not cached:
            raise _unavailable(
                repo_id, what, f"the Hub cannot be reached ({error}) and the repo is not in the local cache"
            ) from None
        logger.info("The Hub cannot be reached (%s); loading %s from the local cache.", error, repo_id)
        kwargs["local_files_only"] = True
    return repo_id


def _weight_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.suffix in _WEIGHT_SUFFIXES and p.is_file())


def _load_size(location: str | os.PathLike | None, kwargs: dict[str, Any]) -> int | None:
    """Bytes of weights a load reads from disk, or ``None`` when unknown (a download)."""
    if location is None:
        return None
    subfolder = kwargs.get("subfolder") or ""
    path = Path(os.fspath(location))
    if path.is_dir():
        return _weight_bytes(path / subfolder)
    repo_id = os.fspath(location)
    for marker in ("model_index.json", "config.json"):
        cached = _cached_file(repo_id, f"{subfolder}/{marker}" if subfolder else marker, kwargs)
        if cached is not None:
            snapshot = Path(cached).parent.parent if subfolder else Path(cached).parent
            return _weight_bytes(snapshot / subfolder)
    return None


@contextlib.contextmanager
def quiet_small_load(location: str | os.PathLike | None, kwargs: dict[str, Any]) -> Iterator[None]:
    """Hide diffusers' and transformers' loading bars while a small load runs (restored afterwards)."""
    size = _load_size(location, kwargs)
    if size is None or size >= LONG_LOAD_BYTES:
        yield
        return
    # Only libraries already imported can draw a bar here (a pipeline's transformers component toggles its own).
    loaded = [sys.modules.get(name) for name in ("diffusers.utils.logging", "transformers.utils.logging")]
    switched = [m for m in loaded if m is not None and m.is_progress_bar_enabled()]
    for module in switched:
        module.disable_progress_bar()
    try:
        yield
    finally:
        for module in switched:
            module.enable_progress_bar()
