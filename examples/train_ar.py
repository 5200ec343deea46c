"""Train the IBQ class-conditional AR model on pre-extracted codes (reference recipe, HF ``Trainer``).

    python examples/train_ar.py --codes_dataset codes/ --model_size custom --grid_size 8 --vocab_size 1024 \
        --num_classes 10 --output_dir runs/ar --max_steps 2000 --per_device_train_batch_size 64
    accelerate launch --multi_gpu --num_processes 2 examples/train_ar.py ...   # same flags, DDP

Codes come from ``examples/extract_codes.py`` (rows ``{input_ids: [grid²], label}``). Every
``TrainingArguments`` flag works (``--bf16``, ``--gradient_checkpointing``, ``--save_steps``,
``--resume_from_checkpoint PATH|latest``, ...); the defaults are the reference's (lr 3e-4, wd 0.05,
betas (0.9, 0.95), clip 1.0). The final model and its model card are written to ``--output_dir``;
with ``--tokenizer`` a whole ``IBQPipeline`` is also written to ``<output_dir>/pipeline``.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser, set_seed

from ibq_hf import IBQARConfig, IBQARForImageGeneration
from ibq_hf.models.configuration_ar import IBQ_AR_PRESETS
from ibq_hf.training.ar_schedule import warmup_steps_from_epochs
from ibq_hf.training.ar_trainer import (
    ARCodesCollator,
    IBQARTrainer,
    IBQARTrainingArguments,
    load_codes_dataset,
    write_ar_model_card,
)
from ibq_hf.training.distributed import check_ranks_in_sync


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
        default=None, metadata={"help": "Reference `wp` in epochs; overrides --warmup_steps when set."}
    )
    tokenizer: str | None = field(
        default=None,
        metadata={"help": "IBQVQModel path / id: also export an IBQPipeline to <output_dir>/pipeline."},
    )
    split: str = field(default="train", metadata={"help": "Dataset split."})


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


def _train_on_the_fly(script: ScriptArguments, args: IBQARTrainingArguments, vqvae, push: bool, hub_id):
    """The reference's mode: images streamed, random-cropped and tokenized by the frozen tokenizer every step."""
    from ibq_hf.training.data import collate_images, load_image_dataset

    if vqvae is None:
        raise ValueError("On-the-fly training (--images / --dataset_name) needs --tokenizer.")
    grid = script.resolution // vqvae.downsample_factor
    if script.resolution % vqvae.downsample_factor or grid != script.grid_size:
        raise ValueError(
            f"--resolution {script.resolution} gives a {grid}×{grid} code grid with this tokenizer "
            f"(factor {vqvae.downsample_factor}), but --grid_size is {script.grid_size}."
        )
    if args.max_steps <= 0:
        raise ValueError("On-the-fly training streams the images: set --max_steps.")
    world = max(args.world_size, 1)
    stream = load_image_dataset(
        dataset_name=script.dataset_name, train_data_dir=script.images, split=script.split,
        resolution=script.resolution, train=True, seed=args.seed, shuffle_buffer_size=script.shuffle_buffer_size,
        rank=args.process_index, world_size=world,
    )  # fmt: skip
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
        train_dataset=stream.dataset,
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
        write_ar_model_card(model, args.output_dir, dataset=source, repo_id=hub_id)
        export = args.output_dir
        if vqvae is not None:
            from ibq_hf import IBQPipeline

            export = os.path.join(args.output_dir, "pipeline")
            IBQPipeline(vqvae=vqvae, transformer=model.eval()).save_pretrained(export)
        if push:
            from ibq_hf.pipeline import upload_folder_to_hub

            upload_folder_to_hub(export, hub_id or os.path.basename(os.path.abspath(args.output_dir)))
    return trainer


def main(argv: list[str] | None = None) -> IBQARTrainer:
    """Parse flags, train, export; returns the trainer (for tests and notebooks)."""
    parser = HfArgumentParser((ScriptArguments, IBQARTrainingArguments))
    script, args = parser.parse_args_into_dataclasses(args=argv)
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
    vocab_size = script.vocab_size or (vqvae.config.num_embeddings if vqvae is not None else None)
    if vocab_size is None:
        vocab_size = max(max(row) for row in dataset["input_ids"]) + 1
    num_classes = script.num_classes or (len(names) if names else max(dataset["label"]) + 1)
    if vqvae is not None and vocab_size != vqvae.config.num_embeddings:
        raise ValueError(
            f"--vocab_size {vocab_size} differs from the tokenizer's {vqvae.config.num_embeddings}."
        )
    if script.warmup_epochs is not None:
        world = max(args.world_size, 1)
        per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * world
        args.warmup_steps = warmup_steps_from_epochs(script.warmup_epochs, math.ceil(len(dataset) / per_step))

    set_seed(args.seed)
    id2label = dict(enumerate(names)) if names else None
    model = IBQARForImageGeneration(build_config(script, vocab_size, num_classes, id2label))
    trainer = IBQARTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=ARCodesCollator(script.grid_size**2),
    )
    return _train_and_export(trainer, args, vqvae, script.codes_dataset, push, hub_id)


if __name__ == "__main__":
    main(sys.argv[1:])
