"""The Space builder: a self-contained folder whose app runs from it, and a push that is one upload (mocked)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from spaces_testutil import BUNDLED_MODEL, SPACES, load_build_space, load_module


@pytest.fixture(scope="module")
def build_module():
    return load_build_space()


@pytest.fixture(scope="module")
def built(build_module, tmp_path_factory) -> Path:
    return build_module.build_space(tmp_path_factory.mktemp("space") / "out")


def _front_matter(readme: Path) -> dict:
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n"), "a Space README starts with its YAML header"
    return yaml.safe_load(text.split("---\n")[1])


def test_readme_header():
    header = _front_matter(SPACES / "README.md")
    assert header["sdk"] == "gradio"
    assert str(header["sdk_version"]) == "6.31.0"
    assert header["app_file"] == "app.py"
    assert header["license"] == "apache-2.0"
    assert len(header["short_description"]) <= 60  # the Hub's limit
    for key in ("title", "emoji", "colorFrom", "colorTo", "python_version"):
        assert header[key]


def test_requirements_pin_a_cpu_set_this_environment_satisfies():
    lines = [line.strip() for line in (SPACES / "requirements.txt").read_text().splitlines()]
    options = [line for line in lines if line.startswith("--")]
    assert options == ["--extra-index-url https://download.pytorch.org/whl/cpu"]
    requirements = {
        (req := Requirement(line)).name.lower(): req
        for line in lines
        if line and not line.startswith(("#", "--"))
    }
    assert str(requirements["gradio"].specifier) == "==6.31.0"
    assert "ibq-hf" not in requirements and "ibq_hf" not in requirements  # shipped as source, not on PyPI
    for name, spec in (("transformers", "5.24"), ("pillow", "12.9"), ("diffusers", "0.42.1")):
        assert requirements[name].specifier.contains(spec), name
    assert not requirements["transformers"].specifier.contains("6.0")
    assert not requirements["pillow"].specifier.contains("13.0")
    # What the tests run on satisfies every pin (torch's "+cpu" local version matches "==2.13.0").
    for name, req in requirements.items():
        installed = importlib.metadata.version(name)
        assert req.specifier.contains(installed, prereleases=True), f"{name} {installed} vs {req}"


def test_built_folder_is_self_contained(built):
    for name in ("app.py", "requirements.txt", "README.md", "LICENSE"):
        assert (built / name).is_file(), name
    assert (built / "README.md").read_text() == (SPACES / "README.md").read_text()
    assert (built / "ibq_hf" / "__init__.py").is_file()
    assert (built / "ibq_hf" / "imagenet_classes.tsv").is_file()  # package data the label table needs
    assert not (built / "ibq_hf" / "training").exists()  # not needed by the demo, heavier dependencies
    assert not list(built.rglob("__pycache__"))
    model = built / "ibq-digits"
    for relative in ("model_index.json", "vqvae/config.json", "transformer/model.safetensors"):
        assert (model / relative).read_bytes() == (BUNDLED_MODEL / relative).read_bytes()
    assert not (built / "default_model.txt").exists()


def test_built_app_defaults_to_its_own_bundled_model(built, monkeypatch):
    """The built app.py finds the pipeline beside itself (no clone around it) and its Blocks build."""
    pytest.importorskip("gradio")
    monkeypatch.delenv("IBQ_HF_SPACE_MODEL", raising=False)
    module = load_module(built / "app.py", "ibq_space_built_app")
    assert built.resolve() == module.HERE
    assert module.resolve_model_source() == str(built.resolve() / "ibq-digits")
    demo = module.create_demo()
    assert demo.ibq_demo.source == str(built.resolve() / "ibq-digits")
    assert demo.ibq_demo.num_classes == 10


def test_build_with_default_model(build_module, tmp_path):
    out = build_module.build_space(tmp_path / "hub", model="someone/ibq-imagenet-256")
    assert (out / "default_model.txt").read_text().strip() == "someone/ibq-imagenet-256"
    out = build_module.build_space(tmp_path / "local", model=str(BUNDLED_MODEL))
    assert (out / "default_model.txt").read_text().strip() == "model"
    assert (out / "model" / "model_index.json").is_file()
    with pytest.raises(ValueError, match="neither a local pipeline folder nor a Hub repo id"):
        build_module.build_space(tmp_path / "bad", model="not a repo id")
    with pytest.raises(FileNotFoundError, match="not a saved IBQPipeline"):
        build_module.build_space(tmp_path / "bad2", model=str(tmp_path))


def test_build_refuses_to_overwrite(build_module, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="--force"):
        build_module.build_space(foreign)
    with pytest.raises(FileExistsError, match="not a previous build"):
        build_module.build_space(foreign, force=True)
    assert (foreign / "keep.txt").read_text() == "precious"
    out = build_module.build_space(tmp_path / "space")
    (out / "stale.txt").write_text("old")
    build_module.build_space(out, force=True)
    assert not (out / "stale.txt").exists() and (out / "app.py").is_file()


class _FakeApi:
    """Records HfApi calls instead of talking to the Hub."""

    calls: list = []

    def __init__(self, token=None):
        self.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

        class _Url:
            pass

        url = _Url()
        url.repo_id = repo_id
        return url

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return "commit-info"


def test_push_is_one_space_upload(build_module, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    _FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeApi)
    code = build_module.main(["--out", str(tmp_path / "space"), "--push-to-hub", "me/ibq-demo", "--private"])
    assert code == 0
    names = [name for name, _ in _FakeApi.calls]
    assert names == ["init", "create_repo", "upload_folder"]
    create, upload = _FakeApi.calls[1][1], _FakeApi.calls[2][1]
    assert create == {
        "repo_id": "me/ibq-demo",
        "repo_type": "space",
        "space_sdk": "gradio",
        "private": True,
        "exist_ok": True,
    }
    assert upload["repo_type"] == "space" and upload["repo_id"] == "me/ibq-demo"
    assert Path(upload["folder_path"]) == tmp_path / "space"
    assert (Path(upload["folder_path"]) / "app.py").is_file()  # complete on disk before the upload
    assert "Pushed to https://huggingface.co/spaces/me/ibq-demo" in capsys.readouterr().out


def test_cli_errors_are_messages(build_module, tmp_path, capsys):
    (tmp_path / "x.txt").write_text("x")
    assert build_module.main(["--out", str(tmp_path)]) == 2
    assert "is not empty" in capsys.readouterr().err
