"""The code saved next to the weights (issue 16): stock diffusers / transformers load our folders without ibq-hf.

* The shipped files are the package's modules, flattened and version-named; none imports ``ibq_hf``.
* The package reads such folders with its own classes and never runs the shipped files.
* In a process where ``ibq_hf`` cannot be imported, ``DiffusionPipeline`` / ``transformers.AutoModel`` /
  ``diffusers.AutoModel`` with ``trust_remote_code=True`` give bitwise the package's images, logits and
  reconstructions; two folders saved by different versions load side by side.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ibq_hf import IBQARForImageGeneration, IBQPipeline, IBQVQModel
from ibq_hf.imagenet_labels import imagenet_id2label, imagenet_wnids
from ibq_hf.remote_code import (
    ARTEFACTS,
    package_module,
    package_version,
    shipped_files,
    shipped_name,
    write_code,
)

ROOT = Path(__file__).resolve().parents[1]
#: The version part of today's shipped names ("0_1_0" for ibq-hf 0.1.0).
V = shipped_name("x").removeprefix("ibq_x_")
BUNDLED = ROOT / "checkpoints" / "ibq-digits"
#: What a shipped module may import: these libraries (numpy and PIL come with diffusers), the standard library,
#: and its sibling files.
ALLOWED = {"torch", "transformers", "diffusers", "safetensors", "huggingface_hub", "numpy", "PIL"}


def absolute_imports(text: str) -> set[str]:
    """Top-level names of every absolute import in ``text`` (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add((node.module or "").split(".")[0])
    return found


def relative_imports(text: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and node.level:
            assert node.level == 1, "shipped files are flat: one dot only"
            found |= {node.module} if node.module else {alias.name for alias in node.names}
    return found


@pytest.mark.parametrize("artefact", sorted(ARTEFACTS))
def test_shipped_modules_import_only_stock_libraries_and_each_other(artefact):
    files = shipped_files(artefact)
    stems = {name.removesuffix(".py") for name in files}
    for name, text in files.items():
        assert name.startswith("ibq_") and name.endswith(f"_{V}.py"), name
        outside = absolute_imports(text) - ALLOWED - set(sys.stdlib_module_names) - {"__future__"}
        assert not outside, f"{name} imports {outside}"
        assert "ibq_hf" not in absolute_imports(text)
        assert relative_imports(text) <= stems, f"{name} imports a file that is not shipped with it"
    # The classes the configs name are defined where they point.
    for cls, module in ARTEFACTS[artefact].items():
        tree = ast.parse(files[f"{shipped_name(module)}.py"])
        assert cls in {node.name for node in tree.body if isinstance(node, ast.ClassDef)}


def test_package_only_blocks_are_dropped_and_the_labels_embedded():
    files = shipped_files("pipeline")
    assert "AutoConfig.register" not in files[f"ibq_modeling_ar_{V}.py"]
    assert "LEGACY_COMPONENT_MODULES" not in files[f"ibq_pipeline_{V}.py"]
    assert "_dict_from_json_file" not in files[f"ibq_pipeline_{V}.py"]
    assert "importlib.resources" not in files[f"ibq_imagenet_labels_{V}.py"]
    table = (ROOT / "src" / "ibq_hf" / "imagenet_classes.tsv").read_text(encoding="utf-8")
    namespace: dict = {}
    exec(files[f"ibq_imagenet_classes_{V}.py"], namespace)  # data only: one string constant
    assert namespace["IMAGENET_CLASSES_TSV"] == table


def test_the_shipped_label_table_equals_the_package_one(tmp_path, monkeypatch):
    # The shipped modules as a package of their own, outside ibq_hf (the table module is standard library only).
    folder = tmp_path / "shipped_labels"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for name, text in shipped_files("pipeline").items():
        (folder / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(f"shipped_labels.ibq_imagenet_labels_{V}")
    assert module.imagenet_id2label() == imagenet_id2label()
    assert module.imagenet_wnids() == imagenet_wnids()


def test_names_carry_the_version_and_map_back_to_the_package():
    assert shipped_name("models.modeling_ar", "1.2.0rc1") == "ibq_modeling_ar_1_2_0rc1"
    assert set(shipped_files("ar", "2.0")) == {n.replace(V, "2_0") for n in shipped_files("ar")}
    assert package_module("ibq_modeling_ar_2_0") == "ibq_hf.models.modeling_ar"
    assert package_module(f"ibq_tokenizer_component_{V}") == "ibq_hf.models.modeling_vq"
    assert package_module(f"ibq_ar_component_{V}") == "ibq_hf.models.modeling_ar"
    assert package_module("diffusers") is None


def test_the_docs_list_the_files_each_model_ships():
    """docs/pipeline.md's table of the files written per artefact names exactly what the models ship."""
    rows = {
        line.split("|")[1].strip(" `"): line.split("|")[2]
        for line in (ROOT / "docs" / "pipeline.md").read_text().splitlines()
        if line.startswith("| `IBQ")
    }
    for cls, artefact in (("IBQVQModel", "tokenizer"), ("IBQARForImageGeneration", "ar")):
        listed = {name.replace("<v>", V) for name in re.findall(r"`(ibq_\w+_<v>\.py)`", rows[cls])}
        assert listed == set(shipped_files(artefact)), (
            f"docs/pipeline.md, row {cls}: update it to {sorted(shipped_files(artefact))}"
        )


# ---------------------------------------------------------------------------------------------------------------
# Saved folders
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe():
    return IBQPipeline.from_pretrained(BUNDLED)


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("remote") / "digits"
    pipe.save_pretrained(folder)
    return folder


def test_a_saved_pipeline_points_the_stock_loaders_at_its_code(saved):
    index = json.loads((saved / "model_index.json").read_text())
    assert index["_class_name"] == [f"ibq_pipeline_{V}", "IBQPipeline"]
    assert index["vqvae"] == [f"ibq_tokenizer_component_{V}", "IBQVQModel"]
    assert index["transformer"] == [f"ibq_ar_component_{V}", "IBQARForImageGeneration"]
    assert set(p.name for p in saved.glob("*.py")) == set(shipped_files("pipeline"))
    for sub, artefact in (("vqvae", "tokenizer"), ("transformer", "ar")):
        assert {p.name for p in (saved / sub).glob("*.py")} == set(shipped_files(artefact)) | {
            f"{index[sub][0]}.py"
        }
    for path in saved.rglob("*.py"):
        assert "ibq_hf" not in absolute_imports(path.read_text()), path
    assert json.loads((saved / "vqvae" / "config.json").read_text())["auto_map"] == {
        "AutoModel": f"ibq_modeling_vq_{V}.IBQVQModel"
    }
    auto_map = json.loads((saved / "transformer" / "config.json").read_text())["auto_map"]
    assert auto_map["AutoConfig"] == f"ibq_configuration_ar_{V}.IBQARConfig"
    assert auto_map["AutoModel"] == f"ibq_modeling_ar_{V}.IBQARForImageGeneration"


def test_the_cards_show_both_ways_to_load(saved, pipe, tmp_path):
    card = (saved / "README.md").read_text()
    assert 'IBQPipeline.from_pretrained("digits")' in card
    assert 'DiffusionPipeline.from_pretrained("digits", trust_remote_code=True)' in card
    assert f"ibq-hf {package_version()}'s own modules" in " ".join(card.split())
    pipe.transformer.save_pretrained(tmp_path / "ar")
    assert (
        'AutoModel.from_pretrained("ar", trust_remote_code=True)'
        in (tmp_path / "ar" / "README.md").read_text()
    )
    pipe.save_pretrained(tmp_path / "plain", ship_code=False)
    assert "trust_remote_code" not in (tmp_path / "plain" / "README.md").read_text()


def test_the_package_loads_such_folders_with_its_own_classes_without_running_them(saved):
    loaded = IBQPipeline.from_pretrained(saved)
    assert type(loaded) is IBQPipeline
    assert type(loaded.vqvae) is IBQVQModel and type(loaded.transformer) is IBQARForImageGeneration
    assert type(IBQVQModel.from_pretrained(saved, subfolder="vqvae")) is IBQVQModel
    assert type(IBQARForImageGeneration.from_pretrained(saved / "transformer")) is IBQARForImageGeneration
    assert "auto_map" not in loaded.vqvae.config
    assert not [
        name for name in sys.modules if name.startswith(("diffusers_modules", "transformers_modules"))
    ]


def test_the_package_loads_a_hub_repo_with_code_from_the_cache_with_its_own_classes(saved, tmp_path):
    import shutil

    commit = "0" * 40
    repo = tmp_path / "cache" / "models--me--digits"  # huggingface_hub's cache layout
    shutil.copytree(saved, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    loaded = IBQPipeline.from_pretrained("me/digits", cache_dir=tmp_path / "cache", local_files_only=True)
    assert type(loaded) is IBQPipeline and type(loaded.transformer) is IBQARForImageGeneration
    assert not [
        name for name in sys.modules if name.startswith(("diffusers_modules", "transformers_modules"))
    ]


def test_stock_diffusers_refuses_the_folder_without_trust_remote_code(saved):
    from diffusers import DiffusionPipeline

    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(saved)


def test_models_saved_alone_carry_their_code_and_ship_code_false_leaves_it_out(pipe, tmp_path):
    pipe.vqvae.save_pretrained(tmp_path / "tok")
    pipe.transformer.save_pretrained(tmp_path / "ar")
    assert {p.name for p in (tmp_path / "tok").glob("*.py")} == set(shipped_files("tokenizer"))
    assert {p.name for p in (tmp_path / "ar").glob("*.py")} == set(shipped_files("ar"))
    assert "auto_map" in json.loads((tmp_path / "ar" / "config.json").read_text())
    assert type(IBQVQModel.from_pretrained(tmp_path / "tok")) is IBQVQModel
    pipe.save_pretrained(tmp_path / "plain", ship_code=False)
    assert not list((tmp_path / "plain").rglob("*.py"))
    assert json.loads((tmp_path / "plain" / "model_index.json").read_text())["_class_name"] == "IBQPipeline"
    assert "auto_map" not in json.loads((tmp_path / "plain" / "vqvae" / "config.json").read_text())


# ---------------------------------------------------------------------------------------------------------------
# The committed copy in checkpoints/ibq-digits
# ---------------------------------------------------------------------------------------------------------------

REFRESH = "python scripts/refresh_bundled_code.py"


def _refresh_script():
    spec = importlib.util.spec_from_file_location(
        "refresh_bundled_code", ROOT / "scripts" / "refresh_bundled_code.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_bundled_checkpoint_carries_the_code_of_todays_package_source():
    """Its ``ibq_*.py`` files, ``model_index.json`` entries and ``auto_map`` are what ``save_pretrained`` writes from
    the package source now (compared as text, from copies of its JSON files: no model is loaded)."""
    stale = _refresh_script().differences(BUNDLED)
    assert not stale, (
        f"checkpoints/ibq-digits carries code that differs from the package source: {stale}. "
        f"Run `{REFRESH}` (rewrites the code, not the weights) and commit the result."
    )
    index = json.loads((BUNDLED / "model_index.json").read_text())
    assert index["_class_name"] == [f"ibq_pipeline_{V}", "IBQPipeline"]
    for path in BUNDLED.rglob("*.py"):
        assert "ibq_hf" not in absolute_imports(path.read_text()), path


def test_the_bundled_card_is_the_one_save_pretrained_writes(pipe, tmp_path):
    pipe.write_model_card(tmp_path, **_refresh_script().CARD_FACTS)
    assert (tmp_path / "README.md").read_text() == (BUNDLED / "README.md").read_text(), (
        f"checkpoints/ibq-digits/README.md is not the card the package writes today: run `{REFRESH}`."
    )


# ---------------------------------------------------------------------------------------------------------------
# Without the package: bitwise the same results
# ---------------------------------------------------------------------------------------------------------------

LABELS, SEEDS = [3, 7], [0, 1]
OTHER_VERSION = "0.0.1.dev7"

STOCK = textwrap.dedent(
    """
    import json, sys, time
    start = time.perf_counter()
    sys.modules["ibq_hf"] = None  # `import ibq_hf` raises ImportError in this process
    import numpy as np, torch
    torch.set_num_threads(1)
    import diffusers, transformers
    from diffusers import DiffusionPipeline
    imported = time.perf_counter()

    pipe = DiffusionPipeline.from_pretrained(FOLDER, trust_remote_code=True)
    generators = [torch.Generator().manual_seed(s) for s in SEEDS]
    images = pipe(LABELS, generator=generators, output_type="np").images
    inputs = np.load(INPUTS)
    ar = transformers.AutoModel.from_pretrained(FOLDER + "/transformer", trust_remote_code=True)
    with torch.no_grad():
        logits = ar(torch.from_numpy(inputs["ids"]), class_labels=torch.tensor(LABELS)).logits
    vq = diffusers.AutoModel.from_pretrained(FOLDER + "/vqvae", trust_remote_code=True)
    with torch.no_grad():
        recon = vq.decode_indices(vq.tokenize(torch.from_numpy(inputs["pixels"])))
    np.savez(OUT, images=images, logits=logits.numpy(), recon=recon.numpy())
    pipe.save_pretrained(RESAVED)  # the shipped classes save their code again (copied as they are)
    other = DiffusionPipeline.from_pretrained(OTHER, trust_remote_code=True)
    print(json.dumps({
        "types": [type(x).__module__ + "." + type(x).__name__ for x in (pipe, pipe.transformer, pipe.vqvae, ar, vq)],
        "other": type(other).__module__,
        "other_mark": getattr(sys.modules[type(other).__module__], "SHIPPED_MARK", None),
        "own_mark": getattr(sys.modules[type(pipe).__module__], "SHIPPED_MARK", None),
        "ibq_hf_modules": [name for name in sys.modules if name.startswith("ibq_hf.")],
        "seconds": {"imports": imported - start, "total": time.perf_counter() - start},
    }))
    """
)


def assert_stock_loaders_match_the_package(folder: Path, tmp_path: Path) -> dict:
    """Load ``folder`` with the package here and with stock diffusers / transformers (``trust_remote_code=True``) in
    a fresh process where ``import ibq_hf`` fails; assert bitwise the same images, logits and reconstructions, the
    shipped classes, a re-save that copies the code unchanged, and a second folder of another version loading side
    by side with its own code. Returns the child's report (its times included)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic as the child's
    try:
        loaded = IBQPipeline.from_pretrained(folder)
        loaded.set_progress_bar_config(disable=True)
        # A second folder as another ibq-hf version would write it, with code that tells itself apart.
        other = tmp_path / "other"
        loaded.save_pretrained(other, ship_code=False)
        write_code(other, "pipeline", version=OTHER_VERSION)
        with (other / f"ibq_pipeline_{OTHER_VERSION.replace('.', '_')}.py").open("a") as f:
            f.write(f'\nSHIPPED_MARK = "{OTHER_VERSION}"\n')

        generator = torch.Generator().manual_seed(0)
        grid = loaded.transformer.config.grid_size
        ids = torch.randint(
            0, loaded.transformer.config.vocab_size, (len(LABELS), grid * grid - 1), generator=generator
        )
        side = loaded.vqvae.config.resolution
        pixels = torch.rand(2, 3, side, side, generator=generator) * 2 - 1
        inputs = tmp_path / "inputs.npz"
        np.savez(inputs, ids=ids.numpy(), pixels=pixels.numpy())

        generators = [torch.Generator().manual_seed(s) for s in SEEDS]
        images = loaded(LABELS, generator=generators, output_type="np").images
        with torch.no_grad():
            logits = loaded.transformer(ids, class_labels=torch.tensor(LABELS)).logits
            recon = loaded.vqvae.decode_indices(loaded.vqvae.tokenize(pixels))
    finally:
        torch.set_num_threads(threads)

    out, resaved = tmp_path / "stock.npz", tmp_path / "resaved"
    setup = (
        f"FOLDER, OTHER, INPUTS, OUT = {str(folder)!r}, {str(other)!r}, {str(inputs)!r}, {str(out)!r}\n"
        f"RESAVED = {str(resaved)!r}\n"
        f"LABELS, SEEDS = {LABELS!r}, {SEEDS!r}\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", setup + STOCK],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["types"] == [
        f"diffusers_modules.local.ibq_pipeline_{V}.IBQPipeline",
        f"diffusers_modules.local.ibq_modeling_ar_{V}.IBQARForImageGeneration",
        f"diffusers_modules.local.ibq_modeling_vq_{V}.IBQVQModel",
        report["types"][3],
        f"diffusers_modules.local.ibq_modeling_vq_{V}.IBQVQModel",
    ]
    assert report["types"][3].startswith("transformers_modules.")
    assert report["types"][3].endswith(f"ibq_modeling_ar_{V}.IBQARForImageGeneration")
    assert report["ibq_hf_modules"] == []
    # Two versions in one process: each folder ran its own code.
    assert report["other"] == f"diffusers_modules.local.ibq_pipeline_{OTHER_VERSION.replace('.', '_')}"
    assert (report["own_mark"], report["other_mark"]) == (None, OTHER_VERSION)

    code = {str(p.relative_to(folder)): p.read_text() for p in folder.rglob("*.py")}
    assert {str(p.relative_to(resaved)): p.read_text() for p in resaved.rglob("*.py")} == code
    assert json.loads((resaved / "model_index.json").read_text())["vqvae"] == [
        f"ibq_tokenizer_component_{V}",
        "IBQVQModel",
    ]

    stock = np.load(out)
    assert np.array_equal(stock["images"], images)
    assert np.array_equal(stock["logits"], logits.numpy())
    assert np.array_equal(stock["recon"], recon.numpy())
    return report


#: The smallest pipeline with every kind of block: a 4×4 tokenizer (one downsample, attention at 2×2) and a
#: one-layer AR model on a 2×2 grid, so the fresh process is mostly imports.
MICRO_TOKENIZER = {
    "resolution": 4, "ch": 32, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": (2,),
    "z_channels": 32, "embed_dim": 8, "num_embeddings": 16,
}  # fmt: skip
MICRO_AR = {
    "vocab_size": 16, "num_classes": 10, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
    "grid_size": 2, "multiple_of": 32,
}  # fmt: skip


# Both stock-loader tests start a fresh Python that imports torch, diffusers and transformers without ibq_hf (most
# of their ~15-20 s). They are in the slow set to keep the default suite under 3 minutes, and `.ci/run` runs them
# on every CI run (`-m slow -k stock_loaders`).
@pytest.mark.slow
def test_stock_loaders_without_the_package_give_bitwise_the_same_results(tmp_path):
    """The default-suite run of the equality check, on a micro pipeline (the child: ~5-7 s, mostly imports)."""
    from ibq_hf import IBQARConfig

    torch.manual_seed(0)
    micro = IBQPipeline(
        vqvae=IBQVQModel(**MICRO_TOKENIZER).eval(),
        transformer=IBQARForImageGeneration(IBQARConfig(**MICRO_AR)).eval(),
    )
    micro.save_pretrained(tmp_path / "micro")
    assert_stock_loaders_match_the_package(tmp_path / "micro", tmp_path)


@pytest.mark.slow  # a fresh process importing torch, diffusers and transformers, and 128 sampling steps: ~20 s
def test_stock_loaders_give_bitwise_the_same_results_for_the_bundled_checkpoint(tmp_path):
    """The committed ``checkpoints/ibq-digits`` itself (its code as committed), with the trained weights."""
    assert_stock_loaders_match_the_package(BUNDLED, tmp_path)
