"""IBQ tokenizer GAN training with HF Trainer: tiny model, tiny in-memory data, CPU."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import TINY_TOKENIZER_CONFIG
from ibq_hf import IBQVQModel
from ibq_hf.training.tokenizer_trainer import (
    IBQTokenizerTrainer,
    IBQTokenizerTrainingArguments,
    build_tokenizer_gan,
    lr_drop_factor,
)

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "train_ibq.py"


class _Images(torch.utils.data.Dataset):
    def __init__(self, n: int = 8) -> None:
        g = torch.Generator().manual_seed(3)
        self.x = torch.rand(n, 3, 16, 16, generator=g) * 2 - 1

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.x[i], "class_labels": 0}


def _collate(rows: list[dict]) -> dict:
    return {"pixel_values": torch.stack([r["pixel_values"] for r in rows])}


def _trainer(out: Path, max_steps: int, lpips: bool = False, **kw) -> IBQTokenizerTrainer:
    kw.setdefault("per_device_train_batch_size", 2)
    args = IBQTokenizerTrainingArguments(
        output_dir=str(out), max_steps=max_steps, save_steps=2, use_cpu=True,
        report_to=[], disable_tqdm=True, logging_steps=1, seed=0, ema_decay=0.5, disc_ndf=8, disc_num_layers=2, **kw,
    )  # fmt: skip
    torch.manual_seed(0)
    gan = build_tokenizer_gan(
        IBQVQModel(**TINY_TOKENIZER_CONFIG), args, no_lpips=not lpips, lpips_random_backbone=lpips
    )
    return IBQTokenizerTrainer(model=gan, args=args, train_dataset=_Images(), data_collator=_collate)


def _snapshot(trainer: IBQTokenizerTrainer) -> dict[str, torch.Tensor]:
    state = {f"gan.{k}": v.detach().clone() for k, v in trainer.gan.state_dict().items()}
    state.update({f"ema.{k}": v.clone() for k, v in trainer.ema.shadow.items()})
    return state


def test_lr_drop_factor():
    assert [lr_drop_factor(s, [2, 4], 0.1) for s in range(6)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_steps_update_both_networks_and_export(tmp_path, one_thread):
    trainer = _trainer(tmp_path / "run", max_steps=3, lpips=True, lr_drop_steps=[2])
    before = _snapshot(trainer)
    trainer.train()
    after = _snapshot(trainer)
    for prefix in ("gan.generator.", "gan.discriminator."):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)), prefix
    assert not torch.equal(before["gan.lecam.ema_real"], after["gan.lecam.ema_real"])
    assert not any(k.startswith("gan.lpips.") for k in after)  # LPIPS is not checkpointed
    raw = dict(trainer.gan.generator.named_parameters())
    assert any(not torch.equal(trainer.ema.shadow[k], raw[k]) for k in trainer.ema.shadow)
    assert trainer.ema.num_updates == 3
    # lr dropped ×0.1 after 2 steps, for both optimisers
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)
    assert trainer.disc_optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)
    logged = [h for h in trainer.state.log_history if "train/codebook_perplexity" in h]
    assert len(logged) == 3 and all(h["train/perceptual_loss"] > 0 for h in logged)
    assert {"train/d_loss", "train/g_loss", "train/quant_loss", "train/entropy_loss"} <= set(logged[0])
    ckpt = tmp_path / "run" / "checkpoint-2"
    for name in ("model.safetensors", "optimizer.pt", "discriminator_optimizer.pt", "ema.safetensors"):
        assert (ckpt / name).is_file(), name

    export = tmp_path / "export"
    trainer.save_ema_tokenizer(str(export), dataset="tiny")
    loaded = IBQVQModel.from_pretrained(str(export))
    for name, p in loaded.named_parameters():
        assert torch.equal(p, trainer.ema.shadow[name].cpu()), name
    assert "EMA" in (export / "README.md").read_text()


def test_discriminator_step_precedes_generator_step_on_same_reconstruction(tmp_path, one_thread):
    trainer = _trainer(tmp_path / "run", max_steps=2, save_strategy="no")
    events: list[tuple] = []
    trainer.step_hooks.append(lambda phase, x_rec: events.append((phase, id(x_rec))))
    disc_calls: list[bool] = []
    trainer.gan.discriminator.register_forward_pre_hook(
        lambda m, inp: disc_calls.append(inp[0].requires_grad)
    )
    d_param = next(trainer.gan.discriminator.parameters())
    d_before_g: list[bool] = []

    def on_gen(phase, x_rec):
        if phase == "gen":  # by the G phase the D optimiser has stepped (weights differ from the step start)
            d_before_g.append(not torch.equal(d_param.detach(), start[0]))
        else:
            start[0] = d_param.detach().clone()

    start: list = [None]
    trainer.step_hooks.append(on_gen)
    trainer.train()
    assert [e[0] for e in events] == ["disc", "gen", "disc", "gen"]
    assert events[0][1] == events[1][1] and events[2][1] == events[3][1]  # the same x̂ per step
    # per step: D(x), D(x̂.detach()) (no grad), then D(x̂) carrying the generator's graph
    assert disc_calls == [False, False, True] * 2
    assert d_before_g == [True, True]


def _without_batchnorm(trainer: IBQTokenizerTrainer) -> IBQTokenizerTrainer:
    """BatchNorm statistics are per micro-batch by nature; drop them to compare against one large batch."""
    main = trainer.gan.discriminator.main
    for i, m in enumerate(main):
        if isinstance(m, torch.nn.BatchNorm2d):
            main[i] = torch.nn.Identity()
    return trainer


@pytest.mark.slow  # default-suite budget: heavy; runs in the slow set
def test_gradient_accumulation_equals_one_large_batch(tmp_path, one_thread):
    """2 micro-batches of 2 == 1 batch of 4: D steps once per step on all 4 images, before the G losses."""
    kw = {
        "save_strategy": "no",
        "lecam_loss_weight": 0.5,
        "entropy_loss_weight": 0.0,
        "adam_epsilon": 1.0,  # Adam turns fp32 round-off of near-zero gradients into ±lr steps; eps=1 does not
    }  # batch entropy: per micro-batch
    big = _without_batchnorm(_trainer(tmp_path / "big", max_steps=2, per_device_train_batch_size=4, **kw))
    big.train()
    acc = _without_batchnorm(
        _trainer(
            tmp_path / "acc", max_steps=2, per_device_train_batch_size=2, gradient_accumulation_steps=2, **kw
        )
    )
    disc_steps: list[int] = []
    acc.step_hooks.append(
        lambda phase, x_rec: disc_steps.append(
            acc.disc_optimizer.state_dict()["state"].get(0, {}).get("step", torch.tensor(0)).item()
        )
    )
    acc.train()
    small = _without_batchnorm(_trainer(tmp_path / "small", max_steps=2, per_device_train_batch_size=2, **kw))
    small.train()
    expected, got, other = _snapshot(big), _snapshot(acc), _snapshot(small)
    assert expected.keys() == got.keys()
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-6, atol=1e-7, msg=k)  # measured ≤ 4e-9
    assert acc.ema.num_updates == 2 and acc.state.global_step == 2
    # the D optimiser stepped once per optimizer step, before the first micro-batch's generator loss
    assert disc_steps == [0, 1, 1, 1, 1, 2, 2, 2]
    # the comparison can fail: plain batches of 2 end elsewhere
    assert any(not torch.allclose(other[k], expected[k], rtol=1e-6, atol=1e-7) for k in expected)


def test_bf16_flag_runs_the_networks_under_autocast(tmp_path, one_thread):
    trainer = _trainer(tmp_path / "run", max_steps=1, save_strategy="no", bf16=True)
    dtypes: list[torch.dtype] = []
    trainer.gan.generator.decoder.conv_out.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    d_dtypes: list[torch.dtype] = []
    trainer.gan.discriminator.register_forward_hook(lambda m, i, o: d_dtypes.append(o.dtype))
    trainer.train()
    assert dtypes == [torch.bfloat16] and set(d_dtypes) == {torch.bfloat16}
    assert trainer.gan.generator.quantize.embedding.weight.dtype == torch.float32  # master weights stay fp32
    logged = [h for h in trainer.state.log_history if "train/rec_loss" in h]
    assert logged and all(np.isfinite(v) for v in logged[0].values() if isinstance(v, float))


@pytest.mark.slow
def test_torch_compile_flag_compiles_the_called_networks(tmp_path, one_thread):
    """--torch_compile compiles encoder, decoder and discriminator in place; training matches eager closely."""
    kw = {"save_strategy": "no", "adam_epsilon": 1.0}  # eps=1: Adam does not turn round-off into ±lr steps
    eager = _trainer(tmp_path / "eager", max_steps=2, **kw)
    eager.train()
    compiled = _trainer(tmp_path / "compiled", max_steps=2, torch_compile=True, **kw)
    gan = compiled.gan
    assert all(m._compiled_call_impl is not None for m in (gan.generator.encoder, gan.generator.decoder))
    assert gan.discriminator._compiled_call_impl is not None
    compiled.train()
    expected, got = _snapshot(eager), _snapshot(compiled)
    assert expected.keys() == got.keys()  # in-place compile: no _orig_mod prefixes in checkpoints
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.slow  # the default suite resumes from every checkpoint over several passes (test_stream_training.py)
@pytest.mark.parametrize("accumulation", [1, 2])
def test_resume_is_bitwise_exact(tmp_path, one_thread, accumulation):
    kw = {"gradient_accumulation_steps": accumulation}
    full = _trainer(tmp_path / "full", max_steps=4, **kw)
    full.train()
    expected = _snapshot(full)

    stopped = _trainer(tmp_path / "run", max_steps=2, **kw)  # simulated stop after checkpoint-2
    stopped.train()
    at_stop = _snapshot(stopped)
    resumed = _trainer(tmp_path / "run", max_steps=4, **kw)
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    got = _snapshot(resumed)
    assert resumed.state.global_step == 4
    assert expected.keys() == got.keys()
    bad = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not bad, bad[:5]
    assert resumed.ema.num_updates == full.ema.num_updates == 4
    # the check can fail: the state at the stop differs from the final one
    assert any(not torch.equal(at_stop[k], expected[k]) for k in expected)
    ckpt_ema = load_file(str(tmp_path / "run" / "checkpoint-2" / "ema.safetensors"))
    assert all(torch.equal(ckpt_ema[k], at_stop[f"ema.{k}"]) for k in ckpt_ema)


def test_train_ibq_script_imagefolder(tmp_path, one_thread):
    rng = np.random.default_rng(0)
    for i in range(4):
        folder = tmp_path / "images" / "a"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    spec = importlib.util.spec_from_file_location("train_ibq", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    out = tmp_path / "out"
    cfg = TINY_TOKENIZER_CONFIG
    trainer = module.main([
        "--train_data_dir", str(tmp_path / "images"), "--resolution", "16", "--no_lpips",
        "--ch", str(cfg["ch"]), "--ch_mult", "1", "2", "--num_res_blocks", "1", "--attn_resolutions", "8",
        "--z_channels", str(cfg["z_channels"]), "--embed_dim", str(cfg["embed_dim"]),
        "--num_embeddings", str(cfg["num_embeddings"]), "--disc_ndf", "8", "--disc_num_layers", "2", "--output_dir", str(out),
        "--max_steps", "2", "--per_device_train_batch_size", "2", "--use_cpu", "--report_to", "none",
        "--save_strategy", "no", "--disable_tqdm", "true", "--shuffle_buffer_size", "0",
    ])  # fmt: skip
    assert trainer.state.global_step == 2
    model = IBQVQModel.from_pretrained(str(out))
    assert model.config.num_embeddings == cfg["num_embeddings"]
    assert (out / "README.md").is_file()


def test_rank_local_buffers_round_trip_through_the_rank_files(tmp_path, one_thread, monkeypatch):
    """Each rank saves and restores its own discriminator BatchNorm statistics and LeCam EMAs."""
    trainer = _trainer(tmp_path / "run", max_steps=1, save_strategy="no")
    trainer.train()
    monkeypatch.setattr(IBQTokenizerTrainingArguments, "world_size", property(lambda self: 2))
    monkeypatch.setattr(IBQTokenizerTrainingArguments, "process_index", property(lambda self: 1))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    trainer._save_rng_state(str(ckpt))
    assert (ckpt / "rng_state_1.pth").is_file() and (ckpt / "rank_buffers_1.safetensors").is_file()
    saved = {k: v.clone() for k, v in trainer._rank_local_buffers().items()}
    assert {"lecam.ema_real", "lecam.ema_fake"} < saved.keys() and any("running_mean" in k for k in saved)
    for b in trainer._rank_local_buffers().values():
        b.add_(1)
    trainer._load_rng_state(str(ckpt))
    assert all(torch.equal(v, saved[k]) for k, v in trainer._rank_local_buffers().items())
    # a discriminator of another shape is refused by name
    trainer.gan.lecam.register_buffer("extra", torch.zeros(()))
    with pytest.raises(ValueError, match=r"lecam\.extra"):
        trainer._load_rng_state(str(ckpt))


@pytest.mark.slow
def test_train_ibq_two_processes_stay_in_sync(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` (gloo on CPU): both ranks end with equal generator,
    discriminator and EMA weights, every rank's RNG state and rank-local buffers (BatchNorm, LeCam) are
    checkpointed, a 2-process resume ends bitwise equal to the uninterrupted run, and the export loads."""
    import shutil
    import subprocess

    data = tmp_path / "data" / "train"
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (data / label).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(data / label / f"{i}.png")

    def launch(out: Path, *extra: str) -> subprocess.CompletedProcess:
        cmd = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            str(SCRIPT), "--train_data_dir", str(tmp_path / "data"), "--resolution", "16",
            "--ch", "32", "--ch_mult", "1", "2", "--num_res_blocks", "1", "--attn_resolutions", "8",
            "--z_channels", "32", "--embed_dim", "16", "--num_embeddings", "64", "--no_lpips",
            "--disc_num_layers", "2", "--per_device_train_batch_size", "4", "--max_steps", "4",
            "--save_strategy", "steps", "--save_steps", "2", "--output_dir", str(out), "--report_to", "none",
            "--seed", "0", "--use_cpu", *extra,
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    out = tmp_path / "out"
    result = launch(out)
    assert result.stdout.count("ranks in sync") == 4  # 2 ranks × (GAN parameters, EMA)
    ckpt = out / "checkpoint-2"
    assert (ckpt / "rng_state_1.pth").exists()
    rank0, rank1 = (load_file(str(ckpt / f"rank_buffers_{r}.safetensors")) for r in (0, 1))
    shared = load_file(str(ckpt / "model.safetensors"))
    assert all(torch.equal(v, shared[k]) for k, v in rank0.items())  # model.safetensors holds rank 0's
    assert any(not torch.equal(rank0[k], rank1[k]) for k in rank0)  # the ranks saw different images
    assert IBQVQModel.from_pretrained(out).config.num_embeddings == 64

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(ckpt, resumed / "checkpoint-2")
    launch(resumed, "--resume_from_checkpoint", str(resumed / "checkpoint-2"))
    for name in (
        "model.safetensors",
        "ema.safetensors",
        "rank_buffers_0.safetensors",
        "rank_buffers_1.safetensors",
    ):
        a, b = load_file(str(out / "checkpoint-4" / name)), load_file(str(resumed / "checkpoint-4" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


_KILL_HARNESS = """
import os, runpy, signal, sys
import torch
torch.set_num_threads(1)
from ibq_hf.training.tokenizer_trainer import IBQTokenizerTrainer
original = IBQTokenizerTrainer._save_checkpoint
def save_then_die(self, model, trial):
    original(self, model, trial)
    if self.state.global_step == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
IBQTokenizerTrainer._save_checkpoint = save_then_die
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow  # ~40 s; the default suite covers atomic saves (test_crash_during_save_keeps_previous_checkpoint)
def test_train_ibq_resume_after_sigkill_is_bitwise_exact(tmp_path, one_thread):
    """train_ibq.py killed (SIGKILL, a real subprocess) right after checkpoint-3 and resumed ends with the same
    generator, discriminator, LeCam state and EMA export as an uninterrupted run."""
    import os
    import signal
    import subprocess

    data = tmp_path / "data" / "train"
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (data / label).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(data / label / f"{i}.png")

    def argv(out: Path, *extra: str) -> list[str]:
        return [
            "--train_data_dir", str(tmp_path / "data"), "--resolution", "16", "--ch", "32", "--ch_mult", "1", "2",
            "--num_res_blocks", "1", "--attn_resolutions", "8", "--z_channels", "32", "--embed_dim", "16",
            "--num_embeddings", "64", "--no_lpips", "--disc_num_layers", "2", "--per_device_train_batch_size", "4",
            "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "3", "--output_dir", str(out),
            "--report_to", "none", "--seed", "0", "--use_cpu", "--shuffle_buffer_size", "0",
            "--dataloader_num_workers", "0", *extra,
        ]  # fmt: skip

    def run(out: Path, kill_at: int, *extra: str) -> subprocess.CompletedProcess:
        # every run goes through the harness so all use one thread (bitwise equality needs equal kernels)
        env = {**os.environ, "KILL_AT": str(kill_at)}
        cmd = [sys.executable, "-c", _KILL_HARNESS, str(SCRIPT), *argv(out, *extra)]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)

    full, killed = tmp_path / "full", tmp_path / "killed"
    proc = run(full, -1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run(killed, 3)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert (killed / "checkpoint-3").is_dir() and not (killed / "checkpoint-6").exists()
    proc = run(killed, -1, "--resume_from_checkpoint", "latest")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in (
        "checkpoint-6/model.safetensors",
        "checkpoint-6/ema.safetensors",
        "diffusion_pytorch_model.safetensors",
    ):
        a, b = load_file(str(full / name)), load_file(str(killed / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # the check can fail: the state at the kill differs from the final one
    early, final = (
        load_file(str(killed / "checkpoint-3/model.safetensors")),
        load_file(str(full / "checkpoint-6/model.safetensors")),
    )
    assert not all(torch.equal(early[k], final[k]) for k in final)
