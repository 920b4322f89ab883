"""``fmt schema``: the schema author's tools (list, show, check, export-ksy)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import UsageError
from ..io.text import escape
from ._common import DOCS, EXIT_BAD_INPUT, EXIT_OK, Formatter, debug_option, output_path, wrap

DESCRIPTION = wrap(f"Tools for the YAML schemas that describe each layout (the language: {DOCS}/schema-language.md).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    tools = parser.add_subparsers(dest="tool", metavar="TOOL", required=True)

    def tool(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return tools.add_parser(name, parents=[debug_option()], help=summary, description=wrap(description),
                                formatter_class=Formatter)

    q = tool("list", "every schema found, with its magic, origin and conversions",
             "Every schema found among ggfmt's own and in the folders of GGFMT_SCHEMA_PATH (searched first): its "
             "id, the magic it detects, its title, where it comes from, and the conversions its tables make.")
    q.add_argument("--json", action="store_true", help="as a JSON list")
    q = tool("show", "a generated reference of one layout (Markdown or JSON)",
             "The reference of one layout, generated from its schema: title, doc, parameters, every field in "
             "order with its type, size and offset where they are static, its conditions and doc; its types; and "
             "what each table that converts it makes of its keys and tensors (ggfmt's documentation has this "
             "command's output for every shipped layout).")
    q.add_argument("name", metavar="NAME|PATH", help="a schema's name (`fmt schema list`) or a YAML file")
    q.add_argument("--json", action="store_true", help="as JSON instead of Markdown")
    q = tool("check", "lint schemas, mapping tables and bundle declarations, file:line:column",
             "Lint schemas, mapping tables and bundle declarations (the directory inputs: a file with "
             "`recognise:`): one line per problem, FILE:LINE:COLUMN: what is wrong; exit 2 when "
             "there is any. It finds what the language's definition refuses (unknown keys, wrong types; "
             f"{DOCS}/ggfmt-schema.json), what the compiler refuses (unknown types, bad expressions), names an "
             "expression uses that nothing defines, fields and types without a doc, a meta.id that is not the "
             "file's name, types no field uses, and a table's from: naming a field the schema lacks. --parse "
             "parses a sample with the (first) schema and plans its conversion.")
    q.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="schema, table or bundle files")
    q.add_argument("--parse", type=Path, metavar="FILE", help="also parse this sample with the first schema")
    q = tool("export-ksy", "a layout as a Kaitai Struct .ksy",
             "Write a layout as a Kaitai Struct .ksy, so that Kaitai's tools (its Web IDE) show a file's bytes "
             "with ggfmt's field names: tensor payloads become byte blocks. A layout that needs what the export "
             "cannot say in Kaitai (imports, parameters, one-of, size prefixes, payloads at an offset, ggfmt's "
             "functions) is refused with the list of what.")
    q.add_argument("name", metavar="NAME|PATH", help="a schema's name (`fmt schema list`) or a YAML file")
    q.add_argument("-o", "--outfile", "--output", dest="output", metavar="OUT.ksy",
                   help="output file (default: standard output)")
    q.add_argument("--force", action="store_true", help="replace OUT.ksy if it exists")


def run(args: argparse.Namespace) -> int:
    return TOOLS[args.tool](args)


def run_list(args: argparse.Namespace) -> int:
    from ..workbench import list_lines, schema_list

    rows = schema_list()
    text = json.dumps(rows, indent=2) + "\n" if args.json else "".join(escape(line) + "\n" for line in list_lines(rows))
    sys.stdout.write(text)
    return EXIT_OK


def run_check(args: argparse.Namespace) -> int:
    from ..workbench.check import check_paths

    for path in args.paths:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
    problems = check_paths(list(args.paths), args.parse)
    sys.stdout.write("".join(escape(str(p)) + "\n" for p in problems))
    if not problems:
        print(f"{len(args.paths)} file{'s' if len(args.paths) > 1 else ''} checked: no problems", file=sys.stderr)
    return EXIT_BAD_INPUT if problems else EXIT_OK


def run_export_ksy(args: argparse.Namespace) -> int:
    from ..io.output import atomic_output
    from ..workbench import schema_path
    from ..workbench.ksy import export

    path = schema_path(args.name)
    text = export(path)
    if args.output is None:
        sys.stdout.write(text)
        return EXIT_OK
    with atomic_output(output_path(args.output, Path(path.stem + ".ksy")), force=args.force) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    from ..workbench import describe, markdown

    desc = describe(args.name)
    sys.stdout.write(json.dumps(desc, indent=2) + "\n" if args.json else markdown(desc))
    return EXIT_OK


TOOLS: dict[str, Callable[[argparse.Namespace], int]] = {
    "list": run_list, "show": run_show, "check": run_check, "export-ksy": run_export_ksy}
