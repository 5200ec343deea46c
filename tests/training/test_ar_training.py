"""AR training on tiny synthetic codes: learning, export, exact resume after SIGKILL, atomic checkpoints, DDP."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers.trainer_utils import get_last_checkpoint

from ibq_hf import IBQARConfig, IBQARForImageGeneration
from ibq_hf.training.ar_trainer import (
    ARCodesCollator,
    IBQARTrainer,
    IBQARTrainingArguments,
    load_codes_dataset,
)
from ibq_hf.training.checkpointing import STAGING_DIR_NAME

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "train_ar.py"
VOCAB, CLASSES, GRID = 16, 4, 2


def _train_ar_module():
    spec = importlib.util.spec_from_file_location("train_ar_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _write_codes(folder: Path, rows: int = 32, grid: int = GRID, vocab: int = VOCAB) -> Path:
    """A learnable pattern: class c → codes (c, c+1, c+2, ...) mod vocab, in two parquet shards."""
    import datasets

    folder.mkdir(parents=True, exist_ok=True)
    labels = [i % CLASSES for i in range(rows)]
    codes = [[(c + j) % vocab for j in range(grid * grid)] for c in labels]
    half = rows // 2
    for shard, part in enumerate((slice(0, half), slice(half, rows))):
        datasets.Dataset.from_dict({"input_ids": codes[part], "label": labels[part]}).to_parquet(
            str(folder / f"train-{shard}.parquet")
        )
    return folder


def _argv(codes: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--codes_dataset", str(codes), "--output_dir", str(out), "--model_size", "custom",
        "--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "2",
        "--grid_size", str(GRID), "--vocab_size", str(VOCAB), "--num_classes", str(CLASSES),
        "--per_device_train_batch_size", "8", "--learning_rate", "3e-3", "--warmup_steps", "2",
        "--use_cpu", "--report_to", "none", "--disable_tqdm", "true", "--seed", "0",
        "--dataloader_num_workers", "0", "--logging_steps", "1",
        *extra,
    ]  # fmt: skip


def test_collator_shifts_and_validates():
    collate = ARCodesCollator(4)
    batch = collate([{"input_ids": [1, 2, 3, 4], "label": 2}, {"input_ids": [5, 6, 7, 8], "label": 0}])
    assert batch["input_ids"].tolist() == [[1, 2, 3], [5, 6, 7]]
    assert batch["labels"].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert batch["class_labels"].tolist() == [2, 0]
    with pytest.raises(ValueError, match="grid_size"):
        collate([{"input_ids": [1, 2, 3], "label": 0}])
    with pytest.raises(ValueError, match="label"):
        collate([{"input_ids": [1, 2, 3, 4]}])


def test_training_reduces_loss_and_exports(tmp_path, one_thread):
    codes = _write_codes(tmp_path / "codes")
    out = tmp_path / "run"
    trainer = _train_ar_module().main(
        _argv(codes, out, "--max_steps", "40", "--save_strategy", "no", "--dropout", "0.0")
    )
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
    # AdamW as the reference: betas (0.9, 0.95), eps 1e-8, the quirk decays the no-decay group too.
    opt = trainer.optimizer
    assert opt.param_groups[0]["betas"] == (0.9, 0.95) and opt.param_groups[0]["eps"] == 1e-8
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.05]
    assert trainer.lr_scheduler.lr_lambdas[0].num_warmup_steps == 2
    loaded = IBQARForImageGeneration.from_pretrained(out)
    assert loaded.config.grid_size == GRID and loaded.config.vocab_size == VOCAB
    assert "IBQ AR model" in (out / "README.md").read_text()
    # The trained model continues the pattern of its class greedily.
    tokens = loaded.eval().generate(class_labels=torch.tensor([1, 3]), do_sample=False, guidance_scale=1.0)
    assert tokens.tolist() == [[1, 2, 3, 4], [3, 4, 5, 6]]


def test_codes_dataset_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="parquet"):
        load_codes_dataset(str(tmp_path / "empty"))
    import datasets

    (tmp_path / "bad").mkdir()
    datasets.Dataset.from_dict({"input_ids": [[1, 2]]}).to_parquet(str(tmp_path / "bad" / "x.parquet"))
    with pytest.raises(ValueError, match="label"):
        load_codes_dataset(str(tmp_path / "bad"))


_KILL_HARNESS = """
import os, runpy, signal, sys
import torch
torch.set_num_threads(1)
from ibq_hf.training.ar_trainer import IBQARTrainer
original = IBQARTrainer._save_checkpoint
def save_then_die(self, model, trial):
    original(self, model, trial)
    if self.state.global_step == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
IBQARTrainer._save_checkpoint = save_then_die
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow  # ~11 s; atomic saves are also covered by test_crash_during_save_keeps_previous_checkpoint
def test_resume_after_sigkill_is_bitwise_exact(tmp_path, one_thread):
    """Kill a run (SIGKILL, a real subprocess) right after checkpoint-3, mid-epoch; resuming must end exactly
    where an uninterrupted run ends (weights, with dropout and label dropout on, so RNG state matters too)."""
    codes = _write_codes(tmp_path / "codes")
    extra = ("--max_steps", "7", "--save_steps", "3")
    full = tmp_path / "full"
    _train_ar_module().main(_argv(codes, full, *extra))

    killed = tmp_path / "killed"
    env = {**os.environ, "KILL_AT": "3", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_HARNESS, str(SCRIPT), *_argv(codes, killed, *extra)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert get_last_checkpoint(str(killed)) == str(killed / "checkpoint-3")
    assert not (killed / "model.safetensors").exists()

    trainer = _train_ar_module().main(_argv(codes, killed, *extra, "--resume_from_checkpoint", "latest"))
    assert trainer.state.global_step == 7
    a, b = _weights(full), _weights(killed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A run that skipped the resume (fresh start) would differ: the check can fail.
    assert not all(torch.equal(a[k], v) for k, v in _weights(killed / "checkpoint-3").items())


def _tiny_trainer(out: Path, codes: Path, max_steps: int) -> IBQARTrainer:
    torch.manual_seed(0)
    config = IBQARConfig(
        vocab_size=VOCAB, num_classes=CLASSES, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        grid_size=GRID, multiple_of=32,
    )  # fmt: skip
    args = IBQARTrainingArguments(
        output_dir=str(out), per_device_train_batch_size=8, max_steps=max_steps, save_steps=2,
        use_cpu=True, report_to=[], disable_tqdm=True, warmup_steps=1,
    )  # fmt: skip
    return IBQARTrainer(
        model=IBQARForImageGeneration(config),
        args=args,
        train_dataset=load_codes_dataset(str(codes)),
        data_collator=ARCodesCollator(GRID * GRID),
    )


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, one_thread):
    codes = _write_codes(tmp_path / "codes")
    out = tmp_path / "run"
    trainer = _tiny_trainer(out, codes, max_steps=4)
    original = trainer._save_rng_state

    def crash_at_step_4(output_dir: str) -> None:  # model + optimizer already written when this runs
        if trainer.state.global_step == 4:
            raise RuntimeError("simulated crash during save")
        original(output_dir)

    trainer._save_rng_state = crash_at_step_4
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.train()
    # The half-written checkpoint sits in the staging folder, invisible to resume; checkpoint-2 is intact.
    assert (out / STAGING_DIR_NAME / "checkpoint-4" / "model.safetensors").exists()
    assert not (out / "checkpoint-4").exists()
    assert get_last_checkpoint(str(out)) == str(out / "checkpoint-2")
    IBQARForImageGeneration.from_pretrained(out / "checkpoint-2")

    resumed = _tiny_trainer(out, codes, max_steps=4)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 4
    assert (out / "checkpoint-4" / "rng_state.pth").exists()
    assert not (out / STAGING_DIR_NAME).exists()


def test_pipeline_export(tmp_path, tiny_tokenizer, one_thread):
    from ibq_hf import IBQPipeline

    tok_dir = tmp_path / "tok"
    tiny_tokenizer.save_pretrained(tok_dir)
    codes = _write_codes(tmp_path / "codes", rows=8, grid=8, vocab=64)
    out = tmp_path / "run"
    argv = _argv(codes, out, "--max_steps", "2", "--save_strategy", "no", "--tokenizer", str(tok_dir))
    argv[argv.index("--grid_size") + 1] = "8"
    argv[argv.index("--vocab_size") + 1] = "64"
    argv[argv.index("--warmup_steps") + 1] = "0"  # 2 steps leave no room for warm-up + decay
    _train_ar_module().main(argv)
    pipe = IBQPipeline.from_pretrained(out / "pipeline")
    image = pipe(class_labels=[1], output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 16, 16, 3)


@pytest.mark.slow
def test_accelerate_two_process_ddp(tmp_path):
    codes = _write_codes(tmp_path / "codes")
    out = tmp_path / "ddp"
    launcher = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(SCRIPT),
    ]  # fmt: skip
    proc = subprocess.run(
        [
            *launcher,
            *_argv(codes, out, "--max_steps", "4", "--save_steps", "2", "--per_device_train_batch_size", "4"),
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert "rank 0: all 2 ranks in sync" in log and "rank 1: all 2 ranks in sync" in log
    assert (out / "checkpoint-4" / "rng_state_1.pth").exists()
    model = IBQARForImageGeneration.from_pretrained(out)
    assert model.config.grid_size == GRID


def test_extract_codes_then_train_reads_them(tmp_path, tiny_tokenizer):
    """examples/extract_codes.py: imagefolder → parquet codes {input_ids [grid²], label} with class names."""
    import numpy as np
    from PIL import Image

    for name in ("cat", "dog"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(3):
            pixels = np.random.default_rng(i + 10 * len(name)).integers(0, 255, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{i}.png")
    tok_dir = tmp_path / "tok"
    tiny_tokenizer.save_pretrained(tok_dir)
    spec = importlib.util.spec_from_file_location(
        "extract_codes_example", REPO / "examples" / "extract_codes.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "codes"
    written = module.main(
        ["--tokenizer", str(tok_dir), "--images", str(tmp_path / "images"), "--resolution", "16",
         "--output_dir", str(out), "--batch_size", "4", "--rows_per_shard", "4"]
    )  # fmt: skip
    assert len(written) == 2
    dataset = load_codes_dataset(str(out))
    assert len(dataset) == 6 and dataset.features["label"].names == ["cat", "dog"]
    assert sorted(dataset["label"]) == [0, 0, 0, 1, 1, 1]
    # The codes equal the tokenizer's on the centre crop of the reference protocol (bilinear, no antialias).
    from ibq_hf.image_processing import preprocess

    row = next(r for r in dataset if r["label"] == 0)
    first = Image.open(sorted((tmp_path / "images" / "cat").glob("*.png"))[0])
    expected = tiny_tokenizer.tokenize(preprocess(first, 16)[None]).flatten().tolist()
    rows0 = [r["input_ids"] for r in dataset if r["label"] == 0]
    assert expected in rows0 and len(row["input_ids"]) == 64


def test_extract_codes_random_crops_are_seeded(tmp_path, tiny_tokenizer):
    """--crops N: one row per image holding its N reference random crops, reproducible from --seed."""
    import numpy as np
    from PIL import Image

    from ibq_hf.data import image_transform

    for name in ("a", "b"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(2):
            pixels = np.random.default_rng(i + 7 * len(name) + ord(name)).integers(
                0, 255, (24, 30, 3), np.uint8
            )
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{i}.png")
    tok_dir = tmp_path / "tok"
    tiny_tokenizer.save_pretrained(tok_dir)
    spec = importlib.util.spec_from_file_location(
        "extract_codes_crops", REPO / "examples" / "extract_codes.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def run(out: str, batch_size: str, seed: str = "3") -> list:
        module.main(
            ["--tokenizer", str(tok_dir), "--images", str(tmp_path / "images"), "--resolution", "16",
             "--output_dir", str(tmp_path / out), "--batch_size", batch_size, "--crops", "3", "--hflip",
             "--seed", seed]
        )  # fmt: skip
        return list(load_codes_dataset(str(tmp_path / out)))

    rows = run("c1", "4")
    assert len(rows) == 4 and sorted(r["label"] for r in rows) == [0, 0, 1, 1]
    assert all(len(r["input_ids"]) == 3 and {len(c) for c in r["input_ids"]} == {64} for r in rows)
    assert rows == run("c2", "1")  # independent of the batch size
    assert rows != run("c3", "4", seed="4")
    # crop j of image i is the reference train transform seeded (seed, i, j)
    first = Image.open(sorted((tmp_path / "images" / "a").glob("*.png"))[0])
    for j in range(3):
        crop = image_transform(16, train=True, hflip=True)(
            first, generator=torch.Generator().manual_seed(3 * 1_000_003 + j)
        )
        assert rows[0]["input_ids"][j] == tiny_tokenizer.tokenize(crop[None]).flatten().tolist()


def test_on_the_fly_tokenization_equals_extracted_codes(tmp_path, tiny_tokenizer):
    """frozen_tokenizer: an image batch gives the same loss as its codes through ARCodesCollator."""
    grid = 8  # 16×16 images with the tiny tokenizer
    model = IBQARForImageGeneration(
        IBQARConfig(vocab_size=64, num_classes=3, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    grid_size=grid, multiple_of=32, resid_dropout=0.0, ffn_dropout=0.0, token_dropout=0.0,
                    class_dropout_prob=0.0)
    )  # fmt: skip
    args = IBQARTrainingArguments(
        output_dir=str(tmp_path), report_to=[], use_cpu=True, remove_unused_columns=False
    )
    trainer = IBQARTrainer(model=model, args=args, frozen_tokenizer=tiny_tokenizer)
    pixels = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    labels = torch.tensor([0, 2, 1])
    loss_images = trainer.compute_loss(model, {"pixel_values": pixels, "class_labels": labels})
    codes = tiny_tokenizer.tokenize(pixels).flatten(1)
    rows = [{"input_ids": c.tolist(), "label": int(lab)} for c, lab in zip(codes, labels)]
    loss_codes = trainer.compute_loss(model, ARCodesCollator(grid * grid)(rows))
    torch.testing.assert_close(loss_images, loss_codes)
    with pytest.raises(ValueError, match="frozen_tokenizer"):
        IBQARTrainer(model=model, args=args).compute_loss(
            model, {"pixel_values": pixels, "class_labels": labels}
        )


def test_train_ar_script_on_the_fly(tmp_path, tiny_tokenizer):
    """examples/train_ar.py --images: streamed images tokenized every step; exports a loadable pipeline."""
    import numpy as np
    from PIL import Image

    from ibq_hf import IBQPipeline

    for name in ("x", "y"):
        (tmp_path / "images" / "train" / name).mkdir(parents=True)
        for i in range(4):
            pixels = np.random.default_rng(i + ord(name)).integers(0, 255, (20, 18, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / "train" / name / f"{i}.png")
    tok_dir = tmp_path / "tok"
    tiny_tokenizer.save_pretrained(tok_dir)
    module = _train_ar_module()
    out = tmp_path / "out"
    trainer = module.main(
        ["--images", str(tmp_path / "images"), "--tokenizer", str(tok_dir), "--resolution", "16", "--grid_size", "8",
         "--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "2", "--max_steps", "2",
         "--per_device_train_batch_size", "4", "--output_dir", str(out), "--report_to", "none", "--use_cpu",
         "--save_strategy", "no", "--shuffle_buffer_size", "8"]
    )  # fmt: skip
    assert trainer.state.global_step == 2
    pipe = IBQPipeline.from_pretrained(out / "pipeline")
    assert pipe.transformer.config.id2label == {0: "x", 1: "y"}
    with pytest.raises(ValueError, match="either --codes_dataset"):
        module.main(["--output_dir", str(out), "--report_to", "none"])
    with pytest.raises(ValueError, match="grid"):
        module.main(["--images", str(tmp_path / "images"), "--tokenizer", str(tok_dir), "--resolution", "16",
                     "--grid_size", "4", "--max_steps", "1", "--output_dir", str(out), "--report_to", "none"])  # fmt: skip
