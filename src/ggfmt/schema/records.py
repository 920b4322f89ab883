"""Records in bulk: a long repeat of one record type, read by one tight loop and held as the
file's bytes and the start of each record.

A GGUF of 450,000 metadata pairs, or an array of 820,000 arrays, read as one Construct call
and one container per record costs about 25 microseconds and 450 bytes each: seconds and
hundreds of megabytes. Here a record type compiles once into plain functions over a ``bytes``
buffer (``struct.unpack_from``, no stream calls, no context objects Construct builds for each
struct), the whole repeat into one loop (:meth:`~.codegen.Generator.loop`), and a repeat of
:data:`~ggfmt.schema.arrays.BULK_MIN_ITEMS` or more such records is kept as a
:class:`RecordList`: the repeat's bytes, the start of each record, the compiled reader, which
decodes a record when it is read, and the columns kept (a list per field). The records are
checked as they are scanned (every ``valid:`` clause, every bound); the scan and a later read
run the same code, so what a read returns is what the scan checked.

What compiles: records (a type's ``seq`` and ``instances``) of primitives, ``contents``,
length-prefixed and sized ``str``/``bytes``, switches, repeats counted by an expression, ``if``,
``valid``, parameterised types and nested records, recursion included (a GGUF array of arrays),
and tensor records whose data lies elsewhere (a GGUF's ``tensor_data``: held as columns). Anything
else (a payload in place, an alignment, a position, a choice by size, ``repeat: eos`` or
``until``) leaves the type to the general path, record by record.

When the fast path meets anything it does not decide (a failed check, a short file, an
expression error), it reads that record through the general path, which reports the error
exactly as it always does (field path, byte offset); if the general path accepts the record, the
whole repeat is read by the general path: the fast path is never the one that decides.
"""

from __future__ import annotations

import array
import gc
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import construct as cs

from .arrays import BULK_MIN_ITEMS, ITEM_SIZES, NumberArray, RecordList, StringArray, TensorRecords
from .codegen import HOISTED, Frame, Generator, Reject, Short, Unsupported, evaluate

__all__ = ["MIN_RECORDS", "BoundReader", "Codec", "Frame", "Reject", "Short", "codec_for", "scan"]

# Below this many records a repeat is read into a list of containers, as a short list is best held.
MIN_RECORDS = BULK_MIN_ITEMS



class Codec:
    """The compiled reader of one record type (generated once per construct, shared by every scan)."""

    def __init__(self, generated: Any, min_size: int) -> None:
        self.read = generated.read
        self.loop = generated.loop  # a scan's whole loop, by kind (skim, columns, tensors)
        self.derived = generated.derived  # of records that read no bytes: their values a column at a time
        self.fields: tuple[str, ...] = generated.fields  # the record's own fields and instances, in order
        self.min_size = min_size  # bytes a record takes at least (its fixed leading fields)
        # whether the records read the same wherever the enclosing values are the same: their
        # expressions name only their own fields, _index, and the root in expressions evaluated once
        self.self_contained = not (generated.names - generated.bound - {"_index", "_root"})
        # tensor records: held as columns (a TensorRecords), and listed as the parse's tensors
        self.tensors: bool = generated.tensors
        self.extra: dict[str, Any] = generated.extra  # what a tensor record holds besides its fields


_CODECS: dict[int, Codec | None] = {}


def codec_for(construct: cs.Construct) -> Codec | None:
    """The compiled reader of the records ``construct`` parses, or None when it does not compile
    (or is not a record type: a repeated value is read by the field itself)."""
    key = id(construct)
    if key not in _CODECS:
        from .constructs import Presented, TensorRecord, WithArgs

        inner = construct.subconfunc() if isinstance(construct, cs.LazyBound) else construct
        inner = inner.subcon if isinstance(inner, WithArgs) else inner
        if not isinstance(inner.subcon if isinstance(inner, Presented | TensorRecord) else inner, cs.Struct):
            _CODECS[key] = None
            return None
        try:
            generated = Generator({"read_repeat": read_repeat}).compile(construct)
            _CODECS[key] = Codec(generated, max(_leading_size(inner), 1))
        except Unsupported:
            _CODECS[key] = None
    return _CODECS[key]


def _leading_size(construct: cs.Construct) -> int:
    """The bytes of a record's fixed leading fields: what each record takes at least."""
    from .constructs import Field, Presented

    inner = construct.subcon if isinstance(construct, Presented) else construct
    size = 0
    for member in getattr(inner, "subcons", ()):
        if not isinstance(member, Field) or member.fixed_size is None or member.repeat is not None \
                or member.condition is not None:
            break
        size += member.fixed_size
    return size


def read_repeat(buf: bytes, pos: int, scope: dict[str, Any], frame: Frame, count: int, plan: Any,
                key: Any) -> tuple[Any, int]:
    """The ``count`` elements of a repeat inside a record, as the general path holds them: a
    :class:`NumberArray` of a long repeat of a primitive, a :class:`StringArray` of strings, a
    :class:`RecordList` of records, else a list."""
    from .constructs import PRIMITIVE_CODES, PrefixedBytes

    chosen = plan.element(key)
    if chosen is None:
        raise Reject
    element, reader = chosen
    code = plan.bulk_code or PRIMITIVE_CODES.get(element)
    if code is not None:
        end = pos + count * ITEM_SIZES[code]
        if end > len(buf):
            raise Short
        if count >= BULK_MIN_ITEMS:
            return NumberArray(buf[pos:end], code), end
        return cs.ListContainer(struct.unpack_from(f"<{count}{code}", buf, pos)), end
    if isinstance(element, PrefixedBytes) and count >= BULK_MIN_ITEMS:
        return _strings(buf, pos, scope, frame, count, element)
    if count >= MIN_RECORDS and not plan.per_element:
        codec = codec_for(element)
        if codec is not None:
            return _nested(buf, pos, scope, frame, count, codec)
    items = cs.ListContainer()
    for i in range(count):
        scope["_index"] = i
        item, pos = reader(buf, pos, scope, frame)
        items.append(item)
    return items, pos


# -- repeats inside records ----------------------------------------------------------------


def _strings(buf: bytes, pos: int, scope: dict[str, Any], frame: Frame, count: int,
             element: Any) -> tuple[Any, int]:
    """A long repeat of length-prefixed strings inside a record: a :class:`StringArray`, as the
    general path makes (its text decoded when read)."""
    prefix = element.prefix_for(scope, "", frame.base + pos) if element.key is not None else element.prefix
    size, unpack = prefix.size, prefix.unpack_from
    starts = array.array("Q")
    at = pos
    for _ in range(count):
        try:
            (nbytes,) = unpack(buf, at)
        except struct.error:
            raise Short from None
        at += size
        starts.append(at - pos)
        at += nbytes
        if at > len(buf):
            raise Short
    return StringArray(bytes(buf[pos:at]), starts, size, element.encoding, frame.base + pos, ""), at


def _nested(buf: bytes, pos: int, scope: dict[str, Any], frame: Frame, count: int,
            codec: Codec) -> tuple[Any, int]:
    """A long repeat of records inside a record: a :class:`RecordList` of its own."""
    starts = _starts(count, len(buf) - pos)
    at = pos
    for i in range(count):
        starts[i] = at - pos
        scope["_index"] = i
        _, at = codec.read(buf, at, scope, frame)
    return RecordList(bytes(buf[pos:at]), starts, BoundReader(codec, scope, frame.base + pos, frame.hoisted)), at


def _starts(count: int, span: int) -> array.array[int]:
    """Room for ``count`` offsets into ``span`` bytes (4 bytes each when they fit)."""
    code = "I" if span < 1 << 32 else "Q"
    return array.array(code, bytes(count * array.array(code).itemsize))


# -- a scan's reader -----------------------------------------------------------------------


class BoundReader:
    """The compiled reader of one repeat's records: the codec, the scope the records were read in,
    where the repeat starts in the file, and the values evaluated once for all of them."""

    __slots__ = ("codec", "hoisted", "offset", "scope")

    def __init__(self, codec: Codec, scope: dict[str, Any], offset: int, hoisted: dict[int, Any]) -> None:
        self.codec = codec
        self.scope = scope
        self.offset = offset
        self.hoisted = hoisted

    def decode(self, wire: bytes, start: int, index: int) -> Any:
        self.scope["_index"] = index  # (as the general path sets it on the enclosing scope)
        frame = Frame(self.offset, self.offset + len(wire), False, None, 0, self.hoisted)
        try:
            record, _ = self.codec.read(wire, start, self.scope, frame)
        except (Reject, Short):  # the scan read this record: reading it again cannot fail
            raise AssertionError(f"record {index} of a list the scan accepted cannot be read again") from None
        return record

    def columns(self, wire: bytes, starts: Any, names: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
        """Fields ``names`` of each record (a tuple each), in order, the records not made."""
        wanted = [self.codec.fields.index(name) for name in names]
        for values in self._chunks(wire, starts):
            yield from zip(*(values[at] for at in wanted), strict=True)

    def column_lists(self, wire: bytes, starts: Any, names: tuple[str, ...]) -> dict[str, list[Any]]:
        """Fields ``names`` of every record, a list per field."""
        wanted = [self.codec.fields.index(name) for name in names]
        lists: list[list[Any]] = [[] for _ in names]
        for values in self._chunks(wire, starts):
            _extend(lists, [values[at] for at in wanted] if values else [])
        return dict(zip(names, lists, strict=True))

    def _chunks(self, wire: bytes, starts: Any) -> Iterator[list[tuple[Any, ...]]]:
        """Every field's values of each chunk of records (a tuple per field), read by the scan's
        own loop (what it checked is what this reads): the rows of a whole list are not held."""
        frame = Frame(self.offset, self.offset + len(wire), False, None, 0, self.hoisted)
        loop = self.codec.loop("columns")
        rows: list[Any] = []
        index = pos = 0
        while index < len(starts):
            with _uncollected():
                index, pos, ended = loop(wire, pos, index, min(len(starts), index + CHUNK), self.scope, frame, starts,
                                         rows.append)
            if ended is not None:  # the scan read these records: reading them again cannot fail
                raise AssertionError(f"record {index} of a list the scan accepted cannot be read again")
            yield _transposed(rows)

    def same_layout(self, other: Any) -> bool:
        """Whether the same bytes mean the same records in both (one type, one reading of it)."""
        return isinstance(other, BoundReader) and self.codec is other.codec and self.codec.self_contained \
            and self.hoisted == other.hoisted

    def reads_alike(self, construct: Any, context: Any) -> bool:
        """Whether these records' bytes, written as ``construct`` where ``context`` stands, read as
        the same records again."""
        if codec_for(construct) is not self.codec or not self.codec.self_contained:
            return False
        scope = {"_": context, "_root": context.get("_root", context)}
        try:
            return all(evaluate(HOISTED[key], scope) == value for key, value in self.hoisted.items())
        except Reject:
            return False


# -- the scan ------------------------------------------------------------------------------


def scan(codec: Codec, stream: Any, context: Any, count: int, offset: int, file_size: int,
         budget: list[int] | None, depth: int, columns: bool = False) -> RecordList | TensorRecords | int:
    """Read ``count`` records from ``stream`` at ``offset``: a :class:`RecordList`, or for tensor
    records a :class:`TensorRecords` (their fields held as columns), or the index of the first
    record the fast path does not decide (the stream is then at that record's start, and the
    budget as it was before it). ``columns``: the list keeps every field's values as it reads
    them (what a check of the whole list, ``unique`` or ``disjoint``, reads next)."""
    left = file_size - offset
    buf = stream.read(min(left, max(count * codec.min_size, 1 << 20)))
    starts = _starts(count, left)
    # The records' enclosing scope: the struct holding the repeat, as it stands (a copy, so that
    # what is read after the repeat is not visible to the records, as it is not to the general path)
    scope = dict(context)
    hoisted: dict[int, Any] = {}
    frame = Frame(offset, file_size, True, budget, depth, hoisted)
    pos = 0
    columns = (columns or codec.tensors) and bool(codec.fields)
    loop = codec.loop("tensors" if codec.tensors else "columns" if columns else "skim")
    rows: list[Any] = []  # (each record's values: one append a record, joined to the columns a chunk at a time)
    kept: list[list[Any]] = [[] for _ in codec.fields] if columns else []
    # records that read no bytes: a chunk's values computed a column at a time, when every check holds
    derived = codec.derived() if codec.tensors else None
    i = 0
    with _uncollected():
        while True:
            ended: Any
            if derived is not None and (values := derived(i, min(count, i + CHUNK), scope, frame)) is not None:
                _extend(kept, values)
                i = min(count, i + CHUNK)
                if i < count:
                    continue
                break
            i, pos, ended = loop(buf, pos, i, min(count, i + CHUNK) if columns else count, scope, frame, starts,
                                 rows.append)
            _extend(kept, _transposed(rows))
            if ended is None:
                if i < count:
                    continue
                break
            frame.depth = depth
            if ended is Short and len(buf) < left:  # the record goes on past what was read: read more
                buf += stream.read(min(left - len(buf), max(len(buf), 1 << 20)))
                continue
            stream.seek(offset + pos)
            return int(i)
    stream.seek(offset + pos)
    if codec.tensors:
        from .constructs import TensorContainer  # (constructs reads records through this module)

        return TensorRecords(dict(zip(codec.fields, kept, strict=True)), codec.extra, TensorContainer)
    found = RecordList(bytes(buf[:pos]), starts, BoundReader(codec, scope, offset, hoisted))
    if columns:
        found.kept.update(zip(codec.fields, kept, strict=True))
    return found


@contextmanager
def _uncollected() -> Iterator[None]:
    """Python's cycle collector paused while a list is scanned. A scan makes hundreds of thousands
    of objects that live on (tuples, short lists, a tensor's PayloadRef) and no reference cycles;
    collected as they are made, each full collection walks every object made so far (of a GGUF
    of 263,156 tensor infos, the scan of its tensor list took 0.52 s with the collector running,
    0.26 s without). The objects are collected once, after the scan, as the collector resumes."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


# records whose values are held as rows (a tuple each) before they join the columns: small, as
# the rows' memory is freed in pieces Python keeps (a 250,880-token vocabulary converted: peak RSS
# 96 MiB with chunks of 1,024 records, 106 MiB with 16,384, 131 MiB with the whole list at once)
CHUNK = 1 << 10


def _transposed(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The values of ``rows`` by field (a tuple per field); ``rows`` emptied."""
    values = list(zip(*rows, strict=True))
    rows.clear()
    return values


def _extend(columns: list[list[Any]], values: list[tuple[Any, ...]]) -> None:
    """Add each field's values to its column (no values, of no rows: nothing added)."""
    if values:
        for column, more in zip(columns, values, strict=True):
            column.extend(more)
