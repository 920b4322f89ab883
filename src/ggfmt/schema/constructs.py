"""Construct classes that carry the schema language's semantics.

A YAML schema compiles to an ordinary Construct tree (``Struct`` of named fields, computed
instances, primitive ``FormatField`` leaves); the classes here add what Construct lacks:

* :class:`Field` - one schema field: repetition, ``if``, ``valid``, ``contents``, ``rebuild``,
  bounds checked against the bytes actually left in the file, errors that name the field's
  dotted path and byte offset, and that offset recorded for later messages;
* :class:`Payload` - a byte range that is recorded (offset, size), never read; in place, or
  at an absolute offset (``at:``);
* :class:`SizedBytes` - ``bytes`` and ``str`` of an expression-given size;
* :class:`Position` - ``type: offset``, the current absolute offset;
* :class:`AlignTo` - padding up to a multiple of the *absolute* stream offset;
* :class:`WithArgs` - passes arguments to a parameterised type;
* :class:`ChooseBySize` / :class:`SwitchOn` - choices between alternatives;
* :class:`TensorRecord` - marks the containers a tensor-record type produces.

Each node states three things, as Construct's ``_parse``/``_build``/``_sizeof`` protocol does:
``_parse``, ``_build``, and ``_static_size()``: the bytes it always takes whatever the file holds,
or None (:func:`static_size` asks a tree; ``fmt schema show`` prints it beside each field).

Sizes without parsing: :func:`probe_size` runs a parse over a :class:`ProbeStream`, a
hypothetical position in the real file.  Leaves take their declared value (``contents``, or
``valid: {eq: ...}``) when the schema declares one and are read from the file otherwise
(:data:`~ggfmt.schema.expr.UNKNOWN` past its end); payloads and names are skipped by their
sizes; nothing is validated.  A size, count or switch key that depends on an unknown value
stops the probe with :class:`SizeUnknown`.
"""

from __future__ import annotations

import array
import io
import itertools
import os
import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import construct as cs

from ..errors import FormatError, SchemaError, Truncated, ValidationFailed
from . import records
from .arrays import BULK_MIN_ITEMS, NumberArray, RecordList, StringArray, TensorRecords, read_strings
from .expr import UNKNOWN, Expression, ExpressionError, context_lookup
from .records import codec_for, scan

# -- streams -------------------------------------------------------------------------------


class FileView(io.BufferedReader):
    """A read-only binary stream of a file that knows its size (used for bounds checks).

    A buffered reader itself, not a wrapper around one: a parse asks for the position and reads
    a few bytes several times per field, and C methods answer faster than Python ones."""

    def __init__(self, raw: io.RawIOBase, size: int) -> None:
        super().__init__(raw)
        self.size = size


class ProbeStream:
    """A hypothetical position in a real stream: what :func:`probe_size` parses over.

    Header words the schema does not declare are read from the file at the hypothetical
    position (past its end they are unknown); payloads and names are skipped.
    """

    def __init__(self, real: Any, offset: int) -> None:
        self.real = real
        self.pos = offset
        self.size = stream_size(real)

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self.pos = offset if whence == os.SEEK_SET else self.pos + offset
        return self.pos

    @property
    def overran(self) -> bool:
        return self.pos > self.size

    def read(self, n: int = -1) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise SizeUnknown("bytes past the end of the file")
        self.real.seek(self.pos)
        data: bytes = self.real.read(n)
        self.pos += n
        return data


class SizeUnknown(Exception):
    """The size of a layout depends on bytes that a probe does not read."""


def stream_size(stream: Any) -> int:
    size = getattr(stream, "size", None)
    if isinstance(size, int):
        return size
    return int(cs.stream_size(stream))


def is_probe(stream: Any) -> bool:
    return isinstance(stream, ProbeStream)


# -- name resolution -----------------------------------------------------------------------


def evaluate(expr: Expression, context: Mapping[str, Any], path: str, offset: int | None,
             extra: Mapping[str, Any] | None = None) -> Any:
    try:
        return expr(context_lookup(context, extra))
    except ExpressionError as e:
        raise FormatError(path, offset, f"schema expression failed: {e}") from None


def require_known(value: Any, what: str, path: str) -> Any:
    if value is UNKNOWN:
        raise SizeUnknown(f"{path}: {what} depends on a value that is not declared")
    return value


def join_path(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


# -- validation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Validation:
    """A ``valid:`` clause: ``eq``, ``any_of``, ``min``/``max``, a free ``expr`` over ``_``, or
    for a list ``unique`` (a dotted field path) and ``disjoint`` (start and size paths)."""

    eq: Expression | None = None
    any_of: list[Expression] | None = None
    minimum: Expression | None = None
    maximum: Expression | None = None
    expr: Expression | None = None
    guard: Expression | None = None
    unique: str | None = None
    disjoint: tuple[str, str] | None = None

    def applies(self, value: Any, context: Mapping[str, Any], path: str, offset: int) -> Any:
        """True, False, or UNKNOWN when the guard needs a value a probe has not read."""
        if self.guard is None:
            return True
        test = evaluate(self.guard, context, path, offset, {"_": value})
        return test if test is UNKNOWN else bool(test)

    def expected_value(self, context: Mapping[str, Any], path: str, offset: int) -> Any:
        """The value this clause pins down, or UNKNOWN (used by probes)."""
        if self.eq is not None and self.applies(UNKNOWN, context, path, offset) is True:
            return evaluate(self.eq, context, path, offset)
        return UNKNOWN

    def check(self, value: Any, context: Mapping[str, Any], path: str, offset: int) -> None:
        if not self.applies(value, context, path, offset):
            return
        try:
            self._check(value, context, path, offset)
        except TypeError:  # e.g. a text parameter where a number was meant
            raise FormatError(path, offset, f"{_show(value)} cannot be checked against this field's "
                                            "`valid` clause (values of different kinds)") from None

    def _check(self, value: Any, context: Mapping[str, Any], path: str, offset: int) -> None:
        def ev(expr: Expression) -> Any:
            return evaluate(expr, context, path, offset, {"_": value})

        if self.eq is not None:
            want = ev(self.eq)
            if value != want:
                raise ValidationFailed(path, offset, want, value, f"expected {_show(want)}, got {_show(value)}")
        if self.any_of is not None:
            options = [ev(e) for e in self.any_of]
            if value not in options:
                raise ValidationFailed(path, offset, options, value,
                                       f"expected one of {_show(options)}, got {_show(value)}")
        if self.minimum is not None and value < (lo := ev(self.minimum)):
            raise ValidationFailed(path, offset, lo, value, f"expected at least {_show(lo)}, got {_show(value)}")
        if self.maximum is not None and value > (hi := ev(self.maximum)):
            raise ValidationFailed(path, offset, hi, value, f"expected at most {_show(hi)}, got {_show(value)}")
        if self.expr is not None and not ev(self.expr):
            raise ValidationFailed(path, offset, self.expr.source, value,
                                   f"expected {_rule_text(self.expr, context, path)}, got {_show(value)}")
        if self.unique is not None:
            _check_unique(_items(value, path, offset, "unique"), self.unique, path, offset)
        if self.disjoint is not None:
            _check_disjoint(_items(value, path, offset, "disjoint"), self.disjoint, path, offset)


# `_` as a name of its own in an expression's text (not a part of `n_embd` or `x._`)
_THE_VALUE = re.compile(r"(?<![\w.])_(?![\w])")


def _rule_text(expr: Expression, context: Mapping[str, Any], path: str) -> str:
    """A `valid: {expr: ...}` rule as a user reads it: `_` called by the field's name, and the
    values of the other fields it reads beside it (`n_embd % n_head == 0 (n_embd = 4096)`)."""
    field = re.sub(r"\[\d+\]$", "", path.rsplit(".", 1)[-1]) or "the value"
    text = _THE_VALUE.sub(field, expr.source)
    lookup = context_lookup(context)
    shown = []
    for name in sorted(expr.names - {"_", "_root", field}):
        try:
            known = lookup(name)
        except ExpressionError:
            continue
        if isinstance(known, int | float | str | bytes | list):  # (not a record, nor a value not read)
            shown.append(f"{name} = {_show(known, 40)}")
    return f"{text} ({', '.join(shown)})" if shown else text


def _items(value: Any, path: str, offset: int, clause: str) -> Sequence[Any]:
    if not isinstance(value, list | RecordList | TensorRecords):
        raise FormatError(path, offset, f"`valid: {{{clause}: ...}}` applies to a repeated field, "
                                        f"not to {_show(value)}")
    return value


def _at(item: Any, dotted: str) -> Any:
    """The value at a dotted field path inside one list item (None where a field is missing)."""
    for name in dotted.split("."):
        item = item.get(name) if isinstance(item, Mapping) else None
    return item


def _fields_of(items: Sequence[Any], *dotted: str) -> Iterator[tuple[Any, ...]]:
    """The values at the dotted paths of each item: read as columns from a list of records in
    bulk (when the paths are the records' own fields), without making the records."""
    if isinstance(items, RecordList | TensorRecords) and items.has_columns(*dotted):
        return zip(*(items.column(d) for d in dotted), strict=True)
    return (tuple(_at(item, d) for d in dotted) for item in items)


def _check_unique(items: Sequence[Any], dotted: str, path: str, offset: int) -> None:
    if isinstance(items, RecordList | TensorRecords) and items.has_columns(dotted):
        column = items.column(dotted)
        try:
            if len(set(column)) == len(column):  # (one C call for 263,000 names: the usual verdict)
                return
        except TypeError:  # (lists: made tuples below)
            pass
    seen: dict[Any, int] = {}
    for index, (key,) in enumerate(_fields_of(items, dotted)):
        if isinstance(key, list):
            key = tuple(key)
        if key in seen:
            raise FormatError(path, offset, f"{path}[{index}].{dotted} {_show(key)} is also {path}[{seen[key]}]'s; "
                                            f"each {dotted} must be unique")
        seen[key] = index


def _check_disjoint(items: Sequence[Any], paths: tuple[str, str], path: str, offset: int) -> None:
    # Ranges in file order, each past the end of the one before (as writers lay them out): disjoint
    end = None
    for start, size in _fields_of(items, *paths):
        if size:
            if size < 0 or (end is not None and start < end):
                break
            end = start + size
    else:
        return
    # Sorted by start, each range must end before the next one starts: n log n, not n squared.
    ranges = sorted((start, start + size, index)
                    for index, (start, size) in enumerate(_fields_of(items, *paths)) if size)
    for (start, end, index), (next_start, next_end, next_index) in itertools.pairwise(ranges):
        if next_start < end:
            raise FormatError(path, offset,
                              f"{path}[{next_index}]'s bytes [{next_start}, {next_end}) overlap "
                              f"{path}[{index}]'s [{start}, {end}) (by {paths[0]} and {paths[1]} must not overlap)")


def _show(value: Any, limit: int = 120) -> str:
    """A value in an error line: short, one line (a record shows its fields, a long list its start)."""
    if isinstance(value, Mapping):
        items = ", ".join(f"{k}={_show(v, limit)}" for k, v in value.items()
                          if isinstance(k, str) and not k.startswith("_"))
        text = "{" + items + "}"
    elif isinstance(value, list):
        text = "[" + ", ".join(_show(v, limit) for v in value[:16]) + (", ...]" if len(value) > 16 else "]")
    elif isinstance(value, bytes | str):
        text = repr(value)
    else:
        text = str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- the field -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RepeatUntil:
    """``repeat: {until: EXPR}``: elements are read until EXPR holds for the last one (``_``)."""

    condition: Expression


MAX_DEPTH = 64  # fields inside fields: far beyond any layout's, well before Python's stack runs out
_depth = [0]  # how deep the parse is now


class Field(cs.Construct):  # type: ignore[misc]
    """One field of a schema ``seq``; see the module doc."""

    def __init__(
        self,
        name: str,
        subcon: cs.Construct,
        *,
        fixed_size: int | None = None,
        repeat: Expression | RepeatUntil | str | None = None,
        condition: Expression | None = None,
        valid: list[Validation] | None = None,
        contents: bytes | None = None,
        rebuild: Expression | None = None,
        bulk_code: str | None = None,
    ) -> None:
        super().__init__()
        self.bulk_code = bulk_code  # code of a primitive (PRIMITIVE_CODES): a repeat is read in one call
        self.name = name  # what Struct files the value under (instead of a Renamed wrapper)
        self.field_name = name
        self.subcon = subcon
        self.fixed_size = fixed_size  # bytes of one element when it is a primitive leaf
        self.repeat = repeat
        self.condition = condition
        self.valid = valid or []
        self.contents = contents
        self.rebuild = rebuild
        self.flagbuildnone = contents is not None or rebuild is not None or condition is not None

    # parsing -------------------------------------------------------------------------
    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        path = join_path(path, self.field_name)
        offset = stream.tell()
        if self.condition is not None:
            test = evaluate(self.condition, context, path, offset)
            if is_probe(stream):
                require_known(test, "its `if` condition", path)
            if not test:
                return None
        if is_probe(stream):
            return self._probe(stream, context, path, offset)
        offsets = context.get("_params", {}).get("_offsets")  # the context parse() began with
        # Where each field outside repeated elements starts, for messages about values found later
        # (not those inside: a path string per element field would cost more than the file).
        if offsets is not None and "[" not in path:
            offsets[path] = offset
        if self.fixed_size is None:  # a structure: one level deeper
            _depth[0] += 1
            try:
                if _depth[0] > MAX_DEPTH:
                    raise FormatError(path, offset, f"nested too deeply: more than {MAX_DEPTH} structures "
                                                    "inside each other (ggfmt reads no deeper)")
                value = self._read(stream, context, path, offset)
            finally:
                _depth[0] -= 1
        else:
            value = self._read(stream, context, path, offset)
        if self.contents is not None and value != self.contents:
            raise ValidationFailed(path, offset, self.contents, value, f"expected {self.contents!r}, got {value!r}")
        for clause in self.valid:
            clause.check(value, context, path, offset)
        return value

    def _count(self, stream: Any, context: Any, path: str, offset: int) -> int | None:
        if self.repeat is None or self.repeat == "eos" or isinstance(self.repeat, RepeatUntil):
            return None
        assert isinstance(self.repeat, Expression)
        count = evaluate(self.repeat, context, path, offset)
        require_known(count, "its repeat count", path)
        if not isinstance(count, int) or count < 0:
            raise FormatError(path, offset, f"repeat count must be a non-negative integer, got {count!r}")
        return count

    def _read(self, stream: Any, context: Any, path: str, offset: int) -> Any:
        if self.repeat is None:  # one element, the common case: nothing to count
            return self._read_one(stream, context, path, None, offset)
        count = self._count(stream, context, path, offset)
        remaining = stream_size(stream) - offset
        if isinstance(self.repeat, RepeatUntil):
            return self._read_until(stream, context, path, self.repeat.condition)
        if self.repeat == "eos":
            items = cs.ListContainer()
            while (before := stream.tell()) < stream_size(stream):
                items.append(self._read_one(stream, context, f"{path}[{len(items)}]", len(items)))
                if stream.tell() == before:
                    raise FormatError(path, before, "an element of `repeat: eos` took no bytes; it would never end")
            return items
        if count is None:
            return self._read_one(stream, context, path, None)
        if self.fixed_size is not None and count * self.fixed_size > remaining:
            raise Truncated(path, offset, count * self.fixed_size, remaining,
                            f"{count} x {self.fixed_size} bytes expected, only {remaining} left in the file")
        if count > remaining:  # every element takes at least a byte: refuse before looping
            raise Truncated(path, offset, count, remaining,
                            f"{count} elements expected, only {remaining} bytes left in the file")
        spend_elements(context, count, path, offset)
        element = self._element(context, path, offset)
        if isinstance(element, PrefixedBytes):
            prefix = element.prefix_for(context, path, offset)
            if count >= BULK_MIN_ITEMS:
                return read_strings(stream, count, prefix, element.encoding, path, offset, remaining + offset)
            return cs.ListContainer(element.read_many(stream, prefix, count, path, offset))
        bulk = self._bulk(context, path, offset)
        if bulk is not None:
            return self._read_bulk(stream, bulk, count, path, offset)
        if count >= records.MIN_RECORDS and element is not None:
            records_read = self._read_records(stream, context, element, count, path, offset)
            if records_read is not None:
                return records_read
        items = cs.ListContainer()
        for i in range(count):
            items.append(self._read_one(stream, context, f"{path}[{i}]", i))
        return items

    def _read_records(self, stream: Any, context: Any, element: Any, count: int, path: str,
                      offset: int) -> RecordList | TensorRecords | None:
        """A long repeat of records through the compiled reader (:mod:`.records`), or None when the
        element does not compile, or the compiled reader meets a record it does not decide and the
        general path reads that record without an error (the general path then reads them all)."""
        codec = codec_for(element)
        if codec is None:
            return None
        budget = context.get("_params", {}).get("_budget")
        before = budget[0] if budget is not None else 0
        # a check of the whole list (unique, disjoint) reads columns of it, and so does any reader
        # of keyed records (GGUF metadata: its keys, types and values): kept as the records are scanned
        whole_list = any(v.unique is not None or v.disjoint is not None for v in self.valid) or _keyed(element)
        got = scan(codec, stream, context, count, offset, stream_size(stream), budget, _depth[0], whole_list)
        if isinstance(got, RecordList):
            return got
        if isinstance(got, TensorRecords):  # listed as the parse's tensors, in order
            found = context.get("_params", {}).get("_tensors")
            if found is not None:
                found.append((path, got))  # (the whole list: a pair per record would be 263,000 more objects)
            return got
        # The general path reads the record the fast path left: its error is the one reported.
        self._read_one(stream, context, f"{path}[{got}]", got)
        if budget is not None:
            budget[0] = before
        stream.seek(offset)
        return None

    def _read_until(self, stream: Any, context: Any, path: str, condition: Expression) -> Any:
        """Elements up to and including the first for which ``condition`` holds (``_`` is the
        element just read); every element must take bytes, and the file must not end first."""
        items = cs.ListContainer()
        while True:
            before = stream.tell()
            if before >= stream_size(stream):
                raise FormatError(path, before, f"the file ends before `repeat: until {condition.source}` holds "
                                                f"({len(items)} elements read)")
            spend_elements(context, 1, path, before)
            item = self._read_one(stream, context, f"{path}[{len(items)}]", len(items))
            items.append(item)
            if stream.tell() == before:
                raise FormatError(path, before, "an element of `repeat: until` took no bytes; it would never end")
            if evaluate(condition, context, f"{path}[{len(items) - 1}]", before, {"_": item}):
                return items

    def _element(self, context: Any, path: str, offset: int) -> Any:
        """The construct of every element: the field's own, or the one a `switch-on` chooses (once,
        when its key does not depend on the element's _index); None when elements may differ."""
        if not isinstance(self.subcon, SwitchOn):
            return self.subcon
        if "_index" in self.subcon.key.source:
            return None
        key = evaluate(self.subcon.key, context, path, offset)
        return self.subcon.cases.get(key, self.subcon.default) if key is not UNKNOWN else None

    def _bulk(self, context: Any, path: str, offset: int) -> str | None:
        """The primitive's code (PRIMITIVE_CODES) when every element is the same primitive."""
        if self.bulk_code is not None:
            return self.bulk_code
        return PRIMITIVE_CODES.get(self._element(context, path, offset))

    def _read_bulk(self, stream: Any, code: str, count: int, path: str, offset: int) -> Any:
        """``count`` primitives in one read instead of one Construct call each, kept as one
        :class:`NumberArray` when there are many; their total size is checked against the bytes
        left before anything is read."""
        size = struct.calcsize("<" + code)
        remaining = stream_size(stream) - offset
        if count * size > remaining:
            raise Truncated(path, offset, count * size, remaining,
                            f"{count} x {size} bytes expected, only {remaining} left in the file")
        items = NumberArray(stream.read(count * size), code)
        return items if count >= BULK_MIN_ITEMS else cs.ListContainer(items.tolist())

    def _read_one(self, stream: Any, context: Any, path: str, index: int | None, offset: int | None = None) -> Any:
        if offset is None:
            offset = stream.tell()
        if self.fixed_size is not None:
            remaining = stream_size(stream) - offset
            if remaining < self.fixed_size:
                raise Truncated(path, offset, self.fixed_size, remaining,
                                f"unexpected end of file: {self.fixed_size} bytes expected, {remaining} left")
        if index is not None:
            context._index = index
        try:
            return self.subcon._parsereport(stream, context, path)
        except FormatError:
            raise
        except SizeUnknown:
            raise
        except cs.ConstructError as e:
            raise _parse_error(e, path, offset) from None

    def _probe(self, stream: Any, context: Any, path: str, offset: int) -> Any:
        """Advance over this field under a size probe's hypothesis; see :func:`probe_size`.

        A value the schema declares (``contents``, ``valid: {eq: ...}``) is taken as declared
        without reading; other primitive values are read from the file; nothing is validated.
        """
        if self.contents is not None:
            stream.seek(len(self.contents), os.SEEK_CUR)
            return self.contents
        declared = UNKNOWN
        for clause in self.valid:
            if declared is UNKNOWN:
                declared = clause.expected_value(context, path, offset)
        count = self._count(stream, context, path, offset)
        if self.repeat == "eos":
            raise SizeUnknown(f"{path}: repeats to the end of the file")
        if isinstance(self.repeat, RepeatUntil):
            raise SizeUnknown(f"{path}: repeats until {self.repeat.condition.source}")
        if self.fixed_size is not None:
            nbytes = self.fixed_size * (1 if count is None else count)
            if declared is not UNKNOWN:
                stream.seek(nbytes, os.SEEK_CUR)
                return declared
            if offset + nbytes > stream.size:
                # Past the end of the file the value is unknown; it only matters if a size uses it.
                stream.seek(nbytes, os.SEEK_CUR)
                return UNKNOWN
        if count is None:
            return self.subcon._parsereport(stream, context, path)
        if count > stream.size - offset:
            # Under this hypothesis the elements (a byte each at least) run past the end of the file.
            stream.seek(stream.size + 1)
            raise SizeUnknown(f"{path}: {count} elements cannot fit in the file")
        spend_elements(context, count, path, offset)
        return cs.ListContainer(self.subcon._parsereport(stream, context, f"{path}[{i}]") for i in range(count))

    # building ------------------------------------------------------------------------
    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        path = join_path(path, self.field_name)
        offset = stream.tell()
        if self.condition is not None and not evaluate(self.condition, context, path, offset):
            return None
        if self.contents is not None:
            obj = self.contents
        elif self.rebuild is not None:
            obj = evaluate(self.rebuild, context, path, offset)
        for clause in self.valid:
            clause.check(obj, context, path, offset)
        count = self._count(stream, context, path, offset)
        if self.repeat is None:
            return self._build_one(obj, stream, context, path)
        if not isinstance(obj, list | tuple | StringArray | NumberArray | RecordList | TensorRecords):
            raise FormatError(path, offset, f"a list is needed to build a repeated field, got {type(obj).__name__}")
        if count is not None and len(obj) != count:
            raise FormatError(path, offset, f"{count} items expected, {len(obj)} given")
        if isinstance(obj, (StringArray, NumberArray, RecordList)) and self._build_bulk(obj, stream, context, path,
                                                                                       offset):
            return obj
        out = cs.ListContainer()
        for i, item in enumerate(obj):
            context._index = i
            out.append(self._build_one(item, stream, context, f"{path}[{i}]"))
        return out

    def _build_bulk(self, obj: StringArray | NumberArray | RecordList, stream: Any, context: Any, path: str,
                    offset: int) -> bool:
        """Write a bulk array as the file held it, in one call, when the element is the same
        (strings with prefixes of the same width, numbers of the same type, records of the same
        type read the same way); else False."""
        element = self._element(context, path, offset)
        if isinstance(obj, RecordList):
            if element is None or not obj.reader.reads_alike(element, context):
                return False
            stream.write(obj.wire)
            return True
        if isinstance(obj, StringArray):
            if not isinstance(element, PrefixedBytes) or element.encoding != obj.encoding \
                    or element.prefix_for(context, path, offset).size != obj.prefix_size:
                return False
            stream.write(obj.wire)
            return True
        if PRIMITIVE_CODES.get(element) != obj.code:
            return False
        stream.write(obj.tobytes())
        return True

    def _build_one(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        try:
            return self.subcon._build(obj, stream, context, path)
        except FormatError:
            raise
        except (cs.ConstructError, KeyError) as e:
            raise FormatError(path, None, f"cannot build: {_construct_message(e)}") from None

    def _sizeof(self, context: Any, path: str) -> int:
        raise cs.SizeofError("schema fields have no static size; use probe_size()", path=path)

    def _static_size(self) -> int | None:
        if self.condition is not None:
            return None
        one = self.fixed_size if self.fixed_size is not None else static_size(self.subcon)
        if one is None or self.repeat is None:
            return one
        count = constant(self.repeat) if isinstance(self.repeat, Expression) else None
        return one * count if count is not None else None


def static_size(node: Any) -> int | None:
    """The bytes ``node`` always takes, whatever the file holds; None when they depend on it (a
    field's value, a condition, the position). ggfmt's nodes answer for themselves
    (``_static_size``); Construct's own by their ``sizeof``."""
    own = getattr(node, "_static_size", None)
    if own is not None:
        return cast("int | None", own())
    if isinstance(node, cs.Struct):
        sizes = [static_size(member) for member in node.subcons]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)
    if isinstance(node, cs.LazyBound):  # a type inside itself: as deep as the file nests it
        return None
    if isinstance(node, cs.Subconstruct):  # a tensor record, a presented type, a type given arguments
        return static_size(node.subcon)
    try:
        return int(node.sizeof())
    except (cs.SizeofError, cs.ConstructError):
        return None


def constant(expr: Expression) -> int | None:
    """The whole number ``expr`` is whatever the file holds (``3``, ``2 * 16``), else None."""
    if expr.names:
        return None
    try:
        value = expr(lambda name: None)
    except ExpressionError:
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def element_budget(file_size: int) -> list[int]:
    """How many repeated elements a parse of a file of ``file_size`` bytes may read, in all.

    "A count larger than the bytes left is refused" bounds each repeat, but not elements that
    read no bytes (an empty type, a payload placed elsewhere with ``at:``), and nested repeats of
    them multiply. A real layout has at most about one element per byte (each nesting level
    consumes bytes), so twice the file's size, plus room for small files, is never reached by one.
    """
    return [2 * file_size + 4096]


def spend_elements(context: Any, count: int, path: str, offset: int) -> None:
    budget = context.get("_params", {}).get("_budget")
    if budget is None:
        return
    budget[0] -= count
    if budget[0] < 0:
        raise FormatError(path, offset, f"{count} more elements than a file of this size can hold "
                                        "(the layout repeats elements that take no bytes)")


# Construct says a short read as "stream read less than specified amount, expected 4, found 2"
_SHORT_READ = re.compile(r"stream read less than specified amount, expected (\d+), found (\d+)")


def _parse_error(e: Exception, path: str, offset: int) -> FormatError:
    """A Construct error while parsing, as ggfmt's kind: a short read is a :class:`Truncated`."""
    short = _SHORT_READ.search(str(e))
    if short is not None:
        return Truncated(path, offset, int(short[1]), int(short[2]), "unexpected end of file")
    return FormatError(path, offset, _construct_message(e))


def _construct_message(e: Exception) -> str:
    text = str(e)
    # Construct prefixes messages with "Error in path (parsing) -> ...": keep the substance only.
    if "\n" in text:
        text = text.split("\n", 1)[1]
    if "stream read less than specified amount" in text:
        return "unexpected end of file"
    return text.strip()


# -- payloads, alignment -------------------------------------------------------------------


def _size(size: Expression | None, stream: Any, context: Any, path: str, offset: int) -> Any:
    """A field's size in bytes: its expression's value, or for `size: eos` the bytes left."""
    if size is None:
        return max(stream_size(stream) - offset, 0)
    return evaluate(size, context, path, offset)


# (one per tensor record; not frozen, as a frozen dataclass takes twice as long to make: hashed as
# if frozen, never changed once made)
@dataclass(slots=True, unsafe_hash=True)
class PayloadRef:
    """A byte range of the input that the parse recorded without reading it."""

    offset: int
    nbytes: int


class Payload(cs.Construct):  # type: ignore[misc]
    """``size`` bytes recorded as a :class:`PayloadRef`; the stream seeks past them.

    With ``at`` (an absolute offset expression) the payload lies elsewhere in the file, as the
    tensor data of a GGUF file does: it is recorded there and the stream does not move.

    When building, the value may be ``bytes``-like, a numpy array, or any object with a
    ``write_to(stream)`` method (so that large payloads can be streamed, never held whole).
    """

    def __init__(self, size: Expression | None, at: Expression | None = None) -> None:
        super().__init__()
        self.size = size  # None: `size: eos`, to the end of the stream
        self.at = at

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        offset = stream.tell()
        nbytes = _size(self.size, stream, context, path, offset)
        if is_probe(stream):
            nbytes = require_known(nbytes, "its size", path)
            if self.at is None:
                stream.seek(nbytes, os.SEEK_CUR)
            return PayloadRef(offset, nbytes)
        if not isinstance(nbytes, int) or nbytes < 0:
            raise FormatError(path, offset, f"payload size must be a non-negative integer, got {nbytes!r}")
        start = offset
        if self.at is not None:
            start = evaluate(self.at, context, path, offset)
            if not isinstance(start, int) or start < 0:
                raise FormatError(path, offset, f"payload offset must be a non-negative integer, got {start!r}")
        remaining = stream_size(stream) - start
        if nbytes > remaining:
            where = "" if self.at is None else f" at byte {start}"
            raise FormatError(path, offset,
                              f"payload of {nbytes} bytes expected{where}, only {max(remaining, 0)} left in the file")
        if self.at is None:
            stream.seek(nbytes, os.SEEK_CUR)
        return PayloadRef(start, nbytes)

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        offset = stream.tell()
        if self.at is not None:  # placed elsewhere (a GGUF's tensor data): written by whoever places it
            return obj
        nbytes = None if self.size is None else evaluate(self.size, context, path, offset)
        if hasattr(obj, "write_to"):
            obj.write_to(stream)
        elif hasattr(obj, "tobytes"):
            stream.write(memoryview(obj.tobytes()))
        else:
            stream.write(bytes(obj))
        written = stream.tell() - offset
        if nbytes is not None and written != nbytes:
            raise FormatError(path, offset, f"payload of {nbytes} bytes expected, {written} given")
        return PayloadRef(offset, written)

    def _static_size(self) -> int | None:
        if self.at is not None:  # placed elsewhere: nothing here
            return 0
        return constant(self.size) if self.size is not None else None

    def _sizeof(self, context: Any, path: str) -> int:
        raise cs.SizeofError("payload size depends on the data", path=path)


class Position(cs.Construct):  # type: ignore[misc]
    """``type: offset``: the absolute stream offset where it stands; reads and writes nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.flagbuildnone = True

    def _static_size(self) -> int:
        return 0

    def _parse(self, stream: Any, context: Any, path: str) -> int:
        return int(stream.tell())

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> int:
        return int(stream.tell())


class AlignTo(cs.Construct):  # type: ignore[misc]
    """Zero padding up to the next multiple of ``modulus`` (an expression: a number, or a value the
    file gives, such as GGUF's ``general.alignment``) of the absolute stream offset."""

    def __init__(self, modulus: Expression) -> None:
        super().__init__()
        self.modulus = modulus
        self.flagbuildnone = True

    def _pad(self, stream: Any, context: Any, path: str) -> int:
        modulus = evaluate(self.modulus, context, path, stream.tell())
        if is_probe(stream):
            require_known(modulus, "its alignment", path)
        if isinstance(modulus, bool) or not isinstance(modulus, int) or modulus <= 0:
            raise FormatError(path, stream.tell(), f"alignment must be a positive integer, got {_show(modulus)}")
        return int(-stream.tell() % modulus)

    def _static_size(self) -> None:
        return None  # the padding depends on where it starts

    def _parse(self, stream: Any, context: Any, path: str) -> None:
        pad = self._pad(stream, context, path)
        offset = stream.tell()
        if not is_probe(stream) and stream_size(stream) - offset < pad:
            raise Truncated(path, offset, pad, stream_size(stream) - offset,
                            f"unexpected end of file in {pad} bytes of alignment padding")
        stream.seek(pad, os.SEEK_CUR)
        return None

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> None:
        stream.write(b"\0" * self._pad(stream, context, path))
        return None

    def _sizeof(self, context: Any, path: str) -> int:
        raise cs.SizeofError("alignment depends on the offset", path=path)


class SizedBytes(cs.Construct):  # type: ignore[misc]
    """``bytes`` / ``str`` of an expression-given size, checked against the bytes left."""

    def __init__(self, size: Expression | None, encoding: str | None) -> None:
        super().__init__()
        self.size = size  # None: `size: eos`, to the end of the stream
        self.encoding = encoding

    def _static_size(self) -> int | None:
        return constant(self.size) if self.size is not None else None

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        offset = stream.tell()
        nbytes = _size(self.size, stream, context, path, offset)
        if is_probe(stream):
            stream.seek(require_known(nbytes, "its size", path), os.SEEK_CUR)
            return UNKNOWN
        if not isinstance(nbytes, int) or nbytes < 0:
            raise FormatError(path, offset, f"size must be a non-negative integer, got {nbytes!r}")
        remaining = stream_size(stream) - offset
        if nbytes > remaining:
            raise Truncated(path, offset, nbytes, remaining)
        return _decoded(stream.read(nbytes), self.encoding, path, offset)

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        data = obj.encode(self.encoding) if self.encoding is not None else bytes(obj)
        nbytes = len(data) if self.size is None else evaluate(self.size, context, path, stream.tell())
        if len(data) != nbytes:
            raise FormatError(path, stream.tell(), f"{nbytes} bytes expected, {len(data)} given")
        stream.write(data)
        return obj


def _decoded(data: bytes, encoding: str | None, path: str, offset: int) -> Any:
    """``data`` as text in ``encoding`` (bytes when None); ``offset`` is where ``data`` starts."""
    if encoding is None:
        return data
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise FormatError(path, offset + e.start, f"not valid {encoding}: {e.reason}") from None


class PrefixedBytes(cs.Construct):  # type: ignore[misc]
    """``bytes`` / ``str`` preceded by its size in bytes (``size-prefix: u64``): the value is the
    text or bytes alone, the prefix is implied (and written again when built).

    The prefix's width may depend on the file (``size-prefix: {switch-on: _root.version, cases:
    {1: u32, _: u64}}``, as in GGUF version 1): then ``key`` chooses among ``widths``."""

    def __init__(self, prefix: str | None, encoding: str | None, key: Expression | None = None,
                 widths: Mapping[Any, str] | None = None) -> None:
        super().__init__()
        # "<Q" for u64 ...; when `key` chooses, the width of the other cases (`_`), if any
        self.prefix = struct.Struct(prefix) if prefix is not None else None
        self.encoding = encoding
        self.key = key
        self.widths = {k: struct.Struct(v) for k, v in (widths or {}).items()}

    def _static_size(self) -> None:
        return None  # its size is in the file

    def prefix_for(self, context: Any, path: str, offset: int) -> struct.Struct:
        """The struct of the size prefix at this place of this file."""
        if self.key is None:
            assert self.prefix is not None
            return self.prefix
        key = evaluate(self.key, context, path, offset)
        require_known(key, f"the switch on {self.key.source}", path)
        chosen = self.widths.get(key, self.prefix)
        if chosen is None:
            raise FormatError(path, offset, f"{self.key.source} is {_show(key)}; the size prefix is defined "
                                            f"for {_show(list(self.widths))}")
        return chosen

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        offset = stream.tell()
        prefix = self.prefix_for(context, path, offset)
        head = stream.read(prefix.size)
        if len(head) < prefix.size:
            raise Truncated(path, offset, prefix.size, len(head),
                            f"unexpected end of file: a {prefix.size}-byte size expected, {len(head)} left")
        (nbytes,) = prefix.unpack(head)
        if is_probe(stream):
            stream.seek(nbytes, os.SEEK_CUR)
            return UNKNOWN
        remaining = stream_size(stream) - offset - prefix.size
        if nbytes > remaining:
            raise Truncated(path, offset, prefix.size + nbytes, prefix.size + remaining,
                            f"a size of {nbytes} bytes, only {remaining} left in the file")
        return _decoded(stream.read(nbytes), self.encoding, path, offset + prefix.size)

    def read_many(self, stream: Any, prefix: struct.Struct, count: int, path: str, offset: int) -> list[Any]:
        """``count`` of them one after the other, in one pass without a Construct call each."""
        end = stream_size(stream)
        size, unpack = prefix.size, prefix.unpack
        items = []
        for i in range(count):
            at = stream.tell()
            head = stream.read(size)
            if len(head) < size:
                raise Truncated(f"{path}[{i}]", at, size, len(head),
                                f"unexpected end of file: a {size}-byte size expected")
            (nbytes,) = unpack(head)
            if nbytes > end - at - size:
                raise Truncated(f"{path}[{i}]", at, size + nbytes, end - at,
                                f"a size of {nbytes} bytes, only {end - at - size} left in the file")
            items.append(_decoded(stream.read(nbytes), self.encoding, f"{path}[{i}]", at + size))
        return items

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        data = obj.encode(self.encoding) if self.encoding is not None else bytes(obj)
        stream.write(self.prefix_for(context, path, stream.tell()).pack(len(data)) + data)
        return obj


# -- parameterised types, choices ----------------------------------------------------------


class WithArgs(cs.Subconstruct):  # type: ignore[misc]
    """Evaluate a type's arguments in the caller's context and make them visible to it."""

    def __init__(self, subcon: cs.Construct, args: dict[str, Expression], defaults: dict[str, Any]) -> None:
        super().__init__(subcon)
        self.args = args
        self.defaults = defaults

    def _frame(self, context: Any, path: str, offset: int) -> cs.Container:
        frame = cs.Container(_=context, _params=context._params, _root=context.get("_root", context),
                             _parsing=context._parsing, _building=context._building, _sizing=context._sizing)
        frame.update(self.defaults)
        for name, expr in self.args.items():
            frame[name] = evaluate(expr, context, path, offset)
        return frame

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        return self.subcon._parsereport(stream, self._frame(context, path, stream.tell()), path)

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        return self.subcon._build(obj, stream, self._frame(context, path, stream.tell()), path)


# each primitive's construct and its code (the array module's, struct's for f16), for repeats
# read in one call
PRIMITIVE_CODES: dict[Any, str] = {
    cs.Int8ul: "B", cs.Int16ul: "H", cs.Int32ul: "I", cs.Int64ul: "Q", cs.Int8sl: "b", cs.Int16sl: "h",
    cs.Int32sl: "i", cs.Int64sl: "q", cs.Float16l: "e", cs.Float32l: "f", cs.Float64l: "d",
}
assert all(array.array(c).itemsize == struct.calcsize("<" + c) for c in PRIMITIVE_CODES.values() if c != "e")


class SwitchOn(cs.Construct):  # type: ignore[misc]
    """``switch-on``: the type is chosen by the value of an expression."""

    def __init__(self, key: Expression, cases: dict[Any, cs.Construct], default: cs.Construct | None) -> None:
        super().__init__()
        self.key = key
        self.cases = cases
        self.default = default

    def _static_size(self) -> int | None:
        """The size every case has, if they all have the same."""
        sizes = {static_size(case) for case in [*self.cases.values(), *([self.default] if self.default else [])]}
        return sizes.pop() if len(sizes) == 1 else None

    def _choose(self, stream: Any, context: Any, path: str) -> cs.Construct:
        offset = stream.tell()
        key = evaluate(self.key, context, path, offset)
        if is_probe(stream):
            require_known(key, f"the switch on {self.key.source}", path)
        sub = self.cases.get(key, self.default)
        if sub is None:
            raise FormatError(path, offset, f"{self.key.source} is {_show(key)}; expected one of "
                                            f"{_show(list(self.cases))}")
        return sub

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        return self._choose(stream, context, path)._parsereport(stream, context, path)

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        return self._choose(stream, context, path)._build(obj, stream, context, path)


def probe_size(subcon: cs.Construct, stream: Any, context: Any, path: str) -> int | str:
    """The size ``subcon`` would have if it started at the stream's position, without parsing it.

    Payloads are not read: their sizes follow from the schema's declared shapes, and declared
    header values are taken as declared.  Returns the exact size, or a description when it
    cannot be known ("more than N" once the hypothesis has run past the end of the file).
    """
    offset = stream.tell()
    probe = ProbeStream(stream, offset)
    try:
        subcon._parsereport(probe, context, path)
        return int(probe.pos - offset)
    except SizeUnknown as e:
        if probe.overran:
            return f"more than {probe.size - offset}"
        return f"an unknown number of ({e})"
    except FormatError as e:
        return f"an impossible number of ({e.message})"
    finally:
        stream.seek(offset)


class ChooseBySize(cs.Construct):  # type: ignore[misc]
    """``one-of ... by: size``: the alternative whose exact size equals the bytes left.

    Parses to the *name* of the chosen alternative and consumes nothing; the value itself is
    parsed by a following :class:`SwitchOn` on that name.  ``select`` (an expression that may
    evaluate to ``None``) forces an alternative.
    """

    def __init__(self, alternatives: dict[str, cs.Construct], select: Expression | None, value_name: str) -> None:
        super().__init__()
        self.alternatives = alternatives
        self.select = select
        self.value_name = value_name
        self.flagbuildnone = False

    def _static_size(self) -> int:
        return 0  # the choice is recorded; the value is read by the field after it

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        path = join_path(path, self.name)
        offset = stream.tell()
        if self.select is not None:
            forced = evaluate(self.select, context, path, offset)
            if forced is not None:
                if forced not in self.alternatives:
                    raise FormatError(path, offset, f"{forced!r} is not one of {_show(list(self.alternatives))}")
                return forced
        if is_probe(stream):
            raise SizeUnknown(f"{path}: a nested size-decided choice")
        remaining = stream_size(stream) - offset
        value_path = join_path(path.rpartition(".")[0], self.value_name)
        sizes = {name: probe_size(alt, stream, context, value_path) for name, alt in self.alternatives.items()}
        matches = [name for name, size in sizes.items() if size == remaining]
        if len(matches) == 1:
            return matches[0]
        described = ", ".join(f"{name} needs {size} bytes" for name, size in sizes.items())
        verdict = "several alternatives fit" if matches else "no alternative fits"
        raise FormatError(path, offset, f"{verdict}: {described}; {remaining} bytes remain")

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        if obj not in self.alternatives:
            raise FormatError(path, stream.tell(), f"{obj!r} is not one of {_show(list(self.alternatives))}")
        return obj


# -- tensor records ------------------------------------------------------------------------


def _keyed(element: Any) -> bool:
    """Whether a list's records have a view with a key (``key = value`` entries)."""
    while isinstance(element, cs.LazyBound):
        element = element.subconfunc()
    return isinstance(element, Presented) and element.view is not None and element.view.key is not None


class TensorContainer(cs.Container):  # type: ignore[misc]
    """The container of a tensor record; its ``_roles`` entry names the fields that hold the
    tensor's name, ggml type, ne and data (``_``-prefixed entries are not fields)."""


class TensorRecord(cs.Adapter):  # type: ignore[misc]
    """Marks what a ``tensor:`` type parses to, so the engine can list it as a tensor."""

    ROLES = ("name", "ggml_type", "ne", "data")

    def __init__(self, subcon: cs.Construct, roles: Mapping[str, str], source: str) -> None:
        super().__init__(subcon)
        self.roles = dict(roles)
        self.source = source
        # (role, field, the type it must hold, what that is): checked for every tensor record
        self._kinds = tuple((role, self.roles[role], kind, what) for role, (kind, what) in {
            "data": (PayloadRef, "a payload field"), "name": (str, "a str field"),
            "ggml_type": (int, "an integer field"), "ne": (list, "a repeated integer field")}.items())

    def _parse(self, stream: Any, context: Any, path: str) -> TensorContainer:
        obj = self.subcon._parsereport(stream, context, path)
        if is_probe(stream):
            return self._decode(obj, context, path)
        self._check_roles(obj)
        record = self._decode(obj, context, path)
        found = context.get("_params", {}).get("_tensors")  # the parse's list of tensor records, in order
        if found is not None:
            found.append((path, record))
        return record

    def _decode(self, obj: Any, context: Any, path: str) -> TensorContainer:
        record = TensorContainer(obj)
        record["_roles"] = self.roles
        return record

    def _check_roles(self, obj: Any) -> None:
        for role, field, kind, what in self._kinds:
            value: Any = obj[field]
            wrong_items = role == "ne" and isinstance(value, list) and not all(isinstance(n, int) for n in value)
            if not isinstance(value, kind) or wrong_items:
                raise SchemaError(self.source, f"`tensor:` role {role} must name {what}; "
                                               f"{field!r} holds {type(value).__name__}")

    def _encode(self, obj: Any, context: Any, path: str) -> Any:
        return obj


# -- presentation --------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewSpec:
    """A type's ``view:``: the fields that hold a record's key (if any), its type and its value, and
    the names of the type's values (the type field's ``enum``)."""

    key: str | None
    type: str | None
    value: str
    type_names: Mapping[Any, str]


class Presented(cs.Adapter):  # type: ignore[misc]
    """Tags what a type with a ``view``, ``hidden`` or ``layout`` fields parses to, for the reports:
    ``_view`` holds its :class:`ViewSpec`, ``_hidden`` the names of the fields only ``--raw`` shows,
    ``_layout`` those that describe the file rather than its content (``fmt diff`` skips them)."""

    def __init__(self, subcon: cs.Construct, view: ViewSpec | None, hidden: frozenset[str],
                 layout: frozenset[str] = frozenset()) -> None:
        super().__init__(subcon)
        self.view = view
        self.hidden = hidden
        self.layout = layout
        self._tags = self.tags()

    def tags(self) -> dict[str, Any]:
        """The entries a record of the type carries besides its fields."""
        tags: dict[str, Any] = {}
        if self.view is not None:
            tags["_view"] = self.view
        if self.hidden:
            tags["_hidden"] = self.hidden
        if self.layout:
            tags["_layout"] = self.layout
        return tags

    def _decode(self, obj: Any, context: Any, path: str) -> Any:
        if isinstance(obj, dict):
            obj.update(self._tags)
        return obj

    def _encode(self, obj: Any, context: Any, path: str) -> Any:
        return obj
