"""``from_pretrained`` front door (issue 13, items 3 and 6): a mistyped local path is "folder not found", an
unreachable repo id says how to point at a folder, and small loads draw no progress bars."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from conftest import TINY_PIPELINE_AR_CONFIG, TINY_TOKENIZER_CONFIG
from ibq_hf.errors import HubModelUnavailableError, ModelFolderNotFoundError
from ibq_hf.models import loading
from ibq_hf.models.configuration_ar import IBQARConfig
from ibq_hf.models.loading import looks_local, resolve_pretrained
from ibq_hf.models.modeling_ar import IBQARForImageGeneration
from ibq_hf.models.modeling_vq import IBQVQModel
from ibq_hf.pipeline import IBQPipeline

LOADERS = {
    "pipeline": lambda where, **kw: IBQPipeline.from_pretrained(where, **kw),
    "tokenizer": lambda where, **kw: IBQVQModel.from_pretrained(where, **kw),
    "ar": lambda where, **kw: IBQARForImageGeneration.from_pretrained(where, **kw),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A tiny saved pipeline: folders ``pipe/`` (whole), ``pipe/vqvae`` and ``pipe/transformer``."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("loading") / "pipe"
    pipe = IBQPipeline(
        vqvae=IBQVQModel(**TINY_TOKENIZER_CONFIG).eval(),
        transformer=IBQARForImageGeneration(IBQARConfig(**TINY_PIPELINE_AR_CONFIG)).eval(),
    )
    pipe.save_pretrained(folder)
    return folder


def component(saved: Path, kind: str) -> Path:
    return {"pipeline": saved, "tokenizer": saved / "vqvae", "ar": saved / "transformer"}[kind]


@pytest.mark.parametrize(
    "name,local",
    [("./x", True), ("../x", True), ("/x/y", True), ("~/x", True), (".", True), ("owner/name", False),
     ("gpt2", False)],
)  # fmt: skip
def test_looks_local(name, local):
    assert looks_local(name) is local
    assert looks_local(Path(name)) is True


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_a_missing_local_path_is_folder_not_found(saved, kind, monkeypatch):
    """Before: './x' broke the Hub's repo-id rules, '/x' was "neither a valid local path nor a valid repo id" or
    "couldn't connect to huggingface.co", and 'existing/typo' spent 25 s retrying the Hub."""
    monkeypatch.chdir(saved.parent)
    right = component(saved, kind).relative_to(saved.parent)
    typo = f"{right}x"  # pipex, pipe/vqvaex, pipe/transformerx
    names = [f"./{typo}", str(saved.parent / typo), Path(typo)]
    if "/" in typo:
        names.append(typo)  # the parent folder exists: a path, not a repo id
    for name in names:
        with pytest.raises(ModelFolderNotFoundError) as info:
            LOADERS[kind](name)
        message = str(info.value)
        assert message.startswith(f"folder not found: {name}")
        assert f"Did you mean '{os.path.join(os.path.dirname(os.fspath(name)), right.name)}'?" in message
        assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(
        ModelFolderNotFoundError, match=r"folder not found: /no-such-root/m\. Its parent folder /no-such-root"
    ):
        LOADERS[kind]("/no-such-root/m")


def test_a_bare_name_is_a_repo_id_but_the_near_folder_is_named(saved, monkeypatch):
    """ "pipex" is a valid repo id (no owner), so it goes to the Hub; offline the message points at ./pipe."""
    monkeypatch.chdir(saved.parent)
    with pytest.raises(
        HubModelUnavailableError, match=r"no folder pipex here either \(did you mean \./pipe\?\)"
    ):
        IBQPipeline.from_pretrained("pipex")


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_an_unreachable_uncached_repo_id_says_so(kind):
    """The tests run with HF_HUB_OFFLINE=1 (conftest): a repo id that is not cached fails at once, in one message
    that says the Hub is off and how to point at a folder."""
    with pytest.raises(HubModelUnavailableError) as info:
        LOADERS[kind]("someone/not-cached")
    message = str(info.value)
    assert "'someone/not-cached' is read as a Hugging Face Hub repo id" in message
    assert (
        "HF_HUB_OFFLINE is set" in message
        and "pass its folder path instead (starting with ./ or /" in message
    )
    assert isinstance(info.value, OSError)


def test_hub_unreachable_online_uses_the_cache_or_explains(saved, tmp_path, monkeypatch):
    """Hub off without HF_HUB_OFFLINE (no network): a cached repo loads from the cache without retrying, an
    uncached one gets the same clear message."""
    from huggingface_hub import HfApi, constants

    def no_network(*args, **kwargs):
        raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)
    monkeypatch.setattr(HfApi, "model_info", no_network)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--someone--ibq-tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(saved, repo / "snapshots" / commit)
    kwargs = {"cache_dir": tmp_path}
    assert (
        resolve_pretrained("someone/ibq-tiny", "IBQ pipeline", "model_index.json", kwargs)
        == "someone/ibq-tiny"
    )
    assert kwargs["local_files_only"] is True  # no retries against an unreachable Hub
    with pytest.raises(
        HubModelUnavailableError, match=r"the Hub cannot be reached \(\[Errno -2\].*not in the local"
    ):
        resolve_pretrained("someone/other", "IBQ pipeline", "model_index.json", {"cache_dir": tmp_path})


def test_hub_answers_that_the_repo_does_not_exist(monkeypatch):
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import RepositoryNotFoundError

    class NoSuchRepo(RepositoryNotFoundError):
        def __init__(self) -> None:
            Exception.__init__(self, "404 Client Error: Repository Not Found")

    def missing(*args, **kwargs):
        raise NoSuchRepo()

    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)
    monkeypatch.setattr(HfApi, "model_info", missing)
    with pytest.raises(HubModelUnavailableError, match="the Hub has no such repo"):
        resolve_pretrained("someone/typo", "IBQ pipeline", "model_index.json", {})


def test_a_folder_that_is_not_a_saved_model(saved, tmp_path):
    with pytest.raises(ModelFolderNotFoundError, match=r"has no config\.json.*subfolder='vqvae'"):
        IBQVQModel.from_pretrained(saved)  # a pipeline folder, without subfolder
    with pytest.raises(ModelFolderNotFoundError, match=r"has no model_index\.json.*single model"):
        IBQPipeline.from_pretrained(saved / "vqvae")
    with pytest.raises(ModelFolderNotFoundError, match="is a file, not a folder"):
        IBQVQModel.from_pretrained(saved / "model_index.json")
    with pytest.raises(ModelFolderNotFoundError, match="neither an existing folder nor a valid Hub repo id"):
        IBQPipeline.from_pretrained("two words")


def test_home_folder_paths_are_expanded(saved, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(saved.parent))
    tokenizer = IBQVQModel.from_pretrained("~/pipe", subfolder="vqvae")
    assert tokenizer.config.num_embeddings == TINY_TOKENIZER_CONFIG["num_embeddings"]


LOAD_BARS = ("Loading pipeline components", "Loading weights")


def test_small_loads_draw_no_progress_bars(saved, capfd, monkeypatch):
    """Loading a few MB used to draw "Loading pipeline components" and "Loading weights" bars every time."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    IBQPipeline.from_pretrained(saved)
    IBQARForImageGeneration.from_pretrained(saved / "transformer")
    err = capfd.readouterr().err
    assert not any(bar in err for bar in LOAD_BARS), err
    assert diffusers_logging.is_progress_bar_enabled() and transformers_logging.is_progress_bar_enabled()
    monkeypatch.setattr(loading, "LONG_LOAD_BYTES", 0)  # every load counts as long: the bars come back
    IBQPipeline.from_pretrained(saved)
    err = capfd.readouterr().err
    assert all(bar in err for bar in LOAD_BARS), err
