"""``fmt diff``: what differs between two files (keys, tensors, content), with diff(1)'s exit status."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..io.text import escape
from ._common import EXIT_DIFFERENT, EXIT_OK, read_directory, wrap

DESCRIPTION = (wrap("Compare A and B, any two files (or directory layouts) fmt parse reads: "
               "keys added, removed or changed, with their types (a GGUF's metadata by "
               "key, across versions 1 to 3; other layouts' fields by path), then tensors "
               "matched by name, added, removed, or changed in type, shape or content. "
               "Content is compared by a SHA-256 of each tensor's bytes, read in pieces. "
               "Arrays are summarised by their length and the first index where they "
               "differ. Exit status as diff(1): 0 equal, 1 different, 2 trouble.")
               + "\n\nexamples:\n  fmt diff model.gguf edited.gguf\n"
               "  fmt diff model-f32.gguf model-f16.gguf --values   # how far f16 moved each tensor")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", type=Path, metavar="A")
    parser.add_argument("b", type=Path, metavar="B")
    parser.add_argument("--values", action="store_true",
                        help="for float tensors (f32, f16, bf16, f64) of one shape, also the largest absolute and "
                             "relative difference of their values")
    parser.add_argument("--json", action="store_true", help="print one JSON document for scripts")
    parser.add_argument("-q", "--brief", action="store_true",
                        help="as diff -q: say only whether the files differ (the exit status says it too)")
    parser.add_argument("--schema", metavar="NAME|PATH", help="read both files with this schema (default: by magic)")


def run(args: argparse.Namespace) -> int:
    from ..diff import compare, source_label
    from ..engine import parse
    from ._diff_report import as_json, render

    docs = []
    for path in (args.a, args.b):
        if path.is_dir():
            docs.append(read_directory(path, None, args.schema, {}))
        else:
            docs.append(parse(path, args.schema))
    comparison = compare(docs[0], docs[1], values=args.values)
    args.exit_status = EXIT_OK if comparison.equal else EXIT_DIFFERENT  # also when stdout's reader goes away
    labels = source_label(args.a, docs[0]), source_label(args.b, docs[1])
    if args.brief:  # as diff -q: a line when they differ, nothing when they are equal
        if not comparison.equal:
            print(f"{escape(str(args.a))} and {escape(str(args.b))} differ")
    elif args.json:
        sys.stdout.write(as_json(comparison, str(args.a), str(args.b)))
    else:
        sys.stdout.write("".join(line + "\n" for line in render(comparison, *labels)))
    return EXIT_OK if comparison.equal else EXIT_DIFFERENT
