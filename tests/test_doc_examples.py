"""Every command in README.md, docs/*.md and the ``--help`` examples is true (issue 13, items 1 and 2).

Each fenced shell/Python block of the docs carries an ``<!-- example: runnable | illustrative — why -->`` marker;
``--help`` examples are classified by the rule ``doc_examples.HELP_ILLUSTRATIVE``. Default suite: every block is
marked, and every command (runnable ones too) parses with its program's own parser; illustrative snippets compile
and their ``ibq_hf`` imports exist. Slow set: the runnable ones run as written from a plain shell after the
README's set-up (the venv's ``bin`` first on PATH, offline), in a scratch folder with tiny data at the paths the
docs name, one folder per page; each must exit 0 and write the files it names.
"""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

import doc_examples as dx

DOC_EXAMPLES, UNMARKED = dx.doc_examples()
HELP_EXAMPLES = dx.help_examples()
ALL_EXAMPLES = DOC_EXAMPLES + HELP_EXAMPLES


def _runnable_pages() -> dict[str, list[dx.Example]]:
    pages: dict[str, list[dx.Example]] = defaultdict(list)
    for example in ALL_EXAMPLES:
        if example.runnable or example.run_filters:
            pages[example.page].append(example)
    return dict(pages)


RUNNABLE_PAGES = _runnable_pages()
_SETUP_DONE: set[str] = set()  # set-up commands already run in this session


def test_every_block_is_marked():
    assert DOC_EXAMPLES, "no fenced blocks found"
    assert not UNMARKED, (
        "fenced shell/python blocks without an `<!-- example: runnable -->` or `<!-- example: illustrative — why -->` "
        f"line before them: {UNMARKED}"
    )


def test_markers_say_why_and_select_something():
    for example in DOC_EXAMPLES:
        if not example.runnable:
            assert example.why, f"{example.source}: an illustrative block says why it cannot run here"
        for wanted in example.run_filters:
            assert any(wanted in c for c in example.commands()), (
                f"{example.source}: no command has {wanted!r}"
            )


def test_help_examples_are_found():
    sources = {e.source for e in HELP_EXAMPLES}
    for expected in (
        "ibq-hf generate --help",
        "ibq-hf evaluate tokenizer --help",
        "python examples/sample_fid.py --help",
    ):
        assert expected in sources
    assert any(e.runnable for e in HELP_EXAMPLES) and any(not e.runnable for e in HELP_EXAMPLES)


@pytest.mark.parametrize("example", ALL_EXAMPLES, ids=lambda e: e.source)
def test_example_parses(example: dx.Example):
    if example.language == "python":
        dx.check_python_snippet(example)
    else:
        assert dx.check_shell_example(example)


def test_checker_rejects_wrong_flags():
    """The checks can fail: a misspelt flag, a missing required option, an unknown program."""
    bad = [
        "ibq-hf generate --model m --class 3 --output g.png --num-imgs 4",
        "ibq-hf evaluate tokenizer --data-dir photos/",
        "python examples/extract_codes.py --tokenizer t --images i --resolution 32 --output_dir o --n_crops 2",
        "accelerate launch --num_processes 2 examples/train_ar.py --codes_dataset c --no_such_flag 1",
        "accelerate launch --no-such-accelerate-flag examples/train_ar.py --codes_dataset c",
        "python examples/no_such_script.py --help",
        "curl https://example.com",
    ]
    for command in bad:
        with pytest.raises(AssertionError):
            dx.check_command(command)
    assert (
        dx.check_command("python examples/train_ar.py ... --save_steps 5 --output_dir o") == "script parser"
    )
    with pytest.raises(SyntaxError):
        dx.check_python_snippet(dx.Example("x", "python", "pipe(class_labels=[3]\n", runnable=False))


@pytest.mark.slow
@pytest.mark.parametrize("page", sorted(RUNNABLE_PAGES), ids=str)
def test_runnable_examples_run(page: str, tmp_path):
    """The page's runnable commands and snippets, in order, in one scratch folder (a reader's session)."""
    work = dx.make_workdir(tmp_path / "work")
    dx.write_tiny_data(work)
    session: list[str] = []  # the page's runnable Python blocks so far: one reader's interpreter session
    pending = 0  # blocks added to the session since it last ran
    ran = 0

    def run_session() -> None:  # before a shell command and at the end: each block runs, in order
        nonlocal pending
        if pending:
            dx.run_python("\n".join(session), work, name=re.sub(r"\W+", "_", page) + f"_{len(session)}")
            pending = 0

    for example in RUNNABLE_PAGES[page]:
        if example.language == "python":
            session.append(example.text)
            pending += 1
            ran += 1
            continue
        for command in example.commands():
            if not example.runs(command):
                continue
            run_session()
            if (
                command.strip() == "bash scripts/main.sh"
            ):  # the set-up: it installs from and writes into its clone
                if command not in _SETUP_DONE:
                    dx.run_shell(command, dx.REPO)
                    _SETUP_DONE.add(command)
            else:
                dx.run_shell(command, work)
            ran += 1
    run_session()
    assert ran


def test_evaluate_default_split_follows_the_image_folder(tmp_path):
    """The `evaluate tokenizer --help` example once failed with "Bad split: validation" on a flat image folder."""
    import argparse

    from ibq_hf.cli.evaluate import _resolve_split

    def split(data_dir, given=None):
        return _resolve_split(argparse.Namespace(split=given, data_dir=data_dir and str(data_dir)))

    for name in ("flat/a.png", "nested/validation/c/a.png", "nested/train/c/b.png", "two/train/c/a.png"):
        dx._png(tmp_path / name, 0, (8, 8))
    dx._png(tmp_path / "two/test/c/b.png", 1, (8, 8))
    assert split(None) == "validation"  # a Hub dataset
    assert split(tmp_path / "flat") == "train"  # datasets' only split of a flat folder
    assert split(tmp_path / "nested") == "validation"
    assert split(tmp_path / "flat", given="train") == "train"
    with pytest.raises(ValueError, match=r"\['train', 'test'\].*--split"):
        split(tmp_path / "two")
    with pytest.raises(FileNotFoundError, match="folder not found"):
        split(tmp_path / "missing")
