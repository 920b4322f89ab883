"""A conversion's plan: every output key with its value and every output tensor with its source
and transforms, resolved from a mapping table against a Document before anything is written.

The emitters (:mod:`ggfmt.emit`) write a plan; nothing here writes a file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..document import Document, TensorRef
from ..engine import tensor_ref
from ..errors import FormatError, SchemaError, UsageError
from ..io.tensors import FileSlice, LoadedSource, PayloadSource
from ..schema.arrays import RecordList
from ..schema.compiler import INT_RANGES
from ..schema.constructs import TensorContainer
from ..schema.expr import Expression
from .mapping import (
    BLOCK_ID,
    CopyEntry,
    Group,
    MappingTable,
    MatchEntry,
    MetadataEntry,
    NamedEntry,
    Scope,
    TensorEntry,
    TensorTest,
    evaluate_entry,
    fill_message,
    fill_template,
    lookup_in,
    table_scope,
    template_names,
    walk,
)


@dataclass(frozen=True)
class MetadataValue:
    key: str
    value_type: str
    value: Any


@dataclass(frozen=True)
class OutputTensor:
    """A tensor of the output and where its bytes come from."""

    name: str
    ne: tuple[int, ...]
    ggml_type: int
    source: PayloadSource

    @property
    def nbytes(self) -> int:
        return self.source.nbytes


@dataclass
class Plan:
    """What a conversion writes, whatever the emitter: a GGUF (keys and tensors), a schema's file
    (ggla) or a Hugging Face directory (tensors and JSON files)."""

    architecture: str  # of a GGUF output; empty for the others
    metadata: list[MetadataValue]
    tensors: list[OutputTensor]
    warnings: list[str] = field(default_factory=list)  # input tensors a table leaves out on purpose
    files: dict[str, Any] = field(default_factory=dict)  # a directory output's JSON files (config.json)
    refused: list[FormatError] = field(default_factory=list)  # input tensors refused (when asked to list them)
    notes: list[str] = field(default_factory=list)  # what the summary tells (the table's `notes`)

    @property
    def payload_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


MAX_TENSOR_NAME = 63  # ggml's GGML_MAX_NAME (64) less the terminating NUL; gguf-py does not export it


def check_plan(plan: Plan, source: str) -> None:
    """What current llama.cpp requires of every tensor, whichever conversion planned it:
    a unique name of at most 63 bytes and at least one element."""
    seen: set[str] = set()
    for tensor in plan.tensors:
        if len(tensor.name.encode()) > MAX_TENSOR_NAME:
            raise FormatError("", None, f"the output tensor name {tensor.name[:40]!r}... is longer than the "
                                        f"{MAX_TENSOR_NAME} bytes a ggml tensor name can have", source)
        if tensor.name in seen:
            raise FormatError("", None, f"the output would hold two tensors named {tensor.name}", source)
        seen.add(tensor.name)
        if 0 in tensor.ne:
            raise FormatError("", None, f"the output tensor {tensor.name} would have a zero dimension "
                                        f"(ne {list(tensor.ne)}); llama.cpp reads no empty tensor", source)


def plan_gguf(doc: Document, table: MappingTable, arch: str | None = None,
              settings: Scope | None = None, refused: list[FormatError] | None = None) -> Plan:
    """Resolve ``table`` against ``doc``: every key with its value, every tensor with its source.
    ``arch`` replaces the table's architecture where the table allows it (``arch_option``);
    ``settings`` are the table's options as given or defaulted, and ``outtype``. Given a list
    ``refused``, an input tensor the table refuses is added to it rather than raised, so that all
    of them can be listed (the plan then leaves them out)."""
    architecture = str(arch or (table.architecture if isinstance(table.architecture, str) else "") or "")
    # what every entry may use: the schema's parameters, the parsed fields (which shadow a
    # parameter of the same name), the input's tensors, the architecture, then the table's values
    inputs = [_described(ref, i, table) for i, ref in enumerate(doc.tensors)]
    given = {"input_tensors": inputs, "input_by_name": {t["name"]: t for t in inputs}, "arch": architecture,
             "input_name": doc.origin.resolve().name}
    # (a table's constants are the cached table's own: expressions never change a value)
    tests = _TensorTests(table, doc)
    scopes = table_scope(table, [table.constants, doc.params, doc.fields, dict(settings or {}), given, tests])
    tests.scopes = scopes  # (a test's arguments may use the table's values)
    if isinstance(table.architecture, Expression) and not arch:  # the input's own
        found = evaluate_entry(table.architecture, scopes, f"{table.name}: architecture")
        if not isinstance(found, str) or not found:
            check_input(doc, table, scopes)  # a check of the table may say why
            raise FormatError("", None, f"names no architecture ({table.name} takes the input's own)", str(doc.source))
        architecture = given["arch"] = found
    _check_unread(doc, table)
    check_input(doc, table, scopes)
    metadata = resolve_metadata(table, scopes, architecture, str(doc.source), doc)
    tensors: list[OutputTensor] = []
    names: set[str] = set()
    matchers: list[tuple[MatchEntry, list[Scope]]] = []
    used: set[str] = set()  # paths of the input tensors a `from:` or `tensor:` entry took
    by_name = {described["name"]: (ref, described) for ref, described in zip(doc.tensors, inputs, strict=True)}
    named = False
    matched_at: int | None = None  # where the tensors `match:` entries select are written: at the first of them
    for entry, entry_scopes in walk(table.tensors, scopes):
        if isinstance(entry, MatchEntry):
            matched_at = len(tensors) if matched_at is None else matched_at
            matchers.append((entry, entry_scopes))
            continue
        if isinstance(entry, NamedEntry):
            named = True
            output, taken = _named(entry, entry_scopes, by_name, doc, table)
            if output.name in names:
                raise SchemaError(entry.where, f"tensor {output.name} is mapped twice")
            names.add(output.name)
            used.update(ref.path for ref in taken)
            tensors.append(output)
            continue
        assert isinstance(entry, TensorEntry)
        record = evaluate_entry(entry.source, entry_scopes, entry.where)
        if not isinstance(record, TensorContainer):
            raise SchemaError(entry.where, f"`from: {entry.source.source}` is not a tensor record")
        ref = tensor_ref(record, entry.source.source)
        bid = next((s[BLOCK_ID] for s in reversed(entry_scopes) if BLOCK_ID in s), None)
        name = fill_template(entry.name_template, entry.where, bid=bid)
        if ref.is_null:
            raise FormatError(ref.path, ref.offset, f"is a null tensor but {table.name} maps it to {name}")
        if name in names:
            raise SchemaError(entry.where, f"tensor {name} is mapped twice")
        names.add(name)
        used.add(ref.path)
        tensors.append(OutputTensor(name, ref.ne, ref.ggml_type, FileSlice(_file(ref, doc), ref.offset, ref.nbytes)))
    for name, why in doc.unread.items():  # what the reader could not take: fine only if the table drops it
        if not _dropped(name, matchers, table):
            raise FormatError(name, None, why, str(doc.source))
    warnings: list[str] = []
    if matchers or named:
        matched: list[tuple[Any, OutputTensor]] = []
        for index, ref in enumerate(doc.tensors):  # in the input's order
            if ref.path in used:
                continue
            try:
                planned = _planned_match(ref, index, matchers, doc, table, names, warnings)
            except FormatError as refusal:
                if refused is None:
                    raise
                refused.append(refusal)  # (--dry-run: every refusal is listed, then the conversion refused)
                continue
            if planned is not None:
                names.add(planned[1].name)
                matched.append(planned)
        if table.order is not None:
            try:
                matched.sort(key=lambda m: m[0])
            except TypeError:
                raise SchemaError(f"{table.name}: order", "its values cannot be compared with each other") from None
        at = len(tensors) if matched_at is None else matched_at
        tensors[at:at] = [t for _, t in matched]
    warnings += [fill_message(w.message, scopes, w.where) for w in table.warnings
                 if evaluate_entry(w.expr, scopes, w.where)]
    files = {name: evaluate_entry(expr, scopes, f"{table.name}: json_files.{name}")
             for name, expr in table.json_files.items()}
    notes = [fill_message(n.message, scopes, n.where) for n in table.notes if evaluate_entry(n.expr, scopes, n.where)]
    return Plan(architecture, metadata, tensors, warnings, files, refused or [], notes)


def _planned_match(ref: TensorRef, index: int, matchers: list[tuple[MatchEntry, list[Scope]]], doc: Document,
                   table: MappingTable, names: set[str], warnings: list[str]) -> tuple[Any, OutputTensor] | None:
    """What the `match:` entries make of the input tensor ``ref``: its sort key and output tensor,
    or None when it is left out (dropped, or unmatched in a table that only warns of it)."""
    planned = _matched(ref, index, matchers, doc, table)
    if isinstance(planned, _Dropped):
        return None
    if planned is None:
        why = f"{ref.name or ref.path} is selected by no entry of {table.name}"
        if table.unmatched == "warn":
            warnings.append(f"{why}; not converted")
            return None
        raise FormatError(ref.path, ref.offset, f"{why}, so ggfmt does not know what it becomes", str(_file(ref, doc)))
    if planned[1].name in names:
        raise FormatError(ref.path, ref.offset, f"becomes {planned[1].name}, which another tensor already became",
                          str(_file(ref, doc)))
    return planned


class _TensorTests(Mapping[str, Any]):
    """A table's `tensor_tests`, each run once, when first looked up: the test over the data of
    every input tensor its pattern selects, one tensor in memory at a time."""

    def __init__(self, table: MappingTable, doc: Document) -> None:
        self._tests = {test.name: test for test in table.tensor_tests}
        self._table = table
        self._doc = doc
        self._results: dict[str, bool] = {}
        self.scopes: list[Scope] = []

    def __getitem__(self, name: str) -> bool:
        if name not in self._results:
            test = self._tests[name]  # KeyError: not a test; the lookup goes on
            self._results[name] = self._run(test)
        return self._results[name]

    def _run(self, test: TensorTest) -> bool:
        import numpy as np

        from .transforms import TESTS, from_bytes, read_dtype

        chosen = TESTS[test.call.name]
        selected = 0
        for index, ref in enumerate(self._doc.tensors):
            described = _described(ref, index, self._table)
            found = test.pattern.fullmatch(described["name"])
            if found is None:
                continue
            selected += 1
            captures = {k: int(v) if k == BLOCK_ID else v for k, v in found.groupdict().items()}
            scopes = [*self.scopes, {"tensor": described}, captures]
            args = [evaluate_entry(a, scopes, f"{test.where}, {test.call.source}") for a in test.call.args]
            file = _file(ref, self._doc)
            dtype = read_dtype(ref.ggml_type)
            if dtype is None and not (chosen.whole_rows and ref.ne):
                raise FormatError(ref.path, ref.offset, f"{ref.name} is {ref.type_name}; the test {test.call.name} "
                                                        "reads f32, f16 and bf16 tensors", str(file))
            data = _source(ref, self._doc).read()
            n_rows = ref.ne[-1] if len(ref.ne) > 1 else 1
            array = from_bytes(data, ref.ggml_type, ref.ne) if dtype is not None \
                else np.frombuffer(data, dtype=np.uint8).reshape(n_rows, len(data) // n_rows)
            try:
                if not chosen.holds(array, *args):
                    return False
            except ValueError as e:
                raise FormatError(ref.path, ref.offset, f"{ref.name}: {test.call.source}: {e}", str(file)) from None
        if not selected:
            raise SchemaError(test.where, f"{test.written!r} selects no input tensor")
        return True

    def __contains__(self, name: object) -> bool:
        return name in self._tests

    def __iter__(self) -> Iterator[str]:
        return iter(self._tests)

    def __len__(self) -> int:
        return len(self._tests)


def _source(ref: TensorRef, doc: Document) -> FileSlice | LoadedSource:
    """Where ``ref``'s bytes come from: a range of its file, or torch when only torch read it."""
    if ref.load is not None:
        return LoadedSource(ref.load, ref.nbytes)
    return FileSlice(_file(ref, doc), ref.offset, ref.nbytes)


def _file(ref: TensorRef, doc: Document) -> Path:
    """The file that holds ``ref``'s bytes."""
    return ref.file if ref.file is not None else doc.source


def check_input(doc: Document, table: MappingTable, scopes: list[Scope]) -> None:
    """The table's `checks`: the first that fails is reported at its field (file, path, offset)."""
    for check in table.checks:
        if not evaluate_entry(check.expr, scopes, check.where):
            message = fill_message(check.message, scopes, check.where)
            if check.field.startswith("--"):  # about the command line, not the input
                raise UsageError(f"{check.field}: {message}" if check.field != "--" else message)
            file, path, offset = doc.locate(check.field)
            raise FormatError(path, offset, message, file)


def _named(entry: NamedEntry, scopes: list[Scope], by_name: dict[str, tuple[TensorRef, dict[str, Any]]],
           doc: Document, table: MappingTable) -> tuple[OutputTensor, list[TensorRef]]:
    """The output tensor a `tensor:` entry makes of the input tensor it names (or of the tensors,
    joined), and what it took."""
    templates = entry.input_template if isinstance(entry.input_template, list) else [entry.input_template]
    wanted = [fill_message(t, scopes, entry.where, shorten=False) for t in templates]
    for one in wanted:
        if one not in by_name:
            raise FormatError(one, None, f"is missing from the input, but {table.name} expects it", str(doc.source))
    ref, described = by_name[wanted[0]]
    scopes = table_scope(table, [*scopes, {"tensor": described}], "tensor_values")
    for check in [*table.require, *entry.require]:
        if not evaluate_entry(check.expr, scopes, check.where):
            raise FormatError(ref.path, ref.offset, fill_message(check.message, scopes, check.where),
                              str(_file(ref, doc)))
    name = fill_message(entry.name_template, scopes, entry.where, shorten=False)
    if isinstance(entry.input_template, list):  # several tensors joined by concat
        refs = [by_name[one][0] for one in wanted]
        return _joined(refs, name, entry, [*scopes, {"output": name}], doc), refs
    return _transformed(ref, name, entry, [*scopes, {"output": name}], doc), [ref]


def _described(ref: TensorRef, index: int, table: MappingTable) -> dict[str, Any]:
    """An input tensor as entries see it: its name (after the table's `rename_inputs`), ne (ggml
    order), type name and position."""
    return {"name": _renamed(ref.name, table), "ne": list(ref.ne), "type": ref.type_name, "index": index}


def _renamed(name: str, table: MappingTable) -> str:
    """An input tensor's name as entries see it: with the table's `rename_inputs` applied."""
    for old, new in table.rename_inputs.items():
        name = name.replace(old, new)
    return name


def _check_unread(doc: Document, table: MappingTable) -> None:
    """A tensor the reader could not take, which no `drop: true` entry's pattern selects, is an error
    before anything else is said about the input (whether the entry's `when` holds is seen later)."""
    patterns: list[re.Pattern[str]] = []

    def collect(items: list[Any]) -> None:
        for item in items:
            if isinstance(item, Group):
                collect(item.items)
            elif isinstance(item, MatchEntry) and item.drop:
                patterns.append(item.pattern)

    collect(table.tensors)
    for name, why in doc.unread.items():
        if not any(p.fullmatch(_renamed(name, table)) for p in patterns):
            raise FormatError(name, None, why, str(doc.source))


def _dropped(name: str, matchers: list[tuple[MatchEntry, list[Scope]]], table: MappingTable) -> bool:
    """Whether the first `match:` entry that selects the tensor ``name`` drops it."""
    described = {"name": _renamed(name, table), "ne": [], "type": "unread", "index": -1}
    for entry, entry_scopes in matchers:
        found = entry.pattern.fullmatch(str(described["name"]))
        if found is None:
            continue
        captures = {k: int(v) if k == BLOCK_ID else v for k, v in found.groupdict().items()}
        scopes = table_scope(table, [*entry_scopes, {"tensor": described}, captures], "tensor_values")
        if entry.when is None or evaluate_entry(entry.when, scopes, entry.where):
            return entry.drop
    return False


class _Dropped:
    """What a `drop: true` entry makes of a tensor."""


DROPPED = _Dropped()


def _matched(ref: TensorRef, index: int, matchers: list[tuple[MatchEntry, list[Scope]]], doc: Document,
             table: MappingTable) -> tuple[Any, OutputTensor] | _Dropped | None:
    """The output tensor the first `match:` entry that selects ``ref`` makes of it, with its
    sort key (the table's `order`, else None), or None."""
    described = _described(ref, index, table)
    for position, (entry, entry_scopes) in enumerate(matchers):
        found = entry.pattern.fullmatch(described["name"])
        if found is None:
            continue
        captures: dict[str, Any] = {k: int(v) if k == BLOCK_ID else v for k, v in found.groupdict().items()}
        # the selected tensor itself: its name, ne (ggml order) and type name, beside the captures
        # (the table's tensor_values, computed when first used, are names the entry's `when` may use)
        scopes = table_scope(table, [*entry_scopes, {"tensor": described}, captures], "tensor_values")
        if entry.when is not None and not evaluate_entry(entry.when, scopes, entry.where):
            continue
        if entry.drop:
            return DROPPED
        if entry.refuse is not None:  # (before the table's `require`: this is why the tensor cannot go)
            raise FormatError(ref.path, ref.offset, fill_message(entry.refuse, scopes, entry.where),
                              str(_file(ref, doc)))
        for check in [*table.require, *entry.require]:
            if not evaluate_entry(check.expr, scopes, check.where):
                raise FormatError(ref.path, ref.offset, fill_message(check.message, scopes, check.where),
                                  str(_file(ref, doc)))
        # the output name: the captures, and the table's tensor_values it names
        named = {n: lookup_in(scopes, n, entry.where) for n in template_names(entry.name_template) if n not in captures}
        output = fill_template(entry.name_template, entry.where, **named, **captures)
        key = None if table.order is None else evaluate_entry(
            table.order, [*scopes, {"output": output, "entry": position}], f"{table.name}: order")
        return key, _transformed(ref, output, entry, [*scopes, {"output": output}], doc)
    return None


def _transformed(ref: TensorRef, name: str, entry: MatchEntry | NamedEntry, scopes: list[Scope],
                 doc: Document) -> OutputTensor:
    """``ref`` as ``name``, through the entry's transforms (applied when it is written)."""

    from ..io.tensors import ArraySource, BlocksSource
    from .transforms import BF16, GGML_TYPE_OF_DTYPE, TRANSFORMS, from_bytes, read_dtype

    file = _file(ref, doc)
    source = _source(ref, doc)
    if not entry.transforms:
        return OutputTensor(name, ref.ne, ref.ggml_type, source)
    dtype = read_dtype(ref.ggml_type)
    if dtype is None and ref.ne and all(TRANSFORMS[call.name].whole_rows for call in entry.transforms):
        return _rows_of_blocks(ref, name, entry, scopes, source, file)
    if dtype is None:
        raise FormatError(ref.path, ref.offset, f"{ref.name} is {ref.type_name}; transforms apply to f32, f16 "
                                                "and bf16 tensors", str(file))
    steps, shape, dtype = _planned_steps(entry.transforms, tuple(reversed(ref.ne)), dtype, scopes, entry.where,
                                         lambda why: FormatError(ref.path, ref.offset, f"{ref.name}: {why}", str(file)))
    read_ne = ref.ne  # what is read of the input: all of it, or the rows a first `split` keeps
    rows = steps[0].transform.rows(steps[0].shape, *steps[0].args) if steps and steps[0].transform.rows else None
    if rows is not None and isinstance(source, FileSlice):  # nothing changed before it: read those rows only
        row_bytes = source.nbytes // steps[0].shape[0]
        source = FileSlice(file, source.offset + rows[0] * row_bytes, (rows[1] - rows[0]) * row_bytes)
        read_ne = (*read_ne[:-1], rows[1] - rows[0])
        steps = steps[1:]
    out_ne = tuple(reversed(shape))
    if not steps and dtype == read_dtype(ref.ggml_type) and ref.ggml_type != BF16:
        return OutputTensor(name, out_ne, ref.ggml_type, source)  # the bytes copied as they are

    out_type = GGML_TYPE_OF_DTYPE[dtype]
    nbytes = int(math.prod(shape)) * dtype.itemsize
    if all(step.transform.rowwise for step in steps) and ref.ne and isinstance(source, FileSlice):
        return OutputTensor(name, out_ne, out_type,
                            BlocksSource(lambda: _row_blocks(ref.ggml_type, read_ne, source, steps), nbytes))

    def produce() -> Any:
        try:
            return _apply(steps, from_bytes(source.read(), ref.ggml_type, read_ne))
        except ValueError as e:  # (a transform that checks the data: detile_kv)
            raise FormatError(ref.path, ref.offset, f"{ref.name}: {e}", str(file)) from None

    return OutputTensor(name, out_ne, out_type, ArraySource(produce, nbytes))


def _rows_of_blocks(ref: TensorRef, name: str, entry: MatchEntry | NamedEntry, scopes: list[Scope], source: Any,
                    file: Path) -> OutputTensor:
    """A quantized tensor through transforms that only select and compare whole rows: each row (its
    blocks, as bytes) is kept as it is, the type too."""
    import numpy as np

    from ..io.tensors import ArraySource

    def fail(why: str) -> FormatError:
        return FormatError(ref.path, ref.offset, f"{ref.name}: {why}", str(file))

    n_rows = ref.ne[-1] if len(ref.ne) > 1 else 1
    row_bytes = ref.nbytes // n_rows
    steps, shape, _ = _planned_steps(entry.transforms, tuple(reversed(ref.ne)), np.dtype(np.uint8), scopes,
                                     entry.where, fail)
    out_rows = shape[0] if len(ref.ne) > 1 else 1

    def produce() -> Any:
        array = np.frombuffer(source.read(), dtype=np.uint8).reshape(n_rows, row_bytes)
        try:
            for step in steps:
                array = step.transform.apply(array, *step.args)
        except ValueError as e:
            raise fail(str(e)) from None
        return array

    return OutputTensor(name, tuple(reversed(shape)), ref.ggml_type, ArraySource(produce, out_rows * row_bytes))


def _planned_steps(calls: list[Any], shape: tuple[int, ...], dtype: Any, scopes: list[Scope], where: str,
                   fail: Any) -> tuple[list[_Step], tuple[int, ...], Any]:
    """The transforms an entry names, with their arguments evaluated, and the shape (numpy order)
    and dtype they make; a step that changes no value (scale(1), a cast to the dtype it has,
    squeeze: the bytes stay as they are) is left out, the shapes saying what the array is."""
    from .transforms import TRANSFORMS

    steps: list[_Step] = []
    for call in calls:
        transform = TRANSFORMS[call.name]
        args = [evaluate_entry(a, scopes, f"{where}, {call.source}") for a in call.args]
        try:
            before, shape = shape, transform.shape(shape, *args)
            dtype_before = dtype
            dtype = transform.dtype(dtype, *args) if transform.dtype is not None else dtype
        except (TypeError, ValueError) as e:
            raise fail(f"{call.source}: {e}") from None
        if transform.identity is None or not transform.identity(dtype_before, *args):
            steps.append(_Step(transform, args, before))
    return steps, shape, dtype


def _apply(steps: list[_Step], array: Any) -> Any:
    for step in steps:
        array = step.transform.apply(array.reshape(step.shape), *step.args)
    return array


def _joined(refs: list[TensorRef], name: str, entry: NamedEntry, scopes: list[Scope], doc: Document) -> OutputTensor:
    """Several input tensors as one: joined by the entry's first transform, `concat(axis)`, then
    through the others. The parts are read when the tensor is written, one tensor at a time."""
    import numpy as np

    from ..io.tensors import ArraySource
    from .transforms import GGML_TYPE_OF_DTYPE, concat_shape, from_bytes, read_dtype

    first = refs[0]

    def fail(why: str) -> FormatError:
        return FormatError(first.path, first.offset, f"{' + '.join(r.name for r in refs)}: {why}",
                           str(_file(first, doc)))

    dtypes = {read_dtype(r.ggml_type) for r in refs}
    if None in dtypes or len(dtypes) != 1:
        raise fail(f"concat joins tensors of one type (f32, f16 or bf16), not {', '.join(r.type_name for r in refs)}")
    dtype = dtypes.pop()
    call = entry.transforms[0]
    axis = evaluate_entry(call.args[0], scopes, f"{entry.where}, {call.source}") if call.args else 0
    try:
        shape = concat_shape([tuple(reversed(r.ne)) for r in refs], axis)
    except (TypeError, ValueError) as e:
        raise fail(f"{call.source}: {e}") from None
    steps, shape, dtype = _planned_steps(entry.transforms[1:], shape, dtype, scopes, entry.where, fail)
    sources = [(_source(r, doc), r) for r in refs]

    def produce() -> Any:
        parts = [from_bytes(source.read(), r.ggml_type, r.ne) for source, r in sources]
        return _apply(steps, np.concatenate(parts, axis=axis))

    nbytes = int(math.prod(shape)) * dtype.itemsize
    return OutputTensor(name, tuple(reversed(shape)), GGML_TYPE_OF_DTYPE[dtype], ArraySource(produce, nbytes))


@dataclass(frozen=True)
class _Step:
    transform: Any  # transforms.Transform
    args: list[Any]
    shape: tuple[int, ...]  # of the array it is applied to (numpy order)


def _row_blocks(ggml_type: int, ne: tuple[int, ...], source: FileSlice, steps: list[_Step]) -> Iterator[Any]:
    """The tensor through row-wise transforms, a block of rows (the last ggml dimension) at a time
    (``sources.weights.ROW_BLOCK_BYTES`` of the input each: memory stays flat, calls stay few).
    A row-wise transform works element by element, so a block keeps its stored shape."""
    from ..sources import weights
    from .transforms import from_bytes

    rows = ne[-1]
    row_bytes = source.nbytes // rows if rows else 0
    step = max(1, weights.ROW_BLOCK_BYTES // max(row_bytes, 1))
    for start in range(0, rows, step):
        count = min(step, rows - start)
        block = FileSlice(source.path, source.offset + start * row_bytes, count * row_bytes).read()
        array = from_bytes(block, ggml_type, (*ne[:-1], count))
        for transform_step in steps:
            array = transform_step.transform.apply(array, *transform_step.args)
        yield array


def resolve_metadata(table: MappingTable, scopes: list[Scope], architecture: str, source: str,
                     doc: Document | None = None) -> list[MetadataValue]:
    """Every metadata entry of ``table`` that applies, evaluated in ``scopes`` and type-checked.

    A value that does not fit its GGUF type is reported at the field it came from when the
    value is a plain field path of ``doc`` (``opt.ctx.iter``)."""
    metadata = []
    keys: set[str] = {"general.architecture"}  # written by the GGUF writer itself
    for entry, entry_scopes in walk(table.metadata, scopes):
        if isinstance(entry, CopyEntry):
            for copied in _copied(entry, entry_scopes, source):
                if copied.key in keys:
                    raise SchemaError(entry.where, f"the key {copied.key} is written twice")
                keys.add(copied.key)
                metadata.append(copied)
            continue
        assert isinstance(entry, MetadataEntry)
        value = evaluate_entry(entry.value, entry_scopes, entry.where)
        bid = next((s[BLOCK_ID] for s in reversed(entry_scopes) if BLOCK_ID in s), None)
        key = fill_template(entry.key, entry.where, arch=architecture, bid=bid, id=bid)
        if key in keys:
            raise SchemaError(entry.where, f"the key {key} is written twice")
        keys.add(key)
        field = entry.value.source if doc is not None and doc.offset_of(entry.value.source) is not None else ""
        where = (field, doc.offset_of(field) if doc is not None and field else None)
        metadata.append(MetadataValue(key, entry.value_type, _checked(value, entry.value_type, key, source, where)))
    return metadata


def _copied(entry: CopyEntry, scopes: list[Scope], source: str) -> Iterator[MetadataValue]:
    """The typed pairs a `copy:` entry takes, each with its own GGUF type (general.architecture
    aside: the GGUF writer writes it first)."""
    import fnmatch

    from ..view import keyed_entry

    records = evaluate_entry(entry.records, scopes, entry.where)
    entries = [keyed_entry(r) for r in records] if isinstance(records, list | RecordList) else [None]
    if None in entries:
        raise SchemaError(entry.where, f"`copy: {entry.records.source}` is not a list of keyed records (a GGUF's "
                                       "metadata)")
    for key, value in (e for e in entries if e is not None):
        if key == "general.architecture" or not any(fnmatch.fnmatchcase(key, p) for p in entry.keys) \
                or any(fnmatch.fnmatchcase(key, p) for p in entry.skip):
            continue
        if value.array and value.value and not isinstance(value.value[0], str | int | float | bool):
            raise FormatError("", None, f"the key {key} holds an array of arrays, which ggfmt does not copy", source)
        type_name = "string" if value.type == "str" else value.type
        items = list(value.value) if value.array else value.value
        yield MetadataValue(key, type_name + ("[]" if value.array else ""),
                            _checked(items, type_name + ("[]" if value.array else ""), key, source))


def _all_fit(items: list[Any] | tuple[Any, ...], item_type: str) -> bool:
    """Whether every item already is what :func:`_checked` would make of it (then the list is kept
    as it is); False leaves the items to be checked one by one, which says which one is wrong."""
    kinds = set(map(type, items))
    if item_type in INT_RANGES:
        lo, hi = INT_RANGES[item_type]
        return kinds <= {int} and (not items or (lo <= min(items) and max(items) <= hi))
    if item_type in ("f32", "f64"):
        return kinds <= {float}
    if item_type == "bool":
        return kinds <= {bool}
    return item_type == "string" and kinds <= {str, bytes}


def _checked(value: Any, value_type: str, key: str, source: str, where: tuple[str, int | None] = ("", None)) -> Any:
    def bad(why: str) -> FormatError:
        return FormatError(where[0], where[1], f"{why} for the GGUF key {key}", source)

    if value_type.endswith("[]"):
        if not isinstance(value, list | tuple):
            raise bad(f"expected a list, got {value!r}")
        item_type = value_type[:-2]
        if _all_fit(value, item_type):  # (a vocabulary's 250,000 items checked in a few passes, not one by one)
            return list(value)
        return [_checked(item, item_type, key, source, where) for item in value]

    if value_type in INT_RANGES:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(f"expected an integer, got {value!r}")
        lo, hi = INT_RANGES[value_type]
        if not lo <= value <= hi:
            raise bad(f"{value} does not fit in {value_type}")
        return value
    if value_type in ("f32", "f64"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise bad(f"expected a number, got {value!r}")
        return float(value)
    if value_type == "bool":
        return bool(value)
    if not isinstance(value, str | bytes):  # bytes: a 2023 vocabulary's tokens, written as they are
        raise bad(f"expected a string, got {value!r}")
    return value


