"""``fmt parse``: a file's fields and tensors, as its users read them or as the file holds them."""

from __future__ import annotations

import argparse
import io
import itertools
import sys
from pathlib import Path

from ..errors import UsageError
from ._common import EXIT_OK, parameter_options, parameters, parse_directory, wrap

DESCRIPTION = (wrap("Parse FILE against its schema and show its fields, then every tensor "
               "(name, type, shape as ne, absolute offset, bytes) and the totals per type. "
               "Tensor payloads are not read. A GGUF file's metadata reads as gguf-dump "
               "shows it: `type key = value`, long arrays by their first and last items "
               "(--json has them in full). FILE may also be a directory of a layout "
               "ggfmt declares (an mlx-lm or PEFT adapter, a CLIP model): its JSON files are "
               "shown as "
               "fields, its tensors as references.")
               + "\n\nexamples:\n  fmt parse model.gguf --no-tensors --fields 'tokenizer.*'\n"
               "  fmt parse model.gguf --json | jq '.fields.metadata[\"general.name\"].value'\n"
               "  fmt parse ckpt.bin --raw   # the records as the file holds them")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE")
    parser.add_argument("--json", action="store_true", help="print one JSON document (fields and tensors) for scripts, "
                                                              "every value in full")
    parser.add_argument("--fields", metavar="PATTERN[,PATTERN...]",
                        help="show only the fields and keys matching these glob patterns ('general.*,llama.*')")
    parser.add_argument("--no-tensors", action="store_true", help="leave out the tensor table")
    parser.add_argument("--raw", action="store_true",
                        help="show the records as the file holds them (every length, type code and record), "
                             "for format debugging")
    parser.add_argument("--base", type=Path, metavar="DIR",
                        help="a directory layout's base model (its config.json), for the fields that come from it")
    parameter_options(parser)


def run(args: argparse.Namespace) -> int:
    from ..engine import parse
    from ._parse_report import render

    if args.file.is_dir():
        doc = parse_directory(args)
    else:
        if args.base is not None:
            raise UsageError("--base applies to a directory (a PEFT or mlx-lm adapter), not to a file")
        doc = parse(args.file, args.schema, parameters(args))
    patterns = [p for p in args.fields.split(",") if p] if args.fields is not None else None
    # Made whole before any of it is written: a value found bad while it is shown (text that is not
    # UTF-8 in a vocabulary read in bulk) leaves no partial report behind its error.
    text = io.StringIO()
    if args.json and args.raw:
        if patterns is not None or args.no_tensors:
            raise UsageError("--raw --json writes the whole document; --fields and --no-tensors select from the "
                             "default view")
        doc.write_json(text)
    elif args.json:
        doc.write_view_json(text, patterns, tensors=not args.no_tensors)
    else:
        lines = render(doc, raw=args.raw, fields=patterns, tensors=not args.no_tensors)
        while batch := list(itertools.islice(lines, 4096)):  # (a write per line: a tenth of a million-line report)
            text.write("\n".join(batch))
            text.write("\n")
    sys.stdout.write(text.getvalue())
    return EXIT_OK
