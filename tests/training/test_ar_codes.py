"""Extracted codes with N crops per image: one seeded crop per image per epoch, exact across epochs and resume.

Crop ``k`` of image ``i`` holds the codes ``[i, k, 0, 0]``, so every row the trainer collates names the image and
the crop it came from.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ibq_hf.training.ar_trainer import (
    ARCodesCollator,
    CodeCrops,
    CodeCropSampler,
    crop_choices,
    load_codes_dataset,
)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "train_ar.py"
IMAGES, CROPS, VOCAB, CLASSES = 12, 3, 16, 4


def _train_ar_module():
    spec = importlib.util.spec_from_file_location("train_ar_codes_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _write_crops(folder: Path, images: int = IMAGES, crops: int = CROPS) -> Path:
    """Image i, crop k → codes [i, k, 0, 0]; ``crops=0`` writes plain rows [i, 0, 0, 0] (one fixed crop)."""
    import datasets

    folder.mkdir(parents=True, exist_ok=True)
    codes = datasets.Sequence(datasets.Value("int32"))
    rows = {
        "input_ids": [[[i, k, 0, 0] for k in range(crops)] if crops else [i, 0, 0, 0] for i in range(images)],
        "label": [i % CLASSES for i in range(images)],
    }
    features = datasets.Features(
        {"input_ids": datasets.Sequence(codes) if crops else codes, "label": datasets.Value("int64")}
    )
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "train-00000.parquet"))
    return folder


def _argv(codes: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--codes_dataset", str(codes), "--output_dir", str(out), "--model_size", "custom",
        "--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "2",
        "--grid_size", "2", "--vocab_size", str(VOCAB), "--num_classes", str(CLASSES),
        "--per_device_train_batch_size", "4", "--learning_rate", "3e-3", "--warmup_steps", "2",
        "--use_cpu", "--report_to", "none", "--disable_tqdm", "true", "--seed", "0",
        "--dataloader_num_workers", "0", "--logging_steps", "1",
        *extra,
    ]  # fmt: skip


def test_crop_sampler_draws_one_crop_per_image_per_epoch():
    sampler = CodeCropSampler(num_images=50, num_crops=4, seed=3)
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        drawn = list(sampler)
        images = [j // 4 for j in drawn]
        assert sorted(images) == list(range(50))  # every image exactly once per epoch
        assert images != list(range(50))  # in a shuffled order
        chosen = {j // 4: j % 4 for j in drawn}
        assert chosen == dict(enumerate(crop_choices(3, epoch, 50, 4).tolist()))  # f(seed, epoch, index)
        epochs.append(drawn)
    assert epochs[0] != epochs[1]  # order and crops change with the epoch
    assert set(range(4)) == {j % 4 for j in epochs[0] + epochs[1]}  # every stored crop gets used
    # A fresh sampler (another process, or a resumed run) set to epoch 1 draws exactly the same.
    other = CodeCropSampler(50, 4, seed=3)
    other.set_epoch(1)
    assert list(other) == epochs[1]
    seeded = CodeCropSampler(50, 4, seed=4)
    seeded.set_epoch(1)
    assert list(seeded) != epochs[1]
    # the crop of an image does not depend on how many images there are after it
    assert torch.equal(crop_choices(3, 1, 20, 4), crop_choices(3, 1, 50, 4)[:20])
    counts = Counter(crop_choices(0, 0, 4000, 4).tolist())
    assert all(900 < n < 1100 for n in counts.values()), counts  # uniform over the stored crops


def test_code_crops_dataset_and_collator(tmp_path):
    dataset = load_codes_dataset(str(_write_crops(tmp_path / "codes")))
    crops = CodeCrops(dataset)
    assert len(crops) == IMAGES and crops.num_crops == CROPS
    assert crops[5 * CROPS + 2] == {"input_ids": [5, 2, 0, 0], "label": 5 % CLASSES}
    with pytest.raises(ValueError, match="CodeCrops"):  # rows of N crops need the per-epoch draw
        ARCodesCollator(4)([dataset[0]])
    with pytest.raises(ValueError, match="input_ids"):
        CodeCrops([{"input_ids": [1, 2, 3, 4], "label": 0}])


class _Recorder:
    """Records (image, crop) of every collated row, in order (monkeypatched onto ARCodesCollator)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int]] = []
        self.original = ARCodesCollator.__call__

    def __call__(self, collator, rows):
        self.rows += [(int(r["input_ids"][0]), int(r["input_ids"][1])) for r in rows]
        return self.original(collator, rows)


@pytest.mark.slow  # ~10 s; the 2-process codes tests are slow too, the default suite resumes the image paths
def test_codes_training_draws_fresh_crops_each_epoch_and_resumes_exactly(tmp_path, one_thread, monkeypatch):
    """2.5 epochs (12 images, batch 4: 3 steps per epoch, 8 steps); resume from every checkpoint is bitwise exact
    (weights, optimizer) and continues with the crops the uninterrupted run drew."""
    codes = _write_crops(tmp_path / "codes")
    module = _train_ar_module()
    extra = ("--num_train_epochs", "2.5", "--save_steps", "1")
    recorder = _Recorder()
    monkeypatch.setattr(ARCodesCollator, "__call__", lambda self, rows: recorder(self, rows))
    full = module.main(_argv(codes, tmp_path / "full", *extra))
    assert full.state.global_step == 8
    seen = recorder.rows  # the 8 trained batches, then the one accelerate's loader fetched ahead
    assert len(seen) == 9 * 4
    for epoch in range(2):
        part = seen[epoch * IMAGES : (epoch + 1) * IMAGES]
        assert sorted(i for i, _ in part) == list(range(IMAGES))  # one crop of every image per epoch
        assert dict(part) == dict(enumerate(crop_choices(0, epoch, IMAGES, CROPS).tolist()))
    assert dict(seen[:IMAGES]) != dict(seen[IMAGES : 2 * IMAGES])  # not the same crops every epoch
    reference = load_file(str(tmp_path / "full" / "model.safetensors"))
    final_optimizer = torch.load(tmp_path / "full" / "checkpoint-8" / "optimizer.pt", weights_only=True)

    for step in range(1, 8):
        out = tmp_path / f"resume-{step}"
        out.mkdir()
        shutil.copytree(tmp_path / "full" / f"checkpoint-{step}", out / f"checkpoint-{step}")
        recorder.rows = []
        resumed = module.main(_argv(codes, out, *extra, "--resume_from_checkpoint", "latest"))
        assert resumed.state.global_step == 8
        assert recorder.rows == seen[step * 4 :], f"resume from step {step} drew other rows"
        weights = load_file(str(out / "model.safetensors"))
        assert all(torch.equal(reference[k], weights[k]) for k in reference), f"resume from step {step}"
        optimizer = torch.load(out / "checkpoint-8" / "optimizer.pt", weights_only=True)
        for index, state in final_optimizer["state"].items():
            for key, value in state.items():
                assert torch.equal(value, optimizer["state"][index][key]), (step, index, key)


_RECORD_HARNESS = """
import json, os, runpy, sys
import torch
torch.set_num_threads(1)
from ibq_hf.training.ar_trainer import ARCodesCollator, CodeCropSampler
path = os.path.join(os.environ["RECORD_DIR"], f"rank{os.environ['RANK']}.jsonl")
original_call, original_iter = ARCodesCollator.__call__, CodeCropSampler.__iter__
def call(self, rows):
    with open(path, "a") as f:
        f.write(json.dumps({"rows": [[int(r["input_ids"][0]), int(r["input_ids"][1])] for r in rows]}) + "\\n")
    return original_call(self, rows)
def iterate(self):
    with open(path, "a") as f:
        f.write(json.dumps({"epoch": self.epoch}) + "\\n")
    yield from original_iter(self)
ARCodesCollator.__call__, CodeCropSampler.__iter__ = call, iterate
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _launch(processes: int, record: Path, argv: list[str]) -> subprocess.CompletedProcess:
    record.mkdir(parents=True, exist_ok=True)
    launcher = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
    ]  # fmt: skip
    harness = record / "harness.py"
    harness.write_text(_RECORD_HARNESS)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RECORD_DIR": str(record)}
    return subprocess.run(
        [*launcher, str(harness), str(SCRIPT), *argv], env=env, capture_output=True, text=True, timeout=600
    )


def _read_records(record: Path, processes: int) -> list[list[dict]]:
    return [
        [json.loads(line) for line in (record / f"rank{rank}.jsonl").read_text().splitlines()]
        for rank in range(processes)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("processes", [2, 3])
def test_codes_multi_process_one_crop_per_image_per_epoch(tmp_path, processes):
    """N processes, 13 images (not a multiple of any global batch), 2 epochs: every image once per epoch across the
    ranks, plus the padding accelerate adds to complete the last global batch (images from the start of the same
    epoch's order); the crops are those of crop_choices(seed, epoch, ·); global batch = per device × N × accum."""
    images, per_device, accumulation = 13, 2, 2
    codes = _write_crops(tmp_path / "codes", images=images)
    out, record = tmp_path / "run", tmp_path / "record"
    argv = _argv(codes, out, "--num_train_epochs", "2", "--save_strategy", "no", "--warmup_steps", "0")
    argv[argv.index("--per_device_train_batch_size") + 1] = str(per_device)
    argv += ["--gradient_accumulation_steps", str(accumulation)]
    proc = _launch(processes, record, argv)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = _read_records(record, processes)
    global_batch = per_device * processes
    batches_per_epoch = -(-images // global_batch)  # per rank
    for epoch in range(2):
        seen: list[tuple[int, int]] = []
        for events in ranks:
            starts = [n for n, e in enumerate(events) if "epoch" in e]
            assert [events[n]["epoch"] for n in starts] == [0, 1]
            end = starts[epoch + 1] if epoch == 0 else len(events)
            batches = [e["rows"] for e in events[starts[epoch] + 1 : end]]
            assert len(batches) == batches_per_epoch and all(len(b) == per_device for b in batches)
            seen += [tuple(r) for b in batches for r in b]
        padded = batches_per_epoch * global_batch
        assert len(seen) == padded
        counts = Counter(i for i, _ in seen)
        assert set(counts) == set(range(images))  # every image in every epoch
        assert sum(n - 1 for n in counts.values()) == padded - images  # duplicates only to pad the last batch
        crops = crop_choices(0, epoch, images, CROPS).tolist()
        assert all(k == crops[i] for i, k in seen)
    log = proc.stdout + proc.stderr
    steps_per_epoch = -(-batches_per_epoch // accumulation)
    assert f"max_steps {2 * steps_per_epoch} [" in log  # the schedule counts the steps Trainer runs
    assert f"global batch {per_device * processes * accumulation}" in log


@pytest.mark.slow
@pytest.mark.parametrize("crops", [3, 0])
def test_codes_two_process_resume_after_the_first_epoch_is_exact(tmp_path, crops):
    """2 processes, 13 images (× 3 crops, or plain rows), batch 2: 4 steps per epoch, 10 steps; resumed from
    checkpoint-6 (inside the second epoch) the run draws the rows the uninterrupted run drew and ends with bitwise
    equal weights. (accelerate alone replays epoch 0's order there: see ``set_sampler_epoch``.)"""
    codes = _write_crops(tmp_path / "codes", images=13, crops=crops)

    def argv(out: Path, *extra: str) -> list[str]:
        args = _argv(codes, out, "--max_steps", "10", "--save_steps", "6", "--dropout", "0.0", *extra)
        args[args.index("--per_device_train_batch_size") + 1] = "2"
        return args

    full = _launch(2, tmp_path / "record-full", argv(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-4000:]
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-6", resumed_dir / "checkpoint-6")
    resumed = _launch(2, tmp_path / "record-resumed", argv(resumed_dir, "--resume_from_checkpoint", "latest"))
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(resumed_dir / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    for rank, (before, after) in enumerate(
        zip(_read_records(tmp_path / "record-full", 2), _read_records(tmp_path / "record-resumed", 2))
    ):
        rows_before = [e["rows"] for e in before if "rows" in e]
        rows_after = [e["rows"] for e in after if "rows" in e]
        assert rows_after == rows_before[6:], f"rank {rank}"  # steps 7-10 (+ the batch fetched ahead)
        if crops:
            assert [e["epoch"] for e in after if "epoch" in e] == [
                1,
                2,
            ]  # resumed inside epoch 1, then epoch 2
