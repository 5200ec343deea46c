"""Every command and Python snippet a user is shown: extracted, classified, parsed or run (tests/test_doc_examples.py).

Sources:

* README.md and docs/*.md: every fenced ``bash``/``sh``/``console``/``shell`` or ``python`` block carries an HTML
  comment on the line before it (invisible on GitHub and in the mkdocs site)::

      <!-- example: runnable -->
      <!-- example: illustrative — <why it cannot run here: 8 GPUs, ImageNet, a Hub download, a server> -->
      <!-- example: illustrative — <why>; run here: "checkpoints/ibq-digits", "digits.npz" -->

  The last form runs the commands of the block that contain one of the quoted strings and parses the others.
* ``--help`` texts: the ``example:`` lines of every ``ibq-hf`` (sub)command's epilog, and the indented
  ``python ...`` / ``accelerate launch ...`` lines of the examples' module docstrings (``python examples/x.py
  --help`` shows them). They are classified by :data:`HELP_ILLUSTRATIVE` (a rule, below): illustrative when they
  name a placeholder or something not available here, runnable otherwise.

Illustrative commands are parsed by their program's own parser (:func:`check_command`): ``ibq-hf`` by
``ibq_hf.cli.build_parser()``; ``python script.py`` / ``accelerate launch [its flags] script.py`` by the script's
parser, caught at its first ``parse_known_args`` call (nothing after parsing runs); ``accelerate`` by accelerate's
own parsers; other programs only from :data:`ALLOWED_PROGRAMS`. Illustrative Python snippets are compiled and their
``ibq_hf`` imports resolved. Runnable ones run as written (:func:`run_shell`, :func:`run_python`) in a scratch folder
that links the repository's top-level entries (:func:`make_workdir`), with tiny data at the paths the docs name
(:func:`write_tiny_data`).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import os
import re
import runpy
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
DOC_FILES = ("README.md", *sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")))
SHELL_LANGUAGES = {"bash", "sh", "console", "shell"}
MARKER = re.compile(r"^\s*<!--\s*example:\s*(?P<kind>runnable|illustrative)\b(?P<rest>.*?)-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")

#: Programs the docs show that have no parser of ours, with why each is accepted unchecked (paths they name that
#: point into the repository must still exist).
ALLOWED_PROGRAMS: dict[tuple[str, ...], str] = {
    ("pip", "install"): "package installation",
    ("hf", "download"): "a Hub download (huggingface_hub's CLI)",
    ("bash", "scripts/main.sh"): "the set-up + main job (tests/test_doc_examples.py runs it in the clone)",
    ("bash", "scripts/test.sh"): "the set-up + the test suite (which contains this test)",
    ("bash", "scripts/env.sh"): "the set-up: prints the environment's python",
    ("bash", "scripts/fetch_transformers_tests.sh"): "downloads transformers' test files",
    ("python", "-m", "mkdocs"): "the docs site (tests/test_docs_site.py builds it)",
    ("python", "-m", "pytest"): "the test runner",
    ("source", ".venv/bin/activate"): "enters the environment",
    ("cd",): "shell builtin",
    ("compgen",): "shell builtin",
}
#: Shell variables of illustrative commands and what they stand for while parsing.
PLACEHOLDERS = {"P": "python", "NODE_RANK": "0", "MASTER": "127.0.0.1"}
#: Files that exist only after a documented command made them, and the repository file each is a copy of.
BUILT_FILES = {"build/space/app.py": "spaces/app.py"}
#: The rule for ``--help`` examples: illustrative when one of these patterns matches (why), runnable otherwise.
HELP_ILLUSTRATIVE: tuple[tuple[str, str], ...] = (
    (r"\bDIR\b", "DIR stands for a converted (ImageNet) pipeline or tokenizer folder"),
    (r"VIRTUAL_imagenet256_labeled\.npz", "ADM's ImageNet reference batch (a download)"),
    (r"TencentARC-IBQ", "a converted ImageNet tokenizer (a download)"),
    (r"checkpoints/tok\b", "a placeholder tokenizer and image folder"),
    (r"(^|\s)\.\.\.(\s|$)", "a partial command: `...` stands for the flags above"),
    (
        r"examples/train_(ar|ibq)\.py",
        "a full training run (the digits recipe is in examples/digits/README.md)",
    ),
    (r"--num_processes 8\b", "8 GPUs"),
)
#: Flags naming a file or folder a command promises to write.
OUTPUT_FLAGS = ("--output", "--output-dir", "--output_dir", "--out", "--grid")
#: Outputs of commands that do not name them in a flag.
IMPLIED_OUTPUTS = {"bash scripts/main.sh": "digits_grid.png"}


@dataclass
class Example:
    """One fenced block or ``--help`` example: where, language, text and classification."""

    source: str  # "docs/quickstart.md:20" or "ibq-hf evaluate tokenizer --help"
    language: str  # "shell" or "python"
    text: str
    runnable: bool
    why: str = ""  # illustrative: why it cannot run here
    run_filters: tuple[str, ...] = ()  # illustrative blocks: commands containing one of these still run
    page: str = (
        ""  # doc file or help source: runnable examples of one page share a scratch folder and session
    )

    def commands(self) -> list[str]:
        """The block's commands: ``\\`` continuations joined, comment lines dropped (``&&`` chains kept)."""
        return logical_lines(self.text) if self.language == "shell" else []

    def runs(self, command: str) -> bool:
        return self.runnable or any(f in command for f in self.run_filters)


# ----------------------------------------------------------------------------------------------------
# extraction
# ----------------------------------------------------------------------------------------------------


def fenced_blocks(path: str) -> Iterator[tuple[int, str, str, str | None]]:
    """``(line, language, text, marker line or None)`` of every fenced block of a Markdown file."""
    lines = (REPO / path).read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, start = match["indent"], i
        j = i + 1
        while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
            j += 1
        body = [
            line[len(indent) :] if line.startswith(indent) else line.lstrip() for line in lines[i + 1 : j]
        ]
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = lines[k] if k >= 0 and MARKER.match(lines[k]) else None
        yield start + 1, match["lang"], "\n".join(body) + "\n", marker
        i = j + 1


def parse_marker(marker: str) -> tuple[bool, str, tuple[str, ...]]:
    """``(runnable, why, run_filters)`` of a marker line."""
    match = MARKER.match(marker)
    assert match, marker
    rest = match["rest"].strip().lstrip("—-–:").strip()
    filters: tuple[str, ...] = ()
    if "run here:" in rest:
        rest, _, quoted = rest.partition("run here:")
        filters = tuple(re.findall(r'"([^"]+)"', quoted))
        rest = rest.strip().rstrip(";").strip()
    return match["kind"] == "runnable", rest, filters


def doc_examples() -> tuple[list[Example], list[str]]:
    """The examples of README.md and docs/*.md, and the blocks that lack a marker (``file:line``)."""
    examples, unmarked = [], []
    for path in DOC_FILES:
        for line, lang, text, marker in fenced_blocks(path):
            language = "shell" if lang in SHELL_LANGUAGES else "python" if lang in ("python", "py") else None
            if language is None:
                continue
            if marker is None:
                unmarked.append(f"{path}:{line}")
                continue
            runnable, why, filters = parse_marker(marker)
            examples.append(Example(f"{path}:{line}", language, text, runnable, why, filters, page=path))
    return examples, unmarked


def logical_lines(text: str) -> list[str]:
    """Shell text as commands: ``\\``-continued lines joined, blank and comment-only lines dropped."""
    out, pending = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line = (pending + line.strip()).strip() if pending else line.strip()
        pending = ""
        if line and not line.startswith("#"):
            out.append(line)
    return out


def split_chain(command: str) -> list[str]:
    """``a && b; c`` → ``["a", "b", "c"]`` (outside quotes and ``$(...)``); a ``( ... )`` subshell is unwrapped."""
    command = strip_comment(command).strip()
    if command.startswith("(") and command.endswith(")"):
        command = command[1:-1]
    parts, current, quote, depth, i = [], "", "", 0, 0
    while i < len(command):
        ch = command[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif command.startswith("$(", i) or (ch == "(" and depth):
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif not depth and (command.startswith("&&", i) or command.startswith("||", i) or ch == ";"):
            parts.append(current)
            current = ""
            i += 1 if ch == ";" else 2
            continue
        current += ch
        i += 1
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def strip_comment(command: str) -> str:
    """The command without a trailing ``# comment`` (a ``#`` after whitespace, outside quotes)."""
    quote = ""
    for i, ch in enumerate(command):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or command[i - 1].isspace()):
            return command[:i].rstrip()
    return command


def help_examples() -> list[Example]:
    """The example command lines of every ``ibq-hf`` epilog and of the examples' docstrings (their ``--help``)."""
    from ibq_hf.cli import build_parser

    found: list[tuple[str, str]] = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for line in (parser.epilog or "").splitlines():
            if "example:" in line:
                found.append((f"{name} --help", line.split("example:", 1)[1].strip()))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{name} {sub_name}")

    walk(build_parser(), "ibq-hf")
    for script in sorted((REPO / "examples").glob("*.py")) + sorted((REPO / "examples").glob("*/*.py")):
        doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
        rel = script.relative_to(REPO).as_posix()
        for command in logical_lines("\n".join(line for line in doc.splitlines() if line.startswith("    "))):
            if re.match(r"(python|accelerate launch) ", command):
                found.append((f"python {rel} --help", command))
    examples = []
    for source, command in found:
        why = next((why for pattern, why in HELP_ILLUSTRATIVE if re.search(pattern, command)), "")
        examples.append(Example(source, "shell", command + "\n", runnable=not why, why=why, page=source))
    return examples


# ----------------------------------------------------------------------------------------------------
# parsing (illustrative commands)
# ----------------------------------------------------------------------------------------------------


class _Parsed(BaseException):  # BaseException: passes through the scripts' `except Exception` wrappers
    def __init__(self, namespace: argparse.Namespace, extras: list[str]) -> None:
        super().__init__()
        self.namespace, self.extras = namespace, extras


def _relax_required(parser: argparse.ArgumentParser) -> None:
    """For partial commands (``...``): no option or group is required; a sub-command still is."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _relax_required(sub)
        elif action.option_strings:
            action.required = False
    for group in parser._mutually_exclusive_groups:
        group.required = False


@contextlib.contextmanager
def _stop_after_parse(partial: bool) -> Iterator[None]:
    """Make the first top-level ``parse_known_args`` parse for real, then raise :class:`_Parsed`."""
    original = argparse.ArgumentParser.parse_known_args
    depth = 0

    def parse_then_stop(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None) -> Any:
        nonlocal depth
        if depth:  # sub-parsers, called by the parser being checked
            return original(self, args, namespace)
        depth += 1
        try:
            if partial:
                _relax_required(self)
            parsed, extras = original(self, args, namespace)
        finally:
            depth -= 1
        raise _Parsed(parsed, extras)

    argparse.ArgumentParser.parse_known_args = parse_then_stop
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_known_args = original


def _parse_with(call: Callable[[], object], argv: list[str], partial: bool) -> argparse.Namespace:
    """Run ``call()`` (which parses ``argv``) up to its parse; argparse's error message on failure."""
    stderr = io.StringIO()
    try:
        with (
            contextlib.redirect_stderr(stderr),
            contextlib.redirect_stdout(io.StringIO()),
            _stop_after_parse(partial),
        ):
            call()
    except _Parsed as parsed:
        if parsed.extras:
            raise AssertionError(f"unrecognized arguments {parsed.extras} in {argv}") from None
        return parsed.namespace
    except SystemExit as error:
        raise AssertionError(
            f"{argv} does not parse (exit {error.code}): {stderr.getvalue().strip()}"
        ) from None
    raise AssertionError(f"{argv}: the program never parsed its arguments")


def _parse_script(script: str, argv: list[str], partial: bool) -> argparse.Namespace:
    """Parse ``argv`` with the argument parser of ``script`` (repository-relative), run as ``__main__``."""
    path = REPO / BUILT_FILES.get(script, script)
    assert path.is_file(), f"{script}: no such script in the repository"
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [str(path), *argv]
    sys.path.insert(0, str(path.parent))
    try:
        return _parse_with(lambda: runpy.run_path(str(path), run_name="__main__"), argv, partial)
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path


def _parse_ibq_hf(argv: list[str], partial: bool) -> argparse.Namespace:
    from ibq_hf.cli import build_parser

    return _parse_with(lambda: build_parser().parse_args(argv), argv, partial)


def _check_repo_paths(tokens: list[str], cwd: str) -> None:
    """Tokens that point into the repository's own folders must exist."""
    for token in tokens:
        if re.match(r"(scripts|tests|examples|benchmarks|spaces|docs|src|checkpoints)/", token):
            rel = os.path.normpath(os.path.join(cwd, token))
            assert (REPO / BUILT_FILES.get(rel, rel)).exists(), f"{token}: not in the repository"


@dataclass
class ShellState:
    """What earlier commands of a block set: shell variables, arrays, the current folder (relative)."""

    variables: dict[str, list[str]] = field(default_factory=dict)
    cwd: str = "."


def _expand(tokens: list[str], state: ShellState) -> list[str]:
    out = []
    for token in tokens:
        array = re.fullmatch(r"\$\{(\w+)\[@\]\}", token)
        if array:
            out += state.variables.get(array[1], [])
            continue

        def value(match: re.Match[str]) -> str:
            name = match[1] or match[2]
            if name in state.variables:
                return " ".join(state.variables[name])
            assert name in PLACEHOLDERS, f"${name}: unknown shell variable (add it to PLACEHOLDERS)"
            return PLACEHOLDERS[name]

        out.append(re.sub(r"\$\{(\w+)\}|\$(\w+)", value, token))
    return out


def check_command(command: str, state: ShellState | None = None) -> str:
    """Parse one command (no ``&&``/``;``) with its program's parser; returns what checked it."""
    state = state or ShellState()
    assignment = re.fullmatch(r"(\w+)=(.*)", command.strip())
    if assignment and not re.search(r"\s", assignment[2].strip("()")):
        state.variables[assignment[1]] = [assignment[2]]
        return "assignment"
    if assignment and assignment[2].startswith("(") and assignment[2].endswith(")"):
        state.variables[assignment[1]] = shlex.split(assignment[2][1:-1])
        return "array assignment"
    if assignment and assignment[2].startswith("$(") and assignment[2].endswith(")"):
        inner = assignment[2][2:-1]
        check_command(inner, ShellState(cwd=state.cwd))
        state.variables[assignment[1]] = ["python"] if "scripts/env.sh" in inner else ["VALUE"]
        return "command substitution"
    tokens = _expand(shlex.split(command), state)
    while tokens and re.fullmatch(r"[A-Za-z_]\w*=.*", tokens[0]):  # VAR=value command
        tokens.pop(0)
    cleaned: list[str] = []
    skip = False
    for token in tokens:  # redirections
        if skip:
            skip = False
        elif token in (">", ">>", "2>", "<"):
            skip = True
        elif not re.fullmatch(r"\d?>&\d|&>.*|\d?>/dev/null", token):
            cleaned.append(token)
    tokens = cleaned
    partial = "..." in tokens
    tokens = [t for t in tokens if t != "..."]
    assert tokens, f"empty command: {command!r}"
    if tokens[0] in ("python", "python3") or tokens[0].endswith("/bin/python"):
        tokens[0] = "python"
    if tokens[0] == "cd":
        state.cwd = os.path.normpath(os.path.join(state.cwd, tokens[1]))
        return "cd"
    if tokens[0] == "ibq-hf" or tokens[:3] == ["python", "-m", "ibq_hf.cli"]:
        _parse_ibq_hf(tokens[1 if tokens[0] == "ibq-hf" else 3 :], partial)
        return "ibq-hf parser"
    if tokens[:2] == ["accelerate", "launch"]:
        from accelerate.commands.launch import launch_command_parser

        args = _parse_with(lambda: launch_command_parser().parse_args(tokens[2:]), tokens, partial=False)
        if args.config_file:
            _check_repo_paths([args.config_file], state.cwd)
        rest = [t for t in args.training_script_args if t != "..."]
        if args.module:
            assert args.training_script == "ibq_hf.cli", (
                f"accelerate launch -m {args.training_script}: unknown"
            )
            _parse_ibq_hf(rest, partial)
        else:
            _parse_script(os.path.normpath(os.path.join(state.cwd, args.training_script)), rest, partial)
        return "accelerate launch parser + script parser"
    if tokens[:2] == ["accelerate", "merge-weights"]:
        from accelerate.commands.merge import merge_command_parser

        _parse_with(lambda: merge_command_parser().parse_args(tokens[2:]), tokens, partial=False)
        return "accelerate merge-weights parser"
    if tokens[0] == "python" and len(tokens) > 1 and tokens[1].endswith(".py"):
        _parse_script(os.path.normpath(os.path.join(state.cwd, tokens[1])), tokens[2:], partial)
        return "script parser"
    for prefix in ALLOWED_PROGRAMS:
        if tuple(tokens[: len(prefix)]) == prefix:
            _check_repo_paths(tokens, state.cwd)
            return "allowed: " + " ".join(prefix)
    raise AssertionError(f"{command!r}: unknown program (parse it, or add it to ALLOWED_PROGRAMS)")


def check_shell_example(example: Example) -> list[str]:
    """Parse every command of a shell example; returns what checked each."""
    state, checked = ShellState(), []
    for line in example.commands():
        # A `( ... )` subshell's `cd` and variables end with it.
        scope = ShellState(dict(state.variables), state.cwd) if line.startswith("(") else state
        for command in split_chain(line):
            checked.append(check_command(command, scope))
    return checked


def check_python_snippet(example: Example) -> None:
    """Compile a snippet; its ``ibq_hf`` imports must exist."""
    tree = ast.parse(compile(example.text, example.source, "exec", flags=ast.PyCF_ONLY_AST))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ibq_hf":
            module = importlib.import_module(node.module)
            missing = [a.name for a in node.names if not hasattr(module, a.name)]
            assert not missing, f"{example.source}: {node.module} has no {missing}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ibq_hf":
                    importlib.import_module(alias.name)


# ----------------------------------------------------------------------------------------------------
# running (runnable commands)
# ----------------------------------------------------------------------------------------------------


def make_workdir(root: Path) -> Path:
    """A scratch folder with the repository's top-level entries linked in (not its git-ignored outputs)."""
    root.mkdir(parents=True, exist_ok=True)
    names = [p.name for p in REPO.iterdir() if p.name != ".git"]
    ignored = subprocess.run(
        ["git", "check-ignore", *names], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.split()
    for name in names:
        if name not in ignored:
            (root / name).symlink_to(REPO / name)
    return root


def _png(path: Path, seed: int, size: tuple[int, int]) -> None:
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(xx * 7 + seed * 40) % 256, (yy * 5 + seed * 23) % 256, (xx + yy + seed * 71) % 256], -1)
    Image.fromarray(rgb.astype(np.uint8)).save(path)


def write_tiny_data(root: Path) -> None:
    """The data the docs name, tiny: ``data/digits`` (``train/<digit>/*.png``, 2 per digit, 32×32 as
    examples/digits/prepare_digits.py writes them), ``photos/`` (4 pictures, no class folders), ``photo.jpg`` and
    ``digits.npz`` (an ADM sample file: 20 32×32 images and their labels)."""
    import numpy as np

    for digit in range(10):
        for k in range(2):
            _png(
                root / "data" / "digits" / "train" / str(digit) / f"{2 * digit + k}.png",
                2 * digit + k,
                (32, 32),
            )
    for k in range(4):
        _png(root / "photos" / f"{k}.png", 100 + k, (48, 40))
    _png(root / "photo.png", 7, (40, 40))
    from PIL import Image

    Image.open(root / "photo.png").convert("RGB").save(root / "photo.jpg")
    (root / "photo.png").unlink()
    rng = np.random.default_rng(0)
    np.savez(
        root / "digits.npz",
        arr_0=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
        arr_1=np.repeat(np.arange(10), 2),
    )


def run_env() -> dict[str, str]:
    """A plain shell after ``source .venv/bin/activate``, offline, one thread (the CPU is shared)."""
    env = dict(os.environ)
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(VENV_BIN.parent),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        MPLBACKEND="Agg",
    )
    env.pop("PYTHONHOME", None)
    return env


def promised_outputs(command: str) -> list[str]:
    """Files or folders a command says it writes (``--output X``, ``--output-dir X``, ...)."""
    tokens = shlex.split(strip_comment(command))
    outputs = [tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t in OUTPUT_FLAGS]
    outputs += [out for cmd, out in IMPLIED_OUTPUTS.items() if command.strip().startswith(cmd)]
    return outputs


def python_outputs(code: str) -> list[str]:
    """Files a snippet saves with ``.save("x")`` or ``.save_pretrained("x")`` (string literals)."""
    return re.findall(r"\.save(?:_pretrained)?\(\s*[\"']([^\"']+)[\"']", code)


def _check_written(outputs: list[str], cwd: Path, since: float, what: str) -> None:
    for out in outputs:
        path = cwd / out
        assert path.exists(), f"{what}: promised output {out} was not written"
        assert path.stat().st_mtime >= since - 1, f"{what}: {out} exists but was not written by the command"


def run_shell(command: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run one documented command line as written (bash, ``set -eo pipefail``); its outputs must be written."""
    import time

    start = time.time()
    proc = subprocess.run(
        ["bash", "-c", "set -eo pipefail\n" + command],
        cwd=cwd,
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (
        f"`{command}` failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    _check_written(promised_outputs(command), cwd, start, command)
    return proc


def run_python(code: str, cwd: Path, name: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a snippet (with the page's earlier runnable snippets before it: one reader's session)."""
    import time

    start = time.time()
    script = cwd / f"_snippet_{name}.py"
    script.write_text(code, encoding="utf-8")
    proc = subprocess.run(
        [str(VENV_BIN / "python"), script.name],
        cwd=cwd,
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{code}\n{proc.stderr[-3000:]}"
    _check_written(python_outputs(code), cwd, start, name)
    return proc
