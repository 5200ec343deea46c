"""Helpers for the demo tests: load ``spaces/*.py`` as modules (the folder is not a package).

Not a ``conftest.py``: a second module named ``conftest`` would replace the root one that other tests import
their tiny configs from. The test modules define their fixtures with these functions.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
SPACES = REPO / "spaces"
BUNDLED_MODEL = REPO / "checkpoints" / "ibq-digits"


def load_module(path: Path, name: str) -> ModuleType:
    """Import a script by path under a unique module name (``app`` is too generic to put on sys.path)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_app() -> ModuleType:
    """``spaces/app.py`` (needs gradio)."""
    return load_module(SPACES / "app.py", "ibq_space_app")


def load_build_space() -> ModuleType:
    """``spaces/build_space.py``."""
    return load_module(SPACES / "build_space.py", "ibq_space_build")
