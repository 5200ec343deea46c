"""Train :class:`~ibq_hf.IBQARForImageGeneration` with HF ``Trainer`` on pre-extracted image-token codes.

The data are rows ``{"input_ids": [grid²] code ids, "label": class id}`` (see ``examples/extract_codes.py``), or
rows holding N crops per image (``input_ids`` [N, grid²]) from which :class:`CodeCrops` and
:class:`CodeCropSampler` draw one crop per image per epoch.
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
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from ibq_hf.training.ar_schedule import (
    DEFAULT_FINAL_LR_RATIO,
    DEFAULT_FINAL_WEIGHT_DECAY,
    WeightDecayScheduleCallback,
    ar_param_groups,
    ar_training_preset,
    ar_training_preset_for_config,
    get_var_schedule,
)
from ibq_hf.training.checkpointing import AtomicCheckpointMixin
from ibq_hf.training.stream_trainer import StreamResumeMixin


@dataclass
class IBQARTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with the reference AR defaults (lr 3e-4, wd 0.05, betas (0.9, 0.95), clip 1.0).

    Extra fields drive the VAR schedule: ``final_lr_ratio`` (``wpe``), ``final_weight_decay`` (``twde``, 0 keeps
    wd constant) and ``weight_decay_quirk`` (decay biases / norms too, as the released weights were trained).
    ``final_lr_ratio`` / ``final_weight_decay`` left ``None`` take the reference value of the model's size (XL/XXL
    ``wpe`` 0.01, XXL ``twde`` 0.08; :data:`~ibq_hf.training.ar_schedule.AR_TRAINING_PRESETS`), else 0.1 / 0.
    ``warmup_steps`` is the reference ``wp_it`` (a value < 1 is a fraction of the run, as in ``Trainer``);
    ``examples/train_ar.py`` derives it and ``max_steps`` from epochs (:func:`~ibq_hf.training.ar_schedule.
    resolve_ar_schedule`).
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
    final_lr_ratio: float | None = field(
        default=None,
        metadata={
            "help": "wpe: lr factor reached at the last step (default: the size's, 0.1 B/L, 0.01 XL/XXL)."
        },
    )
    final_weight_decay: float | None = field(
        default=None,
        metadata={
            "help": "twde: weight decay reached at the last step by a cosine; 0 keeps it (default: the size's, "
            "0.08 for XXL, else 0)."
        },
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
        first = torch.as_tensor(rows[0]["input_ids"])
        if first.dim() == 2 and first.shape[0] > 1:
            raise ValueError(
                f"Code rows hold {first.shape[0]} crops each (input_ids {list(first.shape)}): wrap the dataset in "
                "ibq_hf.training.ar_trainer.CodeCrops so IBQARTrainer draws one crop per image per epoch "
                "(examples/train_ar.py does this)."
            )
        codes = torch.stack([torch.as_tensor(r["input_ids"], dtype=torch.long).reshape(-1) for r in rows])
        if codes.shape[1] != self.num_image_tokens:
            raise ValueError(
                f"Each row must hold {self.num_image_tokens} codes (grid_size²), got {codes.shape[1]}; "
                "check --grid_size against the tokenizer used to extract the codes."
            )
        labels = torch.as_tensor([int(r[self.label_column]) for r in rows], dtype=torch.long)
        return {"input_ids": codes[:, :-1], "labels": codes, "class_labels": labels}


def _mix_seed(*parts: int) -> int:
    """A 63-bit generator seed from integers: distinct tuples give unrelated streams (no ``seed + epoch`` overlap)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def crop_choices(seed: int, epoch: int, num_images: int, num_crops: int) -> torch.Tensor:
    """Crop drawn for every image in ``epoch``: int64 [num_images], uniform in [0, num_crops).

    Entry ``i`` is a function of (``seed``, ``epoch``, ``i``) only, so it is the same on every process, after a
    resume, and whatever order or batch size reads it.
    """
    if num_images < 0 or num_crops < 1:
        raise ValueError(f"Need num_images >= 0 and num_crops >= 1, got {num_images} and {num_crops}.")
    generator = torch.Generator().manual_seed(_mix_seed(seed, epoch, 1))
    return torch.randint(num_crops, (num_images,), generator=generator)


class CodeCrops(torch.utils.data.Dataset):
    """Rows with N stored crops per image (``input_ids`` [N, grid²], from ``extract_codes.py --crops N``) seen as
    one example per image.

    Index ``i·N + k`` returns crop ``k`` of image ``i`` as an ordinary row ``{"input_ids": [grid²], "label"}``;
    :class:`CodeCropSampler` (which :class:`IBQARTrainer` uses for this dataset) picks ``k`` for every image and
    epoch. ``len()`` is the number of images, the size of one pass. Stateless, so DataLoader workers (persistent
    or not) and processes need no synchronisation.
    """

    def __init__(self, dataset: Any) -> None:
        if len(dataset) == 0:
            raise ValueError("The codes dataset is empty.")
        first = torch.as_tensor(dataset[0]["input_ids"])
        if first.dim() != 2:
            raise ValueError(
                f"CodeCrops needs rows with input_ids [N crops, grid²]; the first row has shape {list(first.shape)}."
            )
        self.dataset = dataset
        self.num_crops = int(first.shape[0])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, crop = divmod(int(index), self.num_crops)
        row = self.dataset[image]
        crops = row["input_ids"]
        if len(crops) != self.num_crops:
            raise ValueError(
                f"Image {image} holds {len(crops)} crops, the first holds {self.num_crops}: every row of a "
                "multi-crop codes dataset needs the same N (extract them in one extract_codes.py run)."
            )
        return {**row, "input_ids": crops[crop]}


class CodeCropSampler(torch.utils.data.Sampler[int]):
    """Per epoch, every image once in a seeded random order, each with one of its N crops (seeded).

    Yields ``image · N + crop`` for :class:`CodeCrops`. The order is ``randperm`` of a generator seeded from
    (``seed``, ``epoch``) and the crop of image ``i`` is ``crop_choices(seed, epoch, …)[i]``: a function of
    (seed, epoch, image index) only. :class:`IBQARTrainer` calls :meth:`set_epoch` before each epoch (also the one
    it resumes in, before skipping the batches already trained on; see :func:`set_sampler_epoch`), and every
    process builds the same sequence before accelerate shards it, so multi-process runs and resumes draw exactly
    the same crops.
    """

    def __init__(self, num_images: int, num_crops: int, seed: int = 0) -> None:
        if num_images < 1 or num_crops < 1:
            raise ValueError(f"Need num_images >= 1 and num_crops >= 1, got {num_images} and {num_crops}.")
        self.num_images = num_images
        self.num_crops = num_crops
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the order and crops of ``epoch`` (0-based)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_images

    def __iter__(self):
        order = torch.randperm(
            self.num_images, generator=torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch, 0))
        )
        crops = crop_choices(self.seed, self.epoch, self.num_images, self.num_crops)
        yield from (order * self.num_crops + crops[order]).tolist()


def set_sampler_epoch(dataloader: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on every sampler / batch sampler reachable from ``dataloader``.

    accelerate's ``DataLoaderShard.set_epoch`` looks only a fixed depth down the chain. Under several processes
    the loader that ``skip_first_batches`` builds for a resume nests ``SkipBatchSampler → BatchSamplerShard →
    BatchSampler → sampler``, one level deeper than it looks, so a resume inside epoch ``e ≥ 1`` left a
    :class:`CodeCropSampler` at epoch 0 and replayed epoch 0's order (seen on 2 processes). Setting the epoch on
    the shared sampler objects before the epoch starts makes every loader built from them agree.
    """
    seen: set[int] = set()
    pending = [getattr(dataloader, "batch_sampler", None), getattr(dataloader, "sampler", None)]
    while pending:
        item = pending.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if callable(getattr(item, "set_epoch", None)):
            item.set_epoch(epoch)
        pending += [getattr(item, "batch_sampler", None), getattr(item, "sampler", None)]


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


class IBQARTrainer(StreamResumeMixin, AtomicCheckpointMixin, Trainer):
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

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        """:class:`CodeCropSampler` for a :class:`CodeCrops` dataset (one seeded crop per image and epoch)."""
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if isinstance(dataset, CodeCrops):
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return CodeCropSampler(len(dataset), dataset.num_crops, seed=seed)
        return super()._get_train_sampler(train_dataset)

    def _run_epoch(self, *args: Any, **kwargs: Any) -> Any:
        """Give the epoch to the data sampler before ``Trainer`` builds the epoch's iterator (see
        :func:`set_sampler_epoch`): map-style codes keep their seeded order and crops across resumes on any number
        of processes."""
        if "train_dataloader" in kwargs and "epoch" in kwargs:
            set_sampler_epoch(kwargs["train_dataloader"], kwargs["epoch"])
        return super()._run_epoch(*args, **kwargs)

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

    def schedule_ends(self) -> tuple[float, float]:
        """(``wpe``, ``twde``): the arguments' values, or those of the model's size preset, or 0.1 / 0."""
        recipe = ar_training_preset(ar_training_preset_for_config(self.model.config))
        ratio, twde = self.args.final_lr_ratio, self.args.final_weight_decay
        if ratio is None:
            ratio = recipe.final_lr_ratio if recipe is not None else DEFAULT_FINAL_LR_RATIO
        if twde is None:
            twde = recipe.final_weight_decay if recipe is not None else DEFAULT_FINAL_WEIGHT_DECAY
        return ratio, twde

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """The VAR lr factor as ``LambdaLR`` plus the matching weight-decay callback."""
        final_lr_ratio, final_weight_decay = self.schedule_ends()
        if self.lr_scheduler is None:
            optimizer = self.optimizer if optimizer is None else optimizer
            self.lr_scheduler = get_var_schedule(
                optimizer,
                self.args.get_warmup_steps(num_training_steps),
                num_training_steps,
                final_lr_ratio,
            )
            self._created_lr_scheduler = True
        self.pop_callback(WeightDecayScheduleCallback)
        self.add_callback(
            WeightDecayScheduleCallback(
                num_training_steps,
                initial=self.args.weight_decay,
                final=final_weight_decay,
                decay_all_groups=self.args.weight_decay_quirk,
            )
        )
        return self.lr_scheduler
