"""Train the IBQ class-conditional AR model on pre-extracted codes (reference recipe, HF ``Trainer``).

    python examples/train_ar.py --codes_dataset codes/ --model_size tiny --grid_size 8 --vocab_size 1024 \
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

import torch
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
    codes_dataset: str = field(
        metadata={"help": "Folder of parquet / save_to_disk files, or a Hub dataset id."}
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


def main(argv: list[str] | None = None) -> IBQARTrainer:
    """Parse flags, train, export; returns the trainer (for tests and notebooks)."""
    parser = HfArgumentParser((ScriptArguments, IBQARTrainingArguments))
    script, args = parser.parse_args_into_dataclasses(args=argv)
    push, hub_id = args.push_to_hub, args.hub_model_id
    args.push_to_hub = False  # push once, after the export is complete on disk (no per-checkpoint pushes)

    dataset = load_codes_dataset(script.codes_dataset, script.split)
    label_feature = dataset.features.get("label")
    names = getattr(label_feature, "names", None)
    vqvae = None
    if script.tokenizer:
        from ibq_hf import IBQVQModel

        vqvae = IBQVQModel.from_pretrained(script.tokenizer)
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
    resume = args.resume_from_checkpoint
    trainer.train(resume_from_checkpoint=True if resume == "latest" else resume)

    check_ranks_in_sync(trainer.model)
    trainer.save_model(args.output_dir)
    if trainer.is_world_process_zero():
        model = trainer.model
        write_ar_model_card(model, args.output_dir, dataset=script.codes_dataset, repo_id=hub_id)
        export = args.output_dir
        if vqvae is not None:
            from ibq_hf import IBQPipeline

            export = os.path.join(args.output_dir, "pipeline")
            IBQPipeline(vqvae=vqvae, transformer=model.to(torch.float32).eval()).save_pretrained(export)
        if push:
            from ibq_hf.pipeline import upload_folder_to_hub

            upload_folder_to_hub(export, hub_id or os.path.basename(os.path.abspath(args.output_dir)))
    return trainer


if __name__ == "__main__":
    main(sys.argv[1:])
