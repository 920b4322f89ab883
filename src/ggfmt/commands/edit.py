"""``fmt edit``: change a GGUF's keys or tensor names, into a copy or in place."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..io.text import escape
from ._common import EXIT_OK, output_path, wrap

DESCRIPTION = (wrap("Change keys or tensor names of a GGUF file without rewriting its "
               "tensor data: with -o the data is cloned (a reflink where the file system "
               "shares extents, else copy_file_range); with --in-place only the header is "
               "rewritten, when the edited one fits in the room before the tensor data, "
               "journaled so that an interrupted edit is undone by the next --in-place "
               "edit of the file. An edit locks the file: a second one at the same "
               "time is refused. A value is read as --set-type says (u8 ... f64, bool, str, "
               "TYPE[] for an array given as JSON); else as the key's present type; "
               "else, for a key the GGUF specification names (general.name, "
               "llama.context_length, tokenizer.ggml.*, ...), as its standard type; "
               "else as what the text reads as: true/false a bool, a whole number a "
               "u32 (i64, u64 past it; 010 is ten, 0x10 sixteen), another number an f32 "
               "(f64 past its range), anything else a str.")
               + "\n\nexamples:\n  fmt edit model.gguf --set general.name=Mine -o mine.gguf\n"
               "  fmt edit model.gguf --set-file tokenizer.chat_template=template.jinja --in-place\n"
               "  fmt edit model.gguf --set-type my.ids=u32[] --set 'my.ids=[1, 2]' "
               "--delete general.url -o out.gguf\n"
               "  fmt edit model.gguf --rename-key general.source.hf_repo=general.source.repo_url "
               "-o out.gguf")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="IN.gguf")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set or add a key")
    parser.add_argument("--set-type", action="append", default=[], metavar="KEY=TYPE",
                        help="the GGUF type of a --set value (default: the key's present type, else its standard "
                             "type, else what the text reads as: see above)")
    parser.add_argument("--set-file", action="append", default=[], metavar="KEY=PATH",
                        help="set or add a string key to a file's text (a chat template)")
    parser.add_argument("--delete", action="append", default=[], metavar="KEY", help="remove a key")
    parser.add_argument("--rename-key", action="append", default=[], metavar="OLD=NEW",
                        help="rename a key (its type, value and place kept)")
    parser.add_argument("--rename-tensor", action="append", default=[], metavar="OLD=NEW", help="rename a tensor")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--outfile", "--output", dest="output", metavar="OUT.gguf",
                       help="write the edited file here (a directory, or a name ending in /: IN.gguf's name in it)")
    where.add_argument("--in-place", action="store_true", help="rewrite IN.gguf's header in place")
    parser.add_argument("--force", action="store_true", help="replace OUT.gguf if it exists")
    parser.add_argument("--dry-run", action="store_true", help="say what would change and write nothing")
    parser.add_argument("-q", "--quiet", action="store_true", help="no summary")


def run(args: argparse.Namespace) -> int:
    from ..edit import Edits
    from ..edit.in_place import Locked, interrupted_edit, recover
    from ..edit.values import pairs, utf8

    edits = Edits(set=pairs(args.set, "--set"), set_type=pairs(args.set_type, "--set-type"),
                  set_file={k: Path(v) for k, v in pairs(args.set_file, "--set-file").items()},
                  delete=[utf8(k, "--delete") for k in args.delete],
                  rename_tensor=pairs(args.rename_tensor, "--rename-tensor"),
                  rename_key=pairs(args.rename_key, "--rename-key"))
    if not (edits.set or edits.set_file or edits.delete or edits.rename_tensor or edits.rename_key):
        raise UsageError("nothing to edit: give --set, --set-file, --delete, --rename-key or --rename-tensor")
    with Locked(args.file, exclusive=args.in_place and not args.dry_run) as held:
        if args.in_place and not args.dry_run and recover(args.file, held.fd):
            print(f"fmt: {escape(str(args.file))}: an interrupted --in-place edit was undone (its header put back)",
                  file=sys.stderr)
        elif interrupted_edit(args.file, held.fd):
            raise UsageError(f"{args.file}: an --in-place edit of this file was interrupted and its old header is "
                             f"not back yet; fmt edit {args.file} --in-place puts it back first")
        return _edit_held(args, edits)


def _edit_held(args: argparse.Namespace, edits: Any) -> int:
    from .. import edit
    from ..edit import in_place
    from ..engine import parse
    from ..io.output import atomic_output

    doc = parse(args.file)
    fields, changes = edit.apply(doc, edits)
    header = edit.header_bytes(doc, fields)
    old_start = int(doc.fields["data_start"])
    summary = "; ".join(changes)
    if args.dry_run:
        if args.in_place:
            in_place.check_fits(doc, header)
        where = "in place" if args.in_place else f"to {output_path(args.output, args.file)}"
        print(f"{escape(str(args.file))}: would {escape(summary)}, written {escape(where)} (header of "
              f"{old_start:,} bytes becomes {len(header):,}); nothing was written")
        return EXIT_OK
    if args.in_place:
        from ..io.signals import stop_signals_blocked

        with stop_signals_blocked():
            in_place.write_in_place(doc, header)
        target, how = args.file, "header rewritten in place"
    else:
        target = output_path(args.output, args.file)
        with atomic_output(target, force=args.force, inputs=[args.file]) as temporary:
            how = "tensor data " + edit.write_copy(doc, header, temporary)
    if not args.quiet:
        print(f"{escape(str(target))}: {escape(summary)}; {how} ({doc.size - old_start:,} bytes of tensor data)")
    return EXIT_OK
