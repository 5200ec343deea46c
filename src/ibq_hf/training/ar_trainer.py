"""Train :class:`~ibq_hf.IBQARForImageGeneration` with HF ``Trainer`` on pre-extracted image-token codes.

The data are rows ``{"input_ids": [grid²] code ids, "label": class id}`` (see ``examples/extract_codes.py``).
Training follows the reference (§4.7): input = codes[:, :-1] behind the class token, targets = all grid² codes
(position 0, the class token, predicts code 0), mean cross-entropy; AdamW (0.9, 0.95), eps 1e-8, nanoGPT
groups with the optional weight-decay quirk; the VAR lr / wd schedule; gradient clipping 1.0. Class-label
dropout for classifier-free guidance happens inside the model in train mode.

What ``Trainer`` does not do, :class:`IBQARTrainer` adds: checkpoints are written to a staging folder and renamed
into place, so a crash during a save never leaves a half-written ``checkpoint-N`` that ``resume_from_checkpoint``
would pick up.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from ibq_hf.training.ar_schedule import WeightDecayScheduleCallback, ar_param_groups, get_var_schedule
from ibq_hf.training.checkpointing import AtomicCheckpointMixin


@dataclass
class IBQARTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with the reference AR defaults (lr 3e-4, wd 0.05, betas (0.9, 0.95), clip 1.0).

    Extra fields drive the VAR schedule: ``final_lr_ratio`` (``wpe``), ``final_weight_decay`` (``twde``, 0 keeps
    wd constant) and ``weight_decay_quirk`` (decay biases / norms too, as the released weights were trained).
    ``warmup_steps`` is the reference ``wp_it`` (a value < 1 is a fraction of the run, as in ``Trainer``).
    """

    learning_rate: float = field(default=3e-4, metadata={"help": "Peak learning rate (reference 3e-4)."})
    weight_decay: float = field(
        default=0.05, metadata={"help": "Initial AdamW weight decay (reference 0.05)."}
    )
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2 (reference 0.95)."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient-norm clipping (reference 1.0)."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep dataset columns; the collator picks input_ids and label."}
    )
    final_lr_ratio: float = field(
        default=0.1, metadata={"help": "wpe: lr factor reached at the last step (0.1 B/L, 0.01 XL/XXL)."}
    )
    final_weight_decay: float = field(
        default=0.0, metadata={"help": "twde: weight decay reached at the last step by a cosine; 0 keeps it."}
    )
    weight_decay_quirk: bool = field(
        default=True,
        metadata={"help": "Decay every param group (biases, norms) as the reference run did."},
    )


class ARCodesCollator:
    """Rows ``{"input_ids": [grid²], "label": int}`` → model inputs.

    Returns ``input_ids`` [B, grid²-1] (codes[:, :-1]), ``labels`` [B, grid²] (all codes) and
    ``class_labels`` [B], so logits [B, grid², V] are scored against every code.
    """

    def __init__(self, num_image_tokens: int, label_column: str = "label") -> None:
        if num_image_tokens < 1:
            raise ValueError(f"num_image_tokens must be >= 1, got {num_image_tokens}.")
        self.num_image_tokens = num_image_tokens
        self.label_column = label_column

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Stack a list of rows into the batch described in the class docstring."""
        if not rows:
            raise ValueError("ARCodesCollator got an empty batch.")
        missing = {"input_ids", self.label_column} - set(rows[0])
        if missing:
            raise ValueError(
                f"Code rows need the columns 'input_ids' and {self.label_column!r}; missing {sorted(missing)}."
            )
        codes = torch.stack([torch.as_tensor(r["input_ids"], dtype=torch.long).reshape(-1) for r in rows])
        if codes.shape[1] != self.num_image_tokens:
            raise ValueError(
                f"Each row must hold {self.num_image_tokens} codes (grid_size²), got {codes.shape[1]}; "
                "check --grid_size against the tokenizer used to extract the codes."
            )
        labels = torch.as_tensor([int(r[self.label_column]) for r in rows], dtype=torch.long)
        return {"input_ids": codes[:, :-1], "labels": codes, "class_labels": labels}


def load_codes_dataset(source: str, split: str = "train") -> Any:
    """A codes dataset from a folder of parquet files, a ``save_to_disk`` folder, or a Hub dataset id."""
    import datasets

    if os.path.isdir(source):
        if os.path.exists(os.path.join(source, "dataset_info.json")) or os.path.exists(
            os.path.join(source, "state.json")
        ):
            loaded = datasets.load_from_disk(source)
            return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        files = sorted(glob.glob(os.path.join(source, "**", "*.parquet"), recursive=True))
        if not files:
            raise ValueError(
                f"{source} holds no *.parquet files (write them with examples/extract_codes.py)."
            )
        dataset = datasets.load_dataset("parquet", data_files={split: files}, split=split)
    else:
        dataset = datasets.load_dataset(source, split=split)
    missing = {"input_ids", "label"} - set(dataset.column_names)
    if missing:
        raise ValueError(
            f"Codes dataset {source!r} lacks columns {sorted(missing)}; it needs input_ids and label."
        )
    return dataset


class IBQARTrainer(AtomicCheckpointMixin, Trainer):
    """``Trainer`` with the reference AdamW groups, the VAR lr / wd schedule and atomic checkpoints.

    With ``frozen_tokenizer`` (an :class:`~ibq_hf.IBQVQModel`), batches may hold images instead of codes
    (``{"pixel_values" [B,3,H,W] in [-1,1], "class_labels" [B]}``, e.g. from ``training.data.collate_images``):
    they are tokenized on the model's device at every step, as the reference does (fresh random crops each
    epoch). Set ``remove_unused_columns=False`` so Trainer keeps ``pixel_values``.
    """

    args: IBQARTrainingArguments

    def __init__(self, *args: Any, frozen_tokenizer: torch.nn.Module | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, IBQARTrainingArguments):
            raise ValueError("IBQARTrainer needs IBQARTrainingArguments (it holds the schedule settings).")
        self.frozen_tokenizer = frozen_tokenizer
        if frozen_tokenizer is not None:
            frozen_tokenizer.eval().requires_grad_(False)

    def compute_loss(
        self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False, **kwargs: Any
    ) -> Any:
        if "pixel_values" in inputs:
            inputs = self.tokenize_batch(inputs)
        return super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)

    @torch.no_grad()
    def tokenize_batch(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Images → the code-row layout of :class:`ARCodesCollator` (input codes[:, :-1], labels all codes)."""
        if self.frozen_tokenizer is None:
            raise ValueError(
                "The batch holds pixel_values but the trainer has no frozen_tokenizer; pass "
                "IBQARTrainer(..., frozen_tokenizer=IBQVQModel.from_pretrained(...)) or train on extracted codes."
            )
        pixels = inputs["pixel_values"]
        tokenizer = self.frozen_tokenizer.to(pixels.device)
        codes = tokenizer.tokenize(pixels.to(tokenizer.dtype)).flatten(1)  # [B, h·w] raster order
        return {"input_ids": codes[:, :-1], "labels": codes, "class_labels": inputs["class_labels"]}

    # ---- optimizer and schedule --------------------------------------------------------------------------

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """AdamW over nanoGPT groups (dim ≥ 2 decayed; with the quirk, all groups), betas/eps from args."""
        if self.optimizer is None:
            groups = ar_param_groups(
                self.model if model is None else model,
                self.args.weight_decay,
                quirk_decay_all=self.args.weight_decay_quirk,
            )
            self.optimizer = torch.optim.AdamW(
                groups,
                lr=self.args.learning_rate,
                betas=(self.args.adam_beta1, self.args.adam_beta2),
                eps=self.args.adam_epsilon,
            )
        # Callbacks only see the optimizer through the handler; the wd callback needs it.
        self.callback_handler.optimizer = self.optimizer
        return self.optimizer

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """The VAR lr factor as ``LambdaLR`` plus the matching weight-decay callback."""
        if self.lr_scheduler is None:
            optimizer = self.optimizer if optimizer is None else optimizer
            self.lr_scheduler = get_var_schedule(
                optimizer,
                self.args.get_warmup_steps(num_training_steps),
                num_training_steps,
                self.args.final_lr_ratio,
            )
            self._created_lr_scheduler = True
        self.pop_callback(WeightDecayScheduleCallback)
        self.add_callback(
            WeightDecayScheduleCallback(
                num_training_steps,
                initial=self.args.weight_decay,
                final=self.args.final_weight_decay,
                decay_all_groups=self.args.weight_decay_quirk,
            )
        )
        return self.lr_scheduler


def write_ar_model_card(
    model: Any, save_directory: str | os.PathLike, *, dataset: str | None = None, repo_id: str | None = None
) -> str:
    """Model card for an AR model trained by ``examples/train_ar.py`` (how it was trained, how to load it)."""
    from ibq_hf.hub_utils import write_model_card

    cfg = model.config
    n_params = sum(p.numel() for p in model.parameters())
    name = repo_id or os.path.basename(os.path.abspath(save_directory))
    usage = (
        "import torch\n"
        "from ibq_hf import IBQARForImageGeneration\n\n"
        f'model = IBQARForImageGeneration.from_pretrained("{name}")\n'
        "tokens = model.generate(class_labels=torch.tensor([0]), guidance_scale=2.0)  "
        f"# [1, {cfg.num_image_tokens}] code ids\n"
        "# decode them with the IBQ tokenizer the codes came from: vqvae.decode_indices(tokens.view(1, "
        f"{cfg.grid_size}, {cfg.grid_size}))"
    )
    description = (
        f"A class-conditional IBQ autoregressive transformer ({n_params:,} parameters, {cfg.num_hidden_layers} "
        f"layers, width {cfg.hidden_size}) over a {cfg.grid_size}×{cfg.grid_size} grid of {cfg.vocab_size} "
        f"tokenizer codes and {cfg.num_classes} classes, trained with ibq-hf's `examples/train_ar.py` "
        "(reference recipe: AdamW (0.9, 0.95), VAR lr / weight-decay schedule, gradient clipping 1.0, 10 % "
        "class-label dropout for classifier-free guidance)."
        + (f" Training codes: `{dataset}`." if dataset else "")
    )
    return str(
        write_model_card(
            save_directory,
            title=f"IBQ AR model ({cfg.grid_size}×{cfg.grid_size} tokens, {cfg.num_classes} classes)",
            description=description,
            usage=usage,
            library_name="transformers",
            tags=["image-generation", "class-conditional", "autoregressive"],
            pipeline_tag=None,
        )
    )
