"""The demo's handlers without a browser: validation, generation, tokenization, metrics, model choice."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

gr = pytest.importorskip("gradio")

from spaces_testutil import BUNDLED_MODEL, load_app  # noqa: E402

from conftest import TINY_PIPELINE_AR_CONFIG, TINY_TOKENIZER_CONFIG  # noqa: E402
from ibq_hf import IBQARConfig, IBQARForImageGeneration, IBQPipeline, IBQVQModel  # noqa: E402
from ibq_hf.pipeline import images_to_tensor  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one thread is fastest and does not stall on a shared CPU."""


@pytest.fixture(scope="module")
def app_module():
    return load_app()


@pytest.fixture(scope="module")
def digits_pipe(app_module):
    """The bundled digits pipeline, loaded once (about a second)."""
    pipe = app_module.load_pipeline(str(BUNDLED_MODEL), device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def demo(app_module, digits_pipe):
    return app_module.IBQDemo(digits_pipe, app_module.DemoLimits(), source=str(BUNDLED_MODEL))


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A real photograph (skimage's astronaut, 512×512) saved as PNG, or a synthetic one without skimage."""
    try:
        from skimage import data

        array = data.astronaut()
    except ImportError:  # pragma: no cover - skimage is in the dev environment
        yy, xx = np.mgrid[0:300, 0:400]
        array = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    path = tmp_path_factory.mktemp("upload") / "photo.png"
    PIL.Image.fromarray(array).save(path)
    return path


def _generate(demo, **overrides):
    settings = dict(
        class_label=3, guidance_scale=2.0, temperature=1.0, top_k=0, top_p=1.0, seed=0, num_images=1
    )
    settings.update(overrides)
    return demo.generate(**settings)


# ---- model selection --------------------------------------------------------------------------------------


def test_model_source_order(app_module, tmp_path, monkeypatch):
    monkeypatch.delenv(app_module.MODEL_ENV_VAR, raising=False)
    # Nothing beside a bare app dir and no checkpoints/ above it: a clear error.
    bare = tmp_path / "bare" / "app"
    bare.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="--model"):
        app_module.resolve_model_source(None, app_dir=bare)
    # The repo's bundled model when run from a clone.
    assert app_module.resolve_model_source(None, app_dir=app_module.HERE) == str(BUNDLED_MODEL)
    # default_model.txt (written by build_space.py) beats the bundled model; a folder resolves beside app.py.
    (bare / "default_model.txt").write_text("user/some-ibq-model\n")
    assert app_module.resolve_model_source(None, app_dir=bare) == "user/some-ibq-model"
    (bare / "model").mkdir()
    (bare / "default_model.txt").write_text("model\n")
    assert app_module.resolve_model_source(None, app_dir=bare) == str(bare / "model")
    # The environment variable beats the file; an explicit argument beats both.
    monkeypatch.setenv(app_module.MODEL_ENV_VAR, "org/from-env")
    assert app_module.resolve_model_source(None, app_dir=bare) == "org/from-env"
    assert app_module.resolve_model_source("org/from-arg", app_dir=bare) == "org/from-arg"


def test_load_pipeline_error_is_one_sentence(app_module, tmp_path):
    with pytest.raises(RuntimeError, match="Could not load an IBQPipeline from folder"):
        app_module.load_pipeline(str(tmp_path))


def test_main_reports_a_bad_model_without_traceback(app_module, tmp_path):
    with pytest.raises(SystemExit, match="Could not load an IBQPipeline from folder"):
        app_module.main(["--model", str(tmp_path)])
    with pytest.raises(SystemExit, match="at least 1"):
        app_module.main(["--max-images", "0"])


def test_parse_args(app_module, monkeypatch):
    monkeypatch.delenv("IBQ_HF_SPACE_THREADS", raising=False)
    args = app_module.parse_args(["--model", "user/repo", "--port", "7999", "--max-images", "2"])
    assert (args.model, args.port, args.max_images, args.threads, args.host) == (
        "user/repo",
        7999,
        2,
        0,
        None,
    )


# ---- labels -----------------------------------------------------------------------------------------------


def test_digits_labels_and_defaults(demo):
    choices = demo.label_choices()
    assert len(choices) == 10
    assert choices[3] == ("3: 3", 3)
    assert "`ibq-digits (local folder)` — 10 named classes, 32×32 images, 256-code tokenizer" in (
        demo.model_summary()
    )
    defaults = demo.generation_defaults()
    assert defaults["guidance_scale"] == 2.0  # the bundled model's generation config
    assert defaults["top_p"] == 1.0


@pytest.mark.parametrize("value, expected", [(3, 3), (3.0, 3), ("7", 7), ("7: 7", 7), (np.int64(9), 9)])
def test_parse_class_label(demo, value, expected):
    assert demo.parse_class_label(value) == expected


@pytest.mark.parametrize(
    "value, message",
    [
        (10, "out of range: this model has 10 classes"),
        (-1, "out of range"),
        ("12: twelve", "out of range"),
        (None, "Pick a class"),
        ("", "Pick a class"),
        (2.5, "whole number"),
        (True, "id or a name"),
        ("golden retriever", "Unknown class name"),
    ],
)
def test_parse_class_label_errors(demo, value, message):
    with pytest.raises(gr.Error, match=message):
        demo.parse_class_label(value)


def test_imagenet_labels(app_module):
    """A 1000-class model gets ImageNet names in the picker and accepts them (tiny random weights)."""
    torch.manual_seed(0)
    config = dict(TINY_PIPELINE_AR_CONFIG, num_classes=1000)
    pipe = IBQPipeline(
        vqvae=IBQVQModel(**TINY_TOKENIZER_CONFIG).eval(),
        transformer=IBQARForImageGeneration(IBQARConfig(**config)).eval(),
    )
    logic = app_module.IBQDemo(pipe)
    choices = logic.label_choices()
    assert len(choices) == 1000
    assert choices[207][1] == 207 and "golden retriever" in choices[207][0]
    assert logic.parse_class_label("golden retriever") == 207
    with pytest.raises(gr.Error, match="ambiguous"):
        logic.parse_class_label("crane")


# ---- generation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"guidance_scale": -0.5}, r"Guidance scale must lie in \[0, 20\]"),
        ({"guidance_scale": float("nan")}, "Guidance scale must lie"),
        ({"temperature": 0.0}, r"Temperature must lie in \(0, 5\]"),
        ({"top_k": 257}, r"Top-k must lie in \[0, 256\]"),
        ({"top_k": 1.5}, "Top-k must be a whole number"),
        ({"top_p": 0.0}, r"Top-p must lie in \(0, 1\]"),
        ({"top_p": 1.2}, "Top-p must lie"),
        ({"seed": -1}, "Seed must lie"),
        ({"seed": 2**32}, "Seed must lie"),
        ({"seed": "abc"}, "Seed must be a number"),
        ({"seed": None}, "Seed is empty"),
        ({"num_images": 0}, r"Number of images must lie in \[1, 8\]"),
        ({"num_images": 9}, "Number of images must lie"),
        ({"class_label": 10}, "out of range"),
    ],
)
def test_generate_validation(demo, overrides, message):
    with pytest.raises(gr.Error, match=message):
        _generate(demo, **overrides)


def test_generate_gallery(demo):
    calls = []
    gallery = _generate(
        demo, class_label="5: 5", num_images=3, seed=11, progress=lambda *a, **k: calls.append(k)
    )
    assert len(gallery) == 3
    assert calls and calls[0]["desc"] == "Sampling tokens"
    for (image, caption), seed in zip(gallery, (11, 12, 13), strict=True):
        assert isinstance(image, PIL.Image.Image)
        assert image.size == (256, 256)  # 32×32 enlarged ×8 (nearest) for display
        assert caption == f"5: 5 · seed {seed}"
        pixels = np.asarray(image)
        assert np.array_equal(pixels[::8, ::8].repeat(8, 0).repeat(8, 1), pixels)  # nearest-neighbour blocks


def test_generate_seed_determinism(demo):
    first = [np.asarray(image) for image, _ in _generate(demo, seed=5, num_images=2)]
    again = [np.asarray(image) for image, _ in _generate(demo, seed=5, num_images=2)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    # Image i uses seed + i alone: the second image equals a single image drawn with seed 6.
    ((single, _),) = _generate(demo, seed=6, num_images=1)
    assert np.array_equal(first[1], np.asarray(single))
    ((other, _),) = _generate(demo, seed=1234, num_images=1)
    assert not np.array_equal(first[0], np.asarray(other))


def test_generate_unexpected_failure_is_a_sentence(app_module, digits_pipe):
    logic = app_module.IBQDemo(digits_pipe)

    def broken(**_):
        raise RuntimeError("internal detail")

    logic.pipe = broken
    with pytest.raises(gr.Error, match=r"Generation failed \(RuntimeError\); see the server log\."):
        _generate(logic)


# ---- tokenization -----------------------------------------------------------------------------------------


def test_tokenize_photo(app_module, demo, digits_pipe, photo):
    result = demo.tokenize(str(photo))
    assert result.input_image.shape == (256, 256, 3) and result.input_image.dtype == np.uint8
    assert result.reconstruction.shape == (256, 256, 3)
    assert result.grid == (8, 8) and result.num_tokens == 64
    assert result.index_map.shape == (256, 256, 3)  # 8×8 ids, 32 px per cell
    assert result.codebook_size == 256

    # Recompute the same numbers with numpy from the pipeline directly.
    pixels = images_to_tensor(PIL.Image.open(photo).convert("RGB"), resolution=32)
    source = ((pixels[0] + 1) / 2).permute(1, 2, 0).numpy()
    output = digits_pipe.reconstruct((pixels + 1) / 2, output_type="np")
    recon = output.images[0]
    a = (np.clip(source, 0, 1) * 255).astype(np.uint8).astype(np.float64) / 255
    b = (np.clip(recon, 0, 1) * 255).astype(np.uint8).astype(np.float64) / 255
    expected_psnr = 10 * np.log10(1.0 / np.mean((a - b) ** 2))
    assert result.psnr == pytest.approx(expected_psnr, rel=1e-9)
    ids = output.indices[0].numpy()
    assert result.used_codes == len(np.unique(ids))
    _, counts = np.unique(ids, return_counts=True)
    q = counts / counts.sum()
    assert result.perplexity == pytest.approx(float(np.exp(-(q * np.log(q)).sum())), rel=1e-6)
    # The index map paints each token's cell in that code's palette colour.
    assert np.array_equal(result.index_map[::32, ::32], app_module.code_palette(256)[ids])
    summary = result.summary()
    assert f"{result.psnr:.2f} dB" in summary
    assert f"{result.used_codes} / 256 distinct codes" in summary and "perplexity" in summary


def test_tokenize_accepts_other_modes(demo, tmp_path):
    for mode, size in (("L", (40, 33)), ("RGBA", (32, 32)), ("P", (50, 70))):
        path = tmp_path / f"image_{mode}.png"
        PIL.Image.new(mode, size, color=1 if mode == "P" else 128).save(path)
        result = demo.tokenize(str(path))
        assert result.reconstruction.shape == (256, 256, 3)
    jpeg = tmp_path / "photo.jpg"
    PIL.Image.new("RGB", (64, 48), (200, 30, 30)).save(jpeg)
    assert demo.tokenize(str(jpeg)).input_image.shape == (256, 256, 3)


def test_tokenize_validation(app_module, demo, digits_pipe, tmp_path, monkeypatch):
    with pytest.raises(gr.Error, match="Upload an image first"):
        demo.tokenize(None)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(gr.Error, match="not an image"):
        demo.tokenize(str(text))
    ppm = tmp_path / "image.ppm"
    PIL.Image.new("RGB", (8, 8)).save(ppm)
    with pytest.raises(gr.Error, match="Unsupported image type PPM"):
        demo.tokenize(str(ppm))
    truncated = tmp_path / "truncated.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        truncated
    )
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with pytest.raises(gr.Error, match="damaged or truncated"):
        demo.tokenize(str(truncated))
    # Pixel limit, checked from the header before decoding.
    small = app_module.IBQDemo(digits_pipe, app_module.DemoLimits(max_upload_pixels=1000))
    big = tmp_path / "big.png"
    PIL.Image.new("RGB", (40, 30)).save(big)
    with pytest.raises(gr.Error, match=r"40×30 = 1,200 pixels; the limit is 1,000"):
        small.tokenize(str(big))


@pytest.mark.parametrize(
    "pixels", [1500, 3000]
)  # PIL warns above MAX_IMAGE_PIXELS and refuses above twice it
def test_decompression_bomb_guard(app_module, demo, tmp_path, monkeypatch, pixels):
    path = tmp_path / "bomb.png"
    PIL.Image.new("L", (pixels, 1)).save(path)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the guard must turn PIL's warning into the page's error, not leak it
        with pytest.raises(gr.Error, match="decompression bomb"):
            demo.tokenize(str(path))


# ---- pure helpers -----------------------------------------------------------------------------------------


def test_index_map_image(app_module):
    ids = torch.tensor([[0, 1, 2], [3, 3, 255]])
    image = app_module.index_map_image(ids, 256, cell=5)
    assert image.shape == (10, 15, 3) and image.dtype == np.uint8
    palette = app_module.code_palette(256)
    assert len(np.unique(palette, axis=0)) == 256  # every code of a 256-code book has its own colour
    assert np.array_equal(image[5:10, 0:10], np.broadcast_to(palette[3], (5, 10, 3)))
    assert np.array_equal(image[7, 12], palette[255])
    with pytest.raises(ValueError, match=r"\[h, w\]"):
        app_module.index_map_image(ids[None], 256, cell=1)


def test_display_factor(app_module):
    assert app_module.display_factor(32, 256) == 8
    assert app_module.display_factor(256, 256) == 1
    assert app_module.display_factor(100, 256) == 3


# ---- the Blocks app ---------------------------------------------------------------------------------------


def test_create_demo(app_module, digits_pipe):
    limits = app_module.DemoLimits(max_images=3, concurrency_limit=2, max_queue_size=5)
    demo = app_module.create_demo(pipe=digits_pipe, limits=limits)
    assert isinstance(demo, gr.Blocks)
    assert demo.ibq_demo.pipe is digits_pipe
    assert sorted(fn.api_name for fn in demo.fns.values()) == ["generate", "tokenize"]
    assert demo._queue.max_size == 5 and demo._queue.default_concurrency_limit == 2
    dropdown = next(c for c in demo.blocks.values() if isinstance(c, gr.Dropdown))
    assert len(dropdown.choices) == 10
    slider = next(c for c in demo.blocks.values() if getattr(c, "elem_id", None) == "num-images")
    assert slider.maximum == 3
