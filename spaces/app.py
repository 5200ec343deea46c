"""IBQ demo (Gradio): class-conditional generation and tokenizer reconstruction with an `IBQPipeline`.

Runs as a Hugging Face Space (``python app.py``) or locally from a clone::

    python spaces/app.py                                  # the bundled 32×32 digits pipeline, offline
    python spaces/app.py --model user/ibq-imagenet-256    # a Hub repo id or a local pipeline folder
    IBQ_HF_SPACE_MODEL=/path/to/pipeline python spaces/app.py

The handlers (:class:`IBQDemo`) are plain functions of plain values, so they are unit-tested without a browser;
:func:`create_demo` only wires them to components. Every user-facing failure is a ``gr.Error`` with a sentence
that says what to change: the page never shows a stack trace.
"""

from __future__ import annotations

import argparse
import colorsys
import contextvars
import logging
import math
import os
import queue
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps

HERE = Path(__file__).resolve().parent

# From a clone whose package is not installed, fall back to the source tree (a built Space ships `ibq_hf/`
# beside this file, which `python app.py` already finds first on sys.path).
try:
    import ibq_hf
except ImportError:  # pragma: no cover - depends on how the app is launched
    if (HERE.parent / "src" / "ibq_hf").is_dir():
        sys.path.insert(0, str(HERE.parent / "src"))

import gradio as gr  # noqa: E402  (after the sys.path fallback above)
import torch  # noqa: E402
from transformers.generation.streamers import BaseStreamer  # noqa: E402

import ibq_hf  # noqa: E402
from ibq_hf.evaluation.image_metrics import psnr_uint8  # noqa: E402
from ibq_hf.image_processing import images_to_tensor, to_rgb, to_uint8  # noqa: E402
from ibq_hf.models.generation_ar import resolve_generation_settings  # noqa: E402
from ibq_hf.models.quantizer import codebook_usage  # noqa: E402
from ibq_hf.pipeline import IBQPipeline  # noqa: E402

logger = logging.getLogger("ibq_hf.spaces")

#: Environment variable naming the model (Hub repo id or local folder) when no ``--model`` is given.
MODEL_ENV_VAR = "IBQ_HF_SPACE_MODEL"
#: Written by ``build_space.py --model``: the default model of a built Space (repo id or folder beside app.py).
DEFAULT_MODEL_FILE = "default_model.txt"
#: The bundled digits pipeline: beside app.py in a built Space, under checkpoints/ in a clone.
BUNDLED_MODEL_DIRNAME = "ibq-digits"
#: Image formats the Tokenize tab decodes (PIL format names); anything else is refused before decoding.
ALLOWED_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "BMP", "GIF", "TIFF")  # MPO: how PIL names many phone JPEGs
MAX_SEED = 2**32 - 1
#: Guidance below 1 is refused by the model (``logits = u + s·(c − u)``; 1 = no guidance), so no control offers it.
MIN_GUIDANCE_SCALE = 1.0
#: Lowest temperature and top-p the sliders offer; the API accepts any value in (0, max] (both must be > 0).
SLIDER_MIN_TEMPERATURE = 0.05
SLIDER_MIN_TOP_P = 0.01


@dataclass(frozen=True)
class DemoLimits:
    """Bounds on what one request may ask for: keep a shared CPU Space responsive and memory-safe."""

    max_images: int = 8
    #: Uploads above this many pixels are refused from the header, before any decoding (decompression bombs).
    max_upload_pixels: int = 25_000_000
    max_file_size: str = "20mb"
    max_guidance_scale: float = 20.0
    max_temperature: float = 5.0
    concurrency_limit: int = 1
    max_queue_size: int = 16
    #: Small outputs are enlarged (nearest neighbour, integer factor) to at least this many pixels for display.
    display_size: int = 256
    #: Partial images shown while a Generate request samples (each costs one decoder pass); 0 = final images only.
    previews: int = 4
    #: Largest speculative Jacobi window offered (draft tokens verified per forward pass; also capped at the
    #: image's token count − 1, beyond which the model would clamp it anyway).
    max_jacobi_window: int = 32


# ---------------------------------------------------------------------------------------------------------------
# Model selection
# ---------------------------------------------------------------------------------------------------------------


def resolve_model_source(model: str | None = None, app_dir: Path = HERE) -> str:
    """The pipeline to load: ``model`` > ``$IBQ_HF_SPACE_MODEL`` > ``default_model.txt`` > the bundled digits.

    A local folder wins over a Hub id of the same spelling; ``default_model.txt`` paths are relative to app.py.
    """
    for candidate in (model, os.environ.get(MODEL_ENV_VAR)):
        if candidate and candidate.strip():
            return candidate.strip()
    default_file = app_dir / DEFAULT_MODEL_FILE
    if default_file.is_file():
        name = default_file.read_text().strip()
        if name:
            return str(app_dir / name) if (app_dir / name).is_dir() else name
    candidates = (app_dir / BUNDLED_MODEL_DIRNAME, app_dir.parent / "checkpoints" / BUNDLED_MODEL_DIRNAME)
    for folder in candidates:
        if (folder / "model_index.json").is_file():
            return str(folder)
    raise FileNotFoundError(
        "No model given and the bundled digits pipeline was not found (looked for "
        f"{', '.join(str(p) for p in candidates)}); pass --model REPO_ID_OR_FOLDER or set {MODEL_ENV_VAR}."
    )


def load_pipeline(source: str, device: str | None = None) -> IBQPipeline:
    """Load an `IBQPipeline` (local folder or Hub repo id) onto ``device`` (CUDA when available)."""
    is_local = Path(source).is_dir()
    try:
        pipe = IBQPipeline.from_pretrained(source, local_files_only=is_local)
    except Exception as error:
        where = "folder" if is_local else "Hub repo"
        raise RuntimeError(f"Could not load an IBQPipeline from {where} {source!r}: {error}") from error
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = pipe.to(device)
    pipe.vqvae.eval()
    pipe.transformer.eval()
    return pipe


# ---------------------------------------------------------------------------------------------------------------
# Pure helpers (metrics, colour maps, display)
# ---------------------------------------------------------------------------------------------------------------


@cache
def code_palette(num_codes: int) -> np.ndarray:
    """A fixed colour per code index [K, 3] uint8: golden-ratio hues so neighbouring ids look different."""
    colors = []
    for i in range(num_codes):
        hue = (i * 0.6180339887498949) % 1.0
        saturation = 0.55 + 0.45 * ((i * 7) % 5) / 4.0
        value = 0.65 + 0.35 * ((i * 3) % 4) / 3.0
        colors.append(colorsys.hsv_to_rgb(hue, saturation, value))
    return to_uint8(np.asarray(colors))


def upscale_nearest(image: np.ndarray, factor: int) -> np.ndarray:
    """[H, W, C] → [H·f, W·f, C] by repeating pixels: small images stay crisp when displayed large."""
    if factor <= 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def index_map_image(indices: np.ndarray | torch.Tensor, num_codes: int, cell: int) -> np.ndarray:
    """Token ids [h, w] → an RGB uint8 image [h·cell, w·cell, 3]: each id through :func:`code_palette`."""
    ids = indices.cpu().numpy() if isinstance(indices, torch.Tensor) else np.asarray(indices)
    if ids.ndim != 2:
        raise ValueError(f"indices must be [h, w], got shape {ids.shape}.")
    return upscale_nearest(code_palette(num_codes)[ids.astype(np.int64)], max(1, cell))


def display_factor(side: int, display_size: int) -> int:
    """Integer enlargement that brings ``side`` pixels to at least ``display_size`` (1 for large images)."""
    return max(1, math.ceil(display_size / max(1, side)))


# ---------------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------------


class InvalidRequest(gr.Error):
    """A request refused because of its input: a sentence on the page, one line in the server log.

    Gradio prints the traceback of every ``gr.Error`` unless ``print_exception=False``; a refused input is not a
    server fault, so :func:`rejections_logged` writes one ``WARNING`` line for it instead.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, print_exception=False)


def _fail(message: str) -> InvalidRequest:
    return InvalidRequest(message)


def _server_fault(message: str) -> gr.Error:
    """A sentence for the page after a server fault (its traceback is already in the log: not printed twice)."""
    return gr.Error(message, print_exception=False)


def one_line(text: str) -> str:
    """Collapse whitespace (newlines in wrapped library messages) so a log entry stays one line."""
    return " ".join(str(text).split())


@contextmanager
def rejections_logged(endpoint: str) -> Iterator[None]:
    """Log one line ``rejected /<endpoint> request: <message>`` per :class:`InvalidRequest`, then re-raise it.

    Server faults are not rejections: they are logged with their traceback where they are caught.
    """
    try:
        yield
    except InvalidRequest as error:
        logger.warning("rejected /%s request: %s", endpoint, one_line(error.message))
        raise


def _number(value: Any, name: str, low: float, high: float, *, low_open: bool = False) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _fail(f"{name} is empty: enter a number.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _fail(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(number) or number < low or number > high or (low_open and number == low):
        bracket = "(" if low_open else "["
        raise _fail(f"{name} must lie in {bracket}{low:g}, {high:g}], got {value!r}.")
    return number


def _integer(value: Any, name: str, low: int, high: int) -> int:
    number = _number(value, name, low, high)
    if number != int(number):
        raise _fail(f"{name} must be a whole number, got {value!r}.")
    return int(number)


def open_upload(
    upload: str | os.PathLike | PIL.Image.Image | None, max_pixels: int, allowed_formats: Sequence[str]
) -> PIL.Image.Image:
    """Open an uploaded image safely: refuse other formats and oversized pictures *before* decoding them.

    PIL reads only the header in ``Image.open``; the pixel count is checked there, so a small file that would
    decode to gigabytes (a decompression bomb) never gets decoded. Returns an RGB image, EXIF-rotated.
    """
    if upload is None or (isinstance(upload, str) and not upload):
        raise _fail("Upload an image first (PNG, JPEG, WEBP, BMP, GIF or TIFF).")
    if isinstance(upload, PIL.Image.Image):
        image = upload
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
                image = PIL.Image.open(upload)
        except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning):
            raise _fail(
                f"This image has too many pixels (a possible decompression bomb); the limit is "
                f"{max_pixels:,} pixels. Upload a smaller picture."
            ) from None
        except PIL.UnidentifiedImageError:
            raise _fail(
                "This file is not an image PIL can read; upload a PNG, JPEG or WEBP picture."
            ) from None
        except OSError as error:
            raise _fail(f"Could not read the upload: {error}.") from None
    try:
        if image.format is not None and image.format not in allowed_formats:
            raise _fail(f"Unsupported image type {image.format}; allowed: {', '.join(allowed_formats)}.")
        width, height = image.size
        if width * height > max_pixels:
            raise _fail(
                f"The image is {width}×{height} = {width * height:,} pixels; the limit is {max_pixels:,}. Upload "
                "a smaller picture (it is resized to the model's resolution anyway)."
            )
        if width < 1 or height < 1:
            raise _fail("The image is empty.")
        try:
            image.load()  # decode now, inside the guard
            return to_rgb(PIL.ImageOps.exif_transpose(image))  # 16-bit PNGs scaled, not clipped white
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            raise _fail(f"The image file is damaged or truncated and cannot be decoded ({error}).") from None
    finally:
        if image is not upload:  # we opened it: release the file handle, also on errors
            image.close()


# ---------------------------------------------------------------------------------------------------------------
# Handlers
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationRequest:
    """The checked settings of one Generate request (what :meth:`IBQDemo.generate` samples with)."""

    class_id: int
    guidance_scale: float
    temperature: float
    top_k: int
    top_p: float
    seed: int
    num_images: int
    #: Speculative Jacobi decoding: draft tokens verified per forward pass (0 = sequential decoding).
    jacobi_window: int = 0

    @property
    def seeds(self) -> list[int]:
        """Seed of each image: image i uses ``seed + i`` (wrapping at 2**32)."""
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.num_images)]


class PreviewStreamer(BaseStreamer):
    """A transformers streamer that hands partial token grids from the sampling thread to a reader.

    ``generate()`` calls ``put(tokens)`` once per step with that step's image tokens ([B] or [B, 1]) and
    ``end()`` after the last. Every ``every`` steps (below ``total``) the tokens so far, [B, n], are queued;
    iterating yields the newest queued grid (older ones a slow reader has not taken are skipped) until ``end()``
    or ``close()``.
    """

    def __init__(self, every: int, total: int) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1 (steps between previews), got {every}.")
        self.every = every
        self.total = total
        self._steps: list[torch.Tensor] = []
        self._queue: queue.Queue[torch.Tensor | None] = queue.Queue()

    def put(self, value: torch.Tensor) -> None:
        self._steps.append(value.detach().reshape(-1).cpu())
        done = len(self._steps)
        if done % self.every == 0 and done < self.total:
            self._queue.put(torch.stack(self._steps, dim=1))

    def end(self) -> None:
        self._queue.put(None)

    def close(self) -> None:
        """Stop the reader (the producer calls it when sampling ends, also after a failure)."""
        self._queue.put(None)

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            finished = False
            while not self._queue.empty():  # only the newest grid is worth decoding
                newer = self._queue.get()
                if newer is None:
                    finished = True
                    break
                item = newer
            yield item
            if finished:
                return


@dataclass
class TokenizeResult:
    """Everything the Tokenize tab shows (arrays are uint8 [H, W, 3], enlarged for display)."""

    input_image: np.ndarray
    reconstruction: np.ndarray
    index_map: np.ndarray
    psnr: float
    used_codes: int
    codebook_size: int
    perplexity: float
    num_tokens: int
    grid: tuple[int, int]

    def summary(self) -> str:
        """Markdown shown under the images."""
        psnr = "∞ (identical)" if math.isinf(self.psnr) else f"{self.psnr:.2f} dB"
        share = 100.0 * self.used_codes / self.codebook_size
        return (
            f"**PSNR:** {psnr} (uint8, model-resolution input vs reconstruction)  \n"
            f"**Codebook usage:** {self.used_codes} / {self.codebook_size} distinct codes ({share:.1f} %) "
            f"in {self.num_tokens} tokens ({self.grid[0]}×{self.grid[1]} grid), perplexity "
            f"{self.perplexity:.1f}"
        )


class IBQDemo:
    """The demo's logic around one loaded pipeline; each public method is one UI action."""

    def __init__(self, pipe: IBQPipeline, limits: DemoLimits | None = None, source: str = "") -> None:
        self.pipe = pipe
        self.limits = limits or DemoLimits()
        self.source = source
        self.num_classes = int(pipe.transformer.config.num_classes)
        self.vocab_size = int(pipe.transformer.config.vocab_size)
        self.codebook_size = int(pipe.vqvae.config.num_embeddings)
        self.tokenizer_resolution = int(pipe.vqvae.config.resolution)
        self.grid_size = int(pipe.transformer.config.grid_size)
        self.image_size = self.grid_size * int(pipe.vqvae.downsample_factor)
        #: Largest Jacobi window accepted: a window of grid² − 1 already drafts the whole image.
        self.max_jacobi_window = max(0, min(self.limits.max_jacobi_window, self.grid_size**2 - 1))
        self.id2label = pipe.id2label
        self._resolve_class_labels = pipe.resolve_class_labels  # the model's classes: fixed once loaded

    # ---- generation ---------------------------------------------------------------------------------------

    def label_choices(self) -> list[tuple[str, int]]:
        """Dropdown entries ``("3: name", 3)``: the model's own names, ImageNet's for ImageNet models, else ids."""
        if not self.id2label:
            return [(str(i), i) for i in range(self.num_classes)]
        return [(f"{i}: {name}", i) for i, name in self.id2label.items()]

    def generation_defaults(self) -> dict[str, float | int]:
        """Slider defaults: what the model samples with when a call sets nothing (its generation config merged
        with the built-in defaults by :func:`~ibq_hf.models.generation_ar.resolve_generation_settings`, e.g.
        guidance 2.0 for the digits model). An invalid stored config falls back to the built-in defaults."""
        try:
            settings = resolve_generation_settings(self.pipe.transformer.generation_config)
        except ValueError as error:
            message = one_line(str(error))
            logger.warning("invalid generation config (%s); the controls start at the defaults", message)
            settings = resolve_generation_settings(None)
        names = ("guidance_scale", "temperature", "top_k", "top_p", "jacobi_window")
        return {name: settings[name] for name in names}

    def parse_class_label(self, value: Any) -> int:
        """Dropdown value, id, ``"3: name"`` or a class name → one class id in range (else a clear error).

        The pipeline's parser (:meth:`IBQPipeline.resolve_class_labels`) does the work; the demo adds what a web
        form sends (whole floats such as ``7.0``) and refuses lists, which would be several classes.
        """
        if value is None or (isinstance(value, str) and not value.strip()):
            raise _fail("Pick a class first.")
        if isinstance(value, bool) or not isinstance(value, (int, float, str, np.integer, np.floating)):
            raise _fail(f"Class must be an id or a name, got {type(value).__name__}.")
        if isinstance(value, (float, np.floating)):
            if not math.isfinite(value) or float(value) != int(value):  # int(nan) would be a bare ValueError
                raise _fail(f"Class id must be a whole number, got {value!r}.")
            value = int(value)
        try:
            (class_id,) = self._resolve_class_labels(value, names_where="the Class dropdown")
        except (ValueError, TypeError) as error:
            message = str(error)
            if message.startswith(
                "Class label "
            ):  # "Class label 12 is out of range: ..." reads "Class 12 ..."
                message = "Class " + message[len("Class label ") :]
            raise _fail(message) from None
        return class_id

    def label_name(self, class_id: int) -> str:
        name = self.id2label.get(class_id)
        return f"{class_id}: {name.split(',')[0]}" if name else str(class_id)

    def parse_generation_request(
        self,
        class_label: Any,
        guidance_scale: Any,
        temperature: Any,
        top_k: Any,
        top_p: Any,
        seed: Any,
        num_images: Any,
        jacobi_window: Any = 0,
    ) -> GenerationRequest:
        """The raw values of a Generate click or an API call → checked settings (else :class:`InvalidRequest`).

        Every range contains its control's range, so anything the page offers is accepted; the API listing's
        types (ids as int or string, names, numbers) are all parsed here, not by Gradio.
        """
        limits = self.limits
        return GenerationRequest(
            class_id=self.parse_class_label(class_label),
            guidance_scale=_number(
                guidance_scale, "Guidance scale", MIN_GUIDANCE_SCALE, limits.max_guidance_scale
            ),
            temperature=_number(temperature, "Temperature", 0.0, limits.max_temperature, low_open=True),
            top_k=_integer(top_k, "Top-k", 0, self.vocab_size),
            top_p=_number(top_p, "Top-p", 0.0, 1.0, low_open=True),
            seed=_integer(seed, "Seed", 0, MAX_SEED),
            num_images=_integer(num_images, "Number of images", 1, limits.max_images),
            jacobi_window=_integer(jacobi_window, "Jacobi window", 0, self.max_jacobi_window),
        )

    def generate(
        self,
        class_label: Any,
        guidance_scale: Any,
        temperature: Any,
        top_k: Any,
        top_p: Any,
        seed: Any,
        num_images: Any,
        progress: Callable[..., Any] | None = None,
        jacobi_window: Any = 0,
    ) -> list[tuple[PIL.Image.Image, str]]:
        """Validate the settings, sample ``num_images`` images (image i uses seed ``seed + i``), caption them.

        One generator per image makes each image depend only on its class, seed and settings, not on how many
        images were asked for. ``jacobi_window`` > 0 samples with speculative Jacobi decoding (the same
        distribution in fewer forward passes; a seed gives another image than with sequential decoding).
        """
        request = self.parse_generation_request(
            class_label, guidance_scale, temperature, top_k, top_p, seed, num_images, jacobi_window
        )
        if progress is not None:
            progress(0.0, desc="Sampling tokens")
        return self._gallery(request, self._sample(request))

    def generate_progressive(
        self,
        class_label: Any,
        guidance_scale: Any,
        temperature: Any,
        top_k: Any,
        top_p: Any,
        seed: Any,
        num_images: Any,
        progress: Callable[..., Any] | None = None,
        jacobi_window: Any = 0,
    ) -> Iterator[list[tuple[PIL.Image.Image, str]]]:
        """:meth:`generate` that also yields partial images while it samples (``limits.previews`` of them).

        The pipeline runs in a worker thread with a :class:`PreviewStreamer` (``streamer=`` of ``generate()``);
        this generator decodes the latest partial token grid it hands over (the unsampled part grey) and yields
        it as a gallery, then yields the final gallery, pixel for pixel what :meth:`generate` returns.
        """
        request = self.parse_generation_request(
            class_label, guidance_scale, temperature, top_k, top_p, seed, num_images, jacobi_window
        )
        if progress is not None:
            progress(0.0, desc="Sampling tokens")
        total = self.grid_size**2
        if self.limits.previews < 1:
            yield self._gallery(request, self._sample(request))
            return
        streamer = PreviewStreamer(every=math.ceil(total / (self.limits.previews + 1)), total=total)
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["images"] = self._sample(request, streamer)
            except BaseException as error:  # handed to the caller's thread below
                outcome["error"] = error
            finally:
                streamer.close()  # unblocks the reader also when sampling failed before its end()

        # The copied context keeps Gradio's progress tracking (track_tqdm) for the pipeline's bar in the worker.
        worker = threading.Thread(target=contextvars.copy_context().run, args=(work,), daemon=True)
        worker.start()
        for partial in streamer:
            yield self._preview_gallery(request, partial)
        worker.join()
        if "error" in outcome:
            raise outcome["error"]
        yield self._gallery(request, outcome["images"])

    def _sample(
        self, request: GenerationRequest, streamer: BaseStreamer | None = None
    ) -> list[PIL.Image.Image]:
        """The pipeline call of one request → PIL images; failures become a sentence for the page."""
        try:
            return self.pipe(
                class_labels=[request.class_id],
                guidance_scale=request.guidance_scale,
                temperature=request.temperature,
                top_k=request.top_k,
                top_p=request.top_p,
                num_images_per_prompt=request.num_images,
                jacobi_window=request.jacobi_window,
                generator=[torch.Generator().manual_seed(s) for s in request.seeds],
                output_type="pil",
                generation_kwargs=None if streamer is None else {"streamer": streamer},
            ).images
        except (ValueError, TypeError) as error:
            raise _fail(f"Generation failed: {error}") from None
        except Exception as error:  # logged with its traceback on the server, a sentence on the page
            logger.exception("generation failed")
            raise _server_fault(f"Generation failed ({type(error).__name__}); see the server log.") from None

    def _gallery(
        self, request: GenerationRequest, images: Sequence[PIL.Image.Image | np.ndarray], note: str = ""
    ) -> list[tuple[PIL.Image.Image, str]]:
        factor = display_factor(self.image_size, self.limits.display_size)
        name = self.label_name(request.class_id)
        return [
            (PIL.Image.fromarray(upscale_nearest(np.asarray(image), factor)), f"{name} · seed {s}{note}")
            for image, s in zip(images, request.seeds, strict=True)
        ]

    @torch.no_grad()
    def _preview_gallery(
        self, request: GenerationRequest, partial: torch.Tensor
    ) -> list[tuple[PIL.Image.Image, str]]:
        """Partial tokens [B, n] → the gallery of their decoded images, the not yet sampled cells grey."""
        batch, done = partial.shape
        grid = self.grid_size
        ids = torch.zeros(batch, grid * grid, dtype=torch.long)
        ids[:, :done] = partial
        vqvae = self.pipe.vqvae
        pixels = vqvae.decode_indices(ids.view(batch, grid, grid).to(next(vqvae.parameters()).device))
        images = to_uint8((pixels.float().clamp(-1, 1) + 1) / 2)  # [B, H, W, 3], rounded as the PIL output
        cell = self.image_size // grid
        pending = (torch.arange(grid * grid) >= done).view(grid, grid).numpy()
        images[:, upscale_nearest(pending[:, :, None], cell)[:, :, 0]] = 128
        return self._gallery(request, images, note=f" · {done}/{grid * grid} tokens")

    # ---- tokenization -------------------------------------------------------------------------------------

    def tokenize(
        self, upload: str | os.PathLike | PIL.Image.Image | None, progress: Callable[..., Any] | None = None
    ) -> TokenizeResult:
        """Resize + centre-crop the upload to the tokenizer's resolution, tokenize, decode, measure."""
        limits = self.limits
        image = open_upload(upload, limits.max_upload_pixels, ALLOWED_FORMATS)
        if progress is not None:
            progress(0.0, desc="Tokenizing")
        try:
            # The IBQ reference protocol (bilinear, no antialias; only the kept crop is computed, so a thin
            # upload costs what a square one does), centre crop, [-1, 1]: the pixels `ibq-hf evaluate` sees.
            pixels = images_to_tensor(image, resolution=self.tokenizer_resolution)
            input01 = (pixels + 1.0) / 2.0
            output = self.pipe.reconstruct(input01, output_type="np")
        except ValueError as error:
            raise _fail(f"Reconstruction failed: {error}") from None
        except Exception as error:
            logger.exception("reconstruction failed")
            raise _server_fault(
                f"Reconstruction failed ({type(error).__name__}); see the server log."
            ) from None
        source = input01[0].permute(1, 2, 0).numpy()
        recon = np.asarray(output.images[0])
        indices = output.indices[0]
        usage = codebook_usage(indices, self.codebook_size)
        side = self.tokenizer_resolution
        factor = display_factor(side, limits.display_size)
        grid_h, grid_w = (int(s) for s in indices.shape)
        return TokenizeResult(
            input_image=upscale_nearest(to_uint8(source), factor),  # rounded, as PIL output
            reconstruction=upscale_nearest(to_uint8(recon), factor),
            index_map=index_map_image(indices, self.codebook_size, cell=side * factor // grid_h),
            psnr=psnr_uint8(source, recon),
            used_codes=int(usage["used"]),
            codebook_size=self.codebook_size,
            perplexity=float(usage["perplexity"]),
            num_tokens=grid_h * grid_w,
            grid=(grid_h, grid_w),
        )

    def model_summary(self) -> str:
        """One Markdown line about the loaded model for the page header."""
        named = "named" if self.id2label else "unnamed"
        source = self.source or "in memory"
        if Path(source).is_dir():  # a folder: its name, not the server's file system layout
            source = f"{Path(source).name} (local folder)"
        return (
            f"**Model:** `{source}` — {self.num_classes} {named} classes, "
            f"{self.image_size}×{self.image_size} images, {self.codebook_size}-code tokenizer."
        )


# ---------------------------------------------------------------------------------------------------------------
# UI
# ---------------------------------------------------------------------------------------------------------------

CSS = """
#gallery img, #tok-input img, #tok-recon img, #tok-map img { image-rendering: pixelated; }
"""

GENERATE_API_DESCRIPTION = (
    "Sample num_images images of one class; image i uses seed + i, so an image depends only on its class, seed "
    "and settings. jacobi_window > 0 samples with speculative Jacobi decoding (that many draft tokens verified "
    "per forward pass: the same distribution in fewer passes, but other images for a seed than with 0, "
    "sequential decoding). Invalid values are refused with a sentence that names the value and the valid range."
)
JACOBI_WINDOW_INFO = (
    "Speculative Jacobi decoding: tokens drafted and verified per step; same distribution, fewer passes; "
    "other images for a seed"
)


class ClassPicker(gr.Dropdown):
    """The class dropdown, listed in the API as what :meth:`IBQDemo.parse_class_label` accepts.

    A plain dropdown is listed as ``Literal['0', …, '9']`` (Gradio quotes every choice, int ones too) while its
    preprocessing refuses anything but the choices' exact values: ``'7'`` for the int 7, and every name. Here
    the listing is ``int | str`` with a description, and the Generate event runs with ``preprocess=False`` so
    the handler parses ids (int or string), names and the dropdown's ``"id: name"`` text itself.
    """

    is_template = True  # drawn by Gradio's own dropdown front end (as gr.TextArea is by the textbox)

    def api_info(self) -> dict[str, Any]:
        ids = [value for _, value in self.choices]
        low, high = min(ids), max(ids)
        text = f"class id {low} to {high}, as an int (e.g. {high}) or a string (e.g. '{high}')"
        named = [(label, value) for label, value in self.choices if label != str(value)]
        if named:
            label, value = named[-1]
            name = label.split(": ", 1)[-1].split(",")[0]
            text += f"; or a class name (e.g. '{name}'), or the dropdown's 'id: name' text (e.g. '{value}: {name}')"
        return {
            "anyOf": [{"type": "integer", "minimum": low, "maximum": high}, {"type": "string"}],
            "additional_description": text,
        }


def _range_note(component: gr.Slider | gr.Number) -> str:
    """``"a whole number from 0 to 4294967295"``: the range line of a control's API listing."""

    def bound(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else f"{x:g}"

    kind = "a whole number" if component.precision == 0 else "a number"
    return f"{kind} from {bound(component.minimum)} to {bound(component.maximum)}"


class RangedSlider(gr.Slider):
    """A slider whose API listing states its range (``view_api`` shows only this description, not the type's)."""

    is_template = True  # drawn by Gradio's own slider front end

    def api_info(self) -> dict[str, Any]:
        return {**super().api_info(), "additional_description": _range_note(self)}


class RangedNumber(gr.Number):
    """A number box whose API listing states its range."""

    is_template = True  # drawn by Gradio's own number front end

    def api_info(self) -> dict[str, Any]:
        return {**super().api_info(), "additional_description": _range_note(self)}


def create_demo(
    model: str | None = None,
    *,
    pipe: IBQPipeline | None = None,
    limits: DemoLimits | None = None,
) -> gr.Blocks:
    """Build the Blocks app for ``model`` (see :func:`resolve_model_source`) or an already loaded ``pipe``.

    The queue (concurrency limit, maximum size) is configured here, so ``create_demo(...).launch()`` is safe.
    """
    limits = limits or DemoLimits()
    source = "in memory" if pipe is not None else resolve_model_source(model)
    if pipe is None:
        pipe = load_pipeline(source)
    demo_logic = IBQDemo(pipe, limits, source=source)
    choices = demo_logic.label_choices()
    # The controls' ranges are the handler's (see `IBQDemo.parse_generation_request`), so every value the page
    # offers is accepted; a model's defaults outside them (e.g. guidance 0.5) are clamped into range.
    ranges = {
        "guidance_scale": (MIN_GUIDANCE_SCALE, limits.max_guidance_scale),
        "temperature": (SLIDER_MIN_TEMPERATURE, limits.max_temperature),
        "top_k": (0, demo_logic.vocab_size),
        "top_p": (SLIDER_MIN_TOP_P, 1.0),
        "jacobi_window": (0, demo_logic.max_jacobi_window),
    }
    defaults = {
        name: min(max(value, ranges[name][0]), ranges[name][1])
        for name, value in demo_logic.generation_defaults().items()
    }

    def on_generate(
        class_label: Any,
        guidance_scale: Any,
        temperature: Any,
        top_k: Any,
        top_p: Any,
        seed: Any,
        num_images: Any,
        jacobi_window: Any = 0,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008  (Gradio's injection idiom)
    ) -> Iterator[list[tuple[PIL.Image.Image, str]]]:
        # A generator: Gradio shows each yielded gallery (previews while sampling, then the images); API clients
        # (`Client.predict`) get the last one.
        with rejections_logged("generate"):
            yield from demo_logic.generate_progressive(
                class_label,
                guidance_scale,
                temperature,
                top_k,
                top_p,
                seed,
                num_images,
                progress,
                jacobi_window=jacobi_window,
            )

    def on_tokenize(
        upload: str | None,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        with rejections_logged("tokenize"):
            result = demo_logic.tokenize(upload, progress)
        return result.input_image, result.reconstruction, result.index_map, result.summary()

    with gr.Blocks(title="IBQ: Index Backpropagation Quantization", analytics_enabled=False) as demo:
        gr.Markdown(
            "# IBQ — Index Backpropagation Quantization\n"
            "Class-conditional autoregressive image generation over a learned visual tokenizer "
            "([arXiv 2412.02692](https://arxiv.org/abs/2412.02692)), running with `ibq_hf`.\n\n"
            + demo_logic.model_summary()
        )
        with gr.Tab("Generate", id="tab-generate"), gr.Row():
            with gr.Column(scale=1):
                class_label = ClassPicker(
                    choices=choices,
                    value=choices[0][1],
                    label="Class",
                    info="Type to search the model's class names.",
                    elem_id="class-label",
                )
                guidance = RangedSlider(
                    *ranges["guidance_scale"],
                    value=defaults["guidance_scale"],
                    step=0.1,
                    label="Guidance scale",
                    info="Classifier-free guidance; 1 = off.",
                    elem_id="guidance",
                )
                temperature = RangedSlider(
                    *ranges["temperature"],
                    value=defaults["temperature"],
                    step=0.05,
                    label="Temperature",
                    elem_id="temperature",
                )
                top_k = RangedSlider(
                    *ranges["top_k"],
                    value=defaults["top_k"],
                    step=1,
                    precision=0,
                    label="Top-k (0 = off)",
                    elem_id="top-k",
                )
                top_p = RangedSlider(
                    *ranges["top_p"],
                    value=defaults["top_p"],
                    step=0.01,
                    label="Top-p (1 = off)",
                    elem_id="top-p",
                )
                with gr.Row():
                    seed = RangedNumber(
                        value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed", elem_id="seed"
                    )
                    num_images = RangedSlider(
                        1,
                        limits.max_images,
                        value=min(4, limits.max_images),
                        step=1,
                        precision=0,
                        label="Number of images",
                        elem_id="num-images",
                    )
                jacobi_window = RangedSlider(
                    *ranges["jacobi_window"],
                    value=defaults["jacobi_window"],
                    step=1,
                    precision=0,
                    label="Jacobi window (0 = off)",
                    info=JACOBI_WINDOW_INFO,
                    elem_id="jacobi-window",
                )
                generate_button = gr.Button("Generate", variant="primary", elem_id="gen")
            with gr.Column(scale=2):
                gallery = gr.Gallery(
                    label="Samples", columns=4, format="png", elem_id="gallery", object_fit="contain"
                )
        with gr.Tab("Tokenize", id="tab-tokenize"):
            gr.Markdown(
                f"Upload a picture: it is resized and centre-cropped to the tokenizer's "
                f"{demo_logic.tokenizer_resolution}×{demo_logic.tokenizer_resolution} input, turned into code "
                "indices and decoded back. Limits: "
                f"{limits.max_upload_pixels:,} pixels, {limits.max_file_size.upper()}, PNG, JPEG, WEBP, BMP, GIF or TIFF."
            )
            with gr.Row():
                upload = gr.Image(
                    type="filepath",
                    image_mode=None,  # no decoding in Gradio: `open_upload` checks the header first
                    sources=["upload", "clipboard"],
                    label="Upload",
                    elem_id="upload",
                )
                tokenize_button = gr.Button("Tokenize & reconstruct", variant="primary", elem_id="tok-btn")
            with gr.Row():
                input_image = gr.Image(
                    label="Model input", format="png", interactive=False, elem_id="tok-input"
                )
                reconstruction = gr.Image(
                    label="Reconstruction", format="png", interactive=False, elem_id="tok-recon"
                )
                index_map = gr.Image(
                    label="Token indices (one colour per code)",
                    format="png",
                    interactive=False,
                    elem_id="tok-map",
                )
            stats = gr.Markdown(label="Summary", elem_id="tok-stats")  # the label names it in the API listing

        generate_button.click(
            on_generate,
            inputs=[class_label, guidance, temperature, top_k, top_p, seed, num_images, jacobi_window],
            outputs=gallery,
            api_name="generate",
            api_description=GENERATE_API_DESCRIPTION,
            # Raw values reach the handler, which parses and checks them all (one log line per refusal):
            # Gradio's own checks would refuse '7' for the int 7 and print a traceback per refused value.
            preprocess=False,
        )
        tokenize_button.click(
            on_tokenize,
            inputs=upload,
            outputs=[input_image, reconstruction, index_map, stats],
            api_name="tokenize",
        )
    demo.queue(default_concurrency_limit=limits.concurrency_limit, max_size=limits.max_queue_size)
    demo.ibq_demo = demo_logic  # for tests and notebooks: the handlers behind the page
    demo.ibq_limits = limits
    return demo


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="IBQ Gradio demo (generation + tokenizer reconstruction).")
    parser.add_argument(
        "--model",
        default=None,
        help=f"Hub repo id or local pipeline folder (default: ${MODEL_ENV_VAR}, else the bundled digits model).",
    )
    parser.add_argument(
        "--host", default=None, help="Server name (default: $GRADIO_SERVER_NAME or 127.0.0.1)."
    )
    parser.add_argument("--port", type=int, default=None, help="Port (default: $GRADIO_SERVER_PORT or 7860).")
    parser.add_argument("--max-images", type=int, default=DemoLimits.max_images, help="Images per request.")
    parser.add_argument(
        "--concurrency", type=int, default=DemoLimits.concurrency_limit, help="Requests run at once."
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("IBQ_HF_SPACE_THREADS", "0")),
        help="torch CPU threads (0 = torch's default). Small models run fastest on 1 thread of a shared CPU.",
    )
    parser.add_argument(
        "--previews",
        type=int,
        default=DemoLimits.previews,
        help="Partial images shown while sampling (0 = final images only).",
    )
    parser.add_argument("--share", action="store_true", help="Create a public gradio.live link.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python app.py`` (what a Space runs)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.max_images < 1 or args.concurrency < 1 or args.threads < 0 or args.previews < 0:
        raise SystemExit(
            "--max-images and --concurrency must be at least 1, --threads and --previews at least 0."
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    limits = DemoLimits(
        max_images=args.max_images, concurrency_limit=args.concurrency, previews=args.previews
    )
    try:
        demo = create_demo(args.model, limits=limits)
    except (FileNotFoundError, RuntimeError) as error:
        raise SystemExit(str(error)) from None
    logger.info(
        "ibq_hf from %s; model %s; torch %s threads",
        Path(ibq_hf.__file__).parent,
        demo.ibq_demo.source,
        torch.get_num_threads(),
    )
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        show_error=True,
        max_file_size=limits.max_file_size,
        css=CSS,
    )


if __name__ == "__main__":
    main()
