"""The command-line parser of the training scripts: our options first, transformers' ``TrainingArguments`` on demand.

``HfArgumentParser((ScriptArguments, TrainingArgumentsSubclass))`` prints about 700 lines of ``--help``, the
script's own options buried among ~130 generic ``TrainingArguments`` ones. :class:`TrainingScriptParser` parses
exactly as ``HfArgumentParser`` does (same flags, same dataclasses), but groups the help: one group per script
dataclass, one for the fields our ``TrainingArguments`` subclass adds or re-defaults, and the inherited generic
options only under ``--help-all``; ``--help`` ends with one line saying where they are.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from transformers import HfArgumentParser, TrainingArguments

__all__ = ["TRAINING_ARGUMENTS_URL", "TrainingScriptParser"]

TRAINING_ARGUMENTS_URL = (
    "https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments"
)
_EXAMPLES = (
    "--output_dir",
    "--per_device_train_batch_size",
    "--max_steps",
    "--save_steps",
    "--bf16",
    "--seed",
)


class _HelpAll(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None
    ) -> None:
        assert isinstance(parser, TrainingScriptParser)
        parser.print_help(show_all=True)
        parser.exit()


def _own_field_names(dtype: type) -> set[str]:
    """Fields a ``TrainingArguments`` subclass declares itself (new ones and re-defaulted ones)."""
    names: set[str] = set()
    for cls in dtype.__mro__:
        if cls is TrainingArguments:
            break
        names |= set(getattr(cls, "__annotations__", {}))
    return names


class TrainingScriptParser(HfArgumentParser):
    """``HfArgumentParser`` with grouped help: ``groups`` maps each dataclass to its help-group title."""

    def __init__(
        self, dataclass_types: Iterable[type], groups: Mapping[type, str] | None = None, **kwargs: Any
    ):
        self._group_titles = dict(groups or {})
        self._generic: list[argparse.Action] = []
        self._show_all = False
        super().__init__(list(dataclass_types), **kwargs)
        self.add_argument(
            "--help-all",
            action=_HelpAll,
            help="show this help with every transformers TrainingArguments option",
        )

    def _add_dataclass_arguments(self, dtype: type) -> None:
        # HfArgumentParser's loop over the fields, with a help group chosen per field.
        own = self.add_argument_group(self._group_titles.get(dtype, f"{dtype.__name__} options"))
        generic = None
        inherited: set[str] = set()
        if isinstance(dtype, type) and issubclass(dtype, TrainingArguments):
            inherited = {f.name for f in dataclasses.fields(TrainingArguments)} - _own_field_names(dtype)
            generic = self.add_argument_group("transformers TrainingArguments (generic Trainer options)")
        hints = typing.get_type_hints(dtype)
        for field in dataclasses.fields(dtype):
            if not field.init:
                continue
            field.type = hints[field.name]
            target = generic if generic is not None and field.name in inherited else own
            first = len(self._actions)
            self._parse_dataclass_field(target, field)
            if target is generic:
                self._generic.extend(self._actions[first:])

    def print_help(self, file: Any = None, show_all: bool = False) -> None:
        self._show_all = show_all
        try:
            super().print_help(file)
        finally:
            self._show_all = False

    def format_help(self) -> str:
        if self._show_all or not self._generic:
            return super().format_help()
        saved = [(action, action.help) for action in self._generic]
        for action in self._generic:
            action.help = argparse.SUPPRESS
        try:
            text = super().format_help()
        finally:
            for action, help_text in saved:
                action.help = help_text
        flags = {option for action in self._generic for option in action.option_strings}
        examples = ", ".join(flag for flag in _EXAMPLES if flag in flags)
        count = sum(1 for action in self._generic if action.option_strings)
        return text + (
            f"\n{count} generic transformers TrainingArguments options ({examples}, ...) are accepted too: "
            f"--help-all lists them, {TRAINING_ARGUMENTS_URL} explains them.\n"
        )
