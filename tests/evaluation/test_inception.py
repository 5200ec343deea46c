"""The FID InceptionV3: weight conversion from the fid-helper TorchScript, loaders, FID on real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from evaluation_helpers import inception_or_skip, photo_crops

from ibq_hf.evaluation import (
    FIDInceptionV3,
    InceptionLogitsUnavailableError,
    WeightsUnavailableError,
    fid_helper_weights_path,
    frechet_distance,
    load_fid_inception,
)


@pytest.fixture
def fid_inception():
    return inception_or_skip()


@pytest.mark.slow  # default-suite budget: heavy; runs in the slow set
def test_converted_weights_equal_the_torchscript(fid_inception):
    """Our module with the mapped weights gives the TorchScript's features (same preprocessed input)."""
    scripted = torch.jit.load(fid_helper_weights_path(), map_location="cpu").eval()
    images = torch.from_numpy(photo_crops(64, 1)[:3]).permute(0, 3, 1, 2).float() / 255
    ours = fid_inception(images).features
    prepared = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    with torch.no_grad():
        theirs = scripted(prepared)
    assert ours.shape == (3, 2048)
    assert (ours - theirs).abs().max() <= 1e-4
    # trained weights: features of the same photo are closer than of different photos
    assert (ours >= 0).all() and ours.std() > 0.05
    with pytest.raises(InceptionLogitsUnavailableError, match="pytorch-fid"):
        fid_inception(images, with_logits=True)


@pytest.mark.slow  # three 2048×2048 sqrtm: 1-5 min on 2 CPU cores
def test_fid_of_a_set_with_itself_and_against_numpy(fid_inception):
    crops = photo_crops(64, 2)  # 8 real photo crops
    feats = fid_inception(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255).features.double().numpy()
    a, b = feats[:4], feats[4:]
    s = np.cov(feats, rowvar=False)
    assert abs(frechet_distance(feats.mean(0), s, feats.mean(0), s)) < 1e-3
    ours = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    # direct numpy: the rank-3 covariances share a 3-dim trace term computable from the small Gram matrices
    ca, cb = a - a.mean(0), b - b.mean(0)
    cross = (ca @ cb.T) / 3.0  # Σa Σb = caᵀ (ca cbᵀ) cb / 9 → nonzero eigenvalues of (ca cbᵀ)(cb caᵀ) / 9
    eig = np.linalg.eigvals(cross @ cross.T).real
    direct = (
        ((a.mean(0) - b.mean(0)) ** 2).sum()
        + (ca**2).sum() / 3
        + (cb**2).sum() / 3
        - 2 * np.sqrt(np.clip(eig, 0, None)).sum()
    )
    assert ours == pytest.approx(direct, rel=1e-4)
    assert ours > 10  # different photos are far apart


@pytest.mark.slow  # writes and reloads the 87 MB Inception weights in three formats (~2.6 s); default-suite budget
def test_state_dict_files_roundtrip(tmp_path, fid_inception):
    """pytorch-fid-style .pth (old files lack num_batches_tracked) and .safetensors with a classifier load."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = {k: v for k, v in fid_inception.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"] = torch.randn(1008, 2048) * 0.01
    state["fc.bias"] = torch.zeros(1008)
    torch.save(state, tmp_path / "pt_inception.pth")
    save_file(state, tmp_path / "inception.safetensors")
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = fid_inception(images).features
    for name in ("pt_inception.pth", "inception.safetensors"):
        model = load_fid_inception(tmp_path / name)
        assert model.has_logits
        out = model(images, with_logits=True)
        assert out.logits.shape == (1, 1008)
        torch.testing.assert_close(out.features, expected, atol=1e-5, rtol=0)


def test_loader_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsUnavailableError, match="downloads are off"):
        load_fid_inception("pytorch-fid", allow_download=False)
    with pytest.raises(FileNotFoundError, match="do not exist"):
        load_fid_inception(tmp_path / "missing.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="pytorch-fid"):
        load_fid_inception(tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="uint8"):
        FIDInceptionV3.preprocess(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        FIDInceptionV3.preprocess(torch.zeros(3, 8, 8))


def test_auto_uses_the_fid_helper_file_offline(tmp_path, monkeypatch, fid_inception):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no cached pytorch-fid file

    def no_download(*args, **kwargs):
        raise AssertionError("must not download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    model = load_fid_inception("auto")
    assert "fid-helper" in model.source and not model.has_logits
