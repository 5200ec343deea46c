"""The ``ibq-hf`` command line end to end on a tiny saved pipeline: generate, reconstruct, help, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from conftest import TINY_PIPELINE_AR_CONFIG, TINY_TOKENIZER_CONFIG
from ibq_hf import IBQVQModel
from ibq_hf.cli import main
from ibq_hf.image_grid import auto_gutter
from ibq_hf.models.configuration_ar import IBQARConfig
from ibq_hf.models.modeling_ar import IBQARForImageGeneration
from ibq_hf.pipeline import IBQPipeline

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test in this module runs single-threaded (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A saved 10-class pipeline (16×16 images, 8×8 tokens) whose classes have names."""
    torch.manual_seed(0)
    vqvae = IBQVQModel(**TINY_TOKENIZER_CONFIG).eval()
    config = IBQARConfig(**TINY_PIPELINE_AR_CONFIG, id2label=dict(enumerate(NAMES)))
    transformer = IBQARForImageGeneration(config)
    with torch.no_grad():
        for param in transformer.parameters():
            param.normal_(0.0, 0.3)
    path = tmp_path_factory.mktemp("cli") / "tiny"
    IBQPipeline(vqvae=vqvae, transformer=transformer.eval()).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pipe(model_dir) -> IBQPipeline:
    pipe = IBQPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiles(grid: PIL.Image.Image, rows: int, cols: int, size: int = 16) -> list[np.ndarray]:
    array = np.asarray(grid)
    return [
        array[r * size : (r + 1) * size, c * size : (c + 1) * size] for r in range(rows) for c in range(cols)
    ]


def photo(path: Path, height: int = 20, width: int = 24, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def test_generate_writes_a_grid_of_seeded_images(model_dir, pipe, tmp_path, capsys):
    """Raw layout (--upscale 1 --gutter 0 --no-labels): the model's pixels edge to edge, image i with seed + i."""
    out = tmp_path / "grid.png"
    args = ["generate", "--model", str(model_dir), "--class", "3", "--class", "seven", "--num-images", "2",
            "--seed", "5", "--output", str(out), "--device", "cpu", "--guidance-scale", "2",
            "--upscale", "1", "--gutter", "0", "--no-labels"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Saved a 2×2 grid of 16×16 images" in printed and "(classes 3, 'seven'; seeds 5..8)" in printed
    grid = PIL.Image.open(out)
    assert grid.size == (32, 32)
    gens = [torch.Generator().manual_seed(s) for s in (5, 6, 7, 8)]  # image i uses seed + i
    expected = pipe([3, 7], num_images_per_prompt=2, guidance_scale=2.0, generator=gens).images
    for got, want in zip(tiles(grid, 2, 2), expected):
        np.testing.assert_array_equal(got, np.asarray(want))


def test_generate_default_grid_is_readable(model_dir, pipe, tmp_path, capsys):
    """Issue 13, item 5: tiny tiles used to touch each other at 16 px; by default they are enlarged (nearest) to at
    least 128 px, separated by a white gutter, and each row is labelled with its class name."""
    out = tmp_path / "grid.png"
    args = ["generate", "--model", str(model_dir), "--class", "3", "--class", "seven", "--num-images", "2",
            "--seed", "5", "--output", str(out), "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    assert "shown 8× larger" in capsys.readouterr().out  # 16 px → 128 px
    grid = np.asarray(PIL.Image.open(out).convert("RGB"))
    expected = pipe(
        [3, 7], num_images_per_prompt=2, generator=[torch.Generator().manual_seed(s) for s in range(5, 9)]
    )
    gutter = auto_gutter(128, 128)
    assert gutter == 8
    # The tiles fill the right-hand part: columns from the right edge, rows from the top.
    height, width = grid.shape[:2]
    assert height == 2 * 128 + gutter
    left = width - (2 * 128 + gutter)
    assert left > 0  # a label column
    for index, image in enumerate(expected.images):
        row, col = divmod(index, 2)
        x, y = left + col * (128 + gutter), row * (128 + gutter)
        want = np.asarray(image.resize((128, 128), PIL.Image.Resampling.NEAREST))
        np.testing.assert_array_equal(grid[y : y + 128, x : x + 128], want)
    assert (grid[128 : 128 + gutter, left:] == 255).all()  # the gutter between the rows is white
    assert (grid[:, left + 128 : left + 128 + gutter] == 255).all()  # and between the columns
    for row in range(2):  # each row has dark label pixels left of its tiles
        label = grid[row * (128 + gutter) : row * (128 + gutter) + 128, :left]
        assert (label < 128).any()


def test_main_job_grid_of_the_bundled_digits_is_enlarged_and_labelled(tmp_path, capsys):
    """scripts/main.sh runs `ibq-hf generate --model checkpoints/ibq-digits` with the default layout: 32×32 digits
    are shown 4× (128 px tiles) with the digit's name left of each row."""
    out = tmp_path / "digits.png"
    model = str(Path(__file__).resolve().parents[2] / "checkpoints" / "ibq-digits")
    args = ["generate", "--model", model, "--class", "3", "--class", "7", "--num-images", "2", "--seed", "0",
            "--output", str(out), "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    assert "grid of 32×32 images, shown 4× larger" in capsys.readouterr().out
    grid = np.asarray(PIL.Image.open(out).convert("L"))
    height, width = grid.shape
    assert height == 2 * 128 + 8
    left = width - (2 * 128 + 8)
    assert 0 < left < 128  # a narrow label column: "3", "7"
    for row in range(2):
        assert (grid[row * 136 : row * 136 + 128, :left] < 128).any()


def test_generate_grid_options_are_checked_before_loading(model_dir, tmp_path, capsys):
    base = ["generate", "--model", str(tmp_path / "never-loaded"), "--class", "1", "--output", "g.png"]
    for option, value in (("--upscale", "0"), ("--upscale", "2.5"), ("--gutter", "-1")):
        with pytest.raises(SystemExit) as info:
            main([*base, option, value])
        assert info.value.code == 2 and f"argument {option}" in capsys.readouterr().err


def test_generate_unknown_class_is_one_clear_line(model_dir, tmp_path, capsys):
    args = ["generate", "--model", str(model_dir), "--class", "thre", "--output", str(tmp_path / "g.png")]
    assert main([*args, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ibq-hf: error: Unknown class name 'thre'. Did you mean 'three' (3)")
    assert "Traceback" not in err and not (tmp_path / "g.png").exists()
    assert (
        main(["generate", "--model", str(model_dir), "--class", "10", "--output", str(tmp_path / "g.png")])
        == 2
    )
    assert "out of range: this model has 10 classes" in capsys.readouterr().err


def test_generate_other_errors(model_dir, tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "nope"), "--class", "1", "--output", "g.png"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"ibq-hf: error: Could not load --model '{tmp_path / 'nope'}': folder not found: ")
        and err.count("\n") == 1
    )
    args = ["generate", "--model", str(model_dir), "--class", "1", "--device", "cpu"]
    assert main([*args, "--output", str(tmp_path / "grid.txt")]) == 2
    assert "needs an image extension" in capsys.readouterr().err
    assert main([*args, "--output", str(tmp_path / "g.png"), "--num-images", "0"]) == 2
    assert "--num-images must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["generate", "reconstruct"])
def test_a_mistyped_model_path_is_not_a_hub_problem(model_dir, tmp_path, monkeypatch, capsys, command):
    """Issue 13, item 3: `--model ./x` used to fail with the Hub's repo-id naming rules or "Couldn't connect to the
    Hub"; now a path that looks local and does not exist is "folder not found", with the near miss."""
    monkeypatch.chdir(model_dir.parent)
    picture = str(photo(tmp_path / "p.png"))
    extra = ["--class", "1"] if command == "generate" else [picture]
    for typo in ("./tinny", "tiny/../tinny", str(model_dir) + "x"):
        args = [command, "--model", typo, *extra, "--output", str(tmp_path / "o.png"), "--device", "cpu"]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"ibq-hf: error: Could not load --model '{typo}': folder not found: {typo}")
        assert "Did you mean" in err and "tiny'?" in err
        assert "Hub" not in err.split("A model on the Hub")[0] and err.count("\n") == 1


@pytest.mark.parametrize("command", ["generate", "reconstruct"])
def test_an_unreachable_repo_id_says_how_to_use_a_folder(tmp_path, capsys, command):
    """Offline (the tests set HF_HUB_OFFLINE=1) and not cached: say so, and how to point at a local folder."""
    extra = ["--class", "1"] if command == "generate" else [str(photo(tmp_path / "p.png"))]
    args = [command, "--model", "someone/ibq-missing", *extra, "--output", str(tmp_path / "o.png")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "'someone/ibq-missing' is read as a Hugging Face Hub repo id" in err
    assert "not in the local Hub cache" in err and "pass its folder path instead" in err
    assert err.count("\n") == 1 and not (tmp_path / "o.png").exists()


def test_reconstruct_a_picture(model_dir, pipe, tmp_path, capsys):
    source = photo(tmp_path / "photo.png")
    out, ids = tmp_path / "recon.png", tmp_path / "ids.npy"
    args = [
        "reconstruct",
        "--model",
        str(model_dir),
        str(source),
        "--output",
        str(out),
        "--save-indices",
        str(ids),
    ]
    assert main([*args, "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "photo.png: 16×16 -> 8×8 tokens, PSNR" in printed
    # Default: resized and centre-cropped to the tokenizer's training resolution (16 here).
    expected = pipe.reconstruct(PIL.Image.open(source), resolution=16)
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(out)), np.asarray(expected.images[0]))
    np.testing.assert_array_equal(np.load(ids), expected.indices.numpy())


def test_reconstruct_with_a_tokenizer_folder_side_by_side(model_dir, tmp_path, capsys):
    images = [str(photo(tmp_path / f"p{i}.png", 16, 16, seed=i)) for i in range(2)]
    out = tmp_path / "pairs.png"
    args = ["reconstruct", "--model", str(model_dir / "vqvae"), *images, "--output", str(out), "--side-by-side",
            "--resolution", "0", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    assert "originals (top)" in capsys.readouterr().out
    grid = PIL.Image.open(out)
    assert grid.size == (32, 32)
    top = tiles(grid, 2, 2)[:2]
    for got, path in zip(top, images):
        np.testing.assert_array_equal(got, np.asarray(PIL.Image.open(path)))


def test_reconstruct_errors(model_dir, tmp_path, capsys):
    odd = photo(tmp_path / "odd.png", 17, 17)
    base = ["reconstruct", "--model", str(model_dir), "--device", "cpu", "--output", str(tmp_path / "r.png")]
    assert main([*base, str(odd), "--resolution", "0"]) == 2
    assert "not divisible by the tokenizer's downsampling factor 2" in capsys.readouterr().err
    assert main([*base, str(tmp_path / "missing.jpg")]) == 2
    assert "missing.jpg" in capsys.readouterr().err
    (tmp_path / "bad.jpg").write_text("not an image")
    assert main([*base, str(tmp_path / "bad.jpg")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ibq-hf: error:") and "Traceback" not in err


@pytest.mark.parametrize(
    "command,expected",
    [
        (["generate"], "--num-images"),
        (["reconstruct"], "--side-by-side"),
        (["convert", "pipeline"], "--checkpoint"),
        (["convert", "ar"], "--config"),
        (["convert", "tokenizer"], "--no-ema"),
        ([], "reconstruct"),
    ],
)
def test_every_command_has_help(command, expected, capsys):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0 and expected in capsys.readouterr().out


# ---- hostile inputs (issue 11, items 12 and 16) -----------------------------------------------------------------


def png_header(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file whose header declares ``width × height`` pixels (a decompression bomb: a few hundred bytes
    that would decode to gigabytes)."""
    from handmade_png import png_bytes

    path.write_bytes(png_bytes(width, height, 8, 2, b"\0" * 1024))
    return path


@pytest.mark.parametrize("size", [(100_000, 100_000), (10_000, 10_000)], ids=["over-2x-limit", "over-limit"])
def test_reconstruct_decompression_bomb_is_one_sentence(model_dir, tmp_path, capsys, size):
    """PIL raises DecompressionBombError (not an OSError) above twice its pixel limit and only warns below: both
    used to end in a traceback or a multi-GB decode; now one line and exit code 2, before the model loads."""
    bomb = png_header(tmp_path / "bomb.png", *size)
    assert bomb.stat().st_size < 200
    args = ["reconstruct", "--model", str(model_dir), str(bomb), "--output", str(tmp_path / "r.png")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("ibq-hf: error: ") and "bomb.png" in err and "decompression bomb" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "r.png").exists()


@pytest.mark.parametrize("option", ["--guidance-scale", "--temperature", "--top-p"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_generate_refuses_non_finite_settings(model_dir, tmp_path, capsys, option, value):
    """argparse's float() accepts "nan" and "inf"; NaN guidance used to mean no guidance, inf one token."""
    out = str(tmp_path / "g.png")
    args = ["generate", "--model", str(model_dir), "--class", "1", "--output", out, f"{option}={value}"]
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: must be a finite number, got '{value}'" in err and "Traceback" not in err
    assert not (tmp_path / "g.png").exists()


def test_evaluate_sample_refuses_non_finite_settings(model_dir, tmp_path, capsys):
    args = ["evaluate", "sample", "--model", str(model_dir), "--output", str(tmp_path / "s.npz")]
    for option in ("--guidance-scale", "--temperature", "--top-p"):
        with pytest.raises(SystemExit) as info:
            main([*args, option, "nan"])
        assert info.value.code == 2 and "must be a finite number" in capsys.readouterr().err


def test_generate_with_a_jacobi_window_gives_the_greedy_images(model_dir, tmp_path, capsys):
    grids = []
    for extra in ([], ["--jacobi-window", "5"]):
        out = tmp_path / f"grid{len(extra)}.png"
        args = ["generate", "--model", str(model_dir), "--class", "3", "--num-images", "2", "--greedy",
                "--output", str(out), "--device", "cpu", "--upscale", "1", "--gutter", "0", "--no-labels", *extra]  # fmt: skip
        assert main(args) == 0
        grids.append(np.asarray(PIL.Image.open(out)))
    np.testing.assert_array_equal(grids[0], grids[1])
    with pytest.raises(SystemExit):
        main(["generate", "--model", str(model_dir), "--class", "3", "--jacobi-window", "x"])
