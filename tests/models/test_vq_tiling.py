"""IBQVQModel slicing and tiling (diffusers' AutoencoderMixin) and ``IBQVQModel.load_tokenizer``."""

from __future__ import annotations

import itertools
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.vae import AutoencoderMixin

from conftest import TINY_PIPELINE_AR_CONFIG, TINY_TOKENIZER_CONFIG
from ibq_hf import IBQVQModel
from ibq_hf.errors import HubModelUnavailableError, ModelFolderNotFoundError
from ibq_hf.models.modeling_vq import DEFAULT_TILE_TOKENS, _tile_starts

DIGITS_TOKENIZER = Path(__file__).resolve().parents[2] / "checkpoints" / "ibq-digits" / "vqvae"


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Tiny models run fastest on one thread (see conftest.one_thread)."""


def pixels(batch: int, height: int, width: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, height, width, generator=g) * 2 - 1


# -- slicing ------------------------------------------------------------------------------------------


def test_slicing_and_tiling_come_from_diffusers_autoencoder_mixin(tiny_tokenizer):
    assert isinstance(tiny_tokenizer, AutoencoderMixin)
    assert not tiny_tokenizer.use_slicing and not tiny_tokenizer.use_tiling
    tiny_tokenizer.enable_slicing()
    tiny_tokenizer.enable_tiling()
    assert tiny_tokenizer.use_slicing and tiny_tokenizer.use_tiling
    assert tiny_tokenizer.tile_sample_min_size == DEFAULT_TILE_TOKENS * 2  # tokens × downsampling factor
    tiny_tokenizer.disable_slicing()
    tiny_tokenizer.disable_tiling()
    assert not tiny_tokenizer.use_slicing and not tiny_tokenizer.use_tiling


def test_slicing_gives_the_unsliced_outputs(tiny_tokenizer):
    x = pixels(3, 16, 24)
    with torch.no_grad():
        ref, ids, dec = (
            tiny_tokenizer(x),
            tiny_tokenizer.tokenize(x),
            tiny_tokenizer.decode_indices(torch.arange(3 * 8 * 12).remainder(64).view(3, 8, 12)),
        )
        tiny_tokenizer.enable_slicing()
        out, ids_sliced = tiny_tokenizer(x), tiny_tokenizer.tokenize(x)
        dec_sliced = tiny_tokenizer.decode_indices(torch.arange(3 * 8 * 12).remainder(64).view(3, 8, 12))
    # One image at a time through the same kernels: equal up to the batch-size dependence of fp32 convolutions.
    torch.testing.assert_close(out.sample, ref.sample, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.latents, ref.latents, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dec_sliced, dec, atol=1e-5, rtol=1e-5)
    assert torch.equal(out.indices, ref.indices) and torch.equal(ids_sliced, ids)
    # The quantizer still sees the whole batch: the batch entropy term is the unsliced one.
    for name in ("quant_loss", "sample_entropy", "avg_entropy", "entropy_loss"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), atol=1e-5, rtol=1e-5)


def test_sliced_training_step_gives_the_unsliced_gradients(tiny_tokenizer):
    """Reconstruction + codebook terms. (The entropy terms agree in value, above; their gradients go through a
    softmax at temperature 0.01, which magnifies the ~1e-7 kernel differences a hundredfold.)"""
    x = pixels(2, 16, 16)

    def grads() -> list[torch.Tensor]:
        tiny_tokenizer.zero_grad()
        out = tiny_tokenizer(x)
        (out.sample.square().mean() + out.quant_loss).backward()
        return [p.grad.clone() for p in tiny_tokenizer.parameters()]

    reference = grads()
    tiny_tokenizer.enable_slicing()
    for got, want in zip(grads(), reference):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)


# -- tiling -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "length,tile,overlap,expected",
    [(8, 8, 2, [0]), (5, 8, 2, [0]), (20, 8, 2, [0, 6, 12]), (17, 16, 4, [0, 1]), (30, 16, 4, [0, 7, 14])],
)
def test_tile_starts_cover_the_grid_with_at_least_the_overlap(length, tile, overlap, expected):
    starts = _tile_starts(length, tile, overlap)
    assert starts == expected
    assert starts[0] == 0 and min(starts[-1] + tile, length) == length
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts))


def _make_local(model: IBQVQModel, monkeypatch) -> None:
    """Replace encoder and decoder by per-token maps (no context): tiling must then be exact."""
    f = model.downsample_factor
    enc_w = torch.randn(model.config.z_channels, 3, generator=torch.Generator().manual_seed(0))
    dec_w = torch.randn(3, model.config.z_channels, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(
        model.encoder, "forward", lambda x: F.avg_pool2d(torch.einsum("zc,bchw->bzhw", enc_w, x), f)
    )
    monkeypatch.setattr(
        model.decoder,
        "forward",
        lambda z: F.interpolate(torch.einsum("cz,bzhw->bchw", dec_w, z), scale_factor=f, mode="nearest"),
    )


@pytest.mark.parametrize("size,overlap", [((40, 24), 0.25), ((36, 52), 0.5), ((64, 18), 0.0)])
def test_tiling_is_exact_for_a_network_without_context(tiny_tokenizer, monkeypatch, size, overlap):
    """With per-token encoder/decoder, every tile computes exactly its part: the cross-fade must reassemble it."""
    _make_local(tiny_tokenizer, monkeypatch)
    x = pixels(2, *size)
    with torch.no_grad():
        latents, ids = tiny_tokenizer.encode(x).latents, tiny_tokenizer.tokenize(x)
        sample = tiny_tokenizer.decode(latents).sample
        tiny_tokenizer.enable_tiling(tile_sample_size=16, tile_overlap_factor=overlap)
        assert tiny_tokenizer._tiles(size[0] // 2, size[1] // 2)
        tiled = tiny_tokenizer.encode(x)
        torch.testing.assert_close(tiled.latents, latents, atol=1e-5, rtol=1e-5)
        assert torch.equal(tiled.indices, ids) and torch.equal(tiny_tokenizer.tokenize(x), ids)
        torch.testing.assert_close(tiny_tokenizer.decode(latents).sample, sample, atol=1e-5, rtol=1e-5)


def test_tiled_outputs_have_the_untiled_shapes_and_train(tiny_tokenizer):
    x = pixels(2, 40, 24)  # 20×12 tokens: 3×2 tiles of 8 tokens
    tiny_tokenizer.enable_tiling(tile_sample_size=16)
    out = tiny_tokenizer(x)
    assert out.sample.shape == x.shape and out.indices.shape == (2, 20, 12)
    assert out.latents.shape == (2, TINY_TOKENIZER_CONFIG["embed_dim"], 20, 12)
    assert tiny_tokenizer.tokenize(x).shape == (2, 20, 12)
    assert tiny_tokenizer.decode_indices(out.indices).shape == x.shape
    (out.sample.square().mean() + out.quant_loss).backward()  # tiled paths are differentiable
    assert all(p.grad is not None for p in tiny_tokenizer.encoder.parameters())


def test_inputs_no_larger_than_a_tile_are_not_tiled(tiny_tokenizer):
    x = pixels(2, 16, 16)
    with torch.no_grad():
        ref = tiny_tokenizer(x).sample
        tiny_tokenizer.enable_tiling()
        assert torch.equal(tiny_tokenizer(x).sample, ref)
        tiny_tokenizer.enable_tiling(tile_sample_size=8)
        assert not torch.equal(tiny_tokenizer(x).sample, ref)
        tiny_tokenizer.disable_tiling()
        assert torch.equal(tiny_tokenizer(x).sample, ref)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"tile_sample_size": 15}, "multiple of the downsampling factor 2"),
        ({"tile_sample_size": 0}, "multiple of the downsampling factor 2"),
        ({"tile_overlap_factor": 1.0}, r"in \[0, 1\)"),
        ({"tile_overlap_factor": -0.1}, r"in \[0, 1\)"),
    ],
)
def test_bad_tiling_settings_fail_when_enabled(tiny_tokenizer, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_tokenizer.enable_tiling(**kwargs)


def _digit_mosaic(size: int) -> torch.Tensor:
    """Scikit-learn digits upscaled to 32² (as the bundled tokenizer was trained) in a ``size``² grid."""
    from sklearn.datasets import load_digits

    n = size // 32
    digits = torch.tensor(load_digits().images[: n * n], dtype=torch.float32)[:, None] / 16
    digits = F.interpolate(digits, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1)
    grid = digits.reshape(n, n, 32, 32).permute(0, 2, 1, 3).reshape(size, size)
    return (grid * 2 - 1).expand(1, 3, size, size)


def test_tiled_decoding_of_the_trained_digits_tokenizer_stays_close(tmp_path):
    """Attention and GroupNorm see one tile, so tiling is approximate; this pins the measured closeness.

    The bundled digits tokenizer (factor 4) decodes a 128² mosaic of 16 digits from its own token ids, with
    64-pixel tiles (16 tokens, overlap 4). Measured: 33.2 dB PSNR against the untiled decoding (20.6 dB with
    the default 32-pixel tiles, 8 tokens: too little context for this decoder).
    """
    pytest.importorskip("sklearn")
    model = IBQVQModel.from_pretrained(DIGITS_TOKENIZER).eval()
    x = _digit_mosaic(128)
    with torch.no_grad():
        ids = model.tokenize(x)
        ref = model.decode_indices(ids).clamp(-1, 1)
        model.enable_tiling(tile_sample_size=64)
        tiled = model.decode_indices(ids).clamp(-1, 1)
    mse = float((tiled - ref).square().mean())
    assert mse > 0  # it did tile
    assert 10 * math.log10(4 / mse) > 32.0


# -- load_tokenizer -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory) -> Path:
    """A tiny saved pipeline whose AR weights are then deleted: only ``vqvae/`` may be read."""
    from ibq_hf import IBQARConfig, IBQARForImageGeneration, IBQPipeline

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("load_tokenizer") / "pipe"
    IBQPipeline(
        vqvae=IBQVQModel(**TINY_TOKENIZER_CONFIG).eval(),
        transformer=IBQARForImageGeneration(IBQARConfig(**TINY_PIPELINE_AR_CONFIG)).eval(),
    ).save_pretrained(folder)
    for weights in (folder / "transformer").glob("*.safetensors"):
        weights.unlink()
    return folder


def _same_weights(a: IBQVQModel, b: IBQVQModel) -> bool:
    return all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


def test_load_tokenizer_from_a_pipeline_folder_reads_only_vqvae(saved_pipeline):
    tokenizer = IBQVQModel.load_tokenizer(saved_pipeline)
    assert isinstance(tokenizer, IBQVQModel)
    assert _same_weights(tokenizer, IBQVQModel.from_pretrained(saved_pipeline / "vqvae"))


def test_load_tokenizer_from_a_tokenizer_folder_with_dtype(saved_pipeline):
    tokenizer = IBQVQModel.load_tokenizer(str(saved_pipeline / "vqvae"), dtype=torch.bfloat16)
    assert tokenizer.decoder.conv_out.weight.dtype == torch.bfloat16
    assert tokenizer.quantize.embedding.weight.dtype == torch.float32  # the codebook stays fp32


def test_load_tokenizer_explicit_subfolder_skips_detection(saved_pipeline):
    tokenizer = IBQVQModel.load_tokenizer(saved_pipeline, subfolder="vqvae")
    assert _same_weights(tokenizer, IBQVQModel.from_pretrained(saved_pipeline / "vqvae"))


def test_load_tokenizer_missing_or_wrong_folder_is_one_clear_error(saved_pipeline, tmp_path):
    with pytest.raises(ModelFolderNotFoundError, match="folder not found"):
        IBQVQModel.load_tokenizer(tmp_path / "nowhere")
    with pytest.raises(ModelFolderNotFoundError, match=r"has no model_index.json or config.json"):
        IBQVQModel.load_tokenizer(tmp_path)
    with pytest.raises(HubModelUnavailableError, match="not in the local Hub cache"):
        IBQVQModel.load_tokenizer("someone/not-cached-ibq-tokenizer", local_files_only=True)


@pytest.mark.parametrize("layout", ["pipeline", "tokenizer"])
def test_load_tokenizer_from_a_cached_hub_repo(saved_pipeline, tmp_path, layout):
    """A repo id in the Hub cache (offline): a pipeline repo is detected by its model_index.json."""
    commit = "0" * 40
    repo = tmp_path / "hub" / "models--someone--ibq-tiny"
    source = saved_pipeline if layout == "pipeline" else saved_pipeline / "vqvae"
    shutil.copytree(source, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    tokenizer = IBQVQModel.load_tokenizer(
        "someone/ibq-tiny", local_files_only=True, cache_dir=str(tmp_path / "hub")
    )
    assert _same_weights(tokenizer, IBQVQModel.from_pretrained(saved_pipeline / "vqvae"))
