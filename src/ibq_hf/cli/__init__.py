"""The ``ibq-hf`` command line: thin argument parsing over the library.

Commands, one module each: ``convert {tokenizer,ar,pipeline}`` (:mod:`.convert`), ``generate`` (class-conditional
samples as an image grid, :mod:`.generate`), ``reconstruct`` (tokenize + decode pictures, :mod:`.reconstruct`) and
``evaluate {tokenizer,sample,generation}`` (metrics with the paper's protocol, docs/evaluation.md;
:mod:`.evaluate`). Options that several commands take are defined once, in :mod:`.flags`.

Errors caused by the user's input (bad paths, mismatched checkpoints, a malformed ``--config`` YAML, a non-empty
``--output`` folder, NaN/inf settings, unreadable or oversized pictures, unknown class names, bad arguments) are
printed as ``ibq-hf: error: ...`` with exit status 2, never as a traceback; a ``--model`` path that does not exist
is "folder not found", not a Hub error (``ibq_hf.models.loading``). The package imports only the standard library
at the top: ``ibq-hf --help`` and every ``<command> --help`` import none of torch, transformers and diffusers
(each command imports what it uses when it runs).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .convert import add_convert_command
from .evaluate import add_evaluate_command
from .generate import add_generate_command
from .reconstruct import add_reconstruct_command

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``ibq-hf`` parser; each (sub)command sets ``func``, the function that runs it."""
    parser = argparse.ArgumentParser(
        prog="ibq-hf",
        description="IBQ (Index Backpropagation Quantization) tokenizer and AR image generation, Hugging Face-native.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_convert_command(commands)
    add_generate_command(commands)
    add_reconstruct_command(commands)
    add_evaluate_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ibq-hf`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, TypeError, OSError) as err:
        print(f"ibq-hf: error: {err}", file=sys.stderr)
        return 2
    return 0
