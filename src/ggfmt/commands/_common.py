"""What the commands share: exit statuses, the help's formatting and one-line usage errors,
the option groups several commands take (schema parameters, output), the output path as
llama.cpp's converters take it, the progress bar, and the body of the conversions to one file.

Only the standard library and ggfmt's light modules are imported here (``fmt --help`` loads
every command's module); what a command needs to run is imported when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import SchemaError, UsageError
from ..io.text import escape

EXIT_OK, EXIT_BAD_INPUT = 0, 2
EXIT_DIFFERENT = 1  # fmt diff, as diff(1)
EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE: never taken for "the files differ"
PROGRESS_THRESHOLD = 64 << 20  # payloads smaller than this convert too fast to need a bar

# where a wheel user reads what a clone has in docs/
DOCS = "https://github.com/ggfmt/ggfmt/blob/main/docs"


def wrap(text: str) -> str:
    """A description as paragraphs of terminal width (the raw formatter keeps line breaks as given)."""
    return "\n\n".join(textwrap.fill(" ".join(p.split()), 88) for p in text.split("\n\n"))


class Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34)


class Parser(argparse.ArgumentParser):
    """argparse with usage errors in one line: what is wrong, the short usage, where the help is;
    long options only as written in full (``--rename`` is no abbreviation of ``--rename-tensor``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:  # argparse's own signature returns NoReturn
        positionals = " ".join(str(a.metavar or a.dest).upper() if a.metavar is None else str(a.metavar)
                               for a in self._actions if not a.option_strings and a.help != argparse.SUPPRESS
                               and not isinstance(a, argparse._SubParsersAction))
        usage = f"{self.prog} [options] {positionals}".rstrip()
        if any(isinstance(a, argparse._SubParsersAction) for a in self._actions):
            usage = f"{self.prog} COMMAND [options]"
        sys.stderr.write(f"fmt: error: {escape(message)} (usage: {usage}; see {self.prog} --help)\n")
        sys.exit(EXIT_BAD_INPUT)


def debug_option() -> Parser:
    """The parent parser of every command: --debug is accepted after the command too (SUPPRESS
    keeps a subcommand from resetting what was given before it)."""
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of internal errors")
    return common


def parameter_options(parser: argparse.ArgumentParser) -> None:
    """--schema and the schema's parameters (--ff, --opt-type, --set NAME=VALUE)."""
    group = parser.add_argument_group("schema parameters")
    group.add_argument("--schema", metavar="NAME|PATH",
                       help="schema to read FILE with: a name (`fmt schema list`), a YAML file, or a Python "
                            "module exposing a Construct `schema` (default: detected from the magic, and among the "
                            "schemas that share one, by their recognise: rules)")
    group.add_argument("--ff", type=int, metavar="N",
                       help="feed-forward length, for models whose n_ff does not follow from n_mult "
                            "(sets the schema parameter ff)")
    group.add_argument("--opt-type", choices=("adam", "lbfgs"),
                       help="optimizer type of a version-1 optimizer context, instead of deciding it "
                            "from the exact size (sets opt_type)")
    group.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                       help="set any schema parameter (repeatable); integers are read as integers")


def output_options(parser: argparse.ArgumentParser, metavar: str, help_text: str) -> None:
    """-o/--outfile, --force and --dry-run of a command that writes one file."""
    # llama.cpp's converters call it --outfile; -o and --output are ggfmt's older names.
    parser.add_argument("-o", "--outfile", "--output", dest="output", metavar=metavar, help=help_text)
    parser.add_argument("--force", action="store_true", help=f"replace {metavar} if it exists (a regular file)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would be written (keys, tensor names, types, shapes, bytes) and every "
                             "input tensor that would be refused, and write nothing (exit 2 if any would be)")


def output_path(given: str | None, default: Path | Callable[[], Path]) -> Path:
    """-o as llama.cpp takes it: a file, or a directory (an existing one, or any name ending in /)
    to write the default file name into. ``default`` may be computed only when it is needed."""
    if given is None:
        return default() if callable(default) else default
    if given.endswith(("/", os.sep)) or Path(given).is_dir():
        directory = Path(given)
        if not directory.is_dir():
            raise UsageError(f"{given}: no such directory (a name ending in / means a directory to write into)")
        return directory / (default() if callable(default) else default).name
    return Path(given)


def parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The schema parameters given (see :func:`parameter_options`)."""
    from ..engine import TextValue

    params: dict[str, Any] = {}
    if not hasattr(args, "set"):
        return params  # a command without schema parameters (to-ggla)
    for item in args.set:
        name, sep, text = item.partition("=")
        if not sep or not name.isidentifier():
            raise UsageError(f"--set {item!r}: expected NAME=VALUE")
        params[name] = TextValue(text)  # read by the parameter's declared type once the schema is known
    if args.ff is not None:
        if args.ff <= 0:
            raise UsageError(f"--ff {args.ff}: must be a positive integer")
        params["ff"] = args.ff
    if args.opt_type is not None:
        params["opt_type"] = args.opt_type
    return params


def parse_directory(args: argparse.Namespace) -> Any:
    """The Document of FILE, a directory of a layout ggfmt declares (fmt parse)."""
    return read_directory(args.file, args.base, args.schema, parameters(args))


def read_directory(path: Path, base: Path | None, schema: str | None, params: dict[str, Any]) -> Any:
    """The Document of a directory layout (a PEFT or mlx-lm adapter, a CLIP model), shown as it is."""
    from ..sources.bundles import read, recognise

    bundle = recognise(path)
    if bundle is None:
        raise UsageError(f"{path}: a directory, and not one of the directory layouts ggfmt knows (PEFT and mlx-lm "
                         "adapters, CLIP models); fmt parse reads files")
    if schema is not None or params:
        raise UsageError(f"{path}: this {bundle.title} is read by its bundle declaration, not by a schema")
    # Shown as it is: fields that come from the base model only when --base names it, no checks.
    return read(bundle, path, base, converting=False)


def begin_command() -> None:
    """Forget what an earlier command in this process read and wrote (fmt called from Python)."""
    from ..io.inputs import forget_inputs
    from ..io.output import forget_committed

    forget_inputs()
    forget_committed()


def convert_to_file(args: argparse.Namespace, target: str) -> int:
    """``fmt to-gguf`` (target ``gguf``) and ``fmt to-ggla`` (a schema as the target): plan the
    conversion the registry finds, then write it to a temporary file that is renamed when complete."""
    from ..convert import convert, default_output
    from ..emit import writer
    from ..io.output import atomic_output, check_target
    from ._plan_report import describe_plan

    begin_command()
    source: Path = args.file
    if not source.exists():
        raise UsageError(f"{source}: no such file or directory")
    options = conversion_options(args)
    out = output_path(args.output, lambda: default_output(source, target, options, args.outtype))
    if not args.dry_run:
        check_target(out, force=args.force, inputs=[source])  # before the work, not only after it
    conversion = convert(source, target, schema=getattr(args, "schema", None), params=parameters(args),
                         mapping=getattr(args, "mapping", None), base=getattr(args, "base", None),
                         arch=getattr(args, "arch", None), options=options, outtype=args.outtype,
                         list_refused=args.dry_run)
    for warning in conversion.warnings:
        print(f"fmt: warning: {escape(warning)}", file=sys.stderr)
    plan = conversion.plan
    if args.dry_run:
        print(describe_plan(plan, out, conversion.description, target))
        for note in conversion.notes:
            print(f"  note: {escape(note)}")
        if plan.refused:  # what the conversion would refuse: each tensor's one line, then the refusal
            print(f"\nwould refuse {len(plan.refused)} input tensors:")
            for refusal in plan.refused:
                print(f"  {escape(str(refusal))}")
            raise UsageError(f"{source}: {len(plan.refused)} input tensors would be refused (listed above); "
                             "nothing written")
        return EXIT_OK
    write = writer(target)
    bar = progress_bar(plan.payload_bytes, args.quiet)
    try:
        with atomic_output(out, force=args.force, inputs=[source]) as temporary:
            summary = write(plan, target, temporary, bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet:
        print(f"{escape(str(out))}: {summary}, {out.stat().st_size:,} bytes ({conversion.description})")
        for note in conversion.notes:
            print(f"  note: {escape(note)}")
    return EXIT_OK


def table_options(parser: argparse.ArgumentParser, target: str) -> None:
    """The options the conversions to ``target`` declare in their tables (`options:`), as flags
    grouped under the tables' headings; a command that calls this passes them on when given."""
    from ..convert.mapping import command_line_options

    names = []
    for group in command_line_options(target):
        container: Any = parser.add_argument_group(group.heading) if group.heading else parser
        sets: dict[str, Any] = {}
        for option, help_text, table in group.options:
            where = container
            if option.exclusive is not None:
                if option.exclusive not in sets:
                    required = any(o.required for o, _, _ in group.options if o.exclusive == option.exclusive)
                    sets[option.exclusive] = container.add_mutually_exclusive_group(required=required)
                where = sets[option.exclusive]
            shown = argparse.SUPPRESS if option.hidden else help_text
            try:
                where.add_argument(*option.spellings, dest=option.name, help=shown, **_argument_kind(option))
            except argparse.ArgumentError:
                taken = [f for f in option.spellings if f in parser._option_string_actions]
                raise SchemaError(f"{table}: options.{option.name}",
                                  f"{', '.join(taken)} is already an option of fmt {parser.prog.split()[-1]}; "
                                  "give it other `flags`") from None
            names.append(option.name)
    parser.set_defaults(table_options=tuple(names))


def _argument_kind(option: Any) -> dict[str, Any]:
    """How argparse reads an option of the table language's ``type``."""
    if option.type == "bool":
        return {"action": "store_true"}
    kind: dict[str, Any] = {"metavar": option.metavar} if option.metavar is not None else {}
    if option.required and option.exclusive is None:
        kind["required"] = True
    if option.type == "float[]":
        return {**kind, "type": float, "nargs": len(option.metavar) if isinstance(option.metavar, tuple) else "+"}
    reads = {"int": int, "float": float, "str": str, "weights": Path, "json": Path, "document": Path, "tokenizer": Path}
    return {**kind, "type": reads[option.type]}


def conversion_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options given: the tables' flags, and ``--option NAME=VALUE`` for any option a table
    declares (read by its declared type once the table is known)."""
    from ..engine import TextValue

    given = {name: getattr(args, name, None) for name in getattr(args, "table_options", ())}
    # (not `in (None, False)`: 0 == False, and an explicit 0 is a value to check, not an absence)
    options = {name: value for name, value in given.items() if value is not None and value is not False}
    for item in getattr(args, "option", None) or []:
        name, sep, text = item.partition("=")
        if not sep or not name.isidentifier():
            raise UsageError(f"--option {item!r}: expected NAME=VALUE")
        options[name] = TextValue(text)
    return options


def progress_bar(total: int, quiet: bool) -> Any:
    """A bar of the payload bytes written, on a terminal, for a conversion long enough to need one."""
    if quiet or total < PROGRESS_THRESHOLD or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    try:
        columns, lines = os.get_terminal_size(sys.stderr.fileno())
    except OSError:
        columns = lines = 0
    # A terminal that reports no size (a fresh pseudo-terminal) would make tqdm hide the bar.
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="copying tensors", file=sys.stderr,
                ncols=columns if columns > 0 else 80, nrows=lines if lines > 0 else 24)
