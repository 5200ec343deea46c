"""IBQPipeline with tiny random components: outputs, labels, seeding, save/load, Hub paths, reconstruct, errors."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from huggingface_hub import HfApi, RepoUrl

from conftest import TINY_PIPELINE_AR_CONFIG, TINY_TOKENIZER_CONFIG
from ibq_hf import IBQVQModel
from ibq_hf.hub_utils import upload_folder_to_hub
from ibq_hf.image_processing import images_to_tensor, postprocess_images
from ibq_hf.imagenet_labels import imagenet_id2label, imagenet_wnids
from ibq_hf.models.configuration_ar import IBQARConfig
from ibq_hf.models.modeling_ar import IBQARForImageGeneration
from ibq_hf.pipeline import IBQPipeline, ImagePipelineOutput
from ibq_hf.remote_code import package_module

# 16×16 images: the tiny tokenizer downsamples by 2, so the AR model samples an 8×8 grid of 64-code ids.
TINY_AR = TINY_PIPELINE_AR_CONFIG


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test in this module runs single-threaded (see conftest.one_thread)."""


def tiny_transformer(seed: int = 0, **overrides) -> IBQARForImageGeneration:
    """Random O(1) weights (the reference init has a zero head, i.e. uniform logits and no signal)."""
    torch.manual_seed(seed)
    model = IBQARForImageGeneration(IBQARConfig(**{**TINY_AR, **overrides}))
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_((1.0 if "norm" in name else 0.0) + 0.3 * torch.randn_like(param))
    return model.eval()


def tiny_pipeline(**ar_overrides) -> IBQPipeline:
    torch.manual_seed(0)
    vqvae = IBQVQModel(**TINY_TOKENIZER_CONFIG).eval()
    pipe = IBQPipeline(vqvae=vqvae, transformer=tiny_transformer(**ar_overrides))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.fixture(scope="module")
def pipe() -> IBQPipeline:
    return tiny_pipeline()


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pipe") / "ibq-tiny"
    pipe.save_pretrained(path)
    return path


# ---- outputs --------------------------------------------------------------------------------------------------


def test_output_types_agree(pipe):
    labels = [3, 5]
    latent = pipe(labels, generator=gens(0, 1), output_type="latent").images
    assert latent.dtype == torch.int64 and latent.shape == (2, 8, 8)
    assert int(latent.min()) >= 0 and int(latent.max()) < 64
    as_np = pipe(labels, generator=gens(0, 1), output_type="np").images
    assert as_np.dtype == np.float32 and as_np.shape == (2, 16, 16, 3)
    assert as_np.min() >= 0.0 and as_np.max() <= 1.0
    as_pt = pipe(labels, generator=gens(0, 1), output_type="pt").images
    assert as_pt.shape == (2, 3, 16, 16)
    np.testing.assert_array_equal(as_pt.permute(0, 2, 3, 1).numpy(), as_np)
    as_pil = pipe(labels, generator=gens(0, 1)).images
    assert [im.size for im in as_pil] == [(16, 16)] * 2 and as_pil[0].mode == "RGB"
    # PIL pixels are round(255 · np), and np is the clamped decoder output of the sampled tokens.
    np.testing.assert_array_equal(np.stack([np.asarray(im) for im in as_pil]), np.round(as_np * 255))
    with torch.no_grad():
        decoded = pipe.vqvae.decode_indices(latent)
    np.testing.assert_array_equal(postprocess_images(decoded, "np"), as_np)
    out = pipe(labels, generator=gens(0, 1), output_type="latent", return_dict=False)
    assert isinstance(out, tuple) and torch.equal(out[0], latent)
    assert isinstance(pipe(labels, generator=gens(0, 1), output_type="latent"), ImagePipelineOutput)


def test_clamping_and_rounding():
    # 255·(x + 1)/2 = 10.6 for x = 2·10.6/255 − 1: rounding gives 11 (the original's truncation gave 10).
    x = 2 * 10.6 / 255 - 1
    pixels = torch.tensor([-3.0, 3.0, 0.0, x]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    pil = postprocess_images(pixels, "pil")[0]
    assert np.asarray(pil)[..., 0].tolist() == [[0, 255], [128, 11]]
    pt = postprocess_images(pixels, "pt")
    assert float(pt.min()) == 0.0 and float(pt.max()) == 1.0


def test_per_image_generators_make_images_independent_of_the_batch(pipe):
    # Token ids are identical; pixels agree to fp32 round-off (batched convolutions may sum in another order).
    batch = pipe([3, 5, 7], generator=gens(10, 11, 12), output_type="latent").images
    pixels = pipe([3, 5, 7], generator=gens(10, 11, 12), output_type="np").images
    for i, (label, seed) in enumerate([(3, 10), (5, 11), (7, 12)]):
        assert torch.equal(pipe([label], generator=gens(seed), output_type="latent").images[0], batch[i])
        single = pipe([label], generator=gens(seed), output_type="np").images
        np.testing.assert_allclose(pixels[i], single[0], rtol=0, atol=1e-5)
    swapped = pipe([7, 3], generator=gens(12, 10), output_type="latent").images
    assert torch.equal(swapped, batch[[2, 0]])


def test_num_images_per_prompt(pipe):
    out = pipe([3, 5], num_images_per_prompt=2, generator=gens(0, 1, 2, 3), output_type="latent").images
    assert out.shape == (4, 8, 8)
    expanded = pipe([3, 3, 5, 5], generator=gens(0, 1, 2, 3), output_type="latent").images
    assert torch.equal(out, expanded)
    assert len(pipe(4, num_images_per_prompt=3, generator=torch.Generator().manual_seed(0)).images) == 3
    with pytest.raises(ValueError, match=r"Got 2 generators for 4 images .*num_images_per_prompt=2"):
        pipe([3, 5], num_images_per_prompt=2, generator=gens(0, 1))
    with pytest.raises(ValueError, match="num_images_per_prompt must be a positive int"):
        pipe([3], num_images_per_prompt=0)


def test_determinism_and_seeds(pipe):
    a = pipe([1, 2], generator=gens(5, 6), output_type="latent").images
    b = pipe([1, 2], generator=gens(5, 6), output_type="latent").images
    c = pipe([1, 2], generator=gens(7, 8), output_type="latent").images
    assert torch.equal(a, b) and not torch.equal(a, c)
    one = pipe([1, 2], generator=torch.Generator().manual_seed(5), output_type="latent").images
    assert torch.equal(
        one, pipe([1, 2], generator=torch.Generator().manual_seed(5), output_type="latent").images
    )


def test_classifier_free_guidance_and_generation_config_defaults(pipe):
    off = pipe([2, 4], guidance_scale=1.0, generator=gens(0, 1), output_type="latent").images
    on = pipe([2, 4], guidance_scale=4.0, generator=gens(0, 1), output_type="latent").images
    assert not torch.equal(off, on)
    assert torch.equal(
        on, pipe([2, 4], guidance_scale=4.0, generator=gens(0, 1), output_type="latent").images
    )
    config = pipe.transformer.generation_config
    saved = config.guidance_scale
    config.guidance_scale = 4.0
    try:  # unset arguments come from the transformer's generation config
        assert torch.equal(on, pipe([2, 4], generator=gens(0, 1), output_type="latent").images)
    finally:
        config.guidance_scale = saved
    greedy = pipe([2, 4], do_sample=False, output_type="latent").images
    assert torch.equal(greedy, pipe([2, 4], top_k=1, generator=gens(3, 4), output_type="latent").images)
    hot = pipe([2, 4], temperature=5.0, generator=gens(0, 1), output_type="latent").images
    assert not torch.equal(hot, off)
    linear = pipe(
        [2, 4],
        guidance_scale=4.0,
        generator=gens(0, 1),
        output_type="latent",
        generation_kwargs={"guidance_schedule": "linear"},
    ).images
    assert not torch.equal(linear, on)


def test_progress_bar_counts_decoding_steps():
    pipe = tiny_pipeline()
    stream = io.StringIO()
    pipe.set_progress_bar_config(file=stream, disable=False, mininterval=0)
    pipe([1], generator=gens(0), output_type="latent")
    assert "64/64" in stream.getvalue()


def test_step_callback_sees_every_token_and_concurrent_calls_keep_their_own_progress():
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    seen: list[tuple[int, torch.Tensor]] = []
    out = pipe([1, 2], generator=gens(0, 1), output_type="latent",
               step_callback=lambda step, tokens: seen.append((step, tokens.clone())))  # fmt: skip
    final = out.images.flatten(1)
    assert [s for s, _ in seen] == list(range(final.shape[1]))
    assert all(torch.equal(t, final[:, : s + 1]) for s, t in seen)
    # A callback that starts another generation inside the first one: each call counts only its own steps
    # (a shared forward hook on the output head would have counted both).
    outer: list[int] = []
    inner: list[int] = []

    def nested(step: int, tokens: torch.Tensor) -> None:
        outer.append(step)
        if step == 0:
            pipe([3], generator=gens(2), output_type="latent", step_callback=lambda s, t: inner.append(s))

    pipe([1], generator=gens(0), output_type="latent", step_callback=nested)
    assert outer == list(range(64)) and inner == list(range(64))
    with pytest.raises(ValueError, match="step_callback"):
        pipe([1], output_type="latent", generation_kwargs={"step_callback": print})


# ---- labels ---------------------------------------------------------------------------------------------------


def test_imagenet_table():
    id2label = imagenet_id2label()
    assert len(id2label) == 1000 and id2label[0] == "tench, Tinca tinca"
    assert id2label[207] == "golden retriever" and id2label[360] == "otter"
    wnids = imagenet_wnids()
    assert wnids == sorted(wnids) and len(set(wnids)) == 1000 and wnids[207] == "n02099601"


def test_imagenet_names_for_a_1000_class_model():
    pipe = tiny_pipeline(num_classes=1000)
    assert pipe.id2label[207] == "golden retriever"
    assert pipe.get_label_ids(["golden retriever", "Tench", " tinca   TINCA "]) == [207, 0, 0]
    assert pipe.get_label_ids("otter") == [360]
    by_name = pipe(["golden retriever", 360], generator=gens(0, 1), output_type="latent").images
    by_id = pipe([207, 360], generator=gens(0, 1), output_type="latent").images
    assert torch.equal(by_name, by_id)
    with pytest.raises(
        ValueError, match=r"Unknown class name 'golden retreiver'\. Did you mean 'golden retriever' \(207\)"
    ):
        pipe.get_label_ids(["golden retreiver"])
    with pytest.raises(ValueError, match=r"'crane' is ambiguous \(134: .*517: "):
        pipe("crane")


def test_custom_id2label_is_used():
    names = {i: str(i) for i in range(10)}  # e.g. a digits model whose classes are named "0".."9"
    pipe = tiny_pipeline(id2label=names)
    assert pipe.id2label == names
    assert pipe.get_label_ids(["3", "7"]) == [3, 7]
    assert torch.equal(
        pipe("3", generator=gens(0), output_type="latent").images,
        pipe(3, generator=gens(0), output_type="latent").images,
    )
    with pytest.raises(ValueError, match="Unknown class name 'three'"):
        pipe("three")


def test_models_without_names_take_ids_only(pipe):
    assert pipe.id2label == {}  # transformers' default LABEL_0/LABEL_1 are not class names
    with pytest.raises(ValueError, match=r"have no names .*class ids in \[0, 10\)"):
        pipe("golden retriever")
    ids = pipe(torch.tensor([1, 2]), generator=gens(0, 1), output_type="latent").images
    assert torch.equal(ids, pipe(np.array([1, 2]), generator=gens(0, 1), output_type="latent").images)


@pytest.mark.parametrize(
    "labels,match",
    [
        (10, r"Class label 10 is out of range: this model has 10 classes, ids 0 to 9"),
        ([1, -1], "Class label -1 is out of range"),
        ([], "class_labels is empty"),
        (torch.tensor([1.0]), "integer class ids"),
        ([1.5], "int class ids or str class names"),
    ],
)
def test_bad_class_labels(pipe, labels, match):
    with pytest.raises((ValueError, TypeError), match=match):
        pipe(labels)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"class_labels": None}, ValueError, r"class_labels is required: pass a class id"),
        ({"class_labels": {1, 2}}, TypeError, r"class_labels must be a class id, a class name, a list"),
        ({"generator": 5}, ValueError, r"generator must be a torch.Generator or a list .*got 5 \(int\).*manual_seed"),
        ({"generator": [5]}, ValueError, r"generator must be a torch.Generator or a list"),
        ({"generator": 5, "do_sample": False}, ValueError, r"generator must be a torch.Generator"),
        ({"top_k": 1.5}, ValueError, r"top_k must be a whole number, got 1\.5"),
        ({"top_k": True}, ValueError, r"top_k must be a whole number, got True"),
        ({"num_images_per_prompt": True}, ValueError, r"num_images_per_prompt must be a positive int .*got True"),
        ({"num_images_per_prompt": 2.0}, ValueError, r"num_images_per_prompt must be a positive int"),
        ({"generation_kwargs": {"guidance_cutoff": 2.5}}, ValueError, r"guidance_cutoff must be a whole number"),
    ],
    ids=["labels-none", "labels-set", "generator-int", "generator-list-of-int", "generator-int-greedy",
         "top_k-float", "top_k-bool", "num-images-bool", "num-images-float", "cutoff-float"],
)  # fmt: skip
def test_rough_inputs_get_clear_errors(pipe, kwargs, error, match):
    """Issue 13, item 9: None used to raise a bare "'NoneType' object is not iterable", generator=5 "'int' object is
    not iterable"; top_k=1.5 (truncated to 1) and num_images_per_prompt=True (read as 1) were accepted."""
    kwargs = {"class_labels": [1], **kwargs}
    with pytest.raises(error, match=match):
        pipe(**kwargs)


def test_integral_sampling_counts_still_work(pipe):
    """Config files may hold counts as floats (top_k: 5.0) and numpy ints come from arrays."""
    a = pipe(
        [1], generator=gens(0), top_k=5.0, num_images_per_prompt=np.int64(1), output_type="latent"
    ).images
    b = pipe([1], generator=gens(0), top_k=5, output_type="latent").images
    assert torch.equal(a, b)


def test_pipeline_dtype_casts_keep_the_codebook_fp32_without_warnings(saved, capfd):
    """Issue 13, item 6: `pipe.to(torch.float32)` logged diffusers' "should be kept in float32" warning (and
    `pipe.to(torch.bfloat16)` cast the codebook too); the decoded images carried requires_grad=True."""
    loaded = IBQPipeline.from_pretrained(saved)
    loaded.set_progress_bar_config(disable=True)
    capfd.readouterr()
    loaded.to(torch.float32)
    loaded.to("cpu", torch.bfloat16)
    assert "kept in float32" not in capfd.readouterr().err
    assert loaded.vqvae.quantize.embedding.weight.dtype == torch.float32
    assert (
        loaded.vqvae.decoder.conv_out.weight.dtype == torch.bfloat16
        and loaded.transformer.dtype == torch.bfloat16
    )
    images = loaded([1], generator=gens(0), output_type="np").images
    assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()
    loaded.to(torch.float32)
    assert loaded.vqvae.decoder.conv_out.weight.dtype == torch.float32
    pixels = loaded.vqvae.decode_indices(torch.zeros(1, 8, 8, dtype=torch.long))
    assert not pixels.requires_grad and pixels.grad_fn is None


def test_other_errors(pipe):
    with pytest.raises(ValueError, match="output_type must be one of"):
        pipe([1], output_type="jpeg")
    with pytest.raises(ValueError, match="as pipeline arguments"):
        pipe([1], generation_kwargs={"top_k": 3})
    torch.manual_seed(0)
    other = IBQVQModel(**{**TINY_TOKENIZER_CONFIG, "num_embeddings": 32})
    with pytest.raises(ValueError, match="codebook has 32 codes but the transformer's vocabulary has 64"):
        IBQPipeline(vqvae=other, transformer=pipe.transformer)


# ---- save / load / Hub ----------------------------------------------------------------------------------------


def test_save_load_round_trip(pipe, saved):
    index = json.loads((saved / "model_index.json").read_text())
    # [module, class] entries name the code saved next to the weights (ibq_hf.remote_code, tests/test_remote_code.py)
    assert index["_class_name"][1] == "IBQPipeline"
    assert (
        package_module(index["vqvae"][0]) == "ibq_hf.models.modeling_vq" and index["vqvae"][1] == "IBQVQModel"
    )
    assert package_module(index["transformer"][0]) == "ibq_hf.models.modeling_ar"
    files = sorted(str(p.relative_to(saved)) for p in saved.rglob("*") if p.is_file())
    assert "vqvae/diffusion_pytorch_model.safetensors" in files and "transformer/model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    loaded = IBQPipeline.from_pretrained(saved, local_files_only=True)
    loaded.set_progress_bar_config(disable=True)
    assert not loaded.transformer.training and not loaded.vqvae.training
    expected = pipe([3, 8], generator=gens(0, 1), output_type="np").images
    np.testing.assert_array_equal(loaded([3, 8], generator=gens(0, 1), output_type="np").images, expected)


def _copy_of(saved: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(saved, target)
    return target


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_loading_is_strict_for_every_component(saved, tmp_path):
    """Issue 11, item 11: a pipeline whose transformer misses a weight (or whose configs miss a field the weights
    need) raises naming it, instead of loading random weights or default sizes and sampling garbage."""
    from safetensors.torch import load_file, save_file

    from ibq_hf.errors import CheckpointKeyError

    folder = _copy_of(saved, tmp_path)
    weights = folder / "transformer" / "model.safetensors"
    state = load_file(weights)
    state.pop("blocks.0.feed_forward.w2.weight")
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(CheckpointKeyError, match=r"Missing keys \(1\): blocks\.0\.feed_forward\.w2\.weight"):
        IBQPipeline.from_pretrained(folder)

    folder = _copy_of(saved, tmp_path / "b")
    _edit_json(folder / "transformer" / "config.json", lambda c: c.pop("grid_size"))
    with pytest.raises(ValueError, match=r"lacks \['grid_size'\]"):
        IBQPipeline.from_pretrained(folder)

    folder = _copy_of(saved, tmp_path / "c")
    _edit_json(folder / "vqvae" / "config.json", lambda c: c.pop("num_embeddings"))
    with pytest.raises(ValueError, match=r"lacks \['num_embeddings'\]"):
        IBQPipeline.from_pretrained(folder)

    folder = _copy_of(saved, tmp_path / "d")
    weights = folder / "vqvae" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    state["decoder.extra.weight"] = torch.zeros(1)
    save_file(state, weights)
    with pytest.raises(CheckpointKeyError, match=r"decoder\.extra\.weight"):
        IBQPipeline.from_pretrained(folder)


@pytest.mark.parametrize(
    "settings",
    [{"guidance_scale": float("nan")}, {"guidance_scale": float("inf")}, {"temperature": float("nan")},
     {"top_p": float("nan")}, {"generation_kwargs": {"guidance_cutoff": float("inf")}}],
    ids=["cfg-nan", "cfg-inf", "temperature-nan", "top_p-nan", "cutoff-inf"],
)  # fmt: skip
def test_non_finite_sampling_settings_are_rejected(pipe, settings):
    """Issue 11, item 12: NaN guidance used to mean "no guidance", inf guidance or NaN temperature one token."""
    with pytest.raises(ValueError, match="must be a finite number"):
        pipe(class_labels=[1], generator=gens(0), **settings)


def test_reconstruct_refuses_non_finite_pixels(pipe):
    """One NaN pixel used to give all-zero token ids and a normal-looking reconstruction (the image conversion
    refuses it; IBQVQModel.tokenize would too)."""
    image = torch.rand(3, 16, 16)
    image[0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf|non-finite"):
        pipe.reconstruct(image)
    array = np.random.default_rng(0).random((16, 16, 3), dtype=np.float32)
    array[2, 3, 1] = np.inf
    with pytest.raises(ValueError, match=r"NaN or inf|non-finite"):
        pipe.reconstruct(array)


def test_loading_a_hub_repo_from_the_local_cache(pipe, saved, tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--someone--ibq-tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.parent.mkdir()
    import shutil

    shutil.copytree(saved, snapshot)
    loaded = IBQPipeline.from_pretrained("someone/ibq-tiny", cache_dir=tmp_path, local_files_only=True)
    loaded.set_progress_bar_config(disable=True)
    expected = pipe([4], generator=gens(0), output_type="latent").images
    assert torch.equal(loaded([4], generator=gens(0), output_type="latent").images, expected)
    pinned = IBQPipeline.from_pretrained("someone/ibq-tiny", cache_dir=tmp_path, revision=commit)
    assert isinstance(pinned.transformer, IBQARForImageGeneration)
    with pytest.raises(OSError):
        IBQPipeline.from_pretrained("someone/missing", cache_dir=tmp_path, local_files_only=True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(saved, dtype):
    loaded = IBQPipeline.from_pretrained(saved, dtype=dtype)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.transformer.dtype == dtype and loaded.vqvae.encoder.conv_in.weight.dtype == dtype
    assert loaded.vqvae.quantize.embedding.weight.dtype == torch.float32  # the codebook stays fp32
    images = loaded([1, 2], generator=gens(0, 1), output_type="np").images
    assert images.dtype == np.float32 and np.isfinite(images).all() and images.shape == (2, 16, 16, 3)
    recon = loaded.reconstruct(images, output_type="np")
    assert recon.images.shape == (2, 16, 16, 3) and recon.indices.shape == (2, 8, 8)


def test_legacy_torch_dtype_argument(saved):
    """Still accepted (diffusers' deprecation warning); the docs and our code use dtype=."""
    with pytest.warns(FutureWarning):
        loaded = IBQPipeline.from_pretrained(saved, torch_dtype=torch.bfloat16)
    assert loaded.transformer.dtype == torch.bfloat16


def test_model_cpu_offload_gives_the_same_images(saved):
    assert IBQPipeline.model_cpu_offload_seq == "transformer->vqvae"
    loaded = IBQPipeline.from_pretrained(saved)
    loaded.set_progress_bar_config(disable=True)
    expected = loaded([1, 2], generator=gens(0, 1), output_type="np").images
    loaded.enable_model_cpu_offload(device="cpu")  # hooks as on a GPU machine; CPU is the execution device
    assert hasattr(loaded.transformer, "_hf_hook") and hasattr(loaded.vqvae, "_hf_hook")
    np.testing.assert_array_equal(loaded([1, 2], generator=gens(0, 1), output_type="np").images, expected)
    assert loaded.reconstruct(expected).indices.shape == (2, 8, 8)


def test_model_card_is_complete_and_its_snippet_runs(saved, monkeypatch):
    card = (saved / "README.md").read_text()
    header = card.split("---")[1]
    assert "license: apache-2.0" in header and "library_name: diffusers" in header
    assert "- ibq_hf" in header and "- class-conditional" in header
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert 'IBQPipeline.from_pretrained("ibq-tiny")' in snippet
    monkeypatch.chdir(saved.parent)
    exec(compile(snippet, "README.md", "exec"), {})
    assert PIL.Image.open(saved.parent / "sample.png").size == (16, 16)


def test_saving_is_safetensors_only(pipe, tmp_path):
    with pytest.raises(ValueError, match="safetensors only"):
        pipe.save_pretrained(tmp_path, safe_serialization=False)
    with pytest.raises(ValueError, match="only apply with push_to_hub=True"):
        pipe.save_pretrained(tmp_path, repo_id="me/x")


def test_offline_push_fails_after_the_local_save(pipe, tmp_path):
    # No mock: HF_HUB_OFFLINE=1 (tests/conftest.py) makes the real upload path refuse.
    out = tmp_path / "local"
    with pytest.raises(Exception, match=r"(?i)offline"):
        pipe.save_pretrained(out, push_to_hub=True, repo_id="someone/ibq-tiny")
    assert IBQPipeline.from_pretrained(out).transformer.config.vocab_size == 64


class _UploadRecorder:
    """Stands in for the Hub upload API (the only mocked piece): records what would be uploaded."""

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.repos, self.uploads = fail, [], []

    def install(self, monkeypatch) -> _UploadRecorder:
        recorder = self

        def create_repo(api, repo_id, private=None, exist_ok=False, **kwargs):
            recorder.repos.append((repo_id, private, exist_ok))
            return RepoUrl(f"https://huggingface.co/{repo_id}")

        def upload_folder(api, *, repo_id, folder_path, commit_message=None, create_pr=False, **kwargs):
            folder = Path(folder_path)
            files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
            recorder.uploads.append({"repo_id": repo_id, "folder": folder, "files": files,
                                     "commit_message": commit_message, "create_pr": create_pr, **kwargs})  # fmt: skip
            if recorder.fail:
                raise ConnectionError("upload interrupted")
            return "commit-info"

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
        return self


def test_save_then_push_uploads_the_saved_folder(pipe, tmp_path, monkeypatch):
    hub = _UploadRecorder().install(monkeypatch)
    out = tmp_path / "ibq-tiny"
    assert pipe.save_pretrained(out, push_to_hub=True, repo_id="me/ibq-tiny", private=True) == "commit-info"
    assert hub.repos == [("me/ibq-tiny", True, True)]
    (upload,) = hub.uploads
    assert upload["repo_id"] == "me/ibq-tiny" and upload["folder"] == out
    assert {"model_index.json", "README.md", "vqvae/diffusion_pytorch_model.safetensors",
            "transformer/model.safetensors", "transformer/config.json"} <= set(upload["files"])  # fmt: skip
    assert "*.bin" in upload["ignore_patterns"] and "*.ckpt" in upload["ignore_patterns"]
    assert b'from_pretrained("me/ibq-tiny")' in upload["files"]["README.md"]


def test_failed_push_keeps_the_local_save(pipe, tmp_path, monkeypatch):
    _UploadRecorder(fail=True).install(monkeypatch)
    out = tmp_path / "kept"
    with pytest.raises(ConnectionError):
        pipe.save_pretrained(out, push_to_hub=True, repo_id="me/ibq-tiny")
    loaded = IBQPipeline.from_pretrained(out)
    loaded.set_progress_bar_config(disable=True)
    expected = pipe([2], generator=gens(0), output_type="latent").images
    assert torch.equal(loaded([2], generator=gens(0), output_type="latent").images, expected)


def test_upload_needs_a_saved_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"is not a folder\. Save the model there first"):
        upload_folder_to_hub(tmp_path / "never-saved", "me/x")


def test_push_to_hub_uploads_a_complete_pipeline(pipe, monkeypatch):
    hub = _UploadRecorder().install(monkeypatch)
    pipe.push_to_hub("me/pushed", commit_message="first", create_pr=True)
    (upload,) = hub.uploads
    assert upload["repo_id"] == "me/pushed" and upload["commit_message"] == "first" and upload["create_pr"]
    assert json.loads(upload["files"]["model_index.json"])["_class_name"][1] == "IBQPipeline"
    assert any(name.startswith("ibq_pipeline_") and name.endswith(".py") for name in upload["files"])
    assert b'from_pretrained("me/pushed")' in upload["files"]["README.md"]
    assert not [f for f in upload["files"] if f.endswith((".bin", ".pt"))]


# ---- reconstruct ----------------------------------------------------------------------------------------------


def test_reconstruct_accepts_pil_numpy_and_tensors(pipe):
    rng = np.random.default_rng(0)
    uint8 = rng.integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
    pixels = torch.from_numpy(uint8).permute(0, 3, 1, 2).float() / 127.5 - 1
    expected_ids = pipe.vqvae.tokenize(pixels)
    with torch.no_grad():
        expected_np = postprocess_images(pipe.vqvae.decode_indices(expected_ids), "np")
    inputs = {
        "pil": [PIL.Image.fromarray(a) for a in uint8],
        "np uint8": uint8,
        "np float": uint8.astype(np.float32) / 255,
        "pt uint8": torch.from_numpy(uint8).permute(0, 3, 1, 2),
        "pt float list": [torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in uint8],
    }
    for name, images in inputs.items():
        out = pipe.reconstruct(images, output_type="np")
        assert torch.equal(out.indices, expected_ids), name
        np.testing.assert_allclose(out.images, expected_np, rtol=0, atol=1e-6, err_msg=name)
    pil, ids = pipe.reconstruct(inputs["pil"], return_dict=False)
    assert len(pil) == 2 and pil[0].size == (16, 16) and torch.equal(ids, expected_ids)


def test_reconstruct_resizes_and_crops():
    pipe = tiny_pipeline()
    image = PIL.Image.fromarray(np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    out = pipe.reconstruct(image, resolution=16, output_type="pt")
    assert out.images.shape == (1, 3, 16, 16) and out.indices.shape == (1, 8, 8)
    assert images_to_tensor([image, np.zeros((40, 32, 3), np.uint8)], resolution=16).shape == (2, 3, 16, 16)


@pytest.mark.parametrize(
    "images,kwargs,match",
    [
        (torch.rand(1, 3, 16, 16) * 2 - 1, {}, r"float images must lie in \[0, 1\].*\(x \+ 1\) / 2"),
        (np.zeros((16, 16, 4), np.uint8), {}, r"must be \[H, W, 3\]"),
        ([np.zeros((16, 16, 3)), np.zeros((24, 24, 3))], {}, "different sizes.*resolution=N"),
        (
            np.zeros((17, 17, 3), np.uint8),
            {},
            "not divisible by the tokenizer's downsampling factor 2; pass resolution",
        ),
        (np.zeros((16, 16, 3), np.uint8), {"output_type": "latent"}, "output_type must be one of"),
        ("photo.jpg", {}, "expected a PIL image"),
    ],
)
def test_reconstruct_errors(pipe, images, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        pipe.reconstruct(images, **kwargs)


def test_reconstruct_uses_the_evaluation_protocol(pipe):
    """`reconstruct(resolution=R)` tokenizes exactly the pixels `ibq-hf evaluate tokenizer` measures (reference
    protocol: bilinear without antialias, centre crop), no longer a bicubic antialiased resize."""
    from ibq_hf.data import image_transform

    rng = np.random.default_rng(2)
    for shape in [(20, 30, 3), (64, 40, 3), (33, 33, 3)]:
        image = PIL.Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        expected = pipe.vqvae.tokenize(image_transform(16, train=False)(image)[None])
        assert torch.equal(pipe.reconstruct(image, resolution=16).indices, expected)
    # A picture where the two resizes differ: bicubic + antialias rings around a step edge, bilinear does not.
    row = np.array([0] * 16 + [255] * 16, dtype=np.uint8)
    step = PIL.Image.fromarray(np.stack([np.tile(row, (32, 1))] * 3, axis=-1))
    pixels = images_to_tensor(step, resolution=16)
    assert pixels.min() == -1.0 and pixels.max() == 1.0
    assert set(((pixels + 1) * 127.5).round().unique().tolist()) == {0.0, 255.0}
    pretrain = pipe.reconstruct(step, resolution=16, protocol="pretrain", output_type="pt")
    assert pretrain.images.shape == (1, 3, 16, 16)


def test_reconstruct_reads_16_bit_pngs(pipe):
    """A 16-bit greyscale PNG is scaled to 8 bits (it came out white before)."""
    values = (np.arange(16 * 16).reshape(16, 16) * 257).astype(np.uint16)
    buffer = io.BytesIO()
    PIL.Image.fromarray(values).save(buffer, format="PNG")
    sixteen = PIL.Image.open(io.BytesIO(buffer.getvalue()))
    assert sixteen.mode == "I;16"
    eight = PIL.Image.fromarray(np.rint(values / 257).astype(np.uint8)).convert("RGB")
    assert torch.equal(images_to_tensor(sixteen), images_to_tensor(eight))
    assert torch.equal(pipe.reconstruct(sixteen).indices, pipe.reconstruct(eight).indices)


def test_reconstruct_refuses_absurd_aspect_ratios(pipe):
    from ibq_hf.errors import ImageSizeError

    with pytest.raises(ImageSizeError, match=r"aspect ratio of 2000:1, above the limit of 100:1"):
        pipe.reconstruct(np.zeros((1, 2000, 3), np.uint8), resolution=16)


def test_jacobi_window_passes_through_and_keeps_greedy_images(pipe):
    """Greedy Jacobi decoding gives sequential greedy's images; sampled images are seeded per image as usual."""
    greedy = pipe([1, 4], do_sample=False, guidance_scale=2.0, output_type="latent").images
    jacobi = pipe([1, 4], do_sample=False, guidance_scale=2.0, jacobi_window=6, output_type="latent").images
    assert torch.equal(jacobi, greedy)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (11, 12)]  # noqa: E731
    a = pipe([1, 4], generator=gens(), jacobi_window=6, output_type="latent").images
    b = pipe([4], generator=gens()[1:], jacobi_window=6, output_type="latent").images
    assert torch.equal(a[1:], b)
    with pytest.raises(ValueError, match="as pipeline arguments"):
        pipe([1], generation_kwargs={"jacobi_window": 2})
