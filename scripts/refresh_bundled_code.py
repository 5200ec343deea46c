"""Rewrite the code that travels with the bundled ``checkpoints/ibq-digits``; its weights stay as they are.

``IBQPipeline.save_pretrained`` writes, besides the weights, the code stock diffusers / transformers load with
``trust_remote_code=True`` (:func:`ibq_hf.remote_code.write_code`: the package's modules as ``ibq_*_<version>.py``
files at the top and in ``vqvae/`` and ``transformer/``, the ``[module, class]`` entries of ``model_index.json``,
``auto_map`` in both ``config.json`` files) and the model card. This script writes exactly those into the bundled
folder without re-saving the weights: every ``*.safetensors`` file is checked byte for byte (sha256) before and
after, and shipped files of another ibq-hf version are removed.

    python scripts/refresh_bundled_code.py            # rewrite the committed copy
    python scripts/refresh_bundled_code.py --check    # exit 1 (and list the files) if it differs

Run it after changing a module the pipeline ships (``tests/test_remote_code.py`` fails until then), and commit
the result.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if "ibq_hf" not in sys.modules:  # the code must come from this clone's source, not another installed copy
    sys.path.insert(0, str(ROOT / "src"))

from ibq_hf.remote_code import write_code  # noqa: E402

BUNDLED = ROOT / "checkpoints" / "ibq-digits"
#: The files the code step rewrites besides the ``*.py`` files.
CONFIG_FILES = ("model_index.json", "vqvae/config.json", "transformer/config.json")
#: The model card's facts (``IBQPipeline.write_model_card``); the rest comes from the models, as in a save.
CARD_FACTS = {
    "name": "checkpoints/ibq-digits",
    "title": "IBQ digits pipeline (32×32, 10 classes)",
    "intro": (
        "Trained with ibq-hf's own scripts on scikit-learn's digits (1,797 real 8×8 scans, upscaled to 32×32); the "
        "exact commands are in `examples/digits/README.md` of the ibq-hf repository (about 10 minutes on 2 CPU "
        "cores). An RBF SVC trained on the real digits classifies 200 samples (20 per class, guidance 2.0, the "
        "default in `generation_config.json`) as the requested digit 100 % of the time (91 % without guidance); the "
        "tokenizer's reconstructions of real digits are classified correctly 99.75 % of the time."
    ),
    "shipped_code": True,
}


def code_snapshot(folder: Path) -> dict[str, str]:
    """Relative path → text of every shipped ``*.py`` file and of the JSON files that point at them."""
    files = {
        str(path.relative_to(folder)): path.read_text(encoding="utf-8")
        for path in sorted(folder.rglob("*.py"))
        if "__pycache__" not in path.parts
    }
    files.update({name: (folder / name).read_text(encoding="utf-8") for name in CONFIG_FILES})
    return files


def expected_snapshot(folder: Path = BUNDLED) -> dict[str, str]:
    """What ``save_pretrained`` would write today for ``folder``'s code (from copies of its JSON files only)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp)
        for name in CONFIG_FILES:
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / name, copy / name)
        write_code(copy, "pipeline")
        return code_snapshot(copy)


def differences(folder: Path = BUNDLED) -> list[str]:
    """The files whose committed text differs from :func:`expected_snapshot` (missing or extra ones too)."""
    committed, expected = code_snapshot(folder), expected_snapshot(folder)
    return sorted(
        name for name in committed.keys() | expected.keys() if committed.get(name) != expected.get(name)
    )


def weight_digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*.safetensors"))
    }


def write_card(folder: Path) -> Path:
    """The model card ``save_pretrained`` writes (the pipeline is loaded for its configs and parameter count)."""
    from ibq_hf import IBQPipeline

    return IBQPipeline.from_pretrained(folder).write_model_card(folder, **CARD_FACTS)


def refresh(folder: Path = BUNDLED) -> list[Path]:
    """Rewrite ``folder``'s shipped code, pointers and card; returns the files written. The weights are untouched."""
    before = weight_digests(folder)
    if not before:
        raise FileNotFoundError(f"{folder} holds no safetensors weights: not a saved pipeline.")
    for stale in folder.rglob("ibq_*.py"):  # another version's names would stay next to today's
        stale.unlink()
    written = write_code(folder, "pipeline")
    written.append(write_card(folder))
    after = weight_digests(folder)
    if after != before:
        raise RuntimeError(f"The weights changed ({before} → {after}); restore them from git.")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--folder", type=Path, default=BUNDLED, help="the saved pipeline (default: %(default)s)"
    )
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if the code differs")
    args = parser.parse_args(argv)
    if args.check:
        stale = differences(args.folder)
        for name in stale:
            print(f"differs: {name}")
        return 1 if stale else 0
    digests = weight_digests(args.folder)
    written = refresh(args.folder)
    print(f"wrote {len(written)} files into {args.folder}; weights unchanged:")
    for name, digest in digests.items():
        print(f"  sha256 {digest}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
