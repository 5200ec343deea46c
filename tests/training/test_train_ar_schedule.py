"""examples/train_ar.py: one schedule for both modes, size presets as defaults, explicit flags win."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "train_ar.py"
IMAGENET_TRAIN = 1_281_166


def _module():
    spec = importlib.util.spec_from_file_location("train_ar_schedule_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _schedule(tmp_path: Path, *flags: str, examples: int | None = IMAGENET_TRAIN):
    module = _module()
    script, args = module.parse_arguments(
        [
            "--codes_dataset",
            "unused",
            "--output_dir",
            str(tmp_path),
            "--use_cpu",
            "--report_to",
            "none",
            "--per_device_train_batch_size",
            "24",
            "--gradient_accumulation_steps",
            "32",
            *flags,
        ]
    )  # fmt: skip  (24 × 1 process × 32 = the reference's 768)
    module.apply_schedule(script, args, examples)
    return args


def test_size_presets_are_the_defaults(tmp_path):
    args = _schedule(tmp_path, "--model_size", "XL")
    assert (args.max_steps, args.warmup_steps) == (400 * 1669, (8 * 1669))
    assert (args.final_lr_ratio, args.final_weight_decay) == (0.01, 0.0)
    args = _schedule(tmp_path, "--model_size", "XXL")
    assert (args.max_steps, args.warmup_steps) == (450 * 1669, 9 * 1669)
    assert (args.final_lr_ratio, args.final_weight_decay) == (0.01, 0.08)
    args = _schedule(tmp_path, "--model_size", "B")
    assert (args.max_steps, args.warmup_steps, args.final_lr_ratio) == (300 * 1669, 6 * 1669, 0.1)


def test_explicit_flags_override_presets_even_at_default_values(tmp_path):
    # 0.1, 0 and 3 epochs are also the generic defaults: given on the command line they still win over the preset.
    args = _schedule(tmp_path, "--model_size", "XXL", "--final_lr_ratio", "0.1", "--final_weight_decay", "0",
                     "--num_train_epochs", "3", "--warmup_steps", "0")  # fmt: skip
    assert (args.max_steps, args.warmup_steps) == (3 * 1669, 0)
    assert (args.final_lr_ratio, args.final_weight_decay) == (0.1, 0.0)
    args = _schedule(tmp_path, "--model_size", "L", "--warmup_epochs", "0.5", "--max_steps", "5000")
    assert (args.max_steps, args.warmup_steps) == (5000, round(0.5 * 1669))
    args = _schedule(tmp_path, "--model_size", "custom", "--warmup_epochs", "2", examples=24 * 32 * 10)
    assert (args.max_steps, args.warmup_steps) == (30, 20)  # custom: Trainer's 3 epochs, no preset warm-up


def _image_folder(root: Path) -> Path:
    for name in ("x", "y"):
        (root / "train" / name).mkdir(parents=True)
        for i in range(4):
            pixels = np.random.default_rng(i + ord(name)).integers(0, 255, (20, 18, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / name / f"{i}.png")
    return root


def _on_the_fly(tok_dir: Path, out: Path, *source: str) -> list[str]:
    return [*source, "--tokenizer", str(tok_dir), "--resolution", "16", "--grid_size", "8", "--hidden_size", "32",
            "--num_hidden_layers", "1", "--num_attention_heads", "2", "--per_device_train_batch_size", "4",
            "--output_dir", str(out), "--report_to", "none", "--use_cpu", "--save_strategy", "no",
            "--shuffle_buffer_size", "0"]  # fmt: skip


@pytest.mark.slow  # a short on-the-fly training run (~2.2 s); default-suite budget
def test_on_the_fly_has_the_warm_up_and_epochs(tmp_path, tiny_tokenizer, one_thread):
    """The image path uses the same schedule: an imagefolder of 8 images at batch 4 → 2 steps per epoch."""
    tok_dir = tmp_path / "tok"
    tiny_tokenizer.save_pretrained(tok_dir)
    images = _image_folder(tmp_path / "images")
    argv = _on_the_fly(tok_dir, tmp_path / "out", "--images", str(images))
    trainer = _module().main(
        [*argv, "--warmup_epochs", "1", "--num_train_epochs", "2", "--logging_steps", "1"]
    )
    assert trainer.state.global_step == 4  # 2 epochs of 2 steps: no --max_steps needed with a known pass size
    assert trainer.lr_scheduler.lr_lambdas[0].num_warmup_steps == 2  # was 0: lr 3e-4 from step 0
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    assert lrs[0] == pytest.approx(3e-4 * 0.005)  # the reference warm-up starts at wp0 · lr


def _parquet_images(folder: Path, count: int, card: bool) -> Path:
    """Images as a parquet dataset (streamed); with ``card`` a README whose metadata records the split size."""
    import datasets

    (folder / "data").mkdir(parents=True)
    pictures = [Image.fromarray(np.full((16, 16, 3), 20 * i, np.uint8)) for i in range(count)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    rows = {"image": pictures, "label": [i % 2 for i in range(count)]}
    datasets.Dataset.from_dict(rows, features=features).to_parquet(
        str(folder / "data" / "train-00000.parquet")
    )
    if card:
        (folder / "README.md").write_text(
            f"---\ndataset_info:\n  splits:\n  - name: train\n    num_examples: {count}\n"
            "configs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n---\n"
        )
    return folder


@pytest.mark.slow  # default-suite budget: heavy; runs in the slow set
def test_streamed_pass_size_from_metadata_flag_or_error(tmp_path, tiny_tokenizer, one_thread):
    """A stream has no length: the split size in the dataset card's metadata, else
    --examples_per_epoch, else epochs stop with a sentence naming that flag."""
    tok_dir = tmp_path / "tok"
    tiny_tokenizer.save_pretrained(tok_dir)
    module = _module()
    carded = _parquet_images(tmp_path / "carded", 12, card=True)
    trainer = module.main(
        [*_on_the_fly(tok_dir, tmp_path / "out", "--dataset_name", str(carded)), "--warmup_epochs", "1",
         "--num_train_epochs", "1.5"]
    )  # fmt: skip
    assert trainer.lr_scheduler.lr_lambdas[0].num_warmup_steps == 3  # 12 images per pass at batch 4
    assert trainer.state.global_step == 5  # ceil(1.5 × 3)

    bare = _parquet_images(tmp_path / "bare", 8, card=False)
    argv = [*_on_the_fly(tok_dir, tmp_path / "out2", "--dataset_name", str(bare)), "--max_steps", "4"]
    with pytest.raises(ValueError, match="--examples_per_epoch"):
        module.main([*argv, "--warmup_epochs", "1"])
    trainer = module.main([*argv, "--warmup_epochs", "1", "--examples_per_epoch", "8"])
    assert trainer.lr_scheduler.lr_lambdas[0].num_warmup_steps == 2
