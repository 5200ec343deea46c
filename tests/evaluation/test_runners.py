"""The shared loops (sampling, tokenizer and generation evaluation) on the bundled digits pipeline and a tiny
tokenizer, with a fast stand-in for the Inception network (the real one is covered in test_inception.py and
the slow script tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from evaluation_helpers import StubInception, photo_crops

from ibq_hf.evaluation import (
    NpzImageReader,
    evaluate_generation,
    evaluate_tokenizer,
    frechet_distance,
    image_seed,
    inception_score,
    psnr_ssim,
    results_markdown,
    sample_for_fid,
    sample_order,
    save_adm_npz,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: 1 thread avoids OpenMP stalls on busy cores

DIGITS = Path(__file__).resolve().parents[2] / "checkpoints" / "ibq-digits"


@pytest.fixture(scope="module")
def digits_pipe():
    from ibq_hf.pipeline import IBQPipeline

    pipe = IBQPipeline.from_pretrained(DIGITS)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.slow  # the default suite checks every file position against the pipeline (shuffle test)
def test_sampling_is_independent_of_batching(tmp_path, digits_pipe):
    a = sample_for_fid(
        digits_pipe, tmp_path / "a.npz", images_per_class=3, batch_size=30, seed=5, progress=False
    )
    sample_for_fid(digits_pipe, tmp_path / "b.npz", images_per_class=3, batch_size=7, seed=5, progress=False)
    sample_for_fid(
        digits_pipe,
        tmp_path / "c.npz",
        images_per_class=1,
        classes=[4],
        batch_size=1,
        seed=5,
        rounding="truncate",
        progress=False,
    )
    with np.load(tmp_path / "a.npz") as da, np.load(tmp_path / "b.npz") as db:
        assert da["arr_0"].shape == (30, 32, 32, 3) and da["arr_0"].dtype == np.uint8
        np.testing.assert_array_equal(da["arr_0"], db["arr_0"])
        np.testing.assert_array_equal(da["arr_1"], np.repeat(np.arange(10), 3)[sample_order(5, 30)])
        assert len({da["arr_0"][i].tobytes() for i in range(30)}) == 30  # every image has its own seed
    # the settings come from generation_config when not given, and are recorded
    assert a["guidance_scale"] == 2.0 and a["temperature"] == 1.0 and a["rounding"] == "round"
    assert json.loads((tmp_path / "a.npz.json").read_text())["num_images"] == 30
    assert not list(tmp_path.glob("*.npy"))  # shards are removed
    # image 0 of class 4 alone (global index 0 there) equals the pipeline called with the same seed, truncated
    expected = digits_pipe(
        class_labels=[4], generator=[torch.Generator().manual_seed(image_seed(5, 0))], output_type="pt"
    ).images
    with np.load(tmp_path / "c.npz") as dc:
        direct = (expected.clamp(0, 1) * 255).permute(0, 2, 3, 1).floor().to(torch.uint8).numpy()
        np.testing.assert_array_equal(dc["arr_0"], direct)
    assert image_seed(5, 0) != image_seed(5, 1) != image_seed(6, 0)


@pytest.mark.slow  # samples and Inception features end to end (~2.1 s); default-suite budget
def test_generation_metrics_plumbing(tmp_path, digits_pipe):
    """FID/IS/precision/recall of digit samples vs real digits with a stand-in feature network."""
    from sklearn.datasets import load_digits

    sample_for_fid(digits_pipe, tmp_path / "s.npz", images_per_class=4, batch_size=40, seed=0, progress=False)
    digits = load_digits().images[:60] / 16.0
    real = torch.nn.functional.interpolate(torch.tensor(digits)[:, None].float(), size=32, mode="bilinear")
    real = (real.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1).permute(0, 2, 3, 1).numpy()
    save_adm_npz(tmp_path / "ref.npz", real)
    stub = StubInception()
    result = evaluate_generation(
        tmp_path / "s.npz", tmp_path / "ref.npz", stub, batch_size=16, progress=False
    )
    assert result["num_samples"] == 40 and result["num_reference"] == 60
    # independent recomputation of the FID from the stand-in's features
    feats = [stub(torch.from_numpy(np.array(a)).permute(0, 3, 1, 2).float() / 255).features.double().numpy()
             for a in (NpzImageReader(tmp_path / "s.npz").batches(100).__next__(), real)]  # fmt: skip
    direct = frechet_distance(
        feats[0].mean(0), np.cov(feats[0], rowvar=False), feats[1].mean(0), np.cov(feats[1], rowvar=False)
    )
    assert result["fid"] == pytest.approx(direct, rel=1e-6)
    assert 1.0 <= result["inception_score"] <= 10.0
    assert 0.0 <= result["precision"] <= 1.0 and 0.0 <= result["recall"] <= 1.0
    same = evaluate_generation(tmp_path / "ref.npz", iter([real[:30], real[30:]]), stub, progress=False)
    assert same["fid"] == pytest.approx(0.0, abs=1e-6) and same["precision"] == 1.0 and same["recall"] == 1.0
    assert "| FID |" in results_markdown(result)


def test_tokenizer_evaluation_plumbing(tiny_tokenizer):
    crops = torch.from_numpy(photo_crops(32, 1)).permute(0, 3, 1, 2).float() / 127.5 - 1
    crops = torch.nn.functional.interpolate(crops, size=16, mode="bilinear", antialias=True)
    batches = [crops[:3], {"pixel_values": crops[3:]}]
    result = evaluate_tokenizer(tiny_tokenizer, batches, StubInception(), lpips=None, progress=False)
    with torch.no_grad():
        recon = tiny_tokenizer.decode_indices(tiny_tokenizer.tokenize(crops)).clamp(-1, 1)
    psnr, ssim = psnr_ssim(crops, recon)
    assert result["num_images"] == 4 and result["num_tokens"] == 4 * 8 * 8
    assert result["psnr"] == pytest.approx(psnr.mean()) and result["ssim"] == pytest.approx(ssim.mean())
    assert result["rfid"] is not None and result["rfid"] > 0
    assert 0 < result["codebook_usage"] <= 1 and result["codebook_size"] == 64
    assert result["lpips_vgg"] is None and result["lpips_alex"] is None
    limited = evaluate_tokenizer(tiny_tokenizer, batches, None, max_images=2, progress=False)
    assert limited["num_images"] == 2 and limited["rfid"] is None and "rfid" in limited["unavailable"]
    with pytest.raises(ValueError, match="no images"):
        evaluate_tokenizer(tiny_tokenizer, [], None, progress=False)


def _digit_probabilities(images_uint8: np.ndarray) -> np.ndarray:
    """p(y|x) [N, 10] from a digits classifier (RBF SVC, sigmoid-calibrated) fitted on sklearn's real digits."""
    import importlib.util

    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.datasets import load_digits
    from sklearn.svm import SVC

    path = DIGITS.parents[1] / "examples/digits/check_digits.py"
    spec = importlib.util.spec_from_file_location("check_digits", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    digits = load_digits()
    classifier = CalibratedClassifierCV(SVC(gamma=0.001, C=10.0), ensemble=False)
    classifier.fit(digits.data, digits.target)
    return classifier.predict_proba(module.to_digit_features(images_uint8.astype(np.float32) / 255.0))


@pytest.mark.slow  # default-suite budget: heavy; runs in the slow set
def test_sample_file_is_shuffled_with_labels_aligned_and_is_like_a_random_order(tmp_path, digits_pipe):
    """Item 9 of issue 11: the file is written in a seeded shuffled order (position p holds global image
    order[p] with its label), and its Inception Score over contiguous splits lies within one split standard
    deviation of the score over random permutations of the same samples. The class order that was written
    before does not: each split then sees only a few classes."""
    per_class, split = 6, 20  # 60 images, 3 splits of 20 (ADM: splits of 5,000)
    settings = sample_for_fid(
        digits_pipe, tmp_path / "s.npz", images_per_class=per_class, batch_size=60, seed=3, progress=False
    )
    order = sample_order(3, 60)
    assert sorted(order.tolist()) == list(range(60)) and not np.array_equal(order, np.arange(60))
    assert np.array_equal(sample_order(3, 60), order) and not np.array_equal(sample_order(4, 60), order)
    assert np.array_equal(sample_order(3, 60, shuffle=False), np.arange(60))
    assert "shuffled" in settings["order"]
    with np.load(tmp_path / "s.npz") as data:
        images, labels = data["arr_0"], data["arr_1"]
    np.testing.assert_array_equal(labels, order // per_class)
    # Position p is global image order[p]: the image the pipeline draws for its class with its own seed.
    for p in (0, 59):
        direct = digits_pipe(
            class_labels=[int(labels[p])],
            generator=[torch.Generator().manual_seed(image_seed(3, int(order[p])))],
            output_type="pt",
        ).images[0]
        expected = (direct.clamp(0, 1) * 255).round().permute(1, 2, 0).to(torch.uint8).numpy()
        np.testing.assert_array_equal(images[p], expected)

    probs = _digit_probabilities(images)
    assert (probs.argmax(1) == labels).mean() >= 0.8  # every image carries the label it was drawn for
    rng = np.random.default_rng(0)
    permuted = [inception_score(probs[rng.permutation(60)], split) for _ in range(30)]
    reference = np.mean([m for m, _ in permuted])
    split_std = np.mean([s for _, s in permuted])
    written, _ = inception_score(probs, split)
    assert abs(written - reference) <= split_std, (written, reference, split_std)
    class_order = np.empty_like(probs)
    class_order[order] = probs  # the same samples in class order, as the file held them before
    sorted_score, _ = inception_score(class_order, split)
    assert abs(sorted_score - reference) > 3 * split_std, (sorted_score, reference, split_std)
