"""``ibq-hf convert {tokenizer,ar,pipeline}``: official SEED-Voken ``.ckpt`` files → ``from_pretrained`` folders
(``ibq_hf.conversion``)."""

from __future__ import annotations

import argparse
from typing import Any

from .flags import add_overwrite_argument, add_protocol_argument


def run_tokenizer(args: argparse.Namespace) -> None:
    from ..conversion.tokenizer import convert_tokenizer_checkpoint

    model = convert_tokenizer_checkpoint(
        args.checkpoint,
        args.output,
        config_path=args.config,
        use_ema=False if args.no_ema else (True if args.ema else None),
        resolution=args.resolution,
        overwrite=args.overwrite,
        protocol=args.protocol,
    )
    n_params = sum(p.numel() for p in model.parameters())
    print(f"Saved IBQVQModel ({model.config.num_embeddings} codes, {n_params:,} parameters) to {args.output}")


def run_ar(args: argparse.Namespace) -> None:
    from ..conversion.ar import convert_ar_checkpoint

    model = convert_ar_checkpoint(
        args.checkpoint, args.output, config_path=args.config, overwrite=args.overwrite
    )
    n_params = sum(p.numel() for p in model.parameters())
    print(f"Saved IBQARForImageGeneration ({n_params:,} parameters) to {args.output}")


def run_pipeline(args: argparse.Namespace) -> None:
    from ..conversion.pipeline import convert_pipeline_checkpoint

    pipe = convert_pipeline_checkpoint(
        args.checkpoint,
        args.output,
        config_path=args.config,
        resolution=args.resolution,
        overwrite=args.overwrite,
    )
    n_params = sum(p.numel() for p in pipe.transformer.parameters())
    print(
        f"Saved IBQPipeline (tokenizer with {pipe.vqvae.config.num_embeddings} codes, transformer with "
        f"{n_params:,} parameters) to {args.output}"
    )


def add_convert_command(commands: Any) -> None:
    """Register ``convert`` and its kinds on the top-level subparsers ``commands``."""
    convert = commands.add_parser(
        "convert",
        help="convert official SEED-Voken checkpoints to Hugging Face folders",
        description="Convert official SEED-Voken IBQ checkpoints (.ckpt) into from_pretrained folders (safetensors).",
    )
    kinds = convert.add_subparsers(dest="kind", required=True, metavar="KIND")

    tok = kinds.add_parser(
        "tokenizer",
        help="an IBQ tokenizer checkpoint -> IBQVQModel",
        description=(
            "Convert an IBQ tokenizer checkpoint (e.g. imagenet256_16384.ckpt) into an IBQVQModel folder. "
            "Uses the EMA weights when present (as the published results did)."
        ),
    )
    tok.add_argument("--checkpoint", required=True, help="original .ckpt file (Lightning or raw state dict)")
    tok.add_argument(
        "--output", required=True, help="output folder (loadable with IBQVQModel.from_pretrained)"
    )
    tok.add_argument("--config", default=None, help="original YAML config, for non-default architectures")
    ema = tok.add_mutually_exclusive_group()
    ema.add_argument("--no-ema", action="store_true", help="convert the raw (non-EMA) weights")
    ema.add_argument("--ema", action="store_true", help="require EMA weights (default: EMA when present)")
    tok.add_argument(
        "--resolution", type=int, default=256, help="training resolution, to place attention (default 256)"
    )
    add_protocol_argument(
        tok,
        "detected ('pretrain' for the IBQ_pretrain_* tokenizers); recorded in the model card, where "
        "`ibq-hf evaluate tokenizer` reads it",
    )
    add_overwrite_argument(tok)
    tok.set_defaults(func=run_tokenizer)

    ar = kinds.add_parser(
        "ar",
        help="an IBQ AR checkpoint -> IBQARForImageGeneration",
        description="Convert an IBQ class-conditional AR checkpoint (AR_256_{B,L,XL,XXL}.ckpt).",
    )
    ar.add_argument("--checkpoint", required=True, help="original AR .ckpt file")
    ar.add_argument("--output", required=True, help="output folder (loadable with IBQARForImageGeneration)")
    ar.add_argument("--config", default=None, help="original YAML config (transformer_config.params)")
    add_overwrite_argument(ar)
    ar.set_defaults(func=run_ar)

    pipe = kinds.add_parser(
        "pipeline",
        help="an IBQ AR checkpoint -> IBQPipeline (AR model + its embedded tokenizer)",
        description=(
            "Convert an official AR checkpoint (AR_256_{B,L,XL,XXL}.ckpt) into a whole IBQPipeline folder: its "
            "transformer.* weights become the AR model and its embedded first_stage_model.* weights the tokenizer. "
            "The file is read once; any unmapped, missing or mis-shaped key is an error."
        ),
    )
    pipe.add_argument("--checkpoint", required=True, help="original AR .ckpt file")
    pipe.add_argument(
        "--output", required=True, help="output folder (loadable with IBQPipeline.from_pretrained)"
    )
    pipe.add_argument(
        "--config", default=None, help="original AR YAML (transformer_config.params), for non-released sizes"
    )
    pipe.add_argument(
        "--resolution",
        type=int,
        default=256,
        help="tokenizer training resolution, to place attention (default 256)",
    )
    add_overwrite_argument(pipe)
    pipe.set_defaults(func=run_pipeline)
