"""Train an IBQ tokenizer (generator + PatchGAN, reference recipe) with HF ``Trainer``.

    python examples/train_ibq.py --train_data_dir images/ --resolution 256 --output_dir runs/ibq \
        --lpips_weights vgg16-397923af.pth --lpips_heads vgg.pth \
        --max_steps 100000 --per_device_train_batch_size 4 --save_steps 5000 --lr_drop_steps 80000 90000
    accelerate launch --multi_gpu --num_processes 8 examples/train_ibq.py ...   # same flags, DDP

Data: ``--train_data_dir`` (imagefolder), ``--data_files`` (parquet) or ``--dataset_name`` (Hub). Every
``TrainingArguments`` flag works (``--bf16``, ``--gradient_accumulation_steps``, ``--save_steps``, ``--logging_steps``,
``--resume_from_checkpoint PATH|latest``, ``--push_to_hub``, ...); the defaults are the reference's (Adam lr 1e-4,
betas (0.5, 0.9), no weight decay, EMA 0.999). ``--lpips_weights`` / ``--lpips_heads`` are local files (nothing
is downloaded when both are given); ``--no_lpips`` drops the perceptual term. The EMA tokenizer and its model card
are written to ``--output_dir`` (``IBQVQModel.from_pretrained(output_dir)``) and pushed after that with
``--push_to_hub``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from transformers import set_seed

from ibq_hf import IBQVQModel
from ibq_hf.data import collate_images, load_image_dataset
from ibq_hf.training.distributed import check_ranks_in_sync
from ibq_hf.training.script_parser import TrainingScriptParser
from ibq_hf.training.tokenizer_trainer import (
    IBQTokenizerTrainer,
    IBQTokenizerTrainingArguments,
    build_tokenizer_gan,
)


@dataclass
class ScriptArguments:
    dataset_name: str | None = field(
        default=None, metadata={"help": "Hub dataset id (e.g. ILSVRC/imagenet-1k)."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset config."})
    train_data_dir: str | None = field(default=None, metadata={"help": "imagefolder directory."})
    data_files: list[str] | None = field(default=None, metadata={"help": "Parquet files."})
    split: str = field(default="train", metadata={"help": "Dataset split."})
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Parquet / Hub: stream instead of preparing the Arrow cache (an imagefolder is indexed)."
        },
    )
    shuffle_buffer_size: int = field(
        default=1000,
        metadata={
            "help": "Streamed sources: buffer mixing examples after the per-pass shard shuffle (0: none)."
        },
    )
    resolution: int = field(default=256, metadata={"help": "Training crop size."})
    hflip: bool = field(default=False, metadata={"help": "Random horizontal flips (reference: off)."})
    preset: str | None = field(
        default=None, metadata={"help": "A tokenizer preset instead of the size flags."}
    )
    ch: int = field(default=128, metadata={"help": "Base width."})
    ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4], metadata={"help": "Width factors."})
    num_res_blocks: int = field(default=4, metadata={"help": "Res blocks per level."})
    attn_resolutions: list[int] = field(default_factory=lambda: [16], metadata={"help": "Attention levels."})
    z_channels: int = field(default=256, metadata={"help": "Latent channels."})
    embed_dim: int = field(default=256, metadata={"help": "Codebook dimension."})
    num_embeddings: int = field(default=16384, metadata={"help": "Codebook size."})
    dropout: float = field(default=0.0, metadata={"help": "Res-block dropout."})
    no_entropy_loss: bool = field(
        default=False, metadata={"help": "Quantizer without the entropy loss (ablation; the recipe uses it)."}
    )
    quantizer_type: str = field(
        default="ibq",
        metadata={"help": "'ibq' (the product) or 'vanilla' (VQGAN nearest-code baseline, for experiments)."},
    )
    lpips_weights: str | None = field(default=None, metadata={"help": "Local torchvision vgg16 .pth file."})
    lpips_heads: str | None = field(default=None, metadata={"help": "Local LPIPS v0.1 vgg.pth heads file."})
    no_lpips: bool = field(default=False, metadata={"help": "Train without the LPIPS term."})
    lpips_random_backbone: bool = field(
        default=False, metadata={"help": "Random VGG (plumbing tests only; values are meaningless)."}
    )


def build_generator(script: ScriptArguments) -> IBQVQModel:
    if script.preset:
        return IBQVQModel.from_preset(
            script.preset, resolution=script.resolution, quantizer_type=script.quantizer_type,
            use_entropy_loss=not (script.no_entropy_loss or script.quantizer_type == "vanilla"),
        )  # fmt: skip
    return IBQVQModel(
        resolution=script.resolution, ch=script.ch, ch_mult=tuple(script.ch_mult),
        num_res_blocks=script.num_res_blocks, attn_resolutions=tuple(script.attn_resolutions),
        dropout=script.dropout, z_channels=script.z_channels, embed_dim=script.embed_dim,
        num_embeddings=script.num_embeddings, quantizer_type=script.quantizer_type,
        use_entropy_loss=not (script.no_entropy_loss or script.quantizer_type == "vanilla"),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> IBQTokenizerTrainer:
    """Parse flags, train, export the EMA tokenizer; returns the trainer (for tests and notebooks)."""
    parser = TrainingScriptParser(
        (ScriptArguments, IBQTokenizerTrainingArguments),
        groups={
            ScriptArguments: "data and tokenizer (train_ibq.py)",
            IBQTokenizerTrainingArguments: "IBQ tokenizer training (losses, EMA, schedule; reference defaults)",
        },
    )
    script, args = parser.parse_args_into_dataclasses(args=argv)
    push, hub_id = args.push_to_hub, args.hub_model_id
    args.push_to_hub = False  # push once, after the export is complete on disk

    # Not split by rank here: the trainer gives every process its own share of each global batch.
    stream = load_image_dataset(
        dataset_name=script.dataset_name, dataset_config_name=script.dataset_config_name,
        train_data_dir=script.train_data_dir, data_files=script.data_files, split=script.split,
        streaming=script.streaming, resolution=script.resolution, train=True, hflip=script.hflip,
        seed=args.seed, shuffle_buffer_size=script.shuffle_buffer_size, require_labels=False,
    )  # fmt: skip
    if args.max_steps <= 0:
        raise ValueError("The image stream has no length: pass --max_steps.")

    set_seed(args.seed)
    gan = build_tokenizer_gan(
        build_generator(script), args, lpips_weights=script.lpips_weights, lpips_heads=script.lpips_heads,
        no_lpips=script.no_lpips, lpips_random_backbone=script.lpips_random_backbone,
    )  # fmt: skip
    trainer = IBQTokenizerTrainer(model=gan, args=args, train_dataset=stream, data_collator=collate_images)
    resume = args.resume_from_checkpoint
    trainer.train(resume_from_checkpoint=True if resume == "latest" else resume)
    # Parameters must agree; BatchNorm running stats and LeCam EMAs stay per rank, as in the reference (each rank
    # checkpoints its own in rank_buffers_<rank>.safetensors, so a resume restores them exactly).
    check_ranks_in_sync(trainer.gan.parameters())
    check_ranks_in_sync(trainer.ema.shadow.values())

    source = (
        script.train_data_dir or script.dataset_name or (script.data_files[0] if script.data_files else None)
    )
    trainer.save_ema_tokenizer(args.output_dir, dataset=source, repo_id=hub_id)
    if trainer.is_world_process_zero():
        print(f"data: {stream.stats.as_dict()}", flush=True)
        if push:
            from ibq_hf.hub_utils import upload_folder_to_hub

            upload_folder_to_hub(
                args.output_dir, hub_id or os.path.basename(os.path.abspath(args.output_dir))
            )
    return trainer


if __name__ == "__main__":
    from ibq_hf.errors import run_script_main

    run_script_main(main, sys.argv[1:], "train_ibq.py")
