"""examples/evaluate_tokenizer.py, sample_fid.py, evaluate_generation.py and ``ibq-hf evaluate`` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from evaluation_helpers import photo_crops

from conftest import TINY_TOKENIZER_CONFIG
from ibq_hf import IBQVQModel
from ibq_hf.cli import main as cli_main
from ibq_hf.cli.evaluate import tokenizer_main
from ibq_hf.evaluation import psnr_ssim

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: 1 thread avoids OpenMP stalls on busy cores

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "checkpoints" / "ibq-digits"


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """An imagefolder of 4 real photo crops (48×64: not square, so resize + center crop matter)."""
    root = tmp_path_factory.mktemp("photos")
    folder = root / "train" / "photo"
    folder.mkdir(parents=True)
    for k, crop in enumerate(photo_crops(96, 1)):
        PIL.Image.fromarray(crop[:48, :64]).save(folder / f"{k}.png")
    return root


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tok") / "tiny"
    IBQVQModel(**TINY_TOKENIZER_CONFIG).eval().save_pretrained(path)
    return path


def test_tokenizer_script_on_real_photos(photo_folder, tokenizer_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no LPIPS weights anywhere
    out = tmp_path / "out"
    argv = ["--model", str(tokenizer_dir), "--data-dir", str(photo_folder), "--split", "train", "--batch-size", "3",
            "--no-rfid", "--output-dir", str(out), "--no-progress", "--device", "cpu"]  # fmt: skip
    assert tokenizer_main(argv) == 0
    result = json.loads((out / "tokenizer_eval.json").read_text())
    assert result["num_images"] == 4 and result["resolution"] == 16
    # independent recomputation: the reference eval transform, the model, skimage
    from ibq_hf.data import image_transform

    transform = image_transform(16, train=False)
    pictures = torch.stack(
        [transform(PIL.Image.open(photo_folder / "train" / "photo" / f"{k}.png")) for k in range(4)]
    )
    model = IBQVQModel.from_pretrained(tokenizer_dir).eval()
    with torch.no_grad():
        indices = model.tokenize(pictures)
        recon = model.decode_indices(indices).clamp(-1, 1)
    psnr, ssim = psnr_ssim(pictures, recon)
    assert result["psnr"] == pytest.approx(psnr.mean(), rel=1e-6)
    assert result["ssim"] == pytest.approx(ssim.mean(), rel=1e-6)
    assert result["codebook_used"] == len(torch.unique(indices))
    assert result["rfid"] is None and result["lpips_vgg"] is None and result["lpips_alex"] is None
    assert "vgg16-397923af.pth" in result["unavailable"]["lpips_vgg"]
    table = (out / "tokenizer_eval.md").read_text()
    assert "| PSNR (dB) |" in table and "| LPIPS-VGG | unavailable" in table
    assert "lpips_alex: unavailable" in capsys.readouterr().out


def test_cli_sample_and_errors(tmp_path, capsys):
    out = tmp_path / "s.npz"
    argv = ["evaluate", "sample", "--model", str(DIGITS), "--output", str(out), "--classes", "3", "7",
            "--images-per-class", "2", "--batch-size", "3", "--no-progress"]  # fmt: skip
    assert cli_main(argv) == 0
    with np.load(out) as data:
        assert data["arr_0"].shape == (4, 32, 32, 3) and sorted(data["arr_1"].tolist()) == [3, 3, 7, 7]
    assert json.loads(Path(f"{out}.json").read_text())["model"] == str(DIGITS)
    capsys.readouterr()
    assert (
        cli_main(
            ["evaluate", "generation", "--samples", str(tmp_path / "missing.npz"), "--reference", str(out)]
        )
        == 2
    )
    assert "No such .npz file" in capsys.readouterr().err
    assert cli_main(["evaluate", "generation", "--samples", str(out)]) == 2
    assert "Give a reference" in capsys.readouterr().err
    assert cli_main(["evaluate", "sample", "--model", str(DIGITS), "--output", str(tmp_path / "x.png")]) == 2
    assert ".npz" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["evaluate", "--help"])
    assert "tokenizer" in capsys.readouterr().out


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200, **kwargs
    )


@pytest.mark.slow  # real Inception on 80 images + 2048×2048 sqrtm: a few minutes on 2 CPU cores
def test_sample_and_evaluate_generation_scripts_on_digits(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "prepare_digits", ROOT / "examples" / "digits" / "prepare_digits.py"
    )
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    images, labels = prepare.digits_as_images(32)
    real = tmp_path / "real" / "train"
    for k in range(40):
        (real / str(labels[k])).mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(images[k]).convert("RGB").save(real / str(labels[k]) / f"{k}.png")
    samples = tmp_path / "samples.npz"
    run = _run(["examples/sample_fid.py", "--model", str(DIGITS), "--output", str(samples), "--images-per-class", "4",
                "--batch-size", "20", "--no-progress"])  # fmt: skip
    assert run.returncode == 0, run.stderr
    run = _run(["examples/evaluate_generation.py", "--samples", str(samples), "--data-dir", str(tmp_path / "real"),
                "--split", "train", "--inception-weights", "fid-helper", "--output-dir", str(tmp_path), "--no-progress"])  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = json.loads((tmp_path / "generation_eval.json").read_text())
    assert result["num_samples"] == 40 and result["num_reference"] == 40
    assert result["fid"] > 0 and 0 <= result["precision"] <= 1 and 0 <= result["recall"] <= 1
    assert result["inception_score"] is None and "pt_inception" in result["unavailable"]["inception_score"]


@pytest.mark.slow  # two accelerate processes (gloo): ~30 s of start-up
def test_sampling_under_accelerate_matches_one_process(tmp_path):
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    common = ["--model", str(DIGITS), "--images-per-class", "2", "--no-progress"]
    assert (
        _run(["examples/sample_fid.py", *common, "--output", str(one), "--batch-size", "20"]).returncode == 0
    )
    launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]  # fmt: skip
    run = _run([*launch, "examples/sample_fid.py", *common, "--output", str(two), "--batch-size", "3"])
    assert run.returncode == 0, run.stderr
    with np.load(one) as a, np.load(two) as b:
        np.testing.assert_array_equal(a["arr_0"], b["arr_0"])
        np.testing.assert_array_equal(a["arr_1"], b["arr_1"])
    assert json.loads(Path(f"{two}.json").read_text())["num_processes"] == 2


@pytest.mark.slow  # rFID: 2048×2048 sqrtm
def test_tokenizer_script_subprocess_with_rfid(photo_folder, tokenizer_dir, tmp_path):
    run = _run(["examples/evaluate_tokenizer.py", "--model", str(tokenizer_dir), "--data-dir", str(photo_folder),
                "--split", "train", "--inception-weights", "fid-helper", "--output-dir", str(tmp_path), "--no-progress"])  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = json.loads((tmp_path / "tokenizer_eval.json").read_text())
    assert result["rfid"] is not None and result["rfid"] > 0 and "fid-helper" in result["inception_weights"]


def _tokenizer_with_card(folder: Path, protocol_line: str) -> Path:
    """A copy of the tiny tokenizer whose model card metadata says ``protocol_line``."""
    folder.mkdir()
    torch.manual_seed(0)
    IBQVQModel(**TINY_TOKENIZER_CONFIG).eval().save_pretrained(folder)
    (folder / "README.md").write_text(f"---\nlicense: apache-2.0\n{protocol_line}\n---\n\n# tiny\n")
    return folder


def test_tokenizer_protocol_flag_and_model_card_default(photo_folder, tokenizer_dir, tmp_path, capsys):
    """Issue 15, item 6: ``--protocol pretrain`` evaluates on the Pretrain tokenizers' pixels (Resize(R) +
    CenterCrop(R), PIL bilinear antialiased), the default is the protocol in the model card (else reference),
    and the protocol is recorded in the results."""
    from ibq_hf.conversion.tokenizer import save_converted_tokenizer
    from ibq_hf.image_processing import preprocess

    runs = iter(range(100))

    def evaluate(model: Path, *extra: str) -> dict:
        out = tmp_path / f"out-{next(runs)}"
        argv = ["--model", str(model), "--data-dir", str(photo_folder), "--split", "train", "--batch-size", "4",
                "--no-rfid", "--output-dir", str(out), "--no-progress", "--device", "cpu", *extra]  # fmt: skip
        assert tokenizer_main(argv) == 0, capsys.readouterr().err
        result = json.loads((out / "tokenizer_eval.json").read_text())
        result["table"] = (out / "tokenizer_eval.md").read_text()
        return result

    def expected_psnr(protocol: str) -> float:
        pictures = torch.stack(
            [preprocess(PIL.Image.open(photo_folder / "train" / "photo" / f"{k}.png"), 16, protocol=protocol)
             for k in range(4)]
        )  # fmt: skip
        model = IBQVQModel.from_pretrained(tokenizer_dir).eval()
        with torch.no_grad():
            recon = model.decode_indices(model.tokenize(pictures)).clamp(-1, 1)
        return float(psnr_ssim(pictures, recon)[0].mean())

    reference, pretrain = expected_psnr("reference"), expected_psnr("pretrain")
    assert abs(reference - pretrain) > 1e-3  # 48×64 photos: the two resizes give different pixels

    result = evaluate(tokenizer_dir, "--protocol", "pretrain")
    assert result["protocol"] == "pretrain" and result["protocol_source"] == "--protocol"
    assert result["psnr"] == pytest.approx(pretrain, rel=1e-6)
    assert "| preprocessing protocol | pretrain |" in result["table"]
    result = evaluate(tokenizer_dir)  # no card: the reference protocol
    assert result["protocol"] == "reference" and result["protocol_source"] == "default"
    assert result["psnr"] == pytest.approx(reference, rel=1e-6)

    # a converted Pretrain tokenizer's card (written by the converter) makes pretrain the default ...
    converted = tmp_path / "converted-pretrain"
    save_converted_tokenizer(IBQVQModel.from_pretrained(tokenizer_dir), converted, "x.ckpt", True, "pretrain")
    result = evaluate(converted)
    assert result["protocol"] == "pretrain" and result["protocol_source"] == "the model card"
    assert result["psnr"] == pytest.approx(pretrain, rel=1e-6)
    assert "the 'pretrain' protocol (the model card)" in capsys.readouterr().out
    # ... and --protocol overrides it
    assert evaluate(converted, "--protocol", "reference")["psnr"] == pytest.approx(reference, rel=1e-6)

    unknown = _tokenizer_with_card(tmp_path / "unknown", "preprocessing_protocol: imagenet-v2")
    argv = ["--model", str(unknown), "--data-dir", str(photo_folder), "--split", "train", "--no-rfid",
            "--no-progress", "--device", "cpu"]  # fmt: skip
    assert tokenizer_main(argv) == 2
    err = capsys.readouterr().err
    assert "preprocessing_protocol: 'imagenet-v2'" in err and "--protocol" in err
    with pytest.raises(SystemExit):
        tokenizer_main([*argv, "--protocol", "imagenet"])
    assert "invalid choice: 'imagenet'" in capsys.readouterr().err
