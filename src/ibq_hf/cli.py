"""The ``ibq-hf`` command line: thin argument parsing over the library.

Errors caused by the user's input (bad paths, mismatched checkpoints, bad arguments) are printed as
``ibq-hf: error: ...`` with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def _convert_tokenizer(args: argparse.Namespace) -> None:
    from .conversion.tokenizer import convert_tokenizer_checkpoint

    model = convert_tokenizer_checkpoint(
        args.checkpoint,
        args.output,
        config_path=args.config,
        use_ema=False if args.no_ema else (True if args.ema else None),
        resolution=args.resolution,
    )
    n_params = sum(p.numel() for p in model.parameters())
    print(f"Saved IBQVQModel ({model.config.num_embeddings} codes, {n_params:,} parameters) to {args.output}")


def _convert_ar(args: argparse.Namespace) -> None:
    from .conversion.ar import convert_ar_checkpoint

    model = convert_ar_checkpoint(args.checkpoint, args.output, config_path=args.config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"Saved IBQARForImageGeneration ({n_params:,} parameters) to {args.output}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ibq-hf",
        description="IBQ (Index Backpropagation Quantization) tokenizer and AR image generation, Hugging Face-native.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    tok.set_defaults(func=_convert_tokenizer)

    ar = kinds.add_parser(
        "ar",
        help="an IBQ AR checkpoint -> IBQARForImageGeneration",
        description="Convert an IBQ class-conditional AR checkpoint (AR_256_{B,L,XL,XXL}.ckpt).",
    )
    ar.add_argument("--checkpoint", required=True, help="original AR .ckpt file")
    ar.add_argument("--output", required=True, help="output folder (loadable with IBQARForImageGeneration)")
    ar.add_argument("--config", default=None, help="original YAML config (transformer_config.params)")
    ar.set_defaults(func=_convert_ar)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, TypeError, OSError) as err:
        print(f"ibq-hf: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
