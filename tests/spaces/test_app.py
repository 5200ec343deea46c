"""The demo's handlers without a browser: validation, generation, tokenization, metrics, model choice."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
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
from ibq_hf.image_processing import images_to_tensor  # noqa: E402


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
    assert defaults["jacobi_window"] == 0  # sequential decoding unless the generation config sets a window


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
        (float("nan"), "whole number"),
        (float("inf"), "whole number"),
        ([7], "id or a name, got list"),
        (True, "id or a name"),
        ("golden retriever", "Unknown class name 'golden retriever'.*listed in the Class dropdown"),
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
        ({"guidance_scale": -0.5}, r"Guidance scale must lie in \[1, 20\]"),
        ({"guidance_scale": 0.5}, r"Guidance scale must lie in \[1, 20\], got 0\.5"),  # the model refuses < 1
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
        ({"jacobi_window": -1}, r"Jacobi window must lie in \[0, 32\], got -1\."),
        ({"jacobi_window": 33}, r"Jacobi window must lie in \[0, 32\]"),
        ({"jacobi_window": 2.5}, "Jacobi window must be a whole number, got 2.5"),
        ({"jacobi_window": "four"}, "Jacobi window must be a number, got 'four'"),
        ({"jacobi_window": None}, "Jacobi window is empty"),
    ],
)
def test_generate_validation(demo, overrides, message):
    with pytest.raises(gr.Error, match=message):
        _generate(demo, **overrides)


def test_parse_generation_request(app_module, demo):
    """Raw API values (ids as strings, whole floats, numeric strings) → checked settings of the right types."""
    request = demo.parse_generation_request("7", "1", 0.05, 256.0, "0.5", "42", 8)
    assert request == app_module.GenerationRequest(7, 1.0, 0.05, 256, 0.5, 42, 8)
    assert request.jacobi_window == 0  # omitted: sequential decoding
    assert all(
        isinstance(v, int) for v in (request.class_id, request.top_k, request.seed, request.num_images)
    )
    windowed = demo.parse_generation_request("7", "1", 0.05, 256.0, "0.5", "42", 8, jacobi_window="4.0")
    assert windowed == app_module.GenerationRequest(7, 1.0, 0.05, 256, 0.5, 42, 8, jacobi_window=4)
    assert type(windowed.jacobi_window) is int
    # The largest window: DemoLimits.max_jacobi_window (32) for the digits model's 64 tokens.
    assert demo.max_jacobi_window == 32
    assert demo.parse_generation_request(7, 2, 1, 0, 1, 0, 1, 32).jacobi_window == 32


def _pipeline_images(pipe, class_id, seeds, **settings):
    """The pipeline called directly, one generator per image: the reference a demo request must reproduce."""
    return [
        np.asarray(image)
        for image in pipe(
            class_labels=[class_id],
            num_images_per_prompt=len(seeds),
            generator=[torch.Generator().manual_seed(s) for s in seeds],
            output_type="pil",
            **settings,
        ).images
    ]


def _native(gallery, factor=8):
    """Gallery images (enlarged ×factor, nearest) → the model's own pixels."""
    return [np.asarray(image)[::factor, ::factor] for image, _ in gallery]


def test_generate_with_a_jacobi_window_equals_the_pipeline(demo, digits_pipe):
    """Window 4: pixel for pixel ``pipe(..., jacobi_window=4, generator=[per-image seeds])``; window 0 is
    sequential decoding, today's output; the two differ for the same seeds (the random streams are used
    differently). A request without a window is window 0 (`test_parse_generation_request`)."""
    settings = dict(guidance_scale=2.0, temperature=1.0, top_k=0, top_p=1.0)
    gallery = _generate(demo, class_label=5, seed=11, num_images=2, jacobi_window=4)
    assert [caption for _, caption in gallery] == ["5: 5 · seed 11", "5: 5 · seed 12"]  # captions unchanged
    windowed = _pipeline_images(digits_pipe, 5, [11, 12], jacobi_window=4, **settings)
    assert all(np.array_equal(a, b) for a, b in zip(_native(gallery), windowed, strict=True))

    sequential = _pipeline_images(digits_pipe, 5, [11, 12], **settings)  # no window: today's output
    request = _generate(demo, class_label=5, seed=11, num_images=2, jacobi_window=0)
    assert all(np.array_equal(a, b) for a, b in zip(_native(request), sequential, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(windowed, sequential, strict=True))


@pytest.mark.slow  # builds a second demo around a 2×2-grid model (~1.2 s); default-suite budget
def test_jacobi_window_is_capped_by_the_token_count(app_module):
    """A model with few tokens offers windows up to its token count − 1 (here a 2×2 grid: 3)."""
    torch.manual_seed(0)
    pipe = IBQPipeline(
        vqvae=IBQVQModel(**TINY_TOKENIZER_CONFIG).eval(),
        transformer=IBQARForImageGeneration(IBQARConfig(**dict(TINY_PIPELINE_AR_CONFIG, grid_size=2))).eval(),
    )
    logic = app_module.IBQDemo(pipe)
    assert logic.max_jacobi_window == 3
    with pytest.raises(gr.Error, match=r"Jacobi window must lie in \[0, 3\], got 4"):
        logic.parse_generation_request(0, 2.0, 1.0, 0, 1.0, 0, 1, jacobi_window=4)
    blocks = app_module.create_demo(pipe=pipe)
    slider = next(c for c in blocks.blocks.values() if getattr(c, "elem_id", None) == "jacobi-window")
    assert (slider.minimum, slider.maximum, slider.value) == (0, 3, 0)


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


@pytest.mark.slow  # default-suite budget: heavy; runs in the slow set
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


# ---- progressive preview through the streamer --------------------------------------------------------------


def test_preview_streamer_hands_over_the_newest_partial_grid(app_module):
    streamer = app_module.PreviewStreamer(every=3, total=10)
    steps = [torch.tensor([i, 100 + i]) for i in range(10)]
    for step in steps[:4]:
        streamer.put(step)
    reader = iter(streamer)
    assert torch.equal(next(reader), torch.stack(steps[:3], dim=1))  # [B=2, 3]
    for step in steps[4:]:
        streamer.put(step[:, None])  # [B, 1] works too
    streamer.end()
    # Grids at 6 and 9 steps were queued; a late reader gets only the newest, then the stream ends.
    assert [grid.shape for grid in reader] == [(2, 9)]
    with pytest.raises(ValueError, match="every must be >= 1"):
        app_module.PreviewStreamer(every=0, total=10)


def test_generate_progressive_yields_previews_then_the_images(app_module, digits_pipe):
    logic = app_module.IBQDemo(digits_pipe, app_module.DemoLimits(previews=3))
    settings = dict(
        class_label=7, guidance_scale=2.0, temperature=1.0, top_k=0, top_p=1.0, seed=4, num_images=2
    )
    galleries = list(logic.generate_progressive(**settings))
    *previews, final = galleries
    assert 1 <= len(previews) <= 3
    for gallery in previews:
        assert [caption.split(" · ")[:2] for _, caption in gallery] == [
            ["7: 7", "seed 4"],
            ["7: 7", "seed 5"],
        ]
        done = int(gallery[0][1].rsplit(" · ", 1)[1].split("/")[0])
        assert 0 < done < 64 and gallery[0][1].endswith(f"{done}/64 tokens")
        pixels = np.asarray(gallery[0][0])
        assert pixels.shape == (256, 256, 3)
        assert (pixels[-32:] == 128).all()  # the last token row is not sampled yet: grey
    expected = logic.generate(**settings)
    assert [caption for _, caption in final] == [caption for _, caption in expected]
    for (image, _), (reference, _) in zip(final, expected, strict=True):
        assert np.array_equal(np.asarray(image), np.asarray(reference))
    # Without previews the stream is the final gallery alone; errors surface to the reader.
    quiet = app_module.IBQDemo(digits_pipe, app_module.DemoLimits(previews=0))
    (only,) = list(quiet.generate_progressive(**settings))
    assert np.array_equal(np.asarray(only[0][0]), np.asarray(expected[0][0]))
    logic.pipe = lambda **_: (_ for _ in ()).throw(ValueError("bad settings"))
    with pytest.raises(gr.Error, match="Generation failed: bad settings"):
        list(logic.generate_progressive(**settings))


def test_generate_progressive_with_a_jacobi_window(app_module, digits_pipe):
    """With a window the streamer still gets every token in order (several per pass): previews, then the final
    gallery, pixel for pixel what :meth:`generate` returns with the same window."""
    logic = app_module.IBQDemo(digits_pipe, app_module.DemoLimits(previews=3))
    settings = dict(
        class_label=7, guidance_scale=2.0, temperature=1.0, top_k=0, top_p=1.0, seed=4, num_images=2
    )
    *previews, final = list(logic.generate_progressive(**settings, jacobi_window=6))
    assert 1 <= len(previews) <= 3
    done = [int(gallery[0][1].rsplit(" · ", 1)[1].split("/")[0]) for gallery in previews]
    assert done == sorted(done) and all(0 < n < 64 for n in done)
    expected = logic.generate(**settings, jacobi_window=6)
    assert [caption for _, caption in final] == [caption for _, caption in expected]
    assert all(np.array_equal(a, b) for a, b in zip(_native(final), _native(expected), strict=True))
    # Positional callers are unchanged: the eighth argument is still `progress`.
    calls = []
    positional = logic.generate(7, 2.0, 1.0, 0, 1.0, 4, 2, lambda *a, **k: calls.append(k), jacobi_window=6)
    assert calls and all(
        np.array_equal(a, b) for a, b in zip(_native(positional), _native(expected), strict=True)
    )


def test_generate_endpoint_streams_through_the_pipeline_streamer(app_module, blocks, monkeypatch):
    """The Generate event is a generator (Gradio shows each gallery) fed by the pipeline's ``streamer=``."""
    streamers, windows = [], []
    call = type(blocks.ibq_demo.pipe).__call__

    def spy(self, *args, **kwargs):
        streamers.append((kwargs.get("generation_kwargs") or {}).get("streamer"))
        windows.append(kwargs.get("jacobi_window"))
        return call(self, *args, **kwargs)

    monkeypatch.setattr(type(blocks.ibq_demo.pipe), "__call__", spy)
    galleries = list(_endpoint(blocks, "generate").fn(3, 2.0, 1.0, 0, 1.0, 0, 1))
    assert len(streamers) == 1 and isinstance(streamers[0], app_module.PreviewStreamer)
    assert len(galleries) >= 2  # at least one preview, then the images
    assert [caption for _, caption in galleries[-1]] == ["3: 3 · seed 0"]
    # The window control is the event's last input; the handler hands it to the pipeline.
    galleries = list(_endpoint(blocks, "generate").fn(3, 2.0, 1.0, 0, 1.0, 0, 1, 5))
    assert windows == [0, 5] and len(galleries) >= 2


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


def test_tokenize_reads_16_bit_pngs(demo, tmp_path):
    """A 16-bit greyscale upload is scaled to 8 bits (it came out white before)."""
    values = np.full((48, 48), 30000, dtype=np.uint16)
    path = tmp_path / "sixteen.png"
    PIL.Image.fromarray(values).save(path)
    assert PIL.Image.open(path).mode == "I;16"
    result = demo.tokenize(str(path))
    assert np.all(result.input_image == round(30000 / 257))  # 117, not 255


def test_tokenize_refuses_absurd_aspect_ratios(demo, tmp_path):
    path = tmp_path / "strip.png"
    PIL.Image.new("RGB", (100_000, 1), (10, 200, 30)).save(path)
    with pytest.raises(gr.Error, match=r"aspect ratio of 100000:1, above the limit of 100:1.*Crop it"):
        demo.tokenize(str(path))


_TOKENIZE_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, math, resource, sys
    import numpy as np, PIL.Image, torch

    torch.set_num_threads(1)
    sys.path[:0] = sys.argv[1:3]
    from spaces_testutil import BUNDLED_MODEL, load_app
    from ibq_hf import image_processing

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    app = load_app()
    pipe = app.load_pipeline(str(BUNDLED_MODEL), device="cpu")
    pipe.set_progress_bar_config(disable=True)
    demo = app.IBQDemo(pipe, app.DemoLimits(), source=str(BUNDLED_MODEL))
    folder = sys.argv[3]
    normal = folder + "/normal.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(normal)
    for _ in range(2):
        demo.tokenize(normal)
    before = peak_mb()
    image_processing.MAX_ASPECT_RATIO = math.inf  # lifted: the work must still be bounded by the output
    for size in [(100_000, 1), (1, 100_000), (1_000_000, 1)]:
        path = folder + "/thin.png"
        PIL.Image.new("RGB", size, (10, 200, 30)).save(path)
        assert demo.tokenize(path).input_image.shape == (256, 256, 3)
    print(json.dumps({"normal_mb": before, "thin_mb": peak_mb()}))
    """
)


@pytest.mark.slow  # a subprocess that imports gradio and loads the digits pipeline
def test_tokenize_thin_uploads_do_not_blow_up_memory(tmp_path):
    """Peak RSS of the Tokenize handler with 100,000×1 … 1,000,000×1 uploads stays within +300 MB of a normal
    photo (before: +500 MB for 100,000×1; 1,000,000×1 would have needed 12 GB). Measured: +18 MB."""
    spaces_tests = Path(__file__).resolve().parent
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _TOKENIZE_MEMORY_SCRIPT,
            str(spaces_tests),
            str(spaces_tests.parent),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["thin_mb"] - figures["normal_mb"] < 300, figures


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


# ---- the API: what it lists is what it accepts; refusals are one log line ---------------------------------


def _endpoint(demo, name):
    return next(fn for fn in demo.fns.values() if fn.api_name == name)


def _preprocess(demo, name, values):
    """What Gradio hands the handler for an API call with ``values`` (its own checks included)."""
    import asyncio

    return asyncio.run(demo.preprocess_data(_endpoint(demo, name), list(values), None))


@pytest.fixture(scope="module")
def blocks(app_module, digits_pipe):
    return app_module.create_demo(pipe=digits_pipe, limits=app_module.DemoLimits(max_images=2))


def test_api_listing_says_what_the_class_picker_accepts(blocks):
    """The class was listed as ``Literal['0', …, '9']`` while Gradio refused '7' (it wanted the int 7)."""
    params = {
        p["parameter_name"]: p for p in blocks.get_api_info()["named_endpoints"]["/generate"]["parameters"]
    }
    class_param = params["class_label"]
    assert class_param["python_type"]["type"] == "int | str"
    assert "Literal" not in str(class_param)
    assert (
        "class id 0 to 9, as an int (e.g. 9) or a string (e.g. '9')"
        in class_param["python_type"]["description"]
    )
    assert class_param["component"] == "Dropdown"  # drawn by Gradio's dropdown
    # Ranges are listed where `view_api` shows them, and are the handler's.
    assert params["guidance_scale"]["python_type"]["description"] == "a number from 1 to 20"
    assert params["top_k"]["python_type"] == {"type": "int", "description": "a whole number from 0 to 256"}
    assert params["seed"]["python_type"]["description"] == "a whole number from 0 to 4294967295"
    assert params["num_images"]["python_type"]["description"] == "a whole number from 1 to 2"
    assert list(params)[-1] == "jacobi_window"  # last: positional API calls keep their order
    assert params["jacobi_window"]["python_type"] == {
        "type": "int",
        "description": "a whole number from 0 to 32",
    }
    assert (
        params["jacobi_window"]["parameter_has_default"] and params["jacobi_window"]["parameter_default"] == 0
    )
    assert params["jacobi_window"]["label"] == "Jacobi window (0 = off)"
    description = blocks.get_api_info()["named_endpoints"]["/generate"]["description"]
    assert "jacobi_window > 0 samples with speculative Jacobi decoding" in description


def test_api_callers_that_omit_the_jacobi_window_get_0(blocks):
    """A `gradio_client` call written before the control existed (7 values) is filled with the listed default."""
    from gradio_client.utils import construct_args

    parameters = blocks.get_api_info()["named_endpoints"]["/generate"]["parameters"]
    for args, kwargs in (((7, 2.0, 1.0, 0, 1.0, 0, 1), {}), ((7,), {"seed": 3}), ((), {"class_label": 7})):
        values = construct_args(parameters, args, kwargs)
        raw = _preprocess(blocks, "generate", values)
        assert blocks.ibq_demo.parse_generation_request(*raw).jacobi_window == 0
    raw = _preprocess(blocks, "generate", construct_args(parameters, (7,), {"jacobi_window": 4}))
    assert blocks.ibq_demo.parse_generation_request(*raw).jacobi_window == 4


@pytest.mark.parametrize("value", ["7", 7, 7.0, "7: 7", " 7 "])
def test_api_accepts_class_ids_as_listed(blocks, value):
    """Through Gradio's own input processing (the server path), then the handler's parsing."""
    raw = _preprocess(blocks, "generate", [value, 2.0, 1.0, 0, 1.0, 0, 1, 0])
    assert blocks.ibq_demo.parse_generation_request(*raw).class_id == 7


def test_api_accepts_class_names(app_module):
    """A model with real names (ImageNet's, tiny random weights): names reach the handler through Gradio."""
    torch.manual_seed(0)
    pipe = IBQPipeline(
        vqvae=IBQVQModel(**TINY_TOKENIZER_CONFIG).eval(),
        transformer=IBQARForImageGeneration(
            IBQARConfig(**dict(TINY_PIPELINE_AR_CONFIG, num_classes=1000))
        ).eval(),
    )
    blocks = app_module.create_demo(pipe=pipe)
    for value in ("golden retriever", "207", 207, "207: golden retriever"):
        raw = _preprocess(blocks, "generate", [value, 2.0, 1.0, 0, 1.0, 0, 1, 0])
        assert blocks.ibq_demo.parse_generation_request(*raw).class_id == 207
    description = app_module.ClassPicker(choices=blocks.ibq_demo.label_choices()).api_info()
    assert "class id 0 to 999" in description["additional_description"]
    assert "or a class name (e.g. 'toilet tissue')" in description["additional_description"]


@pytest.mark.slow  # drives every control through Gradio's preprocessing (~2.2 s); default-suite budget
def test_controls_offer_only_valid_values(blocks):
    """Every control's lowest and highest value generates (guidance 0 … 1 always failed in the model)."""
    generate = _endpoint(blocks, "generate")
    controls = generate.inputs
    assert [type(c).__name__ for c in controls] == [
        "ClassPicker",
        "RangedSlider",
        "RangedSlider",
        "RangedSlider",
        "RangedSlider",
        "RangedNumber",
        "RangedSlider",
        "RangedSlider",
    ]
    demo_logic = blocks.ibq_demo
    for _, value in controls[0].choices:
        assert demo_logic.parse_class_label(value) == value
    for pick in (lambda c: c.minimum, lambda c: c.maximum, lambda c: c.value):
        *values, window = [controls[0].choices[-1][1], *(pick(c) for c in controls[1:])]
        gallery = demo_logic.generate(*values, jacobi_window=window)
        assert len(gallery) == values[-1]
    guidance = controls[1]
    assert guidance.minimum == 1.0 and guidance.step == pytest.approx(0.1)
    window = controls[-1]
    assert (window.elem_id, window.minimum, window.maximum, window.value, window.step) == (
        "jacobi-window",
        0,
        32,
        0,
        1,
    )
    assert window.info.startswith("Speculative Jacobi decoding: tokens drafted and verified per step")


def test_rejected_request_is_one_log_line(blocks, caplog):
    """A refused input: one WARNING line (no traceback) and a page error Gradio will not print a traceback for."""

    def generate(*values):  # the endpoint streams (previews, then the images): run it to the end
        return list(_endpoint(blocks, "generate").fn(*values))

    caplog.set_level("INFO", logger="ibq_hf.spaces")
    with pytest.raises(gr.Error, match="Class 12 is out of range") as raised:
        generate("12", 2.0, 1.0, 0, 1.0, 0, 1)
    assert raised.value.print_exception is False
    with pytest.raises(gr.Error, match=r"Guidance scale must lie in \[1, 20\], got 0\.5"):
        generate(7, 0.5, 1.0, 0, 1.0, 0, 1)
    with pytest.raises(gr.Error, match=r"Jacobi window must lie in \[0, 32\], got -1\."):
        generate(7, 2.0, 1.0, 0, 1.0, 0, 1, -1)
    with pytest.raises(gr.Error, match="Upload an image first"):
        _endpoint(blocks, "tokenize").fn(None)
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "rejected /generate request: Class 12 is out of range: this model has 10 classes, ids 0 to 9.",
        "rejected /generate request: Guidance scale must lie in [1, 20], got 0.5.",
        "rejected /generate request: Jacobi window must lie in [0, 32], got -1.",
        "rejected /tokenize request: Upload an image first (PNG, JPEG, WEBP, BMP, GIF or TIFF).",
    ]
    assert all(record.exc_info is None and record.levelname == "WARNING" for record in caplog.records)


def test_rejection_log_line_is_one_line_and_faults_keep_their_traceback(app_module, digits_pipe, caplog):
    logic = app_module.IBQDemo(digits_pipe)
    caplog.set_level("INFO", logger="ibq_hf.spaces")

    def refuses(**_):
        raise ValueError("first line\n  second line")

    logic.pipe = refuses
    with pytest.raises(gr.Error), app_module.rejections_logged("generate"):
        _generate(logic)
    (record,) = caplog.records
    assert record.getMessage() == "rejected /generate request: Generation failed: first line second line"
    caplog.clear()

    def breaks(**_):
        raise RuntimeError("internal detail")

    logic.pipe = breaks
    with pytest.raises(gr.Error) as raised, app_module.rejections_logged("generate"):
        _generate(logic)
    assert raised.value.print_exception is False  # its traceback is logged once, below, not twice
    (record,) = caplog.records
    assert (
        record.levelname == "ERROR" and record.exc_info is not None and "rejected" not in record.getMessage()
    )
