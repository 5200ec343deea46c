"""The documentation site builds with ``mkdocs build --strict`` and contains what it should.

Strict mode turns every warning into a failure: a broken link or anchor, a page missing from the nav, and
docstrings that do not match their signatures (griffe warnings while generating the API reference).
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings_handlers.python")
yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MAX_FIGURE_BYTES = 150 * 1024


def _nav_pages(nav: list) -> list[str]:
    pages: list[str] = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages.extend(_nav_pages(value) if isinstance(value, list) else [value])
    return pages


# Builds the whole mkdocs site (~10 s): in the slow set, run before every resolve (`bash scripts/test.sh -m slow`).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's end-of-life banner
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert "WARNING" not in log, log[-6000:]
    return out


@pytest.fixture(scope="module")
def nav_pages() -> list[str]:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    return _nav_pages(config["nav"])


def _html(site: Path, page: str) -> str:
    return (site / page.removesuffix(".md")).with_suffix(".html").read_text(encoding="utf-8")


def test_every_nav_page_is_rendered_and_every_page_is_in_the_nav(site: Path, nav_pages: list[str]) -> None:
    for page in nav_pages:
        assert (DOCS / page).is_file(), page
        html = _html(site, page)
        assert "<h1" in html, f"{page} rendered without a title"
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if "scripts" not in p.parts}
    assert on_disk == set(nav_pages)
    required = {
        "index.md", "quickstart.md", "installation.md", "tokenizer.md", "generation.md", "ar_model.md",
        "pipeline.md", "training.md", "training_ar.md", "training_imagenet.md", "training_distributed.md",
        "training_fsdp.md", "training_resume.md", "conversion.md", "evaluation.md", "benchmarks.md",
    }  # fmt: skip
    assert required <= set(nav_pages)


def test_api_reference_is_generated_from_the_docstrings(site: Path) -> None:
    from ibq_hf import IBQPipeline, IBQQuantizer, IBQVQModel
    from ibq_hf.conversion.pipeline import convert_pipeline_checkpoint

    def first_line(obj: object) -> str:
        """The docstring's first line as rendered text: no Sphinx roles, no backticks, ``~a.b.C`` as ``C``."""
        line = inspect.getdoc(obj).splitlines()[0]
        line = re.sub(r":\w+:`~(?:[\w.]+\.)?(\w+)`", r"\1", line)
        return re.sub(r":\w+:", "", line).replace("`", "")

    expectations = {
        "api/vq_model.md": [
            ('id="ibq_hf.models.modeling_vq.IBQVQModel.tokenize"', None),
            ('id="ibq_hf.models.modeling_vq.IBQVQModel.decode_indices"', None),
            (None, "no softmax, no loss, no grad"),  # IBQVQModel.tokenize
        ],
        "api/pipeline.md": [
            ('id="ibq_hf.pipeline.IBQPipeline.__call__"', None),
            (None, first_line(IBQPipeline.__call__)),
            (None, "num_images_per_prompt"),  # an argument documented in __call__'s Args section
        ],
        "api/quantizer.md": [('id="ibq_hf.models.quantizer.IBQQuantizer"', None), (None, "codebook size")],
        "api/conversion.md": [(None, first_line(convert_pipeline_checkpoint))],
        "api/ar_model.md": [('id="ibq_hf.models.modeling_ar.IBQARForImageGeneration.generate"', None)],
        "api/configuration_ar.md": [('id="ibq_hf.models.configuration_ar.IBQARConfig"', None)],
        "api/training.md": [
            ('id="ibq_hf.data.load_image_dataset"', None),
            ('id="ibq_hf.training.tokenizer_trainer.IBQTokenizerTrainer"', None),
            ('id="ibq_hf.training.ar_trainer.IBQARTrainer"', None),
        ],
        "api/errors.md": [('id="ibq_hf.errors.CheckpointKeyError"', None)],
        "api/hub_utils.md": [('id="ibq_hf.hub_utils', None)],
    }
    assert IBQQuantizer.__doc__ and IBQVQModel.tokenize.__doc__
    for page, checks in expectations.items():
        html = _html(site, page)
        text = re.sub(r"<[^>]+>", "", html)
        for anchor, phrase in checks:
            if anchor:
                assert anchor in html, (page, anchor)
            if phrase:
                assert phrase in text, (page, phrase)
        # Sphinx roles in docstrings are rendered as plain code by docs/scripts/hooks.py.
        assert not re.search(r":(meth|class|func|attr):<code>|<code>~", html), page


def test_images_exist_are_used_and_small(site: Path, nav_pages: list[str]) -> None:
    referenced: set[str] = set()
    for page in nav_pages:
        html = _html(site, page)
        page_dir = (site / page).parent
        for src in re.findall(r'<img[^>]+src="([^"]+)"', html):
            assert not src.startswith(("http:", "https:", "//")), (page, src)
            target = (page_dir / src).resolve()
            assert target.is_file(), (page, src)
            referenced.add(target.name)
    figures = sorted(p.name for p in (DOCS / "assets").glob("*.png"))
    assert {
        "generated_digits.png",
        "reconstructions_digits.png",
        "token_map.png",
        "codebook_usage.png",
    } <= set(figures)
    assert set(figures) <= referenced, f"figures referenced by no page: {set(figures) - referenced}"
    for name in figures:
        assert (DOCS / "assets" / name).stat().st_size <= MAX_FIGURE_BYTES, name


def test_no_external_resources_are_loaded(site: Path) -> None:
    html = _html(site, "index.md")
    assert "fonts.googleapis.com" not in html and "fonts.gstatic.com" not in html
    for tag in re.findall(r"<(?:script|link)[^>]+(?:src|href)=\"(https?://[^\"]+)\"", html):
        pytest.fail(f"the page loads an external resource: {tag}")
