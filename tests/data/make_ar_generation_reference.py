"""Write ``ar_generation_reference.json``: tokens the bundled digits transformer generated before the generation refactor.

Run once, from the repository root, with the code whose outputs are the reference:

    python tests/data/make_ar_generation_reference.py

``tests/models/test_ar_generation_reference.py`` regenerates every case with today's code and asserts the tokens are
identical, so a change to the sampling loop that changes greedy or seeded-sampled outputs cannot pass unnoticed.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
CASES = [
    {"name": "greedy_cfg1", "class_labels": [0, 3, 7], "do_sample": False, "guidance_scale": 1.0},
    {"name": "greedy_cfg4", "class_labels": [1, 5], "do_sample": False, "guidance_scale": 4.0},
    {
        "name": "sample_plain",
        "class_labels": [2, 9],
        "seeds": [0, 1],
        "guidance_scale": 1.0,
        "top_k": 0,
        "top_p": 1.0,
    },
    {
        "name": "sample_cfg3_topk",
        "class_labels": [4, 4],
        "seeds": [11, 12],
        "guidance_scale": 3.0,
        "top_k": 20,
    },
    {
        "name": "sample_topp",
        "class_labels": [6],
        "seeds": [5],
        "guidance_scale": 2.0,
        "top_k": 0,
        "top_p": 0.8,
    },
    {
        "name": "sample_temperature",
        "class_labels": [8, 0],
        "seeds": [3, 4],
        "guidance_scale": 2.0,
        "temperature": 0.7,
    },
    {
        "name": "sample_linear_cutoff",
        "class_labels": [7],
        "seeds": [9],
        "guidance_scale": 4.0,
        "guidance_schedule": "linear",
        "guidance_cutoff": 40,
    },
    {
        "name": "sample_static_cache",
        "class_labels": [3, 1],
        "seeds": [21, 22],
        "guidance_scale": 2.5,
        "cache_implementation": "static",
    },
]


def generate_case(model: torch.nn.Module, case: dict) -> list[list[int]]:
    kwargs = {k: v for k, v in case.items() if k not in ("name", "class_labels", "seeds")}
    if "seeds" in case:
        kwargs["generator"] = [torch.Generator().manual_seed(s) for s in case["seeds"]]
        kwargs.setdefault("do_sample", True)
    with torch.no_grad():
        tokens = model.generate(torch.tensor(case["class_labels"]), **kwargs)
    return tokens.tolist()


def main() -> None:
    from ibq_hf import IBQARForImageGeneration

    model = IBQARForImageGeneration.from_pretrained(
        ROOT / "checkpoints" / "ibq-digits" / "transformer"
    ).eval()
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout
    out = {"model": "checkpoints/ibq-digits/transformer", "commit": commit.strip(), "cases": []}
    for case in CASES:
        out["cases"].append({**case, "tokens": generate_case(model, case)})
    path = Path(__file__).with_name("ar_generation_reference.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path} ({len(CASES)} cases)")


if __name__ == "__main__":
    main()
