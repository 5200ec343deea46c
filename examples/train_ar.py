"""Train the IBQ class-conditional AR model on pre-extracted codes or on the fly (reference recipe, HF ``Trainer``).

    python examples/train_ar.py --codes_dataset codes/ --model_size custom --grid_size 8 --vocab_size 1024 \
        --num_classes 10 --output_dir runs/ar --max_steps 2000 --per_device_train_batch_size 64
    accelerate launch --multi_gpu --num_processes 2 examples/train_ar.py ...   # same flags, DDP

Codes come from ``examples/extract_codes.py`` (rows ``{input_ids: [grid²], label}``, or ``[N, grid²]`` with
``--crops N``: one of the N crops is drawn per image and epoch). Every ``TrainingArguments`` flag works
(``--bf16``, ``--gradient_checkpointing``, ``--save_steps``, ``--resume_from_checkpoint PATH|latest``, ...); the
defaults are the reference's (lr 3e-4, wd 0.05, betas (0.9, 0.95), clip 1.0).

Schedule: one for both modes, in optimizer steps of the global batch (per-device × processes × accumulation).
``--model_size B|L|XL|XXL`` brings the reference epochs, warm-up epochs, ``wpe`` and ``twde`` of that size
(``ibq_hf.training.ar_schedule.AR_TRAINING_PRESETS``); any of ``--num_train_epochs``, ``--max_steps``,
``--warmup_epochs``, ``--warmup_steps``, ``--final_lr_ratio``, ``--final_weight_decay`` given on the command
line overrides it. Epochs become steps from the pass size: the codes dataset's length, or for a stream the
split size in its metadata or ``--examples_per_epoch`` (required when a value is in epochs and the metadata has
none). The final model and its model card are written to ``--output_dir``; with ``--tokenizer`` a whole
``IBQPipeline`` is also written to ``<output_dir>/pipeline``.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from transformers import HfArgumentParser, set_seed
from transformers.utils import logging

from ibq_hf import IBQARConfig, IBQARForImageGeneration
from ibq_hf.models.configuration_ar import IBQ_AR_PRESETS
from ibq_hf.training.ar_schedule import (
    REFERENCE_GLOBAL_BATCH_SIZE,
    REFERENCE_LEARNING_RATE,
    ARSchedule,
    ar_training_preset,
    global_batch_size,
    resolve_ar_schedule,
)
from ibq_hf.training.ar_trainer import (
    ARCodesCollator,
    CodeCrops,
    IBQARTrainer,
    IBQARTrainingArguments,
    load_codes_dataset,
)
from ibq_hf.training.distributed import check_ranks_in_sync
from ibq_hf.training.script_parser import TrainingScriptParser

logger = logging.get_logger(__name__)


@dataclass
class ScriptArguments:
    codes_dataset: str | None = field(
        default=None,
        metadata={"help": "Folder of parquet / save_to_disk files, or a Hub dataset id (extracted codes)."},
    )
    images: str | None = field(
        default=None,
        metadata={"help": "On-the-fly mode: an imagefolder tree, tokenized every step with --tokenizer."},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "On-the-fly mode: a `datasets` image dataset (e.g. ILSVRC/imagenet-1k), streamed."},
    )
    resolution: int = field(
        default=256, metadata={"help": "On-the-fly mode: image size fed to the tokenizer."}
    )
    shuffle_buffer_size: int = field(
        default=1000, metadata={"help": "On-the-fly mode: stream shuffle buffer."}
    )
    model_size: str = field(
        default="custom",
        metadata={"help": f"A preset {sorted(IBQ_AR_PRESETS)} or 'custom' (use --hidden_size etc.)."},
    )
    grid_size: int = field(
        default=16, metadata={"help": "Side of the code grid (rows hold grid_size² codes)."}
    )
    vocab_size: int | None = field(
        default=None, metadata={"help": "Codebook size; default: the tokenizer's, else max code + 1."}
    )
    num_classes: int | None = field(
        default=None, metadata={"help": "Number of classes; default: the dataset's ClassLabel, else max + 1."}
    )
    hidden_size: int = field(default=64, metadata={"help": "Width for --model_size custom."})
    num_hidden_layers: int = field(default=2, metadata={"help": "Depth for --model_size custom."})
    num_attention_heads: int = field(default=2, metadata={"help": "Heads for --model_size custom."})
    dropout: float | None = field(
        default=None, metadata={"help": "Override resid / ffn / token dropout (reference 0.1)."}
    )
    warmup_epochs: float | None = field(
        default=None,
        metadata={
            "help": "Warm-up in epochs (reference `wp`; default: the size preset's, 6/7/8/9 for B/L/XL/XXL, else "
            "none). Exclusive with --warmup_steps."
        },
    )
    examples_per_epoch: int | None = field(
        default=None,
        metadata={
            "help": "Examples in one pass over a streamed source, to turn epochs into steps (default: the "
            "split size in the dataset's metadata; required when that is missing and a value is in epochs)."
        },
    )
    tokenizer: str | None = field(
        default=None,
        metadata={"help": "IBQVQModel path / id: also export an IBQPipeline to <output_dir>/pipeline."},
    )
    split: str = field(default="train", metadata={"help": "Dataset split."})
    # Filled by main(): the options given on the command line (a preset only fills the others).
    explicit_options: frozenset[str] = field(default=frozenset(), init=False, repr=False)


def build_config(
    script: ScriptArguments, vocab_size: int, num_classes: int, id2label: dict | None
) -> IBQARConfig:
    """Preset or custom sizes with the data's vocabulary, classes and grid."""
    extra = {"vocab_size": vocab_size, "num_classes": num_classes, "grid_size": script.grid_size}
    if script.dropout is not None:
        extra.update(resid_dropout=script.dropout, ffn_dropout=script.dropout, token_dropout=script.dropout)
    if id2label:
        extra["id2label"] = id2label
    if script.model_size.lower() == "custom":
        return IBQARConfig(
            hidden_size=script.hidden_size,
            num_hidden_layers=script.num_hidden_layers,
            num_attention_heads=script.num_attention_heads,
            multiple_of=32,
            **extra,
        )
    return IBQARConfig.from_preset(script.model_size, **extra)


def _explicit_options(parser: HfArgumentParser, argv: list[str]) -> frozenset[str]:
    """The option destinations that ``argv`` sets (a size preset must not override those, even to a default)."""
    saved = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        namespace, _ = parser.parse_known_args(argv)
    finally:
        for action, default in saved:
            action.default = default
    return frozenset(vars(namespace))


def stream_pass_size(script: ScriptArguments, stream: Any) -> int | None:
    """Examples per pass of the on-the-fly source: ``--examples_per_epoch``; else the source's length (an
    imagefolder or a prepared cache is indexed); else, for ``--dataset_name``, the split size in the dataset's
    metadata (its card's ``dataset_info``); else ``None`` (unknown)."""
    if script.examples_per_epoch is not None:
        if script.examples_per_epoch < 1:
            raise ValueError(f"--examples_per_epoch must be >= 1, got {script.examples_per_epoch}.")
        return script.examples_per_epoch
    known = getattr(stream, "num_examples", None)
    if known:
        return int(known)
    if script.dataset_name is None:
        return None
    import datasets

    splits = datasets.load_dataset_builder(script.dataset_name).info.splits or {}
    size = getattr(splits.get(script.split), "num_examples", None)
    return int(size) if size else None


def apply_schedule(
    script: ScriptArguments, args: IBQARTrainingArguments, num_examples: int | None
) -> ARSchedule:
    """Resolve the schedule (size preset, explicit flags win) for ``num_examples`` per pass and write it to ``args``.

    Both modes call this: the codes path with the dataset's length, the on-the-fly path with
    :func:`stream_pass_size`. Raises when a value is in epochs and the pass size is unknown.
    """
    explicit = script.explicit_options
    world = max(args.world_size, 1)
    batch = global_batch_size(args.per_device_train_batch_size, world, args.gradient_accumulation_steps)
    schedule = resolve_ar_schedule(
        script.model_size,
        num_examples=num_examples,
        global_batch=batch,
        num_train_epochs=args.num_train_epochs if "num_train_epochs" in explicit else None,
        warmup_epochs=script.warmup_epochs,
        warmup_steps=args.warmup_steps if "warmup_steps" in explicit else None,
        max_steps=args.max_steps if args.max_steps > 0 else None,
        final_lr_ratio=args.final_lr_ratio,
        final_weight_decay=args.final_weight_decay,
        default_num_train_epochs=args.num_train_epochs,
    )
    args.max_steps, args.warmup_steps = schedule.max_steps, schedule.warmup_steps
    args.final_lr_ratio, args.final_weight_decay = schedule.final_lr_ratio, schedule.final_weight_decay
    if args.process_index == 0:
        logger.warning(f"{schedule.describe()}; global batch {batch}")
        if ar_training_preset(script.model_size) is not None and batch != REFERENCE_GLOBAL_BATCH_SIZE:
            logger.warning(
                f"Global batch {batch} (per device {args.per_device_train_batch_size} × {world} processes × "
                f"accumulation {args.gradient_accumulation_steps}) differs from the reference "
                f"{REFERENCE_GLOBAL_BATCH_SIZE} that lr {REFERENCE_LEARNING_RATE:g} and the preset's schedule "
                f"were tuned for; lr is {args.learning_rate:g}. Reach {REFERENCE_GLOBAL_BATCH_SIZE} with "
                "--gradient_accumulation_steps, or choose the lr for this batch (e.g. linear scaling: "
                f"{REFERENCE_LEARNING_RATE * batch / REFERENCE_GLOBAL_BATCH_SIZE:.3g})."
            )
    return schedule


def _train_on_the_fly(script: ScriptArguments, args: IBQARTrainingArguments, vqvae, push: bool, hub_id):
    """The reference's mode: images streamed, random-cropped and tokenized by the frozen tokenizer every step."""
    from ibq_hf.data import collate_images, load_image_dataset

    if vqvae is None:
        raise ValueError("On-the-fly training (--images / --dataset_name) needs --tokenizer.")
    grid = script.resolution // vqvae.downsample_factor
    if script.resolution % vqvae.downsample_factor or grid != script.grid_size:
        raise ValueError(
            f"--resolution {script.resolution} gives a {grid}×{grid} code grid with this tokenizer "
            f"(factor {vqvae.downsample_factor}), but --grid_size is {script.grid_size}."
        )
    # Not split by rank here: the trainer gives every process its own share of each global batch.
    stream = load_image_dataset(
        dataset_name=script.dataset_name, train_data_dir=script.images, split=script.split,
        resolution=script.resolution, train=True, seed=args.seed, shuffle_buffer_size=script.shuffle_buffer_size,
    )  # fmt: skip
    apply_schedule(script, args, stream_pass_size(script, stream))  # pass size: flag, length or metadata
    names = stream.class_names
    num_classes = script.num_classes or (len(names) if names else None)
    if num_classes is None:
        raise ValueError("The image dataset has no ClassLabel names: pass --num_classes.")
    args.remove_unused_columns = False  # keep pixel_values for the trainer's tokenization
    set_seed(args.seed)
    id2label = dict(enumerate(names)) if names else None
    model = IBQARForImageGeneration(build_config(script, vqvae.config.num_embeddings, num_classes, id2label))
    trainer = IBQARTrainer(
        model=model,
        args=args,
        train_dataset=stream,
        data_collator=collate_images,
        frozen_tokenizer=vqvae,
    )
    return _train_and_export(trainer, args, vqvae, script.images or script.dataset_name, push, hub_id)


def _train_and_export(trainer: IBQARTrainer, args, vqvae, source: str | None, push: bool, hub_id):
    """Train (resuming if asked), check the ranks agree, save the model + card (+ a pipeline), then push."""
    resume = args.resume_from_checkpoint
    trainer.train(resume_from_checkpoint=True if resume == "latest" else resume)
    if trainer.is_fsdp_enabled:
        # FSDP parameters are per-rank shards of one tensor (consistent by construction): nothing to compare.
        # save_model gathers them (fsdp_state_dict_type FULL_STATE_DICT, as in examples/configs/fsdp.yaml).
        trainer.accelerator.print("FSDP: skipping the rank check (parameters are sharded, not replicated)")
    else:
        check_ranks_in_sync(trainer.model)
    trainer.save_model(args.output_dir)
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        # The card and the pipeline are built from the saved files, not the in-memory (possibly sharded or
        # bf16-cast) model: what is exported is exactly what from_pretrained will read.
        model = IBQARForImageGeneration.from_pretrained(args.output_dir)
        name = hub_id or os.path.basename(os.path.abspath(args.output_dir))
        card = {"trained": True, "dataset": source, "name": name}
        model.write_model_card(args.output_dir, **card)
        export = args.output_dir
        if vqvae is not None:
            from ibq_hf import IBQPipeline

            export = os.path.join(args.output_dir, "pipeline")
            IBQPipeline(vqvae=vqvae, transformer=model.eval()).save_pretrained(export, model_card=card)
        if push:
            from ibq_hf.hub_utils import upload_folder_to_hub

            upload_folder_to_hub(export, name)
    return trainer


def parse_arguments(argv: list[str] | None = None) -> tuple[ScriptArguments, IBQARTrainingArguments]:
    """The two argument dataclasses, with ``script.explicit_options`` = the options ``argv`` sets."""
    parser = TrainingScriptParser(
        (ScriptArguments, IBQARTrainingArguments),
        groups={
            ScriptArguments: "data and model (train_ar.py)",
            IBQARTrainingArguments: "IBQ AR training (optimizer, schedule; reference defaults)",
        },
    )
    argv = sys.argv[1:] if argv is None else argv
    script, args = parser.parse_args_into_dataclasses(args=argv)
    script.explicit_options = _explicit_options(parser, argv)
    return script, args


def main(argv: list[str] | None = None) -> IBQARTrainer:
    """Parse flags, train, export; returns the trainer (for tests and notebooks)."""
    script, args = parse_arguments(argv)
    push, hub_id = args.push_to_hub, args.hub_model_id
    args.push_to_hub = False  # push once, after the export is complete on disk (no per-checkpoint pushes)

    on_the_fly = script.images is not None or script.dataset_name is not None
    if on_the_fly == (script.codes_dataset is not None):
        raise ValueError(
            "Pass either --codes_dataset (extracted codes) or --images / --dataset_name (on the fly)."
        )
    vqvae = None
    if script.tokenizer:
        from ibq_hf import IBQVQModel

        vqvae = IBQVQModel.from_pretrained(script.tokenizer)
    if on_the_fly:
        return _train_on_the_fly(script, args, vqvae, push, hub_id)
    dataset = load_codes_dataset(script.codes_dataset, script.split)
    label_feature = dataset.features.get("label")
    names = getattr(label_feature, "names", None)
    # Rows with N crops ([N, grid²], extract_codes.py --crops N): one crop per image and epoch, drawn by the trainer.
    multi_crop = np.ndim(dataset[0]["input_ids"]) == 2
    vocab_size = script.vocab_size or (vqvae.config.num_embeddings if vqvae is not None else None)
    if vocab_size is None:
        vocab_size = max(int(np.max(row)) for row in dataset["input_ids"]) + 1
    num_classes = script.num_classes or (len(names) if names else max(dataset["label"]) + 1)
    if vqvae is not None and vocab_size != vqvae.config.num_embeddings:
        raise ValueError(
            f"--vocab_size {vocab_size} differs from the tokenizer's {vqvae.config.num_embeddings}."
        )
    apply_schedule(script, args, len(dataset))  # one pass = every image once (one crop each)

    set_seed(args.seed)
    id2label = dict(enumerate(names)) if names else None
    model = IBQARForImageGeneration(build_config(script, vocab_size, num_classes, id2label))
    trainer = IBQARTrainer(
        model=model,
        args=args,
        train_dataset=CodeCrops(dataset) if multi_crop else dataset,
        data_collator=ARCodesCollator(script.grid_size**2),
    )
    return _train_and_export(trainer, args, vqvae, script.codes_dataset, push, hub_id)


if __name__ == "__main__":
    from ibq_hf.errors import run_script_main

    run_script_main(main, sys.argv[1:], "train_ar.py")
