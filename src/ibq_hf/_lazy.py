"""Lazy package namespaces (the transformers / diffusers ``_LazyModule`` idea, as module ``__getattr__``).

``import ibq_hf`` must stay cheap: the command line (``ibq-hf --help``) lives inside the package, and torch,
transformers and diffusers together take seconds to import. A package ``__init__`` therefore lists its public
names per defining module and resolves each on first attribute access; type checkers and the layering test read
the same imports under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` exporting ``{".module": ["Name", ...]}``.

    The first access of a name imports its module (relative to ``package``) and caches the value on the package,
    so later accesses are plain attribute lookups. The package keeps a literal ``__all__`` (its public API, also
    for linters); a test checks that it lists exactly the lazy names and the ones defined eagerly.
    """
    origin = {name: module for module, names in exports.items() for name in names}
    # A name exported from a submodule of the same name (``evaluation.inception_score``, the function, lives in
    # ``evaluation/inception_score.py``): importing that submodule binds the module to the package attribute, which
    # would hide the function. Keep the exported object there instead, as an eager ``from .x import x`` would.
    shadowed = {name for name, module in origin.items() if module == f".{name}"}
    if shadowed:
        sys.modules[package].__class__ = _keeps_exports_over_submodules(shadowed)

    def __getattr__(name: str) -> Any:
        module_name = origin.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module_name, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *origin})

    return __getattr__, __dir__


def _keeps_exports_over_submodules(names: set[str]) -> type[types.ModuleType]:
    class _Package(types.ModuleType):
        def __setattr__(self, name: str, value: Any) -> None:
            if (
                name in names
                and isinstance(value, types.ModuleType)
                and value.__name__ == f"{self.__name__}.{name}"
            ):
                value = getattr(value, name)
            super().__setattr__(name, value)

    return _Package
