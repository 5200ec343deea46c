"""hub_utils: one card builder per artefact, the one save step that writes the card, uploads, and its layer."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, RepoUrl, metadata_load

from conftest import TINY_PIPELINE_AR_CONFIG, TINY_TOKENIZER_CONFIG
from ibq_hf import IBQARConfig, IBQARForImageGeneration, IBQPipeline, IBQVQModel, hub_utils
from ibq_hf.hub_utils import (
    ReportedResults,
    write_ar_model_card,
    write_pipeline_card,
    write_tokenizer_card,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models() -> tuple[IBQVQModel, IBQARForImageGeneration]:
    torch.manual_seed(0)
    return IBQVQModel(**TINY_TOKENIZER_CONFIG).eval(), IBQARForImageGeneration(
        IBQARConfig(**TINY_PIPELINE_AR_CONFIG)
    ).eval()


def snippet(card: str) -> str:
    return re.search(r"```python\n(.*?)```", card, re.S).group(1)


def test_hub_utils_stays_in_the_foundation_layer():
    """It imports huggingface_hub, the standard library and remote_code (standard library only) alone: configs
    and models are duck-typed."""
    tree = ast.parse(Path(hub_utils.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                assert (node.level, node.module) == (1, "remote_code"), (
                    "hub_utils must not import ibq_hf modules"
                )
                continue
            imported.add(node.module.split(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"huggingface_hub"}


def test_every_save_writes_one_card_at_the_top(models, tmp_path):
    vqvae, transformer = models
    vqvae.save_pretrained(tmp_path / "tok")
    transformer.save_pretrained(tmp_path / "ar")
    IBQPipeline(vqvae=vqvae, transformer=transformer).save_pretrained(tmp_path / "pipe")
    assert metadata_load(tmp_path / "tok" / "README.md")["library_name"] == "diffusers"
    assert metadata_load(tmp_path / "ar" / "README.md")["library_name"] == "transformers"
    assert (tmp_path / "pipe" / "README.md").is_file()
    # The components a pipeline saves write no card of their own: the folder has one, the pipeline's.
    assert not (tmp_path / "pipe" / "vqvae" / "README.md").exists()
    assert not (tmp_path / "pipe" / "transformer" / "README.md").exists()
    assert not list(tmp_path.rglob("*.partial"))


def test_model_card_snippets_run(models, tmp_path, monkeypatch):
    vqvae, transformer = models
    vqvae.save_pretrained(tmp_path / "tok")
    transformer.save_pretrained(tmp_path / "ar")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(snippet((tmp_path / "tok" / "README.md").read_text()), "tok/README.md", "exec"), scope)
    assert scope["indices"].shape == (1, 8, 8) and scope["reconstruction"].shape == (1, 3, 16, 16)
    exec(compile(snippet((tmp_path / "ar" / "README.md").read_text()), "ar/README.md", "exec"), scope)
    assert scope["token_ids"].shape == (2, 64)


def test_save_options_reach_the_library(models, tmp_path):
    vqvae, transformer = models
    pipe = IBQPipeline(vqvae=vqvae, transformer=transformer)
    pipe.save_pretrained(tmp_path / "pipe", variant="fp16")
    assert (tmp_path / "pipe" / "transformer" / "model.fp16.safetensors").is_file()
    assert (tmp_path / "pipe" / "vqvae" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    # The models keep their library's serialization choice (diffusers' own model tests save pickles)...
    vqvae.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    assert (tmp_path / "pickled" / "diffusion_pytorch_model.bin").is_file()
    # ... and a process that is not the main one writes no card.
    transformer.save_pretrained(tmp_path / "rank1", is_main_process=False)
    assert not (tmp_path / "rank1" / "README.md").exists()
    with pytest.raises(ValueError, match="safetensors only"):
        pipe.push_to_hub("me/x", safe_serialization=False)


def test_model_push_uploads_our_card(models, monkeypatch):
    """push_to_hub saves into a temporary folder with our card: the library's generic card never replaces it."""
    uploads = []
    monkeypatch.setattr(
        HfApi, "create_repo", lambda api, repo_id, **kw: RepoUrl(f"https://huggingface.co/{repo_id}")
    )

    def upload_folder(api, *, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        uploads.append((repo_id, {str(p.relative_to(folder)): p.read_text(errors="replace") for p in folder.rglob("*")
                                  if p.is_file()}, kwargs))  # fmt: skip
        return "commit"

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    assert models[1].push_to_hub("me/tiny-ar") == "commit"
    ((repo_id, files, kwargs),) = uploads
    assert (
        repo_id == "me/tiny-ar" and kwargs["commit_message"] == "Upload IBQARForImageGeneration with ibq-hf"
    )
    assert {"README.md", "config.json", "model.safetensors"} <= set(files)
    assert 'IBQARForImageGeneration.from_pretrained("me/tiny-ar")' in files["README.md"]
    assert "*.bin" in kwargs["ignore_patterns"]


def test_tokenizer_card_of_a_converted_pretrain_tokenizer(tmp_path):
    config = SimpleNamespace(
        num_embeddings=16384, resolution=256, ch_mult=(1, 1, 2, 2, 4)
    )  # read by attribute
    reported = ReportedResults(
        "Reported by the IBQ authors at 256×256", ["codebook", "rFID"], [[16384, 7.67]]
    )
    card = write_tokenizer_card(
        tmp_path, config, num_parameters=5, name="me/tok", source_file="IBQ_pretrain_16384.ckpt",
        base_model="TencentARC/IBQ-Tokenizer-16384-Pretrain", ema_weights=False, protocol="pretrain",
        protocol_description="Resize(256) + CenterCrop(256)", reported=reported,
    ).read_text()  # fmt: skip
    assert metadata_load(tmp_path / "README.md")["preprocessing_protocol"] == "pretrain"
    assert "# IBQ Pretrain tokenizer (16384 codes)" in card and "raw, non-EMA weights" in card
    assert "256×256 images ↔ 16×16 code indices" in card and "Resize(256) + CenterCrop(256)" in card
    assert "| 16384 | 7.67 |" in card and "Reported by the IBQ authors at 256×256." in card
    assert "`IBQ_pretrain_16384.ckpt` from [TencentARC/IBQ-Tokenizer-16384-Pretrain]" in card
    assert 'images_to_tensor([PIL.Image.open("photo.jpg")], 256, protocol="pretrain")' in snippet(card)
    assert 'IBQVQModel.from_pretrained("me/tok")' in snippet(card)


def test_ar_card_states_the_sampling_its_numbers_used(tmp_path):
    config = IBQARConfig.from_preset("B")
    reported = ReportedResults("Reported by the authors", ["Model", "FID"], [["IBQ-AR-B", 2.88]])
    sampling = {"temperature": 1.1, "guidance_scale": 2.25, "top_k": 0, "top_p": 1.0}
    card = write_ar_model_card(
        tmp_path, config, num_parameters=1234567, source_file="AR_256_B.ckpt", size="B",
        base_model="TencentARC/IBQ-AR-B", reported=reported, sampling=sampling,
    ).read_text()  # fmt: skip
    assert card.count("# IBQ-AR-B\n") == 1 and "1,234,567 parameters" in card
    assert (
        "Reported by the authors with temperature 1.1, classifier-free guidance 2.25, top-k 0, top-p 1.0; these are "
        "the defaults in `generation_config.json`." in card
    )
    assert "class_labels=[207, 360]" in snippet(card) and "- imagenet" in card
    # Without reported numbers the sampling settings are not claimed as anyone's protocol.
    plain = write_ar_model_card(
        tmp_path, config, num_parameters=1, sampling=sampling, trained=True, dataset="d"
    )
    assert "Reported" not in plain.read_text() and "Training data: `d`." in plain.read_text()


@pytest.mark.parametrize(
    "class_names, first, labels, words",
    [
        ("imagenet", None, '[207, "otter"]', "ImageNet-1k class ids"),
        ("config", "zero", "['zero', 1]", "the names in `pipe.id2label`"),
        ("config", "0", "[0, 1]", "the names in `pipe.id2label`"),  # digit names are ids anyway
        (None, None, "[0, 1]", "(class ids)"),
    ],
)
def test_pipeline_card_shows_how_its_classes_are_named(tmp_path, class_names, first, labels, words):
    vq, ar = IBQVQModel(**TINY_TOKENIZER_CONFIG).config, IBQARConfig(**TINY_PIPELINE_AR_CONFIG)
    card = write_pipeline_card(
        tmp_path,
        vq,
        ar,
        num_parameters=10,
        downsample_factor=2,
        class_names=class_names,
        first_class_name=first,
    ).read_text()
    assert f"pipe(class_labels={labels}, generator=generators)" in snippet(card) and words in card
    assert 'IBQPipeline.from_pretrained("' + tmp_path.name + '")' in snippet(card)


def test_a_failed_card_write_keeps_the_old_card(tmp_path, monkeypatch):
    config = IBQARConfig(**TINY_PIPELINE_AR_CONFIG)
    write_ar_model_card(tmp_path, config, num_parameters=1, title="First")

    def half_written(card, path):
        Path(path).write_text("---\nbroken")
        raise OSError("disk full")

    monkeypatch.setattr(ModelCard, "save", half_written)
    with pytest.raises(OSError, match="disk full"):
        write_ar_model_card(tmp_path, config, num_parameters=1, title="Second")
    assert "# First" in (tmp_path / "README.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]


# ---- Hub metadata and the two ways to load (issue 16, items 5 and 7) ------------------------------------------


@pytest.mark.parametrize("shipped", [True, False], ids=["with-code", "without-code"])
def test_cards_carry_the_hub_metadata_and_both_ways_to_load(tmp_path, shipped):
    """The YAML header has what the Hub indexes (library, task, tags, license, the converted-from repo); the body
    shows the package's call and, when the code is in the folder, the stock call and what that code is."""
    from ibq_hf.conversion.ar import converted_card_facts
    from ibq_hf.conversion.tokenizer import REPORTED_TOKENIZER_RESULTS
    from ibq_hf.remote_code import package_version

    vq, ar = IBQVQModel(**TINY_TOKENIZER_CONFIG).config, IBQARConfig(**TINY_PIPELINE_AR_CONFIG)
    facts = converted_card_facts("AR_256_B.ckpt", "B")  # what the AR and pipeline converters pass
    tokenizer_repo = REPORTED_TOKENIZER_RESULTS[1024]["repo"]  # what the tokenizer converter passes
    cards = {
        "tokenizer": write_tokenizer_card(
            tmp_path / "tok", vq, num_parameters=1, source_file="IBQ_1024.ckpt", base_model=tokenizer_repo,
            shipped_code=shipped,
        ),
        "ar": write_ar_model_card(tmp_path / "ar", ar, num_parameters=1, shipped_code=shipped, **facts),
        "pipeline": write_pipeline_card(
            tmp_path / "pipe", vq, ar, num_parameters=1, downsample_factor=2, shipped_code=shipped, **facts
        ),
    }  # fmt: skip
    expected = {  # library_name, pipeline_tag, base_model, the package's call, the stock call
        "tokenizer": ("diffusers", "image-feature-extraction", "TencentARC/IBQ-Tokenizer-1024",
                      "IBQVQModel.from_pretrained(", "from diffusers import AutoModel"),
        "ar": ("transformers", "unconditional-image-generation", "TencentARC/IBQ-AR-B",
               "IBQARForImageGeneration.from_pretrained(", "from transformers import AutoModel"),
        "pipeline": ("diffusers", "unconditional-image-generation", "TencentARC/IBQ-AR-B",
                     "IBQPipeline.from_pretrained(", "DiffusionPipeline.from_pretrained("),
    }  # fmt: skip
    for artefact, path in cards.items():
        library, task, base_model, package_call, stock_call = expected[artefact]
        meta = metadata_load(path)
        assert (meta["library_name"], meta["pipeline_tag"]) == (library, task), artefact
        assert (meta["license"], meta["base_model"]) == ("apache-2.0", base_model), artefact
        assert {"ibq", "ibq_hf"} <= set(meta["tags"]) and ("custom_code" in meta["tags"]) is shipped, artefact
        text = path.read_text()
        blocks = re.findall(r"```python\n(.*?)```", text, re.S)
        assert "from ibq_hf import" in blocks[0] and package_call in blocks[0], artefact
        prose = " ".join(text.split())
        if shipped:
            assert len(blocks) == 2, artefact
            assert stock_call in blocks[1] and "trust_remote_code=True" in blocks[1], artefact
            assert "ibq_hf" not in blocks[1], artefact
            assert f"The shipped code equals the source of ibq-hf {package_version()}." in prose, artefact
            assert "Nothing runs it unless you pass `trust_remote_code=True`" in prose, artefact
        else:
            assert len(blocks) == 1 and "trust_remote_code" not in text, artefact
    # Weights that were not converted name no base model.
    own = write_ar_model_card(tmp_path / "own", ar, num_parameters=1, trained=True, dataset="d")
    assert "base_model" not in metadata_load(own)


def test_a_pipeline_card_can_open_with_a_paragraph_of_its_own(tmp_path):
    vq, ar = IBQVQModel(**TINY_TOKENIZER_CONFIG).config, IBQARConfig(**TINY_PIPELINE_AR_CONFIG)
    card = write_pipeline_card(
        tmp_path, vq, ar, num_parameters=10, downsample_factor=2, intro="Measured: 100 % digits."
    ).read_text()
    assert "Measured: 100 % digits.\n\nClass-conditional image generation with IBQ" in card
