"""The bundled digits pipeline draws the digit asked for (an independent classifier checks it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from ibq_hf import IBQPipeline

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
