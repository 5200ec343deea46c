"""``benchmarks/codebook_scaling.py --quick``: trains each arm end to end and writes a complete JSON + figure."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
pytest.importorskip("skimage")
pytest.importorskip("datasets")


def _module():
    spec = importlib.util.spec_from_file_location("codebook_scaling", BENCHMARKS / "codebook_scaling.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _check(result: dict, sizes: list[int], arms: list[str], path: Path) -> None:
    assert json.loads(path.read_text()) == json.loads(json.dumps(result))
    assert [(r["K"], r["arm"]) for r in result["runs"]] == [(k, a) for k in sizes for a in arms]
    for run in result["runs"]:
        assert 0 < run["used_codes"] <= run["K"]
        assert run["utilization"] == pytest.approx(run["used_codes"] / run["K"])
        assert run["held_out_tokens"] >= 5 * run["K"]  # the measurement does not cap utilization
        assert 1 <= run["perplexity"] <= run["used_codes"] + 1e-6
        assert math.isfinite(run["psnr"]) and run["psnr"] > 0
        curves = run["curves"]
        assert curves["step"] and len(curves["train/codebook_utilization"]) == len(curves["step"])
    assert result["dataset"]["splits"]["train"]["photos"] != result["dataset"]["splits"]["test"]["photos"]
    assert "no LPIPS term" in result["deviations"][0]


@pytest.mark.slow  # trains two tiny tokenizers (~5 s)
def test_quick_run_two_arms_and_resume(tmp_path):
    module = _module()
    out = tmp_path / "scaling.json"
    first = module.main(["--quick", "--sizes", "16", "--arms", "ibq", "--output", str(out)])
    _check(first, [16], ["ibq"], out)
    # --resume keeps the finished run as it is and adds only the missing one.
    result = module.main(
        ["--quick", "--sizes", "16", "--arms", "ibq", "vanilla", "--output", str(out), "--resume"]
    )
    _check(result, [16], ["ibq", "vanilla"], out)
    assert result["runs"][0] == first["runs"][0]
    with pytest.raises(SystemExit, match="other settings"):
        module.main(["--quick", "--sizes", "16", "--steps", "3", "--output", str(out), "--resume"])


def test_too_few_held_out_tokens_is_refused(tmp_path):
    module = _module()
    with pytest.raises(SystemExit, match="5·K"):
        module.main(["--quick", "--sizes", "4096", "--output", str(tmp_path / "x.json")])


@pytest.mark.slow
def test_quick_run_every_arm_with_figure(tmp_path):
    module = _module()
    out, figure = tmp_path / "scaling.json", tmp_path / "scaling.png"
    result = module.main(["--quick", "--output", str(out), "--figure", str(figure)])
    _check(result, [16, 64], ["ibq", "ibq_no_entropy", "vanilla"], out)
    assert figure.stat().st_size > 10_000
