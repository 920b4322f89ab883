"""The generic engine: parse a file against a schema into a :class:`Document`.

Parsing reads headers only.  Tensor payloads are recorded (offset and size) and skipped, so
the cost of a parse depends on the number of fields and tensors, not on the size of the file.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import construct as cs

from .document import Document, TensorRef, TensorTable
from .errors import FormatError, GgfmtError, UsageError
from .io.inputs import note_input, open_input
from .schema import Schema, detect_schema, detect_schemas, load_schema
from .schema.arrays import TensorRecords
from .schema.constructs import FileView, PayloadRef, SizeUnknown, TensorContainer, element_budget, join_path
from .schema.expr import ExpressionError, input_room


def resolve_schema(path: Path, schema: Schema | str | None) -> Schema:
    if isinstance(schema, Schema):
        return schema
    if schema is None:
        return detect_schema(path)
    return load_schema(schema)


def parse(path: str | os.PathLike[str], schema: Schema | str | None = None,
          params: Mapping[str, Any] | None = None) -> Document:
    """Parse ``path`` against ``schema`` (a :class:`Schema`, a name, a path, or None to detect).

    ``params`` sets the schema's top-level parameters (``{"ff": 11008, "opt_type": "adam"}``).
    Raises :class:`FormatError` (with the file, field path and byte offset) when the file
    does not match.
    """
    path = Path(path)
    note_input(path)
    if schema is None:
        candidates = detect_schemas(path)
        if len(candidates) > 1:
            return _parse_recognised(path, candidates, params)
        schema = candidates[0]
    return _parse_as(path, resolve_schema(path, schema), params)


def _parse_recognised(path: Path, candidates: list[Schema], params: Mapping[str, Any] | None) -> Document:
    """The parse of ``path`` by the one candidate (schemas sharing its magic) that reads the whole
    file and whose ``recognise:`` rule holds; a tie, or no fit, is said in one line."""
    fitting: list[Document] = []
    failures: list[tuple[int, GgfmtError, Schema]] = []
    for candidate in candidates:
        try:
            doc = _parse_as(path, candidate, params)
        except (FormatError, UsageError) as e:
            reached = e.offset if isinstance(e, FormatError) and e.offset is not None else -1
            failures.append((reached, e, candidate))
            continue
        if _recognised(doc):
            fitting.append(doc)
        else:
            failures.append((doc.size, FormatError("", None, f"not a {candidate.title}: {_rule(candidate)}",
                                                   str(path)), candidate))
    if len(fitting) == 1:
        return fitting[0]
    if fitting:
        named = ", ".join(f"{doc.schema.id} ({doc.schema.title})" for doc in fitting)
        raise UsageError(f"{path}: fits {len(fitting)} layouts: {named}; choose one with --schema NAME")
    # none fits: the error of the layout that read furthest into the file, and what else was tried
    _, error, nearest = max(failures, key=lambda f: f[0])
    others = ", ".join(c.id for c in candidates if c is not nearest)
    if isinstance(error, FormatError):
        error.message += f" (read as {nearest.id}, the nearest fit; also tried: {others})"
    raise error


def _recognised(doc: Document) -> bool:
    rule = doc.schema.recognise
    if rule is None:
        return True
    try:
        return bool(rule(lambda name: doc.fields[name] if name in doc.fields else _unknown(name)))
    except ExpressionError:
        return False


def _rule(schema: Schema) -> str:
    return f"`recognise: {schema.recognise.source}` does not hold" if schema.recognise is not None else ""


def _unknown(name: str) -> Any:
    raise ExpressionError(f"unknown name {name!r}")


def _parse_as(path: Path, loaded: Schema, params: Mapping[str, Any] | None) -> Document:
    values = _parameters(loaded, params or {})
    try:
        raw = io.FileIO(open_input(path), "r", closefd=True)
        size = os.fstat(raw.fileno()).st_size
        with FileView(raw, size) as stream:
            try:
                with input_room(size):
                    fields = _parse_root(loaded.construct, stream, values)
            except RecursionError:
                raise FormatError("", stream.tell(), "nested too deeply to be read (a structure inside itself, "
                                                     "hundreds of levels down)", str(path)) from None
            except FormatError as e:
                e.file = str(path)
                raise
            except SizeUnknown as e:  # a probe escaped its choice: a schema problem, reported plainly
                raise FormatError("", None, f"schema {loaded.id}: {e}", str(path)) from None
            except cs.ConstructError as e:
                raise FormatError("", stream.tell(), str(e).strip().splitlines()[-1], str(path)) from None
            end = stream.tell()
    except OSError as e:  # (a directory, a FIFO, a missing file: refused by open_input)
        raise UsageError(f"{path}: cannot be read: {e.strerror}") from None
    if end != size and not loaded.trailing:
        raise FormatError("", end, f"the {loaded.id} layout ends here but the file has {size - end} "
                                   f"more bytes (file size {size})", str(path))
    # The records the parse met (a walk of the fields would visit millions of header items); a
    # Python schema's construct may register none, and is then walked.
    records = fields.pop("_tensors", None) if isinstance(fields, cs.Container) else None
    tensors: Sequence[TensorRef]
    if records is None or not (records or loaded.registers_tensors):
        tensors = list(_tensors(fields, ""))
    else:
        tensors = _tensor_table(records)
    return Document(source=path, schema=loaded, fields=fields, tensors=tensors, size=size, params=values)


def build(path: str | os.PathLike[str], schema: Schema | str, fields: Mapping[str, Any],
          params: Mapping[str, Any] | None = None) -> None:
    """Write ``fields`` to ``path`` through ``schema`` (Construct builds what it parses).

    Derived fields (``rebuild:``, ``contents:``, instances) are computed; payloads may be
    bytes, numpy arrays or objects with ``write_to(stream)`` such as :class:`ggfmt.io.tensors.FileSlice`,
    so a large file is written without holding its tensors in memory.
    """
    loaded = schema if isinstance(schema, Schema) else load_schema(schema)
    context = cs.Container(**_parameters(loaded, params or {}))
    context._parsing = False
    context._building = True
    context._sizing = False
    context._params = context
    with open(path, "wb") as out:
        loaded.construct._build(fields, out, context, "")


def with_payloads_from(doc: Document) -> Any:
    """The document's fields with every payload replaced by a :class:`FileSlice` of its source:
    what :func:`build` needs to write the same file again."""
    from .io.tensors import FileSlice

    def swap(value: Any) -> Any:
        if isinstance(value, PayloadRef):
            return FileSlice(doc.source, value.offset, value.nbytes)
        if isinstance(value, cs.Container):
            copy = type(value)((k, swap(v)) for k, v in value.items())
            return copy
        if isinstance(value, list):
            return cs.ListContainer(swap(v) for v in value)
        return value

    return swap(doc.fields)


def _parameters(schema: Schema, given: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(given) - set(schema.params)
    if unknown:
        known = ", ".join(sorted(schema.params)) or "none"
        raise UsageError(f"schema {schema.id} has no parameter {', '.join(sorted(unknown))} (its parameters: {known})")
    values = {name: p.default for name, p in schema.params.items()}
    for name, value in given.items():
        if isinstance(value, TextValue):  # given as text (--set NAME=VALUE): read as the declared type
            try:
                value = schema.params[name].parse(str(value))
            except ValueError as e:
                raise UsageError(f"--set {name}={value}: {e}") from None
        values[name] = value
    return values


class TextValue(str):
    """A parameter value as the user typed it, to be read by the parameter's declared type."""


def _parse_root(construct: cs.Construct, stream: FileView, params: dict[str, Any]) -> Any:
    # What Construct's parse_stream() does, with an empty path so that field paths start at the root.
    context = cs.Container(**params)
    context._offsets = {}  # field path -> byte offset, filled in by the fields as they are parsed
    context._tensors = []  # (path, record) of each tensor record, or (path, list) of a list of them, in order
    context._budget = element_budget(stream.size)
    context._parsing = True
    context._building = False
    context._sizing = False
    context._params = context
    fields = construct._parsereport(stream, context, "")
    if isinstance(fields, cs.Container):
        fields["_offsets"] = context._offsets
        fields["_tensors"] = context._tensors
    return fields


def tensor_ref(record: TensorContainer, path: str) -> TensorRef:
    """The :class:`TensorRef` of a parsed tensor record."""
    return _tensor_table([(path, record)])[0]


def _tensor_table(records: list[tuple[str, Any]]) -> TensorTable:
    """The tensors of each (path, record), and of each record of each (path, list of records),
    by column (of a list of 263,000 tensors held as columns: its columns, the records not made)."""
    table = TensorTable()
    for path, found in records:
        if isinstance(found, TensorContainer):
            name, ggml_type, ne, data = _roles(found)
            payload = found[data]
            assert isinstance(payload, PayloadRef)
            table.add(path, found[name], found[ggml_type], found[ne], payload.offset, payload.nbytes)
            continue
        if not len(found):
            continue
        columns = found.columns if isinstance(found, TensorRecords) else \
            {field: [record[field] for record in found] for field in found[0] if not field.startswith("_")}
        name, ggml_type, ne, data = _roles(found[0] if isinstance(found, list) else found.extra)
        payloads = columns[data]
        table.add_list(path, columns[name], columns[ggml_type], columns[ne], [p.offset for p in payloads],
                       [p.nbytes for p in payloads])
    return table


def _roles(record: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """The fields that hold a tensor record's name, ggml type, ne and data."""
    roles = record["_roles"]
    return roles["name"], roles["ggml_type"], roles["ne"], roles["data"]


def _tensors(value: Any, path: str) -> Iterator[TensorRef]:
    """Every tensor record in parse order, with its dotted path."""
    if isinstance(value, TensorContainer):
        yield tensor_ref(value, path)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and not key.startswith("_"):
                yield from _tensors(item, join_path(path, key))
    elif isinstance(value, list) and value and not isinstance(value[0], int | float | str | bytes):
        # (a list of numbers or strings, often millions of them, holds no tensor record)
        for i, item in enumerate(value):
            yield from _tensors(item, f"{path}[{i}]")
