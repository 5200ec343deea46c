"""Train the IBQ tokenizer (:class:`~ibq_hf.IBQVQModel` + PatchGAN) with HF ``Trainer`` (reference §3.1, §3.4).

Each training step (manual two-optimiser GAN step inside :meth:`IBQTokenizerTrainer.training_step`):

1. one generator forward: x̂, indices, quant_loss, entropy_loss;
2. **discriminator step first**, on x and x̂.detach(): L_D = 0.05·LeCam + hinge, its own Adam, stepped here;
3. generator loss L_G = mean L1 + mean LPIPS + 0.1·g + 1.0·quant_loss + 0.05·entropy_loss (g: non-saturating
   loss on patch-averaged logits, D frozen), backward; ``Trainer`` steps the generator Adam (it owns it);
4. the EMA of the generator is updated after the step (a callback on ``on_step_end``).

Both Adams: lr 1e-4, betas (0.5, 0.9), eps 1e-8, no weight decay; lr ×``lr_drop_rate`` at each of
``lr_drop_steps`` / ``lr_drop_epochs`` (for both optimisers). Checkpoints hold the generator, the discriminator and
the LeCam buffers (``model.safetensors`` of :class:`IBQTokenizerGAN`), the generator optimiser / scheduler
(``optimizer.pt`` / ``scheduler.pt``), the discriminator's (``discriminator_optimizer.pt``), the EMA
(``ema.safetensors`` + ``ema_state.json``) and the RNG state; under DDP each rank also writes its own
discriminator BatchNorm statistics and LeCam EMAs (``rank_buffers_<rank>.safetensors``), so
``resume_from_checkpoint`` continues exactly on any number of processes.
Checkpoints are written atomically (staging folder + rename) by the mechanism of
:class:`~ibq_hf.training.checkpointing.AtomicCheckpointMixin`.

Gradient accumulation keeps this order: the discriminator steps once per optimizer step, on every micro-batch of
the step, before any generator loss (see :meth:`IBQTokenizerTrainer.training_step`). Under DDP the gradients are
all-reduced by hand (the sub-networks are called outside the DDP wrapper), once per optimizer step; the forwards
run under ``accelerator.autocast()`` so ``--bf16`` / ``--fp16`` apply.
"""

from __future__ import annotations

import bisect
import copy
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import has_length
from transformers.utils import logging

from ibq_hf.lpips import LPIPS
from ibq_hf.models.modeling_vq import IBQVQModel
from ibq_hf.models.quantizer import CodebookUsage
from ibq_hf.training.checkpointing import AtomicCheckpointMixin
from ibq_hf.training.ema import EMAModel
from ibq_hf.training.losses import (
    LeCamRegularizer,
    NLayerDiscriminator,
    hinge_d_loss,
    non_saturating_g_loss,
)
from ibq_hf.training.stream_trainer import StreamResumeMixin

logger = logging.get_logger(__name__)

__all__ = [
    "IBQTokenizerGAN",
    "IBQTokenizerTrainer",
    "IBQTokenizerTrainingArguments",
    "lr_drop_factor",
]

DISC_OPTIMIZER_NAME = "discriminator_optimizer.pt"
EMA_WEIGHTS_NAME = "ema.safetensors"
EMA_STATE_NAME = "ema_state.json"
RANK_BUFFERS_NAME = "rank_buffers_{}.safetensors"  # per-rank discriminator BatchNorm + LeCam buffers


@dataclass
class IBQTokenizerTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with the reference tokenizer recipe as defaults (reference §3.1, §3.4)."""

    learning_rate: float = field(default=1e-4, metadata={"help": "Adam lr of generator and discriminator."})
    adam_beta1: float = field(default=0.5, metadata={"help": "Adam beta1 (reference 0.5)."})
    adam_beta2: float = field(default=0.9, metadata={"help": "Adam beta2 (reference 0.9)."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "Adam epsilon."})
    weight_decay: float = field(default=0.0, metadata={"help": "Must stay 0 (plain Adam, reference)."})
    max_grad_norm: float = field(default=0.0, metadata={"help": "Generator grad clipping (reference: none)."})
    lr_scheduler_type: str = field(
        default="constant", metadata={"help": "Unused: the lr drop schedule applies."}
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep pixel_values / class_labels."})
    lr_drop_epochs: list[int] = field(
        default_factory=list,
        metadata={
            "help": "Epochs E after which both lrs are multiplied by lr_drop_rate (reference 250 300)."
        },
    )
    lr_drop_steps: list[int] = field(
        default_factory=list, metadata={"help": "Optimizer steps after which both lrs drop (alternative)."}
    )
    lr_drop_rate: float = field(default=0.1, metadata={"help": "lr factor per drop (reference 0.1)."})
    ema_decay: float = field(default=0.999, metadata={"help": "EMA decay of the generator weights."})
    perceptual_weight: float = field(default=1.0, metadata={"help": "LPIPS weight (0 or --no_lpips: off)."})
    gen_loss_weight: float = field(default=0.1, metadata={"help": "Weight of the adversarial G loss."})
    quant_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the quantizer loss."})
    entropy_loss_weight: float = field(default=0.05, metadata={"help": "Weight of the entropy loss."})
    lecam_loss_weight: float = field(default=0.05, metadata={"help": "Weight of LeCam in L_D."})
    lecam_decay: float = field(default=0.999, metadata={"help": "Decay of the LeCam logit EMAs."})
    disc_ndf: int = field(default=64, metadata={"help": "Discriminator base width."})
    disc_num_layers: int = field(default=3, metadata={"help": "Discriminator depth."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weight_decay != 0.0:
            raise ValueError("The reference uses Adam without weight decay; keep weight_decay at 0.")
        if self.lr_drop_epochs and self.lr_drop_steps:
            raise ValueError("Give lr_drop_epochs or lr_drop_steps, not both.")


def lr_drop_factor(step: int, drop_steps: Sequence[int], rate: float) -> float:
    """lr factor after ``step`` optimizer steps: ``rate`` to the number of drop points <= step."""
    return rate ** bisect.bisect_right(sorted(drop_steps), step)


class IBQTokenizerGAN(nn.Module):
    """Generator + discriminator + LeCam buffers in one module, so ``Trainer`` checkpoints hold all of them.

    LPIPS (frozen, optional) is attached but left out of ``state_dict`` (checkpoints stay small; it is rebuilt
    from its weight files).
    """

    def __init__(
        self,
        generator: IBQVQModel,
        discriminator: nn.Module,
        lecam: LeCamRegularizer | None = None,
        lpips: LPIPS | None = None,
    ) -> None:
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.lecam = lecam if lecam is not None else LeCamRegularizer()
        self.lpips = lpips
        if lpips is not None:
            lpips.requires_grad_(False)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        for key in [k for k in state if k.startswith(f"{prefix}lpips.")]:
            del state[key]
        return state

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Reconstruction (the trainer calls the sub-networks itself)."""
        return self.generator(pixel_values).sample


class _EMAStepCallback(TrainerCallback):
    def __init__(self, trainer: IBQTokenizerTrainer) -> None:
        self.trainer = trainer

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.ema.step(self.trainer.gan.generator)


class IBQTokenizerTrainer(StreamResumeMixin, AtomicCheckpointMixin, Trainer):
    """``Trainer`` for the IBQ tokenizer GAN (atomic checkpoints); the model must be an :class:`IBQTokenizerGAN`."""

    args: IBQTokenizerTrainingArguments

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, IBQTokenizerTrainingArguments):
            raise ValueError("IBQTokenizerTrainer needs IBQTokenizerTrainingArguments.")
        if not isinstance(self.model, IBQTokenizerGAN):
            raise ValueError(
                "IBQTokenizerTrainer needs an IBQTokenizerGAN model (generator + discriminator)."
            )
        self.gan: IBQTokenizerGAN = self.model
        self.ema = EMAModel(self.gan.generator, decay=self.args.ema_decay)
        self.disc_optimizer: torch.optim.Optimizer | None = None
        self.disc_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.usage = CodebookUsage(self.gan.generator.config.num_embeddings)
        self._log_sums: dict[str, float] = {}
        self._log_count = 0
        self.step_hooks: list[Any] = []  # called as hook(phase, x_rec) with phase "disc" / "gen" (tests)
        self.add_callback(_EMAStepCallback(self))
        if self.args.torch_compile:
            self._compile_networks()

    def _compile_networks(self) -> None:
        """``--torch_compile``: compile the networks this trainer calls itself (Trainer only compiles the unused
        wrapper). In place (``Module.compile``), so parameter names, checkpoints and the EMA are unchanged; the
        quantizer stays eager (its chunked path is a custom ``autograd.Function``)."""
        options = {"backend": self.args.torch_compile_backend or "inductor"}
        if self.args.torch_compile_mode is not None:
            options["mode"] = self.args.torch_compile_mode
        gan = self.gan
        for module in (gan.generator.encoder, gan.generator.decoder, gan.discriminator, gan.lpips):
            if module is not None:
                module.compile(**options)

    # ---- optimisers and schedule -------------------------------------------------------------------------

    def _adam(self, params: Sequence[nn.Parameter]) -> torch.optim.Adam:
        a = self.args
        return torch.optim.Adam(
            list(params), lr=a.learning_rate, betas=(a.adam_beta1, a.adam_beta2), eps=a.adam_epsilon
        )

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """Generator Adam (owned and stepped by ``Trainer``) and discriminator Adam (stepped here)."""
        if self.optimizer is None:
            self.optimizer = self._adam([p for p in self.gan.generator.parameters() if p.requires_grad])
        if self.disc_optimizer is None:
            self.disc_optimizer = self._adam(
                [p for p in self.gan.discriminator.parameters() if p.requires_grad]
            )
        return self.optimizer

    def _drop_steps(self) -> list[int]:
        if self.args.lr_drop_steps:
            return list(self.args.lr_drop_steps)
        if not self.args.lr_drop_epochs:
            return []
        if not has_length(self.train_dataset):
            raise ValueError("lr_drop_epochs needs a dataset with a length; use lr_drop_steps instead.")
        steps_per_epoch = max(len(self.get_train_dataloader()) // self.args.gradient_accumulation_steps, 1)
        return [e * steps_per_epoch for e in self.args.lr_drop_epochs]

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        drops, rate = self._drop_steps(), self.args.lr_drop_rate

        def factor(step: int) -> float:
            return lr_drop_factor(step, drops, rate)

        if self.lr_scheduler is None:
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer if optimizer is None else optimizer, factor
            )
            self._created_lr_scheduler = True
        if self.disc_scheduler is None:
            assert self.disc_optimizer is not None
            self.disc_scheduler = torch.optim.lr_scheduler.LambdaLR(self.disc_optimizer, factor)
        return self.lr_scheduler

    # ---- the GAN step ------------------------------------------------------------------------------------

    @staticmethod
    def _all_reduce_grads(module: nn.Module) -> None:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        world = torch.distributed.get_world_size()
        for p in module.parameters():
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad)
                p.grad /= world

    def get_batch_samples(
        self, epoch_iterator: Any, num_batches: int, device: torch.device
    ) -> tuple[list, Any]:
        """Keep the micro-batches of the coming optimizer step: the discriminator phase needs all of them."""
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._start_window(batch_samples)
        return batch_samples, num_items

    def _start_window(self, batches: list[dict[str, Any]]) -> None:
        """The micro-batches of one optimizer step; released once each has been through ``training_step``."""
        self._window: list[dict[str, Any]] | None = batches
        self._window_calls = 0
        self._window_disc_terms: dict[str, torch.Tensor] | None = None

    def _step_with_loss_scaler(self, optimizer: torch.optim.Optimizer) -> bool:
        """Step ``optimizer`` through accelerate's fp16 ``GradScaler`` when there is one; returns False if skipped.

        With a scaler (``--fp16``) the gradients are unscaled and checked: on inf/NaN the step is skipped and the
        scale backs off, exactly what accelerate's ``AcceleratedOptimizer`` does for the generator (which cannot
        step the discriminator itself: under gradient accumulation D steps on the window's first micro-batch,
        while accelerate only steps at the last). One scaler serves both: D's ``update`` runs before any
        generator backward of the window, so each optimizer's gradients carry a single scale.
        """
        scaler = self.accelerator.scaler
        if scaler is None:
            optimizer.step()
            return True
        scale = scaler.get_scale()
        scaler.step(optimizer)  # unscale_, inf check, step unless found
        scaler.update()
        return scaler.get_scale() >= scale  # the scale backs off exactly when the step was skipped

    def _discriminator_step(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """One discriminator optimizer step on ``pairs`` of (x, x̂.detach()) micro-batches.

        The logits of all micro-batches are concatenated before the hinge and LeCam terms, so the loss, the LeCam
        EMA update (once per step) and hence the gradient equal those of one batch holding every micro-batch
        (only BatchNorm statistics stay per micro-batch, as they stay per rank under DDP).
        """
        gan, a = self.gan, self.args
        assert self.disc_optimizer is not None and self.disc_scheduler is not None
        self.disc_optimizer.zero_grad(set_to_none=True)
        with self.accelerator.autocast():
            real = [gan.discriminator(x.detach()) for x, _ in pairs]
            fake = [gan.discriminator(x_rec.detach()) for _, x_rec in pairs]
            logits_real, logits_fake = torch.cat(real), torch.cat(fake)
            hinge = hinge_d_loss(logits_real, logits_fake)
            lecam = gan.lecam(logits_real, logits_fake)
            d_loss = a.lecam_loss_weight * lecam + hinge
        self.accelerator.backward(d_loss)  # scaled by accelerate's GradScaler under --fp16
        self._all_reduce_grads(gan.discriminator)  # an inf on any rank reaches every rank: all skip together
        if self._step_with_loss_scaler(self.disc_optimizer):
            self.disc_scheduler.step()  # as Trainer does for G: a skipped step does not advance the schedule
        self.disc_optimizer.zero_grad(set_to_none=True)
        return {
            "d_loss": d_loss.detach(), "d_hinge_loss": hinge.detach(), "lecam_loss": lecam.detach(),
            "logits_real": logits_real.detach().float().mean(), "logits_fake": logits_fake.detach().float().mean(),
        }  # fmt: skip

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        """One micro-batch: D step first (reference order), then the generator loss backward.

        With ``gradient_accumulation_steps`` N > 1 the discriminator still steps once per optimizer step and before
        any generator loss: at the first micro-batch of the step, x̂ of every micro-batch is computed without
        gradients and the D step runs on all of them (:meth:`_discriminator_step`); each micro-batch then
        recomputes x̂ with gradients (one extra generator forward per micro-batch, the price of the reference order)
        and adds its generator loss weighted by its share of the step's images. The result equals one step on the
        whole batch except for terms that are not means over images — the batch-entropy of the quantizer and
        BatchNorm statistics — which stay per micro-batch, exactly as they stay per rank under DDP.
        """
        gan, a = self.gan, self.args
        gan.train()
        if getattr(self, "_window", None) is None or not any(inputs is b for b in self._window):
            self._start_window([inputs])  # called outside the Trainer loop (e.g. by a test): a window of one
        window = self._window
        raw_inputs = inputs
        inputs = self._prepare_inputs(inputs)
        x = inputs["pixel_values"]
        with self.accelerator.autocast():
            out = gan.generator(x)
        x_rec = out.sample

        # 1) discriminator step on x and x̂.detach() (reference order: D first), once per optimizer step: at the
        # step's first micro-batch, on its x̂ (whose graph is reused below: the generator does not change before
        # the optimizer step) and on the other micro-batches' x̂, computed without gradients.
        for hook in self.step_hooks:
            hook("disc", x_rec)
        if self._window_disc_terms is None:
            pairs = []
            for batch in window:
                if batch is raw_inputs:
                    pairs.append((x, x_rec.detach()))
                    continue
                xb = self._prepare_inputs(batch)["pixel_values"]
                with torch.no_grad(), self.accelerator.autocast():
                    pairs.append((xb, gan.generator(xb).sample))
            self._window_disc_terms = self._discriminator_step(pairs)
        disc_terms = self._window_disc_terms
        weight = len(x) / sum(len(b["pixel_values"]) for b in window)  # this micro-batch's share of the step
        self._window_calls += 1
        if self._window_calls == len(window):
            self._window = None  # every micro-batch done: release them

        # 2) generator loss (D frozen, already stepped); Trainer steps the generator optimiser afterwards.
        for hook in self.step_hooks:
            hook("gen", x_rec)
        gan.discriminator.requires_grad_(False)
        try:
            with self.accelerator.autocast():
                rec = (x - x_rec).abs().mean()
                perceptual = x_rec.new_zeros(())
                if gan.lpips is not None and a.perceptual_weight > 0:
                    perceptual = gan.lpips(x, x_rec).mean()
                g_loss = non_saturating_g_loss(gan.discriminator(x_rec))
                quant = out.quant_loss if out.quant_loss is not None else x_rec.new_zeros(())
                entropy = out.entropy_loss if out.entropy_loss is not None else x_rec.new_zeros(())
                loss = (
                    rec
                    + a.perceptual_weight * perceptual
                    + a.gen_loss_weight * g_loss
                    + a.quant_loss_weight * quant
                    + a.entropy_loss_weight * entropy
                )
            self.accelerator.backward(loss * weight)
        finally:
            gan.discriminator.requires_grad_(True)
        if self.accelerator.sync_gradients:
            self._all_reduce_grads(gan.generator)  # the sum over micro-batches, reduced once

        self.usage.update(out.indices.detach())
        terms = {
            "rec_loss": rec, "perceptual_loss": perceptual, "g_loss": g_loss, "quant_loss": quant,
            "entropy_loss": entropy, **disc_terms,
        }  # fmt: skip
        for k, v in terms.items():
            self._log_sums[k] = self._log_sums.get(k, 0.0) + float(v.detach())
        self._log_count += 1
        return (loss * weight).detach()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean loss terms since the last log, codebook usage / perplexity and the D lr."""
        if "loss" in logs and self._log_count:
            sums = torch.tensor([*self._log_sums.values(), float(self._log_count)], dtype=torch.float64)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                sums = sums.to(self.args.device)
                torch.distributed.all_reduce(sums)
                sums = sums.cpu()
            for k, v in zip(self._log_sums, sums[:-1].tolist(), strict=True):
                logs[f"train/{k}"] = v / float(sums[-1])
            self.usage.all_reduce()
            stats = self.usage.compute()
            logs["train/codebook_used"] = stats["used"]
            logs["train/codebook_utilization"] = stats["utilization"]
            logs["train/codebook_perplexity"] = stats["perplexity"]
            if self.disc_optimizer is not None:
                logs["train/disc_learning_rate"] = self.disc_optimizer.param_groups[0]["lr"]
            self.usage.reset()
            self._log_sums, self._log_count = {}, 0
        super().log(logs, start_time)

    # ---- checkpoints -------------------------------------------------------------------------------------

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The GAN state dict (Trainer) plus the EMA shadows (``ema.safetensors`` + ``ema_state.json``)."""
        super().save_model(output_dir, _internal_call=_internal_call)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if self.args.should_save:
            os.makedirs(output_dir, exist_ok=True)
            state = self.ema.state_dict()
            shadow = {k: v.detach().contiguous().cpu() for k, v in state["shadow"].items()}
            save_file(shadow, os.path.join(output_dir, EMA_WEIGHTS_NAME), metadata={"format": "pt"})
            with open(os.path.join(output_dir, EMA_STATE_NAME), "w") as f:
                json.dump({"decay": state["decay"], "num_updates": state["num_updates"]}, f)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        if self.args.should_save and self.disc_optimizer is not None and self.disc_scheduler is not None:
            torch.save(
                {
                    "optimizer": self.disc_optimizer.state_dict(),
                    "scheduler": self.disc_scheduler.state_dict(),
                },
                os.path.join(output_dir, DISC_OPTIMIZER_NAME),
            )

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, DISC_OPTIMIZER_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{checkpoint} lacks {DISC_OPTIMIZER_NAME}; cannot resume the discriminator."
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert self.disc_optimizer is not None and self.disc_scheduler is not None
        self.disc_optimizer.load_state_dict(state["optimizer"])
        self.disc_scheduler.load_state_dict(state["scheduler"])
        self.load_ema(checkpoint)

    def _rank_local_buffers(self) -> dict[str, torch.Tensor]:
        """Buffers that differ between ranks: the discriminator's BatchNorm statistics and the LeCam EMAs.

        ``model.safetensors`` holds rank 0's copy only; under DDP each rank saves its own next to its RNG state.
        """
        buffers = {f"discriminator.{n}": b for n, b in self.gan.discriminator.named_buffers()}
        buffers.update({f"lecam.{n}": b for n, b in self.gan.lecam.named_buffers()})
        return buffers

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        if self.args.world_size > 1:
            state = {k: v.detach().cpu().contiguous() for k, v in self._rank_local_buffers().items()}
            path = os.path.join(output_dir, RANK_BUFFERS_NAME.format(self.args.process_index))
            save_file(state, path, metadata={"format": "pt"})

    def _load_rng_state(self, checkpoint: str | None) -> None:
        super()._load_rng_state(checkpoint)
        if checkpoint is None or self.args.world_size <= 1:
            return
        path = os.path.join(checkpoint, RANK_BUFFERS_NAME.format(self.args.process_index))
        if not os.path.isfile(path):
            logger.warning(
                "%s is missing (a checkpoint written by fewer processes): rank %d restarts its discriminator "
                "BatchNorm statistics and LeCam EMAs from rank 0's.",
                path,
                self.args.process_index,
            )
            return
        saved = load_file(path)
        buffers = self._rank_local_buffers()
        if saved.keys() != buffers.keys():
            raise ValueError(
                f"{path} holds buffers {sorted(saved.keys() ^ buffers.keys())} that do not match this "
                "discriminator; resume with the architecture that wrote the checkpoint."
            )
        with torch.no_grad():
            for k, b in buffers.items():
                b.copy_(saved[k].to(b.device))

    def load_ema(self, checkpoint: str) -> None:
        """Restore the EMA saved in ``checkpoint``."""
        with open(os.path.join(checkpoint, EMA_STATE_NAME)) as f:
            meta = json.load(f)
        shadow = load_file(os.path.join(checkpoint, EMA_WEIGHTS_NAME))
        self.ema.load_state_dict({**meta, "shadow": shadow})

    # ---- export ------------------------------------------------------------------------------------------

    def ema_generator(self) -> IBQVQModel:
        """A CPU float32 copy of the generator with the EMA weights, in eval mode."""
        generator = copy.deepcopy(self.gan.generator).to("cpu", torch.float32)
        self.ema.copy_to(generator)
        return generator.eval()

    def save_ema_tokenizer(
        self, save_directory: str, *, dataset: str | None = None, repo_id: str | None = None
    ) -> IBQVQModel:
        """``save_pretrained`` the EMA tokenizer plus a model card (main process); returns the EMA model."""
        generator = self.ema_generator()
        if self.is_world_process_zero():
            card = {
                "name": repo_id,
                "trained": True,
                "dataset": dataset,
                "steps": self.state.global_step,
                "ema_weights": True,
                "ema_decay": self.ema.decay,
            }
            generator.save_pretrained(save_directory, model_card=card)
        return generator


def build_tokenizer_gan(
    generator: IBQVQModel,
    args: IBQTokenizerTrainingArguments,
    *,
    lpips_weights: str | None = None,
    lpips_heads: str | None = None,
    no_lpips: bool = False,
    lpips_random_backbone: bool = False,
) -> IBQTokenizerGAN:
    """Generator + reference PatchGAN + LeCam (+ LPIPS from local files, or none)."""
    discriminator = NLayerDiscriminator(
        input_nc=generator.config.out_channels, ndf=args.disc_ndf, n_layers=args.disc_num_layers
    )
    lpips = None
    if not no_lpips and args.perceptual_weight > 0:
        lpips = LPIPS.from_pretrained_weights(
            vgg_path=lpips_weights, heads_path=lpips_heads, random_backbone=lpips_random_backbone
        )
    return IBQTokenizerGAN(generator, discriminator, LeCamRegularizer(decay=args.lecam_decay), lpips)
