"""Issue 12: every option that several ``ibq-hf`` commands take is defined once, in ``ibq_hf.cli.flags``.

Checked twice: in the built parsers (each shared flag has one type, one set of choices and one help text wherever it
appears, up to the per-command parameter of its definition; ``--seed`` defaults to 0 for ``generate`` and to the
reference's 42 for ``evaluate sample``) and in the source (the flag's name is passed to ``add_argument`` in
``cli/flags.py`` and nowhere else in ``cli/``). Parsers only: nothing is loaded, no torch needed.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from ibq_hf.cli import build_parser, flags
from ibq_hf.cli.evaluate import ADM_REFERENCE_SEED, add_generation_eval_arguments, add_sample_arguments
from ibq_hf.cli.evaluate import add_tokenizer_arguments as add_tokenizer_eval_arguments

CLI = Path(flags.__file__).parent

#: Flags taken by more than one command.
SHARED = (
    "--model",
    "--revision",
    "--local-files-only",
    "--device",
    "--dtype",
    "--seed",
    "--guidance-scale",
    "--temperature",
    "--top-k",
    "--top-p",
    "--jacobi-window",
    "--protocol",
    "--batch-size",
    "--no-progress",
    "--overwrite",
)
GENERATION = ("--guidance-scale", "--temperature", "--top-k", "--top-p", "--jacobi-window")


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """``(command words, parser)`` of every (sub)command."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*prefix, name))


def option_actions() -> dict[str, dict[str, argparse.Action]]:
    """``{flag: {command: action}}`` over ``ibq-hf`` and the example scripts' parsers."""
    found: dict[str, dict[str, argparse.Action]] = {}
    parsers = {" ".join(words): parser for words, parser in commands(build_parser())}
    for name, add in (
        ("examples/evaluate_tokenizer.py", add_tokenizer_eval_arguments),
        ("examples/sample_fid.py", add_sample_arguments),
        ("examples/evaluate_generation.py", add_generation_eval_arguments),
    ):
        parsers[name] = argparse.ArgumentParser()
        add(parsers[name])
    for command, parser in parsers.items():
        for action in parser._actions:
            for option in action.option_strings:
                found.setdefault(option, {})[command] = action
    return found


@pytest.fixture(scope="module")
def actions() -> dict[str, dict[str, argparse.Action]]:
    return option_actions()


#: Flags whose help has a per-command part (a parameter of the one definition): the fixed part every help shares.
TEMPLATED = {
    "--model": ": a local folder or a Hub repo id",
    "--device": "torch device, e.g. cuda, cuda:1, cpu (default: ",
    "--protocol": "image preprocessing: 'reference' (the ImageNet tokenizers",
    "--seed": " (default ",
    "--batch-size": " (default ",
}


@pytest.mark.parametrize("flag", SHARED)
def test_a_shared_flag_is_the_same_everywhere(actions, flag):
    where = actions[flag]
    assert len(where) >= 2, f"{flag} is no longer shared: {sorted(where)}"
    kinds = {(type(a).__name__, a.type, tuple(a.choices or ()), a.required, a.dest) for a in where.values()}
    assert len(kinds) == 1, f"{flag} differs between commands: {kinds}"
    helps = {a.help for a in where.values()}
    if flag in TEMPLATED:
        assert all(TEMPLATED[flag] in text for text in helps), helps
    else:
        assert len(helps) == 1, f"{flag} has {len(helps)} help texts: {helps}"


def test_generation_flags_have_one_help_and_type(actions):
    for flag in GENERATION:
        where = actions[flag]
        assert {"generate", "evaluate sample", "examples/sample_fid.py"} <= set(where)
        assert len({a.help for a in where.values()}) == 1
        assert all(a.default is None for a in where.values())  # unset: the model's generation config
    assert actions["--guidance-scale"]["generate"].type is flags.finite_float


def test_seed_defaults_differ_as_specified(actions):
    seeds = actions["--seed"]
    assert seeds["generate"].default == 0
    assert (
        seeds["evaluate sample"].default
        == seeds["examples/sample_fid.py"].default
        == ADM_REFERENCE_SEED
        == 42
    )
    assert {a.type for a in seeds.values()} == {int}
    for action in seeds.values():  # one help template: "<meaning> (default N...)"
        assert f"(default {action.default}" in action.help
    assert seeds["generate"].help == "seed of the first image (default 0)"
    assert seeds["evaluate sample"].help == "global seed (default 42, as the reference)"


def test_protocol_choices_are_the_librarys():
    from ibq_hf.image_processing import PROTOCOLS

    assert flags.PROTOCOLS == PROTOCOLS


def _declared(path: Path) -> set[str]:
    """Option names passed to ``add_argument(...)`` calls in one source file."""
    tree = ast.parse(path.read_text(), str(path))
    return {
        arg.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "add_argument"
        for arg in node.args
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
    }


@pytest.mark.parametrize("flag", SHARED)
def test_a_shared_flag_is_declared_only_in_flags_py(flag):
    modules = [p.relative_to(CLI).as_posix() for p in sorted(CLI.glob("*.py")) if flag in _declared(p)]
    assert modules == ["flags.py"]


def test_flag_types_refuse_what_they_should():
    for bad in ("nan", "inf", "-inf", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            flags.finite_float(bad)
    assert flags.finite_float("1.5") == 1.5
    with pytest.raises(argparse.ArgumentTypeError, match="must be >= 1"):
        flags.positive_int("0")
    with pytest.raises(argparse.ArgumentTypeError, match="must be >= 0"):
        flags.non_negative_int("-1")
    with pytest.raises(argparse.ArgumentTypeError, match="whole number"):
        flags.non_negative_int("2.5")


def test_batch_size_is_checked_by_argparse(capsys):
    parser = argparse.ArgumentParser()
    add_tokenizer_eval_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "m", "--batch-size", "0"])
    assert "argument --batch-size: must be >= 1, got '0'" in capsys.readouterr().err
