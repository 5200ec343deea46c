"""Shared fixtures: tiny models built in the test (nothing is downloaded)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# A tokenizer small enough for CPU tests that still has every kind of block: two levels (one
# downsample), a channel change (nin_shortcut), attention at the lowest level and in mid.
TINY_TOKENIZER_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "resolution": 16,
    "ch": 32,
    "ch_mult": (1, 2),
    "num_res_blocks": 1,
    "attn_resolutions": (8,),
    "dropout": 0.0,
    "z_channels": 32,
    "embed_dim": 16,
    "num_embeddings": 64,
}


@pytest.fixture
def tiny_tokenizer_config() -> dict:
    return dict(TINY_TOKENIZER_CONFIG)


@pytest.fixture
def tiny_tokenizer():
    from ibq_hf import IBQVQModel

    torch.manual_seed(0)
    return IBQVQModel(**TINY_TOKENIZER_CONFIG).eval()


@pytest.fixture
def images() -> torch.Tensor:
    """Two 16x16 RGB images in [-1, 1], from a seeded generator."""
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 16, 16, generator=g) * 2 - 1


# An AR model matching TINY_TOKENIZER_CONFIG (16×16 images → 8×8 grid of 64-code ids), for pipeline tests.
TINY_PIPELINE_AR_CONFIG = {
    "vocab_size": 64,
    "num_classes": 10,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "grid_size": 8,
    "multiple_of": 32,
}

# A slightly deeper AR model on a 4×4 grid, for model and generation tests.
TINY_AR_CONFIG = {
    "vocab_size": 64,
    "num_classes": 10,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "grid_size": 4,
    "multiple_of": 32,
}


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread and do not stall when other processes load the CPU cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
