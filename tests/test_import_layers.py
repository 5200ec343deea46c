"""The package's import layers (issue 12): every import inside ``src/ibq_hf`` points down, and nothing imports in a circle.

Read from the source with :mod:`ast`, so imports inside functions (the lazy ones that keep ``ibq-hf --help`` fast)
count like any other. The layers, bottom to top, are in :data:`LAYERS` and in docs/architecture.md; a new module
must be placed in one before this test passes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "ibq_hf"

#: (layer, group, module prefixes). A module may import modules of lower layers and of its own group; groups that
#: share a layer (training, evaluation, conversion) do not import each other. The longest prefix places a module.
LAYERS: list[tuple[int, str, tuple[str, ...]]] = [
    (0, "foundation", (
        "ibq_hf._lazy", "ibq_hf.errors", "ibq_hf.file_utils", "ibq_hf.imagenet_labels", "ibq_hf.class_labels",
        "ibq_hf.hub_utils", "ibq_hf.remote_code",
    )),
    (1, "quantizers", ("ibq_hf.models.quantizer", "ibq_hf.models.vanilla_quantizer")),
    (2, "models", ("ibq_hf.models",)),
    (3, "image processing and data", (
        "ibq_hf.image_processing", "ibq_hf.data", "ibq_hf.image_grid", "ibq_hf.sample_datasets", "ibq_hf.lpips",
    )),
    (4, "pipeline", ("ibq_hf.pipeline",)),
    (5, "training", ("ibq_hf.training",)),
    (5, "evaluation", ("ibq_hf.evaluation",)),
    (5, "conversion", ("ibq_hf.conversion",)),
    (6, "entry points", ("ibq_hf.cli", "ibq_hf")),
]  # fmt: skip


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def place(module: str) -> tuple[int, str]:
    best: tuple[int, int, str] | None = None
    for layer, group, prefixes in LAYERS:
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), layer, group)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS here and to docs/architecture.md")
    return best[1], best[2]


def package_imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The ibq_hf modules ``module`` imports, anywhere in the file (``from pkg import sub`` counts as ``pkg.sub``)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets = [target]
            targets += [
                f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in modules
            ]
        else:
            continue
        found.update(t for t in targets if t == "ibq_hf" or t.startswith("ibq_hf."))
    found.discard(module)
    # `import ibq_hf.a.b` also imports the packages above it; those are package faces, counted by their own files.
    return {t for t in found if t in modules}


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: package_imports(name, path, modules) for name, path in modules.items()}


def test_every_module_has_a_layer():
    for module in all_modules():
        place(module)


def test_every_import_points_down_or_stays_in_its_group():
    wrong = []
    for source, targets in import_graph().items():
        source_layer, source_group = place(source)
        for target in sorted(targets):
            target_layer, target_group = place(target)
            if target_layer > source_layer or (target_layer == source_layer and target_group != source_group):
                wrong.append(f"{source} ({source_group}) imports {target} ({target_group})")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components with more than one module (import cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycle():
    assert strongly_connected(import_graph()) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ],
)
def test_cycle_finder_finds_cycles(graph, expected):
    assert strongly_connected(graph) == expected


def test_checker_sees_relative_lazy_and_submodule_imports(tmp_path):
    """The reader resolves the import forms the package uses, so a wrong arrow cannot hide in one of them."""
    modules = {"ibq_hf.models": Path(), "ibq_hf.models.modeling_ar": Path(), "ibq_hf.cli": Path()}
    source = tmp_path / "__init__.py"
    source.write_text("def f():\n    from ..cli import main\n\nfrom . import modeling_ar\n")
    assert package_imports("ibq_hf.models", source, modules) == {"ibq_hf.cli", "ibq_hf.models.modeling_ar"}
    assert place("ibq_hf.models.quantizer") == (1, "quantizers")
    assert place("ibq_hf.models.modeling_ar") == (2, "models")
    with pytest.raises(AssertionError, match="in no layer"):
        place("elsewhere.module")
