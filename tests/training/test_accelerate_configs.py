"""The accelerate configs shipped in examples/configs load, and the FSDP one wraps a class that exists."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

from ibq_hf.models.modeling_ar import IBQARForImageGeneration

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "configs"


@pytest.mark.parametrize(
    "name,kind,processes",
    [
        ("ddp", DistributedType.MULTI_GPU, 8),
        ("fsdp", DistributedType.FSDP, 8),
        ("cpu_2proc", DistributedType.MULTI_CPU, 2),
    ],
)
def test_config_loads(name, kind, processes):
    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert config.distributed_type == kind and config.num_processes == processes


def test_fsdp_wraps_the_ar_block():
    config = load_config_from_file(str(CONFIGS / "fsdp.yaml"))
    wrapped = config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
    assert wrapped in IBQARForImageGeneration._no_split_modules
