# Shipped by ibq-hf 0.1.0 from ibq_hf/remote_code.py (generated at save time; edit the package, not this file).
"""The code that travels with saved weights, so stock diffusers / transformers load them without ibq-hf.

``save_pretrained`` / ``push_to_hub`` (through :class:`~ibq_hf.hub_utils.HubSaveMixin`) call :func:`write_code`:
it copies the package's own modules that an artefact needs next to its weights and points the loaders at them
(``auto_map`` in ``config.json``, ``[module, class]`` entries in ``model_index.json``). Then

* ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` builds the shipped ``IBQPipeline``,
* ``transformers.AutoModel.from_pretrained(folder / "transformer", trust_remote_code=True)`` the AR model,
* ``diffusers.AutoModel.from_pretrained(folder / "vqvae", trust_remote_code=True)`` the tokenizer.

The shipped files are the package modules rewritten at save time, nothing else:

* ``from ..errors import X`` / ``from .quantizer import X`` become flat relative imports of sibling files
  (diffusers copies every local folder's remote modules into one flat package);
* each file is named ``ibq_<module>_<version>.py`` (``ibq_modeling_ar_0_1_0.py``): two folders saved by
  different ibq-hf versions never share a file name, so one process can load both;
* two markers (comments starting ``# shipped code``, see :data:`_MARK`) adapt a module: a block between the
  ``begin package only`` and ``end package only`` marker lines is dropped (the transformers Auto-class
  registration, aliases of old module paths), and a line ending in the marker followed by code is replaced by that
  code (the ImageNet names come from a generated module ``imagenet_classes`` instead of package data);
* diffusers copies only the files a module imports itself, so each file ends with imports of the rest of the
  modules it needs, directly or not.

The shipped modules import only the standard library, torch, transformers, diffusers, safetensors,
huggingface_hub (and numpy and PIL, which diffusers installs) and each other; ``tests/test_remote_code.py`` checks
that none imports ``ibq_hf``. The package itself never imports a shipped file: its ``from_pretrained`` reads the
``[module, class]`` entries back as its own modules (:func:`package_module`).

When this module is itself a shipped copy (a model loaded with ``trust_remote_code=True`` and saved again), its
siblings are already the shipped files and are copied as they are.

Foundation layer: standard library only.
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "ARTEFACTS",
    "PIPELINE_COMPONENTS",
    "package_module",
    "package_version",
    "shipped_files",
    "shipped_name",
    "write_code",
]

#: What each artefact ships: its entry modules (the loaders' targets) and the classes the configs point to.
ARTEFACTS: dict[str, dict[str, str]] = {
    # artefact: {class name: package module (relative to ibq_hf)}
    "tokenizer": {"IBQVQModel": "models.modeling_vq"},
    "ar": {"IBQARConfig": "models.configuration_ar", "IBQARForImageGeneration": "models.modeling_ar"},
    "pipeline": {"IBQPipeline": "pipeline"},
}
#: The pipeline's components: subfolder → artefact.
PIPELINE_COMPONENTS = {"vqvae": "tokenizer", "transformer": "ar"}
#: Stem (before the version) of the module a pipeline's ``model_index.json`` names for each component artefact.
_COMPONENT_ENTRY = {"tokenizer": "tokenizer_component", "ar": "ar_component"}
#: transformers Auto classes the AR ``auto_map`` names (``AutoModelForCausalLM`` as the package registers it).
_AR_AUTO_MAP = {
    "AutoConfig": "IBQARConfig",
    "AutoModel": "IBQARForImageGeneration",
    "AutoModelForCausalLM": "IBQARForImageGeneration",
}

_PREFIX = "ibq_"
_IMAGENET_MODULE = "imagenet_classes"  # generated from the package data file, not a package module
_IMAGENET_DATA = "imagenet_classes.tsv"
# Spelled in two parts so that this file, shipped too, carries no marker itself.
_MARK = "# shipped " + "code:"
_DROP_BEGIN = f"{_MARK} begin package only"
_DROP_END = f"{_MARK} end package only"
_REPLACE = re.compile(rf"^(?P<indent>\s*)(?P<code>\S.*?)\s*{_MARK} (?P<replacement>.+)$")
_FLAT_IMPORT = re.compile(r"^\s*from\s+\.(\w+)\s+import", flags=re.MULTILINE)
_OWN_DIR = Path(__file__).resolve().parent
#: True inside the package; False when this file is a shipped copy (a flat folder of ``ibq_*`` files).
_IN_PACKAGE = __name__.split(".")[0] == "ibq_hf"


# ---------------------------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------------------------


def package_version() -> str:
    """The ibq-hf version the shipped names carry (the installed distribution's, else the package's own)."""
    if not _IN_PACKAGE:
        return _own_suffix()
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ibq-hf")
    except PackageNotFoundError:  # running from a source tree that is not installed
        match = re.search(r'^__version__ = "([^"]+)"', (_OWN_DIR / "__init__.py").read_text(), re.MULTILINE)
        if match is None:
            raise RuntimeError("Cannot tell the ibq-hf version: reinstall the package.") from None
        return match.group(1)


def _suffix(version: str) -> str:
    return re.sub(r"\W", "_", version)


def _own_suffix() -> str:
    stem = __name__.rsplit(".", 1)[-1]
    return stem[len(f"{_PREFIX}remote_code_") :]


def shipped_name(module: str, version: str | None = None) -> str:
    """File stem (no ``.py``) of package module ``module`` (``"models.modeling_ar"``) as shipped by ``version``."""
    version = package_version() if version is None else version
    return f"{_PREFIX}{module.rsplit('.', 1)[-1]}_{_suffix(version)}"


def package_module(shipped: str) -> str | None:
    """The package module (``"ibq_hf.models.modeling_ar"``) a shipped file stem stands for, or ``None``.

    Any version's stem maps to today's module: the package loads a folder with its own code, whichever ibq-hf
    version saved it.
    """
    if not isinstance(shipped, str) or not shipped.startswith(_PREFIX):
        return None
    for artefact, stem in _COMPONENT_ENTRY.items():
        if re.fullmatch(rf"{_PREFIX}{stem}_\w+", shipped):
            (module,) = {m for c, m in ARTEFACTS[artefact].items() if not c.endswith("Config")}
            return f"ibq_hf.{module}"
    for classes in ARTEFACTS.values():
        for module in classes.values():
            short = module.rsplit(".", 1)[-1]
            if re.fullmatch(rf"{_PREFIX}{short}_\w+", shipped):
                return f"ibq_hf.{module}"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Rewriting the package's modules
# ---------------------------------------------------------------------------------------------------------------


def _package_source(module: str) -> str:
    if module == _IMAGENET_MODULE:
        table = (_OWN_DIR / _IMAGENET_DATA).read_text(encoding="utf-8")
        return (
            '"""The ImageNet-1k class table (``ibq_hf/imagenet_classes.tsv``), embedded: shipped code has no package '
            'data."""\n\n'
            f"IMAGENET_CLASSES_TSV = {table!r}\n"
        )
    return (_OWN_DIR / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8")


def _apply_markers(text: str, where: str) -> str:
    """Drop package-only blocks and apply the replacement markers."""
    out: list[str] = []
    dropping = False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped == _DROP_BEGIN:
            dropping = True
            continue
        if stripped == _DROP_END:
            if not dropping:
                raise ValueError(f"{where}: '{_DROP_END}' without '{_DROP_BEGIN}'.")
            dropping = False
            continue
        if dropping:
            continue
        match = _REPLACE.match(line.rstrip("\n"))
        out.append(f"{match['indent']}{match['replacement']}\n" if match else line)
    if dropping:
        raise ValueError(f"{where}: '{_DROP_BEGIN}' is never closed.")
    return "".join(out)


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """Absolute module (relative to ibq_hf) of a relative import in ``module``."""
    base = module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _is_module(name: str) -> bool:
    return name == _IMAGENET_MODULE or (_OWN_DIR / (name.replace(".", "/") + ".py")).is_file()


def _rewrite(module: str, version: str) -> tuple[str, set[str]]:
    """The shipped text of ``module`` (markers applied, imports flattened) and the modules it imports itself."""
    text = _apply_markers(_package_source(module), f"ibq_hf/{module}")
    lines = text.splitlines(keepends=True)
    tree = ast.parse(text)
    imported: set[str] = set()
    edits: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "ibq_hf" for a in node.names):
            raise ValueError(f"ibq_hf/{module} imports ibq_hf absolutely; use a relative import to ship it.")
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 0:
            if (node.module or "").split(".")[0] == "ibq_hf":
                raise ValueError(
                    f"ibq_hf/{module} imports ibq_hf absolutely; use a relative import to ship it."
                )
            continue
        target = _resolve(module, node)
        indent = " " * node.col_offset
        if _is_module(target):
            imported.add(target)
            names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
            new = f"{indent}from .{shipped_name(target, version)} import {names}\n"
        else:  # ``from .models import modeling_ar, modeling_vq``: submodules of a package
            subs = [f"{target}.{a.name}" if target else a.name for a in node.names]
            missing = [s for s in subs if not _is_module(s)]
            if missing:
                raise ValueError(f"ibq_hf/{module}: cannot ship the import of {missing}.")
            imported.update(subs)
            names = ", ".join(
                f"{shipped_name(s, version)} as {a.asname or a.name}" for s, a in zip(subs, node.names)
            )
            new = f"{indent}from . import {names}\n"
        edits.append((node.lineno - 1, node.end_lineno or node.lineno, new))
    for start, end, new in sorted(edits, reverse=True):
        lines[start:end] = [new]
    return "".join(lines), imported


def _package_files(entries: Iterable[str], version: str) -> dict[str, str]:
    """Shipped file name → text for ``entries`` and everything they import, each completed with its closure."""
    texts: dict[str, str] = {}
    direct: dict[str, set[str]] = {}
    todo = list(entries)
    while todo:
        module = todo.pop()
        if module in texts:
            continue
        texts[module], direct[module] = _rewrite(module, version)
        todo.extend(direct[module] - texts.keys())
    files: dict[str, str] = {}
    for module, text in texts.items():
        closure, stack = set(), list(direct[module])
        while stack:
            dep = stack.pop()
            if dep not in closure:
                closure.add(dep)
                stack.extend(direct[dep])
        rest = sorted(closure - direct[module] - {module})
        header = (
            f"# Shipped by ibq-hf {version} from ibq_hf/{module.replace('.', '/')}.py (generated at save time; "
            "edit the package, not this file).\n"
        )
        body = header + text
        if rest:
            body += (
                "\n# diffusers copies only the files a module imports itself; these complete the set it needs.\n"
                + "".join(
                    f"from .{shipped_name(dep, version)} import __name__ as _{shipped_name(dep, version)}  # noqa: F401\n"
                    for dep in rest
                )
            )
        files[f"{shipped_name(module, version)}.py"] = body
    return files


def _sibling_files(entries: Iterable[str]) -> dict[str, str]:
    """Shipped mode: the already-shipped sibling files ``entries`` need, copied as they are."""
    files: dict[str, str] = {}
    todo = [f"{shipped_name(m)}.py" for m in entries]
    while todo:
        name = todo.pop()
        if name in files:
            continue
        path = _OWN_DIR / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{name} is missing next to {Path(__file__).name}: this shipped copy cannot save its code again. "
                "Install ibq-hf and save with it, or pass ship_code=False."
            )
        files[name] = path.read_text(encoding="utf-8")
        todo.extend(f"{dep}.py" for dep in _FLAT_IMPORT.findall(files[name]))
    return files


def shipped_files(artefact: str, version: str | None = None) -> dict[str, str]:
    """File name → text of the code ``artefact`` (a key of :data:`ARTEFACTS`) ships, as ``version`` names it."""
    if artefact not in ARTEFACTS:
        raise ValueError(f"Unknown artefact {artefact!r}; choose one of {sorted(ARTEFACTS)}.")
    entries = ARTEFACTS[artefact].values()
    if not _IN_PACKAGE:
        return _sibling_files(entries)
    return _package_files(entries, package_version() if version is None else version)


# ---------------------------------------------------------------------------------------------------------------
# Writing next to the weights
# ---------------------------------------------------------------------------------------------------------------


def _write_text(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _update_json(path: Path, update: Mapping[str, object]) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(update)
    _write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _component_entry(folder: Path, artefact: str, cls: str, version: str | None) -> str:
    """Write the module a pipeline's ``model_index.json`` names for a component; returns its stem.

    diffusers imports the pipeline module first (which imports the component modules), then executes each
    component's module file again, which would make a second class of the same name and a type warning. Naming
    this re-export instead runs only the re-export again; the class stays the one the pipeline module holds.
    """
    stem = (
        f"{_PREFIX}{_COMPONENT_ENTRY[artefact]}_{_suffix(package_version() if version is None else version)}"
    )
    module = shipped_name(ARTEFACTS[artefact][cls], version)
    text = (
        f"# Shipped by ibq-hf: the {cls} diffusers loads for this pipeline component (generated at save time).\n"
        f'"""Re-export of :class:`{cls}` for ``model_index.json``; the code is in ``{module}.py``."""\n\n'
        f"from .{module} import {cls}\n\n__all__ = [{cls!r}]\n"
    )
    _write_text(folder / f"{stem}.py", text)
    return stem


def _write_model_code(folder: Path, artefact: str, version: str | None) -> list[Path]:
    written = []
    for name, text in shipped_files(artefact, version).items():
        _write_text(folder / name, text)
        written.append(folder / name)
    classes = ARTEFACTS[artefact]
    if artefact == "tokenizer":
        auto_map = {"AutoModel": f"{shipped_name(classes['IBQVQModel'], version)}.IBQVQModel"}
    elif artefact == "ar":
        auto_map = {
            auto: f"{shipped_name(classes[cls], version)}.{cls}" for auto, cls in _AR_AUTO_MAP.items()
        }
    else:
        return written
    config = folder / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"{folder} has no config.json to point at the shipped code; save the model first."
        )
    _update_json(config, {"auto_map": auto_map})
    return written


def write_code(save_directory: str | os.PathLike, artefact: str, version: str | None = None) -> list[Path]:
    """Write the code ``artefact`` ships into a folder ``save_pretrained`` has just written; returns the files.

    ``"tokenizer"`` / ``"ar"``: the model's modules, and ``auto_map`` in its ``config.json``. ``"pipeline"``: the
    pipeline's modules at the top, each component's in its subfolder (with its ``auto_map``), and ``[module,
    class]`` entries in ``model_index.json``. ``version`` overrides the installed version in the file names (tests).
    """
    folder = Path(save_directory)
    if artefact != "pipeline":
        return _write_model_code(folder, artefact, version)
    index = folder / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{folder} has no model_index.json; save the pipeline first.")
    written = _write_model_code(folder, "pipeline", version)
    entries: dict[str, object] = {
        "_class_name": [shipped_name(ARTEFACTS["pipeline"]["IBQPipeline"], version), "IBQPipeline"]
    }
    data = json.loads(index.read_text(encoding="utf-8"))
    for component, component_artefact in PIPELINE_COMPONENTS.items():
        if data.get(component, [None])[0] is None:
            continue  # a component saved as None has no folder
        written += _write_model_code(folder / component, component_artefact, version)
        cls = data[component][1]
        stem = _component_entry(folder / component, component_artefact, cls, version)
        written.append(folder / component / f"{stem}.py")
        entries[component] = [stem, cls]
    _update_json(index, entries)
    return written
