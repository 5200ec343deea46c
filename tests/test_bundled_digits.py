"""The bundled digits pipeline draws the digit asked for (an independent classifier checks it)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ibq_hf import IBQARForImageGeneration, IBQPipeline, IBQVQModel

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "checkpoints" / "ibq-digits"


def _check_digits_module():
    spec = importlib.util.spec_from_file_location(
        "check_digits", REPO / "examples" / "digits" / "check_digits.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pipe() -> IBQPipeline:
    pipe = IBQPipeline.from_pretrained(MODEL, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_bundled_pipeline_loads_offline(pipe):
    assert pipe.transformer.config.num_classes == 10
    assert pipe.vqvae.config.num_embeddings == pipe.transformer.config.vocab_size == 256
    assert pipe.transformer.generation_config.guidance_scale == 2.0
    image = pipe(class_labels=[3], generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (32, 32)


@pytest.mark.slow  # 200 samples + an SVC (~2.5 s); `bash scripts/main.sh` draws every digit too
def test_samples_are_the_requested_digit(pipe):
    """≥ 90 % of samples (10 per digit, default settings) are classified as the requested digit by an SVC
    trained on the real scikit-learn digits, which never saw the IBQ models."""
    accuracy, images, labels = _check_digits_module().sample_accuracy(pipe, per_class=10, seed=123)
    assert images.shape == (100, 32, 32, 3) and len(labels) == 100
    assert accuracy >= 0.9, accuracy


def test_the_classifier_rejects_wrong_labels(pipe):
    """The check can fail: the same samples scored against shifted labels are almost never right."""
    module = _check_digits_module()
    _, images, labels = module.sample_accuracy(pipe, per_class=3, seed=7)
    predicted = module.real_digit_classifier().predict(module.to_digit_features(images))
    shifted = [(label + 1) % 10 for label in labels]
    assert (predicted == torch.tensor(shifted).numpy()).mean() < 0.2


# ---- folders saved before the architecture step ---------------------------------------------------------------

#: The module paths folders saved before models/ar_model.py and models/vq_model.py became modeling_ar.py and
#: modeling_vq.py record in model_index.json (the bundled folder did, until it was re-saved with its code).
OLD_MODULE_PATHS = {"transformer": "ibq_hf.models.ar_model", "vqvae": "ibq_hf.models.vq_model"}


def legacy_copy(destination: Path) -> Path:
    """The bundled folder as the package saved it before the architecture step: the old module paths and plain
    ``_class_name`` in ``model_index.json``, no shipped code, no ``auto_map``. The weights are the bundled ones."""
    shutil.copytree(MODEL, destination, ignore=shutil.ignore_patterns("ibq_*.py", "__pycache__"))
    index_path = destination / "model_index.json"
    index = json.loads(index_path.read_text())
    index["_class_name"] = "IBQPipeline"
    for component, module in OLD_MODULE_PATHS.items():
        index[component] = [module, index[component][1]]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    for component in OLD_MODULE_PATHS:
        config_path = destination / component / "config.json"
        config = json.loads(config_path.read_text())
        config.pop("auto_map", None)
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    assert not list(destination.rglob("*.py"))
    return destination


def test_a_folder_naming_old_module_paths_loads_with_the_package_classes(pipe, tmp_path):
    legacy = IBQPipeline.from_pretrained(legacy_copy(tmp_path / "legacy"), local_files_only=True)
    assert type(legacy) is IBQPipeline
    assert type(legacy.transformer) is IBQARForImageGeneration and type(legacy.vqvae) is IBQVQModel
    assert "auto_map" not in legacy.vqvae.config
    generator = torch.Generator().manual_seed(0)
    ids = legacy(class_labels=[3], generator=generator, output_type="latent").images
    assert torch.equal(
        ids, pipe(class_labels=[3], generator=torch.Generator().manual_seed(0), output_type="latent").images
    )


# One fresh process (importing torch and the libraries costs ~15 s of CPU): first only the package, as a user does
# (IBQPipeline comes through the lazy top level, which imports ibq_hf.pipeline on first use); then diffusers' own
# loader without our front door, now that ibq_hf.pipeline is imported. Both import each component from the module
# path model_index.json records. (DiffusionPipeline.from_pretrained is called on IBQPipeline: for
# DiffusionPipeline itself diffusers looks the pipeline class up inside diffusers only.)
FRESH_PROCESS = """
import sys
import torch
import ibq_hf
assert "ibq_hf.pipeline" not in sys.modules

def check(pipe):
    assert type(pipe.transformer).__module__ == "ibq_hf.models.modeling_ar", type(pipe.transformer)
    assert type(pipe.vqvae).__module__ == "ibq_hf.models.modeling_vq", type(pipe.vqvae)
    pipe.set_progress_bar_config(disable=True)
    ids = pipe(class_labels=[3], generator=torch.Generator().manual_seed(0), output_type="latent").images
    assert ids.shape == (1, 8, 8), ids.shape
    return ids

first = check(ibq_hf.IBQPipeline.from_pretrained(MODEL, local_files_only=True))

import ibq_hf.pipeline
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained.__func__(ibq_hf.pipeline.IBQPipeline, MODEL, local_files_only=True)
assert torch.equal(check(pipe), first)
print("loaded")
"""


@pytest.mark.slow  # default-suite budget: heavy; runs in the slow set
def test_a_folder_naming_old_module_paths_loads_in_a_fresh_process(tmp_path):
    code = f"MODEL = {str(legacy_copy(tmp_path / 'legacy'))!r}\n" + FRESH_PROCESS
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0 and "loaded" in result.stdout, result.stderr[-3000:]
