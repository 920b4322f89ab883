"""``fmt to-hf``: a native Gemma checkpoint as a Hugging Face model directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UsageError
from ..io.text import escape
from ._common import EXIT_OK, begin_command, conversion_options, progress_bar, table_options

DESCRIPTION = ("Convert a checkpoint of Google's original Gemma release (a PyTorch pickle\n"
               "{\"model_state_dict\": ...}, as gemma_pytorch reads it) into a directory\n"
               "that transformers.GemmaForCausalLM.from_pretrained(OUT_DIR) loads:\n"
               "model.safetensors and config.json.\n\n"
               "Each layer's fused qkv_proj is split into q_proj, k_proj and v_proj (for\n"
               "any number of key-value heads), embedder.weight becomes\n"
               "model.embed_tokens.weight (lm_head is tied to it) and freqs_cis is\n"
               "dropped; every other tensor keeps its name. Give the model's dimensions\n"
               "with --size (the released 2B and 7B models) or --config; every tensor's\n"
               "shape is checked against them before anything is written. The pickle is\n"
               "read only with torch.load(weights_only=True), no model is instantiated,\n"
               "and tensors are converted one at a time. OUT_DIR appears complete or not\n"
               "at all.\n\n"
               "examples:\n"
               "  fmt to-hf gemma-2b.ckpt --size 2B -o gemma-2b --tokenizer tokenizer.model\n"
               "  fmt to-hf gemma-7b.ckpt --size 7B -o gemma-7b --outtype bf16\n"
               "  fmt to-hf tiny.ckpt --config tiny-config.json -o tiny-hf --force")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="GEMMA.ckpt", help="the native checkpoint (a PyTorch pickle)")
    table_options(parser, "hf")  # --size or --config, as the table declares them
    parser.add_argument("-o", "--outfile", "--output", dest="output", type=Path, metavar="OUT_DIR", required=True,
                        help="the directory to write (made next to it, then renamed into place)")
    parser.add_argument("--outtype", choices=("f32", "f16", "bf16"),
                        help="dtype of the written weights (default: f32)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help=argparse.SUPPRESS)  # older name
    parser.add_argument("--dry-run", action="store_true", help="print what would be written and write nothing")
    parser.add_argument("--tokenizer", type=Path, metavar="tokenizer.model",
                        help="also save the Hugging Face tokenizer made from this SentencePiece model "
                             "(needs transformers, sentencepiece and protobuf)")
    parser.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists and is not empty")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")


HF_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


def run(args: argparse.Namespace) -> int:
    """Plan the conversion the registry finds for the checkpoint (target ``hf``), then write the
    directory: the tokenizer (on request), the table's JSON files and model.safetensors, made next
    to OUT_DIR and renamed into place."""
    from ..convert import convert
    from ..emit import writer
    from ..emit.hf import WEIGHTS, planned, write_tokenizer
    from ..io.output import atomic_directory, check_directory_target
    from ._plan_report import describe_hf_conversion

    begin_command()
    source: Path = args.file
    target: Path = args.output
    outtype = args.outtype
    if args.dtype is not None:  # the older name of --outtype
        named = {v: k for k, v in HF_DTYPES.items()}[args.dtype]
        if outtype is not None and outtype != named:
            raise UsageError(f"--outtype {outtype} and --dtype {args.dtype} disagree; --outtype is enough")
        outtype = named
    inputs = [p for p in (source, args.config, args.tokenizer) if p is not None]
    if not args.dry_run:
        check_directory_target(target, force=args.force, inputs=inputs)  # before the work, not only after it
    if args.tokenizer is not None and not args.tokenizer.is_file():
        raise UsageError(f"{args.tokenizer}: no such file")
    if not source.is_file():
        raise UsageError(f"{source}: no such file")
    conversion = convert(source, "hf", options=conversion_options(args), outtype=outtype)
    plan = conversion.plan
    if args.dry_run:
        print(describe_hf_conversion([planned(t) for t in plan.tensors], plan.files, target, conversion.description))
        return EXIT_OK
    tokenizer_class = conversion.hf_tokenizer
    if args.tokenizer is not None and tokenizer_class is None:
        raise UsageError("--tokenizer: this conversion names no tokenizer class to save it with")
    bar = progress_bar(plan.payload_bytes, args.quiet)
    try:
        with atomic_directory(target, force=args.force, inputs=inputs) as temporary:
            if args.tokenizer is not None and tokenizer_class is not None:
                write_tokenizer(args.tokenizer, temporary, tokenizer_class)  # first: quick, and most likely to fail
            summary = writer("hf")(plan, "hf", temporary, bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet:
        tokenizer = ", tokenizer" if args.tokenizer is not None else ""
        size = (target / WEIGHTS).stat().st_size
        print(f"{escape(str(target))}: {summary}, {size:,} bytes{tokenizer} ({conversion.description})")
    return EXIT_OK
