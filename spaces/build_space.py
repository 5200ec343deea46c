"""Assemble a self-contained Hugging Face Space folder for the IBQ demo, and optionally push it.

``ibq_hf`` is not on PyPI, so the Space carries its source beside ``app.py`` (``python app.py`` puts that folder
first on ``sys.path``), together with the bundled digits pipeline so the Space works without any download::

    python spaces/build_space.py --out build/space                         # assemble only
    python spaces/build_space.py --out build/space --model user/ibq-256    # default to a Hub pipeline
    python spaces/build_space.py --out build/space --push-to-hub user/ibq-demo [--private]

The folder is complete on disk before anything is uploaded; the push is one ``upload_folder`` commit to a
``repo_type="space"`` repo created with ``space_sdk="gradio"`` if needed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

#: What the Space runs, copied verbatim from this folder.
SPACE_FILES = ("app.py", "requirements.txt", "README.md")
#: Folder name of the bundled pipeline inside the Space (app.py looks for it beside itself).
BUNDLED_DIRNAME = "ibq-digits"
#: Folder name of a local ``--model`` pipeline copied into the Space.
MODEL_DIRNAME = "model"
DEFAULT_MODEL_FILE = "default_model.txt"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
#: Subpackages the demo never imports; they need the training extras (datasets, accelerate). The evaluation
#: package is shipped: the demo's PSNR comes from it, and it imports without its extras.
PACKAGE_EXCLUDES = ("training",)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def package_source() -> Path:
    """The ``ibq_hf`` package folder to ship: the clone's ``src/ibq_hf``, else the installed package."""
    candidate = REPO / "src" / "ibq_hf"
    if (candidate / "__init__.py").is_file():
        return candidate
    import ibq_hf

    return Path(ibq_hf.__file__).resolve().parent


def bundled_model() -> Path:
    """The digits pipeline committed in the clone (``checkpoints/ibq-digits``)."""
    folder = REPO / "checkpoints" / BUNDLED_DIRNAME
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"The bundled pipeline is missing: {folder} has no model_index.json.")
    return folder


def _is_built_space(folder: Path) -> bool:
    return (folder / "app.py").is_file() and (folder / "ibq_hf").is_dir()


def build_space(out: str | Path, model: str | None = None, force: bool = False) -> Path:
    """Write the Space to ``out``: app files, ``ibq_hf/`` source, the bundled digits pipeline, LICENSE.

    ``model``: a local pipeline folder (copied to ``model/``) or a Hub repo id that becomes the Space's default
    model (``default_model.txt``; ``$IBQ_HF_SPACE_MODEL`` still overrides it). ``force`` replaces an earlier
    build in ``out``, never an unrelated non-empty folder.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not (force and _is_built_space(out)):
            hint = " (it is not a previous build)" if force else "; pass --force to replace a previous build"
            raise FileExistsError(f"{out} is not empty{hint}.")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in SPACE_FILES:
        shutil.copy2(HERE / name, out / name)
    if (REPO / "LICENSE").is_file():
        shutil.copy2(REPO / "LICENSE", out / "LICENSE")
    package = package_source()

    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = set(_IGNORE(folder, names))
        if Path(folder).resolve() == package.resolve():
            skipped |= {name for name in names if name in PACKAGE_EXCLUDES}
        return skipped

    shutil.copytree(package, out / "ibq_hf", ignore=ignore)
    shutil.copytree(bundled_model(), out / BUNDLED_DIRNAME, ignore=_IGNORE)
    if model:
        local = Path(model)
        if local.is_dir():
            if not (local / "model_index.json").is_file():
                raise FileNotFoundError(f"{local} is not a saved IBQPipeline (no model_index.json).")
            shutil.copytree(local, out / MODEL_DIRNAME, ignore=_IGNORE)
            default = MODEL_DIRNAME
        elif _REPO_ID.match(model):
            default = model
        else:
            raise ValueError(
                f"--model {model!r} is neither a local pipeline folder nor a Hub repo id (user/name)."
            )
        (out / DEFAULT_MODEL_FILE).write_text(default + "\n")
    return out


def push_space(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> Any:
    """Create (if needed) the Gradio Space ``repo_id`` and upload ``folder`` in one commit; returns its info."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    repo = api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    return api.upload_folder(
        repo_id=repo.repo_id,
        repo_type="space",
        folder_path=str(folder),
        commit_message=commit_message or "Update the IBQ demo Space (built by spaces/build_space.py)",
        ignore_patterns=["__pycache__/*", "**/__pycache__/*", "*.pyc"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Assemble (and optionally push) the IBQ demo Space.")
    parser.add_argument(
        "--out", required=True, help="Folder to write the Space to (empty or a previous build)."
    )
    parser.add_argument("--model", default=None, help="Default model: local pipeline folder or Hub repo id.")
    parser.add_argument("--force", action="store_true", help="Replace a previous build in --out.")
    parser.add_argument("--push-to-hub", metavar="USER/SPACE", default=None, help="Upload to this Space.")
    parser.add_argument("--private", action="store_true", help="Create the Space private.")
    parser.add_argument("--token", default=None, help="Hub token (default: the logged-in one).")
    args = parser.parse_args(argv)
    try:
        folder = build_space(args.out, model=args.model, force=args.force)
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Space assembled in {folder}")
    if args.push_to_hub:
        info = push_space(folder, args.push_to_hub, private=args.private or None, token=args.token)
        print(f"Pushed to https://huggingface.co/spaces/{args.push_to_hub} ({getattr(info, 'oid', info)})")
    else:
        print(f"Try it: cd {folder} && python app.py   (push with --push-to-hub USER/SPACE)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
