"""Both trainers on image streams: exact resume from every checkpoint across passes, finished runs, unreadable
data, and every id once per pass over 2 and 3 processes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from numbered_images import write_numbered_folder, write_numbered_parquet
from safetensors.torch import load_file

datasets = pytest.importorskip("datasets")

REPO = Path(__file__).resolve().parents[2]
N_IDS = 10  # multi-process runs: 2 × N × 2 images per step, so passes end inside steps
N_RESUME = (
    5  # resume runs: 4 images per step, 4 steps = 3.2 passes; passes end inside micro-batches and steps
)


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_stream_test", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    root = tmp_path_factory.mktemp("numbered")
    size = (12, 10)  # random 8x8 crops
    folder = write_numbered_folder(root / "folder", N_RESUME, classes=2, size=size)
    files = write_numbered_parquet(root / "pq", N_RESUME, shards=3, classes=2, size=size)
    return {
        "imagefolder": ["--train_data_dir", str(folder)],
        "streamed parquet + buffer": ["--data_files", *files, "--streaming", "--shuffle_buffer_size", "4"],
        "images": ["--images", str(folder)],
    }


def _optimizer_state(prefix: str, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for pid, state in optimizer.state_dict()["state"].items():
        for k, v in state.items():
            out[f"{prefix}.{pid}.{k}"] = torch.as_tensor(v).clone()
    return out


def _tokenizer_state(trainer) -> dict[str, torch.Tensor]:
    state = {f"gan.{k}": v.detach().clone() for k, v in trainer.gan.state_dict().items()}  # G, D, LeCam
    state.update({f"ema.{k}": v.clone() for k, v in trainer.ema.shadow.items()})
    state.update(_optimizer_state("g_adam", trainer.optimizer))
    state.update(_optimizer_state("d_adam", trainer.disc_optimizer))
    return state


def _ar_state(trainer) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v.detach().clone() for k, v in trainer.model.state_dict().items()}
    state.update(_optimizer_state("adamw", trainer.optimizer))
    return state


def _differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def _check_every_resume(run, state, out: Path, steps: int) -> None:
    """Resume from every checkpoint of an uninterrupted run; each must end bitwise equal (item 2). Resuming from
    the last checkpoint trains nothing and exports exactly the final model (item 3)."""
    full = run(out / "full", "--save_steps", "1")
    expected = state(full)
    assert full.state.global_step == steps
    for k in range(1, steps):
        resumed = run(
            out / f"from-{k}",
            "--save_strategy",
            "no",
            "--resume_from_checkpoint",
            str(out / "full" / f"checkpoint-{k}"),
        )
        assert resumed.state.global_step == steps
        bad = _differing(expected, state(resumed))
        assert not bad, (k, bad[:4])
        assert resumed.state.epoch == pytest.approx(full.state.epoch)  # epoch = data passes
    done = run(
        out / "finished",
        "--save_steps",
        "1",
        "--resume_from_checkpoint",
        str(out / "full" / f"checkpoint-{steps}"),
    )
    assert done.state.global_step == steps and not list((out / "finished").glob("checkpoint-*"))
    assert not _differing(expected, state(done))
    return full


@pytest.mark.parametrize(
    "source",
    [
        # ~8 s; the data-level test resumes an imagefolder exactly from every batch position by default
        pytest.param("imagefolder", marks=pytest.mark.slow),
        "streamed parquet + buffer",
    ],
)
def test_tokenizer_resume_from_every_checkpoint_is_bitwise_exact(tmp_path, sources, source, one_thread):
    """4 steps of 4 images over 5 images (3.2 passes), random crops, accumulation 2 for the imagefolder; compared:
    generator, discriminator, LeCam buffers, EMA and both Adam states."""
    module = _module("train_ibq")
    batch = ["--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2"]
    if source != "imagefolder":
        batch = ["--per_device_train_batch_size", "4"]

    def run(out: Path, *extra: str):
        return module.main([
            *sources[source], "--resolution", "8", "--ch", "32", "--ch_mult", "1", "2", "--num_res_blocks", "1",
            "--attn_resolutions", "4", "--z_channels", "32", "--embed_dim", "16", "--num_embeddings", "64",
            "--no_lpips", "--disc_ndf", "8", "--disc_num_layers", "1", *batch, "--max_steps", "4",
            "--output_dir", str(out), "--report_to", "none", "--seed", "0", "--use_cpu", "--disable_tqdm", "true",
            "--ema_decay", "0.5", "--logging_steps", "100", *extra,
        ])  # fmt: skip

    full = _check_every_resume(run, _tokenizer_state, tmp_path, steps=4)
    assert full.state.epoch == pytest.approx(
        3.2 if source == "imagefolder" else 3
    )  # passes (a stream: whole)
    export = "diffusion_pytorch_model.safetensors"
    a, b = load_file(str(tmp_path / "full" / export)), load_file(str(tmp_path / "finished" / export))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # default-suite budget: heavy; runs in the slow set
def test_ar_on_the_fly_resume_from_every_checkpoint_is_bitwise_exact(
    tmp_path, sources, tiny_tokenizer, one_thread
):
    """The same for examples/train_ar.py --images (tokenized every step; dropout and label dropout on)."""
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    module = _module("train_ar")

    def run(out: Path, *extra: str):
        return module.main([
            *sources["images"], "--tokenizer", str(tmp_path / "tok"), "--resolution", "8", "--grid_size", "4",
            "--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "2", "--max_steps", "4",
            "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2", "--output_dir", str(out),
            "--report_to", "none", "--use_cpu", "--seed", "0", "--disable_tqdm", "true", "--logging_steps", "100",
            *extra,
        ])  # fmt: skip

    _check_every_resume(run, _ar_state, tmp_path / "runs", steps=4)
    a = load_file(str(tmp_path / "runs" / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "runs" / "finished" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_a_finished_codes_run_trains_nothing(tmp_path, one_thread):
    """Item 3 on the extracted-codes path (a sized dataset): 3 steps per epoch, max_steps 4, resumed from
    checkpoint-4: Trainer alone would train a fifth step (and save checkpoint-5)."""
    rows = 24
    codes = [[(i + j) % 16 for j in range(4)] for i in range(rows)]
    (tmp_path / "codes").mkdir()
    datasets.Dataset.from_dict({"input_ids": codes, "label": [i % 4 for i in range(rows)]}).to_parquet(
        str(tmp_path / "codes" / "train.parquet")
    )
    module = _module("train_ar")

    def run(out: Path, *extra: str):
        return module.main([
            "--codes_dataset", str(tmp_path / "codes"), "--output_dir", str(out), "--model_size", "custom",
            "--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "2", "--grid_size", "2",
            "--vocab_size", "16", "--num_classes", "4", "--per_device_train_batch_size", "8", "--warmup_steps", "1",
            "--max_steps", "4", "--save_steps", "2", "--use_cpu", "--report_to", "none", "--disable_tqdm", "true",
            "--seed", "0", *extra,
        ])  # fmt: skip

    full = run(tmp_path / "full")
    done = run(tmp_path / "finished", "--resume_from_checkpoint", str(tmp_path / "full" / "checkpoint-4"))
    assert done.state.global_step == full.state.global_step == 4
    assert not list((tmp_path / "finished").glob("checkpoint-*"))
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "finished" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_every_image_unreadable_stops_with_one_sentence(tmp_path, one_thread, capsys):
    from ibq_hf.errors import run_script_main

    folder = write_numbered_folder(tmp_path / "broken", 4, classes=2, broken=(0, 1, 2, 3))
    argv = [
        "--train_data_dir", str(folder), "--resolution", "16", "--ch", "32", "--ch_mult", "1", "2",
        "--num_res_blocks", "1", "--attn_resolutions", "8", "--z_channels", "32", "--embed_dim", "16",
        "--num_embeddings", "64", "--no_lpips", "--disc_num_layers", "2", "--max_steps", "2",
        "--per_device_train_batch_size", "2", "--output_dir", str(tmp_path / "out"), "--report_to", "none",
        "--use_cpu",
    ]  # fmt: skip
    # What `python examples/train_ibq.py ...` runs: one line on stderr, exit code 2, no traceback.
    with pytest.raises(SystemExit) as info:
        run_script_main(_module("train_ibq").main, argv, "train_ibq.py")
    assert info.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("train_ibq.py: error: ")]
    assert len(errors) == 1, err[-3000:]
    message = errors[0].removeprefix("train_ibq.py: error: ")
    assert message.count(". ") == 0 and message.endswith(".")
    assert "could be decoded" in message and ".png" in message and "check or remove" in message


def _global_sequence(records: list[dict], key: str) -> list[int]:
    """Rebuild S from the ranks' records: rank r's i-th image of global micro-batch m is S[m·B·W + i·W + r]."""
    world = len(records)
    steps = records[0][key]
    sequence = []
    for step in range(len(steps)):
        for micro in range(len(steps[step])):
            size = len(records[0][key][step][micro])
            assert all(len(rec[key][step][micro]) == size for rec in records)
            sequence += [records[r][key][step][micro][i] for i in range(size) for r in range(world)]
    return sequence


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 3])
def test_processes_each_read_their_share_of_every_pass(tmp_path, world):
    """`accelerate launch --multi_gpu --num_processes N` (gloo on CPU), both trainers, 10 numbered images, 2 per
    device × N × accumulation 2 per step, 3 steps (2.4 / 3.6 passes): every id exactly once per pass over all
    ranks (the tail carried over into the next pass), the global batch is 2 × N × 2, and a resume from
    checkpoint-1 (in the same processes) trains on the same ids and ends with bitwise equal weights."""
    folder = write_numbered_folder(tmp_path / "data", N_IDS, classes=2)
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(world),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(Path(__file__).with_name("record_stream_ranks.py")), str(folder), str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    for name in ("tokenizer", "ar"):
        records = [json.loads((out / f"{name}_rank{r}.json").read_text()) for r in range(world)]
        assert all(rec["world_size"] == world for rec in records)
        steps = records[0]["full"]
        assert len(steps) == 3
        for step in range(3):  # global batch = per device × processes × accumulation
            assert sum(len(micro) for rec in records for micro in rec["full"][step]) == 2 * world * 2
        sequence = _global_sequence(records, "full")
        passes = [sequence[p * N_IDS : (p + 1) * N_IDS] for p in range(len(sequence) // N_IDS)]
        assert len(passes) == (12 * world) // N_IDS
        assert all(sorted(p) == list(range(N_IDS)) for p in passes), (name, sequence)
        tail = sequence[len(passes) * N_IDS :]
        assert len(set(tail)) == len(tail)
        assert [rec["resumed"] for rec in records] == [rec["full"][1:] for rec in records]
        assert all(rec["weights_equal"] for rec in records), name
