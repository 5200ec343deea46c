"""The training scripts' ``--help`` (issue 13, item 9): our options first and grouped, the ~110 generic
``TrainingArguments`` options behind ``--help-all``; parsing is HfArgumentParser's, unchanged."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
from pathlib import Path

import pytest
from transformers import HfArgumentParser

from ibq_hf.training.script_parser import TRAINING_ARGUMENTS_URL, TrainingScriptParser

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_help_example", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def help_text(main, *flags: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        main(list(flags))
    assert stop.value.code == 0
    return out.getvalue()


# Script: (its main, an option of its own dataclass, one its TrainingArguments subclass adds or re-defaults)
SCRIPTS = {
    "train_ibq": ("--lpips_weights", "--ema_decay"),
    "train_ar": ("--codes_dataset", "--final_lr_ratio"),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_shows_our_options_and_one_line_about_the_rest(name):
    module = example(name)
    script_option, training_option = SCRIPTS[name]
    short = help_text(module.main if name == "train_ibq" else module.parse_arguments, "--help")
    full = help_text(module.main if name == "train_ibq" else module.parse_arguments, "--help-all")
    assert len(short.splitlines()) < 200 < 600 < len(full.splitlines())  # was ~690 lines with ours buried
    assert script_option in short and training_option in short and "--learning_rate" in short  # re-defaulted
    assert "--logging_steps" not in short and "--logging_steps" in full
    last = short.strip().splitlines()[-1]
    assert "generic transformers TrainingArguments options" in last and "--help-all" in last
    assert TRAINING_ARGUMENTS_URL in last
    # Ours come first: the script's group, then the training subclass's, then (with --help-all) the generic one.
    titles = [line for line in full.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert titles[0] == "options:" and titles[-1].startswith("transformers TrainingArguments")
    body = full[full.index("\noptions:") :]  # after the usage line, which lists every flag in field order
    assert body.index(script_option) < body.index(training_option) < body.index("--logging_steps")


def test_parsing_is_unchanged():
    module = example("train_ibq")
    types = (module.ScriptArguments, module.IBQTokenizerTrainingArguments)
    argv = ["--train_data_dir", "imgs", "--ema_decay", "0.99", "--logging_steps", "7", "--output_dir", "out",
            "--bf16", "false", "--lr_drop_steps", "10", "20"]  # fmt: skip
    ours = TrainingScriptParser(types).parse_args_into_dataclasses(args=argv)
    theirs = HfArgumentParser(types).parse_args_into_dataclasses(args=argv)
    assert len(ours) == len(theirs) == 2
    assert ours[0] == theirs[0]
    assert ours[1].to_dict() == theirs[1].to_dict()
    assert ours[1].logging_steps == 7 and ours[1].lr_drop_steps == [10, 20]
