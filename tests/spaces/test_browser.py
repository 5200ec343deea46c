"""End to end in a real browser: the built Space serves on 127.0.0.1, generates, reconstructs, reports errors.

Headless Chromium from the system (``/usr/bin/chromium``, apt) driven by Playwright; no browser download.
Without Chromium or Playwright the test is skipped, unless ``IBQ_HF_REQUIRE_BROWSER=1`` (set by ``.ci/run``),
which turns the skip into a failure. Screenshots go to ``$IBQ_HF_TEST_ARTIFACTS/spaces/`` (default
``build/test-artifacts/spaces/``) and their paths are printed.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from spaces_testutil import REPO, load_build_space

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
SERVER_START_TIMEOUT_S = 90
STEP_TIMEOUT_MS = 60_000


def _skip_or_fail(reason: str) -> None:
    """CI (IBQ_HF_REQUIRE_BROWSER=1) must not silently skip the browser test."""
    if os.environ.get("IBQ_HF_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (IBQ_HF_REQUIRE_BROWSER=1: the browser test is required here)", pytrace=False)
    pytest.skip(reason)


def _chromium() -> str:
    candidates = [os.environ.get("IBQ_HF_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    _skip_or_fail("Chromium is not installed (apt-get install chromium)")
    raise AssertionError  # unreachable


def _artifacts_dir() -> Path:
    root = os.environ.get("IBQ_HF_TEST_ARTIFACTS") or str(REPO / "build" / "test-artifacts")
    folder = Path(root) / "spaces"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    folder: Path
    log: Path
    start_seconds: float


def _wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"The app exited with code {process.returncode}:\n{log.read_text()[-4000:]}", pytrace=False
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    pytest.fail(f"The app did not serve {url} within {SERVER_START_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def playwright_api():
    chromium = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_or_fail("playwright is not installed (pip install playwright)")
    return sync_playwright, chromium


@pytest.fixture(scope="module")
def server(playwright_api, tmp_path_factory) -> Iterator[Server]:
    """The assembled Space (build_space.py), started with ``python app.py`` as a Space would; always stopped."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        _skip_or_fail("gradio is not installed (pip install gradio==6.31.0)")
    folder = load_build_space().build_space(tmp_path_factory.mktemp("space") / "ibq-demo")
    port = _free_port()
    log = _artifacts_dir() / "server.log"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "IBQ_HF_SPACE_MODEL")}
    env.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port), "--threads", "1"]
    started = time.monotonic()
    with log.open("w") as log_file:
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_until_serving(url, process, log)
        yield Server(url=url, folder=folder, log=log, start_seconds=time.monotonic() - started)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def photo(tmp_path) -> Path:
    """A real photograph (skimage's coffee cup) as PNG; a synthetic picture if skimage is missing."""
    try:
        from skimage import data

        array = data.coffee()
    except ImportError:  # pragma: no cover - skimage is in the dev environment
        yy, xx = np.mgrid[0:300, 0:400]
        array = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    path = tmp_path / "coffee.png"
    PIL.Image.fromarray(array).save(path)
    return path


@pytest.mark.slow  # starts the app server and Chromium (~30 s): run with -m slow
def test_generate_and_reconstruct_in_browser(server, playwright_api, photo, capsys):
    sync_playwright, chromium = playwright_api
    shots = _artifacts_dir()
    saved: list[Path] = []
    started = time.monotonic()
    log_text = server.log.read_text()
    assert f"ibq_hf from {server.folder.resolve() / 'ibq_hf'}" in log_text, "the Space must run its own copy"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(STEP_TIMEOUT_MS)
            page.goto(server.url, wait_until="networkidle")
            assert "IBQ" in page.title()

            # ---- The controls offer only values the model accepts (guidance below 1 always failed).
            guidance = page.locator("#guidance input[type=range]")
            assert (guidance.get_attribute("min"), guidance.get_attribute("max")) == ("1", "20")
            window = page.locator("#jacobi-window input[type=range]")
            assert (window.get_attribute("min"), window.get_attribute("max")) == ("0", "32")
            assert window.input_value() == "0"  # off by default: sequential decoding
            assert "Speculative Jacobi decoding" in page.locator("#jacobi-window").inner_text()

            # ---- Generate: pick class 7 in the dropdown, 4 images (the default), wait for the gallery.
            dropdown = page.locator("#class-label input")
            dropdown.click()
            dropdown.fill("7")
            page.get_by_role("option", name="7: 7").click()
            assert dropdown.input_value() == "7: 7"
            window_box = page.locator("#jacobi-window input[type=number]")
            window_box.fill("4")  # speculative Jacobi decoding from the page: the same gallery, other pixels
            window_box.press("Enter")
            assert window.input_value() == "4"
            page.locator("#gen").click()
            page.locator("#gallery img").nth(3).wait_for(state="visible")
            assert page.locator("#gallery img").count() >= 4
            gallery_text = page.locator("#gallery").inner_text()
            assert "7: 7 · seed 0" in gallery_text and "7: 7 · seed 3" in gallery_text
            saved.append(shots / "generate.png")
            page.screenshot(path=str(saved[-1]), full_page=True)

            # ---- Tokenize: an error first (no image), shown as a message, never a traceback.
            page.get_by_role("tab", name="Tokenize").click()
            page.locator("#tok-btn").click()
            error = page.get_by_text("Upload an image first")
            error.first.wait_for(state="visible")
            page.wait_for_timeout(500)  # the toast slides in
            saved.append(shots / "tokenize-error.png")
            page.screenshot(path=str(saved[-1]), animations="disabled")  # viewport: the toast is pinned to it
            assert "Traceback" not in page.content()
            _wait_for_log_line(server.log, "rejected /tokenize request: Upload an image first")

            # ---- Upload a real photo, reconstruct, read PSNR and codebook usage off the page.
            page.locator("#upload input[type=file]").set_input_files(str(photo))
            page.locator("#upload img").first.wait_for(state="visible")
            page.locator("#tok-btn").click()
            stats = page.locator("#tok-stats")
            stats.get_by_text("PSNR").wait_for(state="visible")
            text = stats.inner_text()
            assert re.search(r"PSNR:\s*\d+\.\d\d dB", text), text
            assert re.search(r"Codebook usage:\s*\d+ / 256 distinct codes", text), text
            for elem_id in ("tok-input", "tok-recon", "tok-map"):
                page.locator(f"#{elem_id} img").first.wait_for(state="visible")
            saved.append(shots / "tokenize.png")
            page.screenshot(path=str(saved[-1]), full_page=True)
        finally:
            browser.close()

    elapsed = time.monotonic() - started
    assert all(path.is_file() and path.stat().st_size > 10_000 for path in saved)
    with capsys.disabled():
        print(
            f"\n[browser test] app served after {server.start_seconds:.1f} s; browser steps {elapsed:.1f} s"
        )
        for path in [*saved, server.log]:
            print(f"[browser test] artefact: {path}")


def _wait_for_log_line(log: Path, text: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text():
        if time.monotonic() > deadline:
            pytest.fail(f"{text!r} not in the server log:\n{log.read_text()[-3000:]}", pytrace=False)
        time.sleep(0.1)


def _gallery_pixels(gallery: list[dict]) -> list[np.ndarray]:
    return [np.asarray(PIL.Image.open(item["image"])) for item in gallery]


@pytest.mark.slow  # shares the app server of the browser test
def test_api_with_gradio_client(server, tmp_path, monkeypatch, capsys):
    """A user's script: `gradio_client.Client` reads the listing, sends class ids and names, gets clear errors.

    The listing used to say ``Literal['0', …, '9']`` while the server refused ``'7'`` (it wanted the int), and
    every refused value put a traceback in the server log.
    """
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    log_start = len(server.log.read_text())
    client = Client(server.url, verbose=False, download_files=str(tmp_path))
    listing = client.view_api(print_info=False, return_format="dict")
    params = {p["parameter_name"]: p for p in listing["named_endpoints"]["/generate"]["parameters"]}
    assert params["class_label"]["python_type"]["type"] == "int | str"
    assert "as an int (e.g. 9) or a string (e.g. '9')" in params["class_label"]["python_type"]["description"]
    assert params["guidance_scale"]["python_type"]["description"] == "a number from 1 to 20"
    assert list(params)[-1] == "jacobi_window" and params["jacobi_window"]["parameter_default"] == 0
    rendered = client.view_api(print_info=False, return_format="str")
    assert "class_label: int | str" in rendered and "Literal" not in rendered

    settings = dict(guidance_scale=2.0, temperature=1.0, top_k=0, top_p=1.0, seed=3, num_images=2)
    results = {}
    # The digits model's class names are its ids ("7"); names proper are covered in test_app.py.
    for value in ("7", 7, "7: 7"):
        gallery = client.predict(class_label=value, **settings, api_name="/generate")
        assert [item["caption"] for item in gallery] == ["7: 7 · seed 3", "7: 7 · seed 4"]
        results[value] = _gallery_pixels(gallery)
        assert all(pixels.shape == (256, 256, 3) for pixels in results[value])
    for other in ("7", "7: 7"):  # the same class and seeds: the same pictures however the class was named
        assert all(np.array_equal(a, b) for a, b in zip(results[7], results[other], strict=True))
    # Speculative Jacobi decoding (last parameter; omitted above = 0): the same captions, other pictures.
    gallery = client.predict(class_label=7, **settings, jacobi_window=4, api_name="/generate")
    assert [item["caption"] for item in gallery] == ["7: 7 · seed 3", "7: 7 · seed 4"]
    assert not all(np.array_equal(a, b) for a, b in zip(results[7], _gallery_pixels(gallery), strict=True))

    refused = {
        "12": "Class 12 is out of range: this model has 10 classes, ids 0 to 9.",
        "seven": "Unknown class name 'seven'.",
    }
    for value, message in refused.items():
        with pytest.raises(AppError) as error:
            client.predict(class_label=value, **settings, api_name="/generate")
        assert message in error.value.message
    with pytest.raises(AppError, match=r"Jacobi window must be a whole number, got 2\.5\."):
        client.predict(class_label=7, **settings, jacobi_window=2.5, api_name="/generate")
    with pytest.raises(AppError, match=r"Guidance scale must lie in \[1, 20\], got 0\.5\."):
        client.predict(class_label=7, **{**settings, "guidance_scale": 0.5}, api_name="/generate")

    _wait_for_log_line(server.log, "rejected /generate request: Guidance scale")
    log = server.log.read_text()[log_start:]
    rejected = [line for line in log.splitlines() if "rejected /generate request:" in line]
    assert len(rejected) == 4, log
    assert "Traceback" not in log, log
    with capsys.disabled():
        print(
            "\n[browser test] API listing of /generate:"
            + rendered.split("Returns:")[0].split("Parameters:")[1]
        )
        print("[browser test] server log of the refused requests:\n" + "\n".join(rejected))


def test_missing_browser_skips_unless_required(monkeypatch):
    """Locally a missing browser is a skip; with IBQ_HF_REQUIRE_BROWSER=1 (CI) it is a failure."""
    monkeypatch.delenv("IBQ_HF_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chromium here"):
        _skip_or_fail("no chromium here")
    monkeypatch.setenv("IBQ_HF_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="required here"):
        _skip_or_fail("no chromium here")
