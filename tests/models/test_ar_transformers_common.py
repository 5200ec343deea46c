"""transformers' own common model tests (``ModelTesterMixin``, v5.24) run against ``IBQARForImageGeneration``.

The mixin ships in the transformers *source distribution* (``tests/test_modeling_common.py``), not in the wheel,
so this module needs an unpacked sdist of the installed version: ``bash scripts/fetch_transformers_tests.sh``
puts one (and the ``parameterized`` package the mixin imports) in the cache folder below, or point
``IBQ_HF_TRANSFORMERS_TESTS`` at any unpacked ``transformers-<version>`` folder. Without it the module is skipped
with the reason (CI is offline). Run it with::

    .venv/bin/python -m pytest tests/models/test_ar_transformers_common.py -m slow -q -p no:cacheprovider

The sdist lacks three modules the common tests import; :func:`_load_common_tests` provides them: the generation
and export mixins as empty classes (their tests target text generation and ``torch.export`` of text models, see
the skips below) and ``config_common_kwargs`` as an empty dict (only the config tester, unused here, reads it).
Tests that cannot apply to a class-conditional image model are skipped with their reason, also listed in
docs/ar_model.md ("Conformance").
"""

from __future__ import annotations

import copy
import importlib.util
import os
import sys
import types
import unittest
import unittest.mock
import warnings
from pathlib import Path

import pytest
import transformers

pytestmark = pytest.mark.slow

SDIST_ENV = "IBQ_HF_TRANSFORMERS_TESTS"
CACHE_DIR = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    / "ibq_hf"
    / f"transformers-{transformers.__version__}"
)
PACKAGE = "_transformers_common_tests"


def _sdist_tests_dir() -> tuple[Path | None, str]:
    """The ``tests`` folder of an unpacked sdist of the installed transformers, or ``None`` and why not."""
    given = os.environ.get(SDIST_ENV)
    root = Path(given) if given else CACHE_DIR / f"transformers-{transformers.__version__}"
    tests_dir = root / "tests" if (root / "tests").is_dir() else root
    if not (tests_dir / "test_modeling_common.py").is_file():
        source = f"{SDIST_ENV}={given}" if given else f"the cache folder {root}"
        return None, (
            f"transformers' common model tests are not available ({source} has no tests/test_modeling_common.py). "
            "Run `bash scripts/fetch_transformers_tests.sh` (downloads the transformers "
            f"{transformers.__version__} sdist) or set {SDIST_ENV} to an unpacked transformers sdist."
        )
    pkg_info = tests_dir.parent / "PKG-INFO"
    version = pkg_info.read_text().split("\nVersion: ")[1].split()[0] if pkg_info.is_file() else None
    if version is not None and version != transformers.__version__:
        return None, (
            f"{tests_dir.parent} holds transformers {version} tests but {transformers.__version__} is installed; "
            "fetch the matching sdist with scripts/fetch_transformers_tests.sh."
        )
    return tests_dir, ""


def _load_common_tests(tests_dir: Path) -> types.ModuleType:
    """Import ``test_modeling_common`` from the sdist as ``_transformers_common_tests.test_modeling_common``.

    The package gets a private name so that it cannot clash with our own ``tests`` folder; the three modules missing
    from the sdist are registered in ``sys.modules`` before the import.
    """
    deps = CACHE_DIR / "site-packages"
    if deps.is_dir() and str(deps) not in sys.path:
        sys.path.append(str(deps))  # `parameterized`, installed there by scripts/fetch_transformers_tests.sh
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(tests_dir)]
        sys.modules[PACKAGE] = package
        stubs = {
            "generation": None,
            "generation.test_utils": {"GenerationTesterMixin": type("GenerationTesterMixin", (), {})},
            "exporters": None,
            "exporters.test_export": {"ExportTesterMixin": type("ExportTesterMixin", (), {})},
            "utils": None,
            "utils.test_configuration_utils": {"config_common_kwargs": {}},
        }
        for name, attributes in stubs.items():
            module = types.ModuleType(f"{PACKAGE}.{name}")
            if attributes is None:
                module.__path__ = []
            else:
                module.__dict__.update(attributes)
            sys.modules[f"{PACKAGE}.{name}"] = module
    name = f"{PACKAGE}.test_modeling_common"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, tests_dir / "test_modeling_common.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        # its marks (flash_attn_test, ...) are registered only in transformers' own pytest setup
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
            spec.loader.exec_module(module)
    return sys.modules[name]


_TESTS_DIR, _REASON = _sdist_tests_dir()
if _TESTS_DIR is None:
    pytest.skip(_REASON, allow_module_level=True)
if (
    importlib.util.find_spec("parameterized") is None
    and not (CACHE_DIR / "site-packages/parameterized").is_dir()
):
    pytest.skip(
        "transformers' common tests import `parameterized`; run scripts/fetch_transformers_tests.sh (installs it "
        "into the cache folder) or `pip install parameterized`.",
        allow_module_level=True,
    )

import torch  # noqa: E402

from ibq_hf.models.configuration_ar import IBQARConfig  # noqa: E402
from ibq_hf.models.modeling_ar import IBQARForImageGeneration  # noqa: E402

common = _load_common_tests(_TESTS_DIR)
torch_device = common.torch_device


class IBQARModelTester:
    """Small config and inputs. ``input_ids`` [B, T] with T = 8 image tokens of a 3×3 grid; every output
    (logits, hidden states, attentions) has ``seq_length`` = T + 1 positions because the class token is prepended."""

    def __init__(self, parent: unittest.TestCase) -> None:
        self.parent = parent
        self.batch_size = 2
        self.num_image_inputs = 8
        self.seq_length = self.num_image_inputs + 1
        self.vocab_size = 99
        self.num_classes = 10
        self.hidden_size = 32
        self.num_hidden_layers = 2
        self.num_attention_heads = 4
        self.intermediate_size = 37
        self.grid_size = 3
        self.is_training = True

    def get_config(self) -> IBQARConfig:
        return IBQARConfig(
            vocab_size=self.vocab_size,
            num_classes=self.num_classes,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            grid_size=self.grid_size,
        )

    def prepare_config_and_inputs_for_common(self) -> tuple[IBQARConfig, dict[str, torch.Tensor]]:
        input_ids = common.ids_tensor([self.batch_size, self.num_image_inputs], self.vocab_size)
        class_labels = common.ids_tensor([self.batch_size], self.num_classes)
        return self.get_config(), {"input_ids": input_ids, "class_labels": class_labels}


class IBQARTransformersCommonTest(common.ModelTesterMixin, unittest.TestCase):
    all_model_classes = (IBQARForImageGeneration,)
    # `generate(class_labels)` has its own sampling loop (classifier-free guidance on a doubled batch, per-sample
    # generators) and no prompt: the text-generation tests of GenerationTesterMixin do not apply to it.
    all_generative_model_classes = ()
    # Inputs the eager-vs-SDPA test passes besides `input_ids`.
    additional_model_inputs = ["class_labels"]

    # The mixin runs `test_can_init_all_missing_weights` only for models it prioritises (by copyright year).
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self) -> None:
        self.model_tester = IBQARModelTester(self)

    def test_can_init_all_missing_weights(self):
        """Our ``from_pretrained`` refuses missing keys (a checkpoint without them would sample garbage); the test
        loads an empty state dict on purpose, so it runs with transformers' own opt-out, ``output_loading_info``."""
        strict = IBQARForImageGeneration.from_pretrained.__func__

        def lenient(cls, *args, **kwargs):
            model, _info = strict(cls, *args, output_loading_info=True, **kwargs)
            return model

        with unittest.mock.patch.object(IBQARForImageGeneration, "from_pretrained", classmethod(lenient)):
            super().test_can_init_all_missing_weights()

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        """The mixin adds labels only for classes of transformers' Auto mappings; ours is registered at run time,
        so add the causal-LM targets (one per output position) here."""
        inputs_dict = copy.deepcopy(inputs_dict)
        if return_labels:
            tester = self.model_tester
            inputs_dict["labels"] = torch.zeros(
                (tester.batch_size, tester.seq_length), dtype=torch.long, device=torch_device
            )
        return inputs_dict
