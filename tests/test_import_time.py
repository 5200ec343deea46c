"""Start-up cost (issue 13, item 7): ``import ibq_hf`` and every ``ibq-hf ... --help`` import none of torch,
transformers and diffusers; the lazy namespaces still resolve every public name.

What is imported is checked (``sys.modules`` in a fresh interpreter), never wall time; the before/after timings
are in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import ibq_hf
import ibq_hf.evaluation

HEAVY = ("torch", "transformers", "diffusers")


def run_python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_ibq_hf_imports_no_heavy_library():
    loaded = run_python(
        f"""
        import json, sys
        import ibq_hf, ibq_hf.evaluation, ibq_hf.cli
        print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
        """
    )
    assert loaded == []


def test_every_help_imports_no_heavy_library():
    """``ibq-hf --help`` and ``ibq-hf <command> [<kind>] --help`` for every command the parser has."""
    result = run_python(
        f"""
        import argparse, contextlib, io, json, sys
        from ibq_hf.cli import build_parser, main

        def commands(parser, prefix=()):
            yield prefix
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    for name, sub in action.choices.items():
                        yield from commands(sub, (*prefix, name))

        seen = {{}}
        for command in commands(build_parser()):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                try:
                    main([*command, "--help"])
                except SystemExit as stop:
                    code = stop.code
            seen[" ".join(command)] = [code, "usage: ibq-hf" in out.getvalue()]
        print(json.dumps({{"helps": seen, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
        """
    )
    helps = result["helps"]
    expected = {
        "",
        "generate",
        "reconstruct",
        "convert",
        "convert tokenizer",
        "convert ar",
        "convert pipeline",
    }
    expected |= {"evaluate", "evaluate tokenizer", "evaluate sample", "evaluate generation"}
    assert expected <= set(helps)
    assert all(code == 0 and printed for code, printed in helps.values()), helps
    assert result["heavy"] == []


def test_console_script_help_imports_no_heavy_library(tmp_path):
    """The installed ``ibq-hf`` entry point, as a user runs it (falls back to ``-m`` without a console script)."""
    probe = tmp_path / "sitecustomize.py"
    probe.write_text(
        "import atexit, sys\n"
        f"atexit.register(lambda: print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr))\n"
    )
    script = __import__("shutil").which("ibq-hf", path=str(__import__("pathlib").Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "ibq_hf.cli"]
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([*command, "--help"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and "usage: ibq-hf" in done.stdout
    assert "HEAVY []" in done.stderr


def test_lazy_names_resolve_to_the_defining_objects():
    from ibq_hf.models.modeling_vq import IBQVQModel
    from ibq_hf.pipeline import IBQPipeline

    assert ibq_hf.IBQPipeline is IBQPipeline and ibq_hf.IBQVQModel is IBQVQModel
    for package in (ibq_hf, ibq_hf.evaluation):
        lazy = {name for names in package._EXPORTS.values() for name in names}
        eager = {"METRICS", "metric_path"} if package is ibq_hf.evaluation else set()
        assert sorted(package.__all__) == sorted(lazy | eager)  # the literal API list matches what resolves
        assert set(package.__all__) <= set(dir(package))
        for name in package.__all__:
            assert getattr(package, name) is not None
    try:
        ibq_hf.NoSuchThing  # noqa: B018
    except AttributeError as error:
        assert "no attribute 'NoSuchThing'" in str(error)
    else:
        raise AssertionError("an unknown name must raise AttributeError")


@pytest.mark.slow  # default-suite budget: heavy; runs in the slow set
def test_a_name_shared_with_its_submodule_stays_the_function():
    """``evaluation.inception_score`` is a function defined in ``evaluation/inception_score.py``: importing that
    submodule first (as ``runners`` does) must not replace the package attribute with the module."""
    kinds = run_python(
        """
        import json
        import ibq_hf.evaluation.inception_score, ibq_hf.evaluation.precision_recall
        import ibq_hf.evaluation as evaluation
        from ibq_hf.evaluation import precision_recall
        print(json.dumps([type(evaluation.inception_score).__name__, type(precision_recall).__name__]))
        """
    )
    assert kinds == ["function", "function"]
