"""Which conversion an input needs, found as data, and where its output goes by default.

An input is a file (parsed through its schema) or a directory (read through the bundle
declaration that recognises it, ``bundles/*.yaml``). Either is a Document with an id; the
conversion to a target (``gguf``, or a schema id such as ``ggla``) is the mapping table whose
``source:`` and ``target:`` say so (:func:`ggfmt.convert.mapping.table_for`), or the one ``--mapping``
names. Nothing here names a format.
"""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import ggml_types
from ..errors import FormatError, GgfmtError, SchemaError, UsageError

if TYPE_CHECKING:
    from ..document import Document
    from .mapping import MappingTable
    from .plan import Plan


@dataclass
class Conversion:
    plan: Plan
    description: str
    target: str = "gguf"  # "gguf", or the id of the schema that writes the output
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the summary tells (tensors --outtype could not take)
    hf_tokenizer: str | None = None  # a Hugging Face output: the tokenizer class --tokenizer is saved with


def _retyped(conversion: Conversion, outtype: str | None, table: MappingTable, source: Path) -> Conversion:
    """The conversion with its tensors in ``outtype``, which the table's ``outtypes`` must allow
    (a table that `applies_outtype` has done so with its own casts)."""
    from .outtype import check_outtype, retype

    check_outtype(outtype, table.outtypes, f"this conversion ({table.name})")
    if table.applies_outtype:
        return conversion
    retyped = retype(conversion.plan.tensors, outtype, str(source))
    conversion.plan.tensors = retyped.tensors
    conversion.notes.extend(retyped.notes)
    return conversion


def default_output(source: Path, target: str = "gguf", options: Mapping[str, Any] | None = None,
                   outtype: str | None = None) -> Path:
    """Beside a file, its name with the target's extension; in a directory, the name its bundle
    declares for the target (which may depend on the conversion's options)."""
    extension = ".gguf" if target == "gguf" else ".bin"
    if source.is_dir():
        from ..sources.bundles import output_name

        bundle = _bundle_of(source)
        if bundle is not None:
            table = _table_or_none(bundle.id, target)
            settings = _settings(table, options or {}, outtype) if table is not None else {"outtype": outtype}
            return source / (output_name(bundle, target, settings) or f"{bundle.id}{extension}")
    table = _file_table(source, target)
    if table is not None and table.output is not None:
        from ..sources.bundles import declared_name

        given = options or {}
        # the options as given (files they name are not read for a name), outtype and stem
        settings = {**{n: given.get(n, o.default) for n, o in table.options.items()}, "outtype": outtype,
                    "stem": source.stem}
        return source.with_name(declared_name(table.output, settings, f"{table.name}: output"))
    return source.with_suffix(extension)


def _file_table(source: Path, target: str) -> MappingTable | None:
    """The table that converts a file to ``target``, by its schema (from its magic), if any."""
    from ..schema import detect_schema

    try:
        return _table_or_none(detect_schema(source).id, target)
    except GgfmtError:
        return None  # a file no schema reads: the conversion itself will say so


def convert(source: Path, target: str = "gguf", *, schema: str | None = None,
            params: Mapping[str, Any] | None = None, mapping: str | None = None, base: Path | None = None,
            arch: str | None = None, options: Mapping[str, Any] | None = None,
            outtype: str | None = None, list_refused: bool = False) -> Conversion:
    """What ``source`` (a file or a declared directory) becomes in ``target``, planned, not written.
    ``options`` are the conversion options given on the command line (``text_only``), which the
    table must declare. ``list_refused``: the input tensors the table refuses are collected in
    ``plan.refused`` (each a one-line error) rather than the first raised."""
    from ..schema.expr import input_room
    from .plan import check_plan, plan_gguf

    given = {k: v for k, v in (options or {}).items() if v is not None and v is not False}
    _check_options_apply(source, given)
    doc, table = _document_and_table(source, target, schema, params, mapping, base)
    if target == "gguf" and table.architecture is None:
        raise SchemaError(table.name, "a GGUF mapping needs `architecture`")
    settings = _settings(table, given, outtype)
    _add_option_tensors(doc, table, settings)
    with input_room(doc.size):  # the table's expressions may build lists as long as the input allows
        plan = plan_gguf(doc, table, _architecture(arch, table), settings, [] if list_refused else None)
    what = doc.schema.title if doc.schema.title and doc.schema.id != doc.schema.title else doc.schema.id
    # (a Hugging Face directory's summary counts its layers instead of naming the table)
    description = f"{what} -> Hugging Face" if target == "hf" else f"{what} -> {_shown(target)} via {table.name}"
    conversion = Conversion(plan, description, target, list(plan.warnings), hf_tokenizer=table.hf_tokenizer)
    conversion.notes.extend(plan.notes)
    if any(ggml_types.is_legacy(t.ggml_type) for t in plan.tensors):  # 2023 blocks: in today's layouts
        from .legacy_blocks import relayout

        plan.tensors, notes = relayout(plan.tensors, outtype, str(source))
        conversion.notes.extend(notes)
    conversion = _retyped(conversion, outtype, table, source)
    if target != "hf":  # what ggml requires of tensor names; a safetensors file checks its own
        check_plan(conversion.plan, str(source))
    # the parsed document is done with before anything is written; its records refer to each
    # other (each scope to its parent), so only a collection frees them
    del doc
    gc.collect()
    return conversion


def _shown(target: str) -> str:
    return "GGUF" if target == "gguf" else target


def _bundle_of(directory: Path) -> Any:
    from ..sources.bundles import recognise

    return recognise(directory)


def _table_or_none(source_id: str, target: str) -> MappingTable | None:
    from .mapping import load_mapping, table_for

    name = table_for(source_id, target)
    return load_mapping(name) if name is not None else None


def _settings(table: MappingTable, given: Mapping[str, Any], outtype: str | None) -> dict[str, Any]:
    """The names a table's options give its entries: each option as given (checked against its
    declared type) or its default, and ``outtype``."""
    settings: dict[str, Any] = {"outtype": outtype}
    for name, option in table.options.items():
        settings[name] = _checked_option(option, given[name]) if name in given else option.default
        read = FILE_OPTIONS.get(option.type)
        if read is not None:  # what the file it names holds, and where it is (NAME_file)
            settings[f"{name}_file"] = settings[name]
            settings[name] = _read_file_option(option, settings[name], read)
    unknown = [name for name in given if name not in table.options]
    if unknown:
        flag = "--" + unknown[0].replace("_", "-")
        raise UsageError(f"{flag} does not apply to this conversion ({table.name}){_applies_to(unknown[0])}")
    return settings


def _checked_option(option: Any, value: Any) -> Any:
    from ..engine import TextValue

    if isinstance(value, TextValue):  # --option NAME=VALUE: read as the declared type
        value = _option_from_text(option, str(value))
    kinds = {"bool": bool, "int": int, "float": float | int, "str": str,
             **{kind: Path | str for kind in PATH_OPTIONS}}
    if option.type == "float[]":
        if not isinstance(value, list | tuple) or not all(isinstance(v, float | int) for v in value):
            raise UsageError(f"{option.flag}: expected numbers, got {value!r}")
        return [float(v) for v in value]
    if not isinstance(value, kinds[option.type]) or (option.type != "bool" and isinstance(value, bool)):
        raise UsageError(f"{option.flag}: expected a {option.type}, got {value!r}")
    if option.type == "float" and isinstance(value, float | int) and not math.isfinite(value):
        raise UsageError(f"{option.flag} {value}: expected a finite number")
    for clause in option.valid:
        try:
            clause.check(value, {}, option.flag, None)
        except FormatError as e:
            raise UsageError(f"{option.flag} {value}: {e.message}") from None
    return str(value) if option.type in PATH_OPTIONS else value


def _json_file(path: Path) -> Any:
    from ..sources.weights import read_json

    return read_json(path)


def _document_fields(path: Path) -> Any:
    from ..engine import parse

    return parse(path).fields


def _tokenizer(path: Path) -> Any:
    from ..sources.hf_tokenizer import read_tokenizer

    return read_tokenizer(path)


# option type -> what the file such an option names becomes when the conversion starts: a JSON
# file's value, a parsed document's fields, a Hugging Face tokenizer (tokens by id, merges, special
# ids); a `weights` option's file joins the input's tensors instead (_add_option_tensors)
FILE_OPTIONS: dict[str, Callable[[Path], Any]] = {"json": _json_file, "document": _document_fields,
                                                   "tokenizer": _tokenizer}
PATH_OPTIONS = ("weights", *FILE_OPTIONS)  # the option types whose value is a path


def _read_file_option(option: Any, path: str | None, read: Callable[[Path], Any]) -> Any:
    from ..io.inputs import note_input

    if path is None:
        return None
    note_input(Path(path))
    with _said_of(option):
        return read(Path(path))


@contextlib.contextmanager
def _said_of(option: Any) -> Iterator[None]:
    """A file an option names that cannot be read (missing, a directory, a FIFO): said of the option."""
    try:
        yield
    except UsageError as e:
        raise UsageError(f"{option.flag} {e}") from None


def _option_from_text(option: Any, text: str) -> Any:
    from ..schema.compiler import read_text

    try:
        return read_text(option.type, text)
    except ValueError as e:
        raise UsageError(f"--option {option.name}={text}: {e}") from None


def _takers(name: str) -> list[tuple[str, bool]]:
    """The conversions that take an option: (``a Hugging Face CLIP model (clip-gguf)``, whether
    its input is a directory)."""
    from ..sources.bundles import bundles
    from .mapping import table_headers, table_sources

    titles = {b.id: b.title for b in bundles()}
    single_files = {b.id for b in bundles() if b.is_file}
    takers = []
    for table, data in table_headers():
        if isinstance(data.get("options"), dict) and name in data["options"]:
            source_id = next(iter(table_sources(data)), "")
            is_directory = source_id in titles and source_id not in single_files
            shown = f"a {titles[source_id]} directory" if is_directory else \
                f"a {titles[source_id]}" if source_id in titles else f"{source_id} files"
            takers.append((f"{shown} ({table})", is_directory))
    return takers


def _applies_to(name: str) -> str:
    takers = _takers(name)
    return f"; it applies to {', '.join(t for t, _ in takers)}" if takers else ""


def _check_options_apply(source: Path, given: Mapping[str, Any]) -> None:
    """An option that only directory conversions take, given for a file: said before the file is
    read, since it may be something no schema knows."""
    for name in given:
        flag = "--" + name.replace("_", "-")
        takers = _takers(name)  # (none: the table that converts the input says it does not take it)
        if takers and not source.is_dir() and all(is_directory for _, is_directory in takers):
            raise UsageError(f"{flag}: {source} is a file{_applies_to(name)}")


def _add_option_tensors(doc: Document, table: MappingTable, settings: Mapping[str, Any]) -> None:
    """The tensors of the weights files that options name join the input's, after them; a JSON
    file an option names is where messages about that option's fields point."""
    from ..io.inputs import note_input
    from ..sources.bundles import tensor_refs

    for name, option in table.options.items():
        if option.type == "json" and settings.get(f"{name}_file") is not None:
            doc.field_files[name] = Path(settings[f"{name}_file"])
        if option.type == "weights" and settings.get(name) is not None:
            path = Path(settings[name])
            if not path.is_file():
                raise UsageError(f"{option.flag} {path}: no such file")
            note_input(path)
            held = {ref.name for ref in doc.tensors}
            added = tensor_refs(path)
            for ref in added:
                if ref.name in held:
                    raise FormatError(ref.path, ref.offset, f"is in {doc.source.name} too; {option.flag} names a "
                                                            "file of other tensors", str(path))
            doc.tensors = [*doc.tensors, *added]


def _file_bundle(source: Path, target: str, schema: str | None) -> Any:
    """The single-file bundle that declares ``source``; or, when every conversion to ``target`` reads
    the same single-file bundle (a Hugging Face directory is made from a Gemma checkpoint only),
    that one, so that its reader says why a file is not one."""
    from ..sources.bundles import bundles, recognise_file
    from .mapping import table_headers

    if schema is not None:
        return None
    found = recognise_file(source)
    if found is not None:
        return found
    sources = {str(data.get("source", "")) for _, data in table_headers() if data.get("target") == target}
    single = [b for b in bundles() if b.is_file and b.id in sources]
    return single[0] if len(single) == 1 and len(sources) == 1 else None


def _document_and_table(source: Path, target: str, schema: str | None, params: Mapping[str, Any] | None,
                        mapping: str | None, base: Path | None) -> tuple[Document, MappingTable]:
    """The input as a Document, and the table that converts it to ``target``."""
    from .mapping import load_mapping, table_for, table_uses

    if source.is_dir():
        from ..sources.bundles import read

        bundle = _bundle_of(source)  # a directory layout declared in bundles/ (told apart by data)
        if bundle is None:
            from ..sources.bundles import bundles

            known = ", ".join(b.title for b in bundles() if not b.is_file)
            raise UsageError(f"{source}: a directory, and not one ggfmt knows (it knows: {known})")
        if schema or params:
            raise UsageError(f"{source}: this {bundle.title} is read by its bundle declaration; --schema and schema "
                             "parameters apply to files")
        name = mapping or table_for(bundle.id, target)
        if name is None:
            raise UsageError(f"{source}: ggfmt has no {_shown(target)} conversion for a {bundle.title} (no "
                             f"mapping table with source: {bundle.id} and target: {target})")
        table = load_mapping(name)
        if base is not None and not table_uses(table, "base"):
            raise UsageError(f"--base: this conversion ({table.name}) reads nothing from a base model")
        return read(bundle, source, base, with_base=table_uses(table, "base")), table
    if base is not None:
        raise UsageError("--base applies to a directory layout (an adapter and its base model), not to a file")
    file_bundle = _file_bundle(source, target, schema)
    if file_bundle is not None:  # a container file declared in bundles/ (a torch.save checkpoint)
        from ..sources.bundles import read

        name = mapping or table_for(file_bundle.id, target)
        if name is None:
            raise UsageError(f"{source}: ggfmt has no {_shown(target)} conversion for a {file_bundle.title}")
        if params:
            raise UsageError(f"{source}: a {file_bundle.title} is read by its bundle declaration; schema "
                             "parameters apply to files a schema reads")
        return read(file_bundle, source), load_mapping(name)
    from ..engine import parse

    doc = parse(source, schema, params)
    name = mapping or table_for(doc.schema.id, target)  # the table whose source/target say it converts these
    if name is None and doc.schema.current:  # the layout says why nothing converts it, or that it is current
        raise UsageError(f"{source}: no {_shown(target)} conversion for a {doc.schema.title}: {doc.schema.current}")
    if name is None:
        raise UsageError(f"{source}: ggfmt has no {_shown(target)} conversion for {doc.schema.id} files (no mapping "
                         f"table with source: {doc.schema.id} and target: {target}); `fmt parse` still shows what "
                         "is inside")
    return doc, load_mapping(name)


def _architecture(arch: str | None, table: MappingTable) -> str | None:
    """``--arch``, for the conversions whose table lets it name the architecture."""
    from ..ggml_types import architectures

    if arch is None:
        return None
    if not table.arch_option:
        raise UsageError(f"--arch applies to conversions whose table allows it (such as ggla adapters), not to "
                         f"{table.name}")
    if arch not in architectures():
        raise UsageError(f"--arch {arch}: not an architecture gguf-py knows (for example llama)")
    return arch
