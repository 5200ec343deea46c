"""Issue 11, items 15 and 16 for the converters: a non-empty --output is refused unless --overwrite, which leaves
exactly the new artefact's files (written to a staging folder and renamed into place); a malformed --config is
one clear sentence with exit code 2, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY_PIPELINE_AR_CONFIG, TINY_TOKENIZER_CONFIG
from ibq_hf import IBQVQModel
from ibq_hf.cli import main
from ibq_hf.conversion.ar import convert_ar_checkpoint
from ibq_hf.conversion.common import CheckpointKeyError
from ibq_hf.conversion.pipeline import convert_pipeline_checkpoint
from ibq_hf.conversion.tokenizer import convert_tokenizer_checkpoint
from ibq_hf.models.configuration_ar import IBQARConfig
from ibq_hf.models.modeling_ar import IBQARForImageGeneration
from ibq_hf.pipeline import IBQPipeline

# GPT(...) arguments of the tiny AR model below, as an original training YAML holds them.
YAML_PARAMS = {"vocab_size": 64, "block_size": 64, "n_layer": 1, "n_head": 2, "n_embd": 32, "cond_dim": 32,
               "multiple_of": 32, "class_num": 10}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test in this module runs single-threaded (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An AR checkpoint with its tokenizer embedded (every converter reads it: the tokenizer one uses the
    embedded first_stage_model.* weights)."""
    torch.manual_seed(0)
    vqvae = IBQVQModel(**TINY_TOKENIZER_CONFIG)
    ar = IBQARForImageGeneration(IBQARConfig(**TINY_PIPELINE_AR_CONFIG))
    state = {f"transformer.{k}": v.clone() for k, v in ar.state_dict().items()}
    state.update({f"first_stage_model.{k}": v.clone() for k, v in vqvae.state_dict().items()})
    path = tmp_path_factory.mktemp("ckpt") / "AR_tiny.ckpt"
    torch.save({"state_dict": state}, path)
    return path


def convert(kind: str, checkpoint: Path, output: Path, **kwargs):
    if kind == "tokenizer":
        return convert_tokenizer_checkpoint(checkpoint, output, resolution=16, **kwargs)
    if kind == "ar":
        return convert_ar_checkpoint(checkpoint, output, num_attention_heads=2, grid_size=8, **kwargs)
    return convert_pipeline_checkpoint(
        checkpoint, output, resolution=16, num_attention_heads=2, grid_size=8, **kwargs
    )


LOADERS = {"tokenizer": IBQVQModel, "ar": IBQARForImageGeneration, "pipeline": IBQPipeline}
# What a previous, different artefact (or the user) left in the folder: a card, stale shards and their index
# (the index makes transformers/diffusers look for shards that the new save does not write).
STALE = {
    "README.md": "# my notes\n",
    "model-00001-of-00002.safetensors": "stale",
    "model.safetensors.index.json": '{"metadata": {}, "weight_map": {"head.weight": "model-00002-of-00002.safetensors"}}',
    "diffusion_pytorch_model.safetensors.index.json": '{"metadata": {}, "weight_map": {}}',
    "notes/keep.txt": "old",
}


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def fill(folder: Path) -> None:
    for name, text in STALE.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


@pytest.mark.parametrize("kind", ["tokenizer", "ar", "pipeline"])
def test_non_empty_output_is_refused_before_any_work(kind, checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    fill(out)
    before = files(out)
    with pytest.raises(FileExistsError, match=r"is not empty.*--overwrite"):
        convert(kind, checkpoint, out)
    with pytest.raises(FileExistsError, match="--overwrite"):  # checked before the checkpoint is even read
        convert(kind, tmp_path / "missing.ckpt", out)
    assert files(out) == before


@pytest.mark.parametrize(
    "kind",
    ["tokenizer", "ar", pytest.param("pipeline", marks=pytest.mark.slow)],  # pipeline: both halves, ~2 s
)
def test_overwrite_leaves_exactly_the_new_artefact(kind, checkpoint, tmp_path):
    fresh, out = tmp_path / "fresh", tmp_path / "out"
    convert(kind, checkpoint, fresh)
    out.mkdir()
    fill(out)
    convert(kind, checkpoint, out, overwrite=True)
    assert sorted(files(out)) == sorted(files(fresh))  # no README of the user's, no stale shard or index
    assert files(out).keys().isdisjoint(set(STALE) - {"README.md"})
    assert b"my notes" not in files(out)["README.md"]  # the card is the converter's, not the user's
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "fresh",
        "out",
    ]  # no staging or replaced folders left
    loaded = LOADERS[kind].from_pretrained(out)
    assert loaded is not None
    card = (out / "README.md").read_text()  # the card's snippet loads the final folder, not the staging one
    assert "staging" not in card and 'from_pretrained("out")' in card


def test_an_empty_or_new_output_needs_no_overwrite(checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    convert("ar", checkpoint, tmp_path / "empty")
    convert("ar", checkpoint, tmp_path / "a" / "b" / "new")
    assert (tmp_path / "empty" / "model.safetensors").is_file()
    assert (tmp_path / "a" / "b" / "new" / "model.safetensors").is_file()


def test_a_failed_conversion_leaves_the_old_folder_untouched(checkpoint, tmp_path):
    bad = tmp_path / "bad.ckpt"
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    state.pop("transformer.head.weight")
    torch.save({"state_dict": state}, bad)
    out = tmp_path / "out"
    out.mkdir()
    fill(out)
    before = files(out)
    with pytest.raises(CheckpointKeyError, match=r"head\.weight"):
        convert("pipeline", bad, out, overwrite=True)
    assert files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ckpt", "out"]


def test_overwrite_never_deletes_the_converter_inputs(checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    inside = out / "AR_tiny.ckpt"
    inside.write_bytes(checkpoint.read_bytes())
    with pytest.raises(ValueError, match="would delete"):
        convert("ar", inside, out, overwrite=True)
    assert inside.is_file()


def test_an_output_that_is_a_file_is_refused(checkpoint, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        convert("tokenizer", checkpoint, tmp_path / "file", overwrite=True)


@pytest.mark.parametrize("obstacle", ["folder-cannot-be-renamed", "parent-not-writable"])
def test_overwrite_into_a_mount_point_like_folder(obstacle, checkpoint, tmp_path, monkeypatch):
    """A folder that cannot be renamed (a mount point: EBUSY) or whose parent is read-only still ends up holding
    exactly the new files; the staging folder then lives inside it and the entries are moved one by one."""
    import errno

    from ibq_hf.conversion import common

    fresh, out = tmp_path / "fresh", tmp_path / "out"
    convert("ar", checkpoint, fresh)
    out.mkdir()
    fill(out)
    real_replace, real_mkdir = os.replace, Path.mkdir

    def replace(src, dst):
        if Path(src) == out:
            raise OSError(errno.EBUSY, "Device or resource busy", str(src))
        return real_replace(src, dst)

    def mkdir(self, *args, **kwargs):
        if self.parent == tmp_path and ".staging-" in self.name:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    if obstacle == "folder-cannot-be-renamed":
        monkeypatch.setattr(common.os, "replace", replace)
    else:
        monkeypatch.setattr(Path, "mkdir", mkdir)
    convert("ar", checkpoint, out, overwrite=True)
    monkeypatch.undo()
    assert sorted(files(out)) == sorted(files(fresh))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "out"]
    assert isinstance(IBQARForImageGeneration.from_pretrained(out), IBQARForImageGeneration)


def test_cli_refuses_a_non_empty_output_and_overwrites_with_the_flag(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    fill(out)
    args = [
        "convert",
        "tokenizer",
        "--checkpoint",
        str(checkpoint),
        "--output",
        str(out),
        "--resolution",
        "16",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("ibq-hf: error: --output") and "--overwrite" in err and err.count("\n") == 1
    assert main([*args, "--overwrite"]) == 0
    assert "README.md" in files(out) and "my notes" not in (out / "README.md").read_text()
    assert IBQVQModel.from_pretrained(out).config.num_embeddings == 64


# ---- malformed --config (item 16) ---------------------------------------------------------------------------------


def ar_yaml(params: dict) -> str:
    transformer = {"target": "src.IBQ.modules.transformer.llama.GPT", "params": params}
    return yaml.safe_dump({"model": {"init_args": {"transformer_config": transformer}}})


def tokenizer_yaml(**ddconfig) -> str:
    dd = {"double_z": False, "z_channels": 32, "resolution": 16, "in_channels": 3, "out_ch": 3, "ch": 32,
          "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8], "dropout": 0.0, **ddconfig}  # fmt: skip
    return yaml.safe_dump({"model": {"init_args": {"ddconfig": dd, "n_embed": 64, "embed_dim": 16}}})


CONFIGS = {
    "syntax-error": (
        "ar",
        "model:\n  init_args: {transformer_config: [\n",
        r"not a readable YAML config \(line",
    ),
    "python-tag": (
        "ar",
        "model: !!python/object/apply:os.system ['echo pwned > PWNED']\n",
        "no !!python tags",
    ),
    "string-for-int": (
        "ar",
        ar_yaml({**YAML_PARAMS, "n_layer": "two"}),
        "n_layer must be an integer, got 'two'",
    ),
    "quoted-int": ("ar", ar_yaml({**YAML_PARAMS, "n_head": "2"}), "n_head must be an integer, got '2'"),
    "float-for-int": (
        "pipeline",
        ar_yaml({**YAML_PARAMS, "block_size": 64.5}),
        "block_size must be an integer",
    ),
    "bad-float": (
        "pipeline",
        ar_yaml({**YAML_PARAMS, "norm_eps": "tiny"}),
        "norm_eps must be a finite number",
    ),
    "tokenizer-string-for-int": ("tokenizer", tokenizer_yaml(ch="32"), "ddconfig.ch must be an integer"),
    "tokenizer-bad-list": ("tokenizer", tokenizer_yaml(ch_mult="12"), "ch_mult must be a list of integers"),
    "not-utf8": ("tokenizer", b"\xff\xfe\x00bin", "not a text YAML file|not a readable YAML"),
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_malformed_config_is_one_sentence_with_exit_code_2(case, checkpoint, tmp_path, capsys, monkeypatch):
    kind, text, message = CONFIGS[case]
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    args = ["convert", kind, "--checkpoint", str(checkpoint), "--output", str(tmp_path / "out"),
            "--config", str(config)]  # fmt: skip
    if kind != "ar":
        args += ["--resolution", "16"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("ibq-hf: error: ") and "Traceback" not in err and err.count("\n") == 1, err
    assert pytest.importorskip("re").search(message, err), err
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "out").exists()


def test_numeric_strings_yaml_reads_as_text_are_accepted_for_floats(checkpoint, tmp_path):
    """YAML 1.1 reads ``1e-5`` (no decimal point) as a string; a float field accepts it."""
    config = tmp_path / "c.yaml"
    text = ar_yaml(YAML_PARAMS)
    line = next(line for line in text.splitlines() if line.strip() == "n_embd: 32")
    config.write_text(text.replace(line, f"{line}\n{line.replace('n_embd: 32', 'norm_eps: 1e-6')}"))
    params = yaml.safe_load(config.read_text())["model"]["init_args"]["transformer_config"]["params"]
    assert params["norm_eps"] == "1e-6"
    model = convert_ar_checkpoint(checkpoint, tmp_path / "out", config)
    assert model.config.rms_norm_eps == 1e-6 and model.config.grid_size == 8


def test_missing_config_file_is_one_sentence(checkpoint, tmp_path, capsys):
    args = ["convert", "ar", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "o"),
            "--config", str(tmp_path / "nope.yaml")]  # fmt: skip
    assert main(args) == 2
    assert capsys.readouterr().err.startswith("ibq-hf: error: Config file not found")
    assert not os.path.exists(tmp_path / "o")
