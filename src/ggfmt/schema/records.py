"""Records in bulk: a long repeat of one record type, read by one tight loop and held as the
file's bytes and the start of each record.

A GGUF of 450,000 metadata pairs, or an array of 820,000 arrays, read as one Construct call
and one container per record costs about 25 microseconds and 450 bytes each: seconds and
hundreds of megabytes. Here a record type compiles once into plain functions over a ``bytes``
buffer (``struct.unpack_from``, no stream calls, no context objects Construct builds for each
struct), and a repeat of :data:`~ggfmt.schema.arrays.BULK_MIN_ITEMS` or more such records is
kept as a :class:`RecordList`: the repeat's bytes, the start of each record, and the compiled
reader, which decodes a record when it is read. The records are checked as they are scanned
(every ``valid:`` clause, every bound); the scan and a later read run the same functions, so
what a read returns is what the scan checked.

What compiles: records (a type's ``seq`` and ``instances``) of primitives, ``contents``,
length-prefixed and sized ``str``/``bytes``, switches, repeats counted by an expression, ``if``,
``valid`` and nested records, recursion included (a GGUF array of arrays). Anything else (a
payload, an alignment, a position, a parameterised type, a choice by size, a tensor record,
``repeat: eos`` or ``until``) leaves the type to the general path, record by record.

When the fast path meets anything it does not decide (a failed check, a short file, an
expression error), it reads that record through the general path, which reports the error
exactly as it always does (field path, byte offset); if the general path accepts the record, the
whole repeat is read by the general path: the fast path is never the one that decides.
"""

from __future__ import annotations

import array
import struct
from collections.abc import Callable
from typing import Any

import construct as cs

from ..errors import FormatError
from .arrays import BULK_MIN_ITEMS, NumberArray, RecordList, StringArray
from .expr import Expression, ExpressionError

# A reader: (buffer, position, scope, frame) -> (value, position after it).
Reader = Callable[[bytes, int, dict[str, Any], "Frame"], tuple[Any, int]]

_MISSING = object()


class Unsupported(Exception):
    """The construct is not one the fast path compiles."""


class Reject(Exception):
    """The fast path does not decide this record: the general path reads it."""


class Short(Exception):
    """The buffer ends before the record does: read more of the file, or let the general path say why."""


class Frame:
    """What one scan or one read shares: the buffer's place in the file, the bytes the file has,
    the values of expressions that are the same for every record (``_root.version``), whether
    to check, and the parse's element budget."""

    __slots__ = ("base", "budget", "check", "depth", "file_size", "hoisted")

    def __init__(self, base: int, file_size: int, check: bool, budget: list[int] | None, depth: int,
                 hoisted: dict[int, Any]) -> None:
        self.base = base  # file offset of buffer position 0
        self.file_size = file_size
        self.check = check
        self.budget = budget
        self.depth = depth
        self.hoisted = hoisted

    def spend(self, count: int) -> None:
        if self.budget is not None:
            self.budget[0] -= count
            if self.budget[0] < 0:
                raise Reject


# Below this many records a repeat is read into a list of containers, as a short list is best held.
MIN_RECORDS = BULK_MIN_ITEMS

_SIZES = {code: struct.calcsize("<" + code) for code in "BHIQbhiqefd"}


# -- expressions ---------------------------------------------------------------------------


def _lookup(scope: dict[str, Any]) -> Callable[[str], Any]:
    """Names as the general path resolves them: this record's fields, then the enclosing ones (``_``)."""
    def lookup(name: str) -> Any:
        if name == "_root":
            return scope["_root"]
        ctx: Any = scope
        while ctx is not None:
            if name in ctx:
                return ctx[name]
            parent = ctx.get("_")
            ctx = parent if isinstance(parent, dict) else None
        raise ExpressionError(f"unknown name {name!r}")
    return lookup


# the expressions evaluated once per scan, by id (what RecordList.reads_alike evaluates again)
_HOISTED: dict[int, Expression] = {}


def _compile_expr(expr: Expression, names: set[str] | None = None) -> Callable[[dict[str, Any], Frame], Any]:
    """An expression as a function of a record's scope. A bare field name is read directly; an
    expression of ``_root`` alone is the same for every record and evaluated once per scan.
    ``names`` collects the names the expression reads."""
    if names is not None:
        names.update(expr.names)
        if "_root" in expr.names and expr.names != {"_root"}:
            names.add("_root+")  # reads the root along with a record's fields: not evaluated once
    source = expr.source.strip()
    if source.isidentifier() and not source.startswith("_") and source not in ("True", "False", "None"):
        def field(scope: dict[str, Any], frame: Frame) -> Any:
            value = scope.get(source, _MISSING)
            return value if value is not _MISSING else _evaluate(expr, scope)
        return field
    if expr.names <= {"_root"}:
        key = id(expr)
        _HOISTED[key] = expr

        def hoisted(scope: dict[str, Any], frame: Frame) -> Any:
            value = frame.hoisted.get(key, _MISSING)
            if value is _MISSING:
                value = frame.hoisted[key] = _evaluate(expr, scope)
            return value
        return hoisted
    return lambda scope, frame: _evaluate(expr, scope)


def _evaluate(expr: Expression, scope: dict[str, Any], extra: dict[str, Any] | None = None) -> Any:
    lookup = _lookup(scope)
    if extra is not None:
        inner = lookup

        def lookup(name: str) -> Any:
            return extra[name] if name in extra else inner(name)
    try:
        return expr(lookup)
    except ExpressionError:
        raise Reject from None


# -- compilation ---------------------------------------------------------------------------


class Codec:
    """The compiled reader of one record type (built once per construct, shared by every scan)."""

    def __init__(self, construct: cs.Construct, read: Reader, min_size: int, self_contained: bool) -> None:
        self.construct = construct
        self.read = read
        self.min_size = min_size  # bytes a record takes at least (its fixed leading fields)
        # whether the records read the same wherever the enclosing values are the same: their
        # expressions name only their own fields, _index, and the root in expressions evaluated once
        self.self_contained = self_contained


_CODECS: dict[int, Codec | None] = {}


def codec_for(construct: cs.Construct) -> Codec | None:
    """The compiled reader of the records ``construct`` parses, or None when it does not compile."""
    key = id(construct)
    if key not in _CODECS:
        from .constructs import Presented, WithArgs

        inner = construct.subconfunc() if isinstance(construct, cs.LazyBound) else construct
        inner = inner.subcon if isinstance(inner, WithArgs) else inner
        if not isinstance(inner.subcon if isinstance(inner, Presented) else inner, cs.Struct):
            _CODECS[key] = None  # a list of records only (a repeated value is read by the Field itself)
            return None
        try:
            compiler = _Compiler()
            read = compiler.value(construct)
            free = compiler.names - compiler.fields - {"_index", "_root"}
            _CODECS[key] = Codec(construct, read, compiler.min_record_size(construct), not free)
        except Unsupported:
            _CODECS[key] = None
    return _CODECS[key]


class _Compiler:
    def __init__(self) -> None:
        self.records: dict[int, list[Reader]] = {}  # construct id -> cell of its reader (recursion)
        self.names: set[str] = set()  # the names the compiled expressions read
        self.fields: set[str] = set()  # the fields and instances of the compiled records

    def min_record_size(self, construct: cs.Construct) -> int:
        return max(self._leading_size(construct), 1)

    def _leading_size(self, construct: cs.Construct) -> int:
        from .constructs import Field, Presented

        inner = construct.subcon if isinstance(construct, Presented) else construct
        size = 0
        if isinstance(inner, cs.Struct):
            for member in inner.subcons:
                if not isinstance(member, Field) or member.fixed_size is None or member.repeat is not None \
                        or member.condition is not None:
                    break
                size += member.fixed_size
        return size

    def value(self, construct: cs.Construct) -> Reader:
        """The reader of one value of ``construct``."""
        from .constructs import PRIMITIVE_CODES, PrefixedBytes, Presented, SizedBytes, SwitchOn, WithArgs

        if isinstance(construct, cs.LazyBound):
            return self.value(construct.subconfunc())
        code = PRIMITIVE_CODES.get(construct)
        if code is not None:
            return _primitive(struct.Struct("<" + code))
        if construct is cs.Flag:
            return _flag
        if isinstance(construct, cs.Bytes) and isinstance(construct.length, int):
            return _fixed_bytes(construct.length)
        if isinstance(construct, PrefixedBytes):
            return self._prefixed(construct)
        if isinstance(construct, SizedBytes):
            return self._sized(construct)
        if isinstance(construct, SwitchOn):
            return self._switch(construct)
        if isinstance(construct, WithArgs):
            return self._with_args(construct)
        if isinstance(construct, Presented) and isinstance(construct.subcon, cs.Struct):
            return self._record(construct.subcon, construct)
        if isinstance(construct, cs.Struct) and type(construct) is cs.Struct:
            return self._record(construct, None)
        raise Unsupported

    def _record(self, struct_: cs.Struct, presented: Any) -> Reader:
        from .compiler import Instance
        from .constructs import Field

        key = id(presented if presented is not None else struct_)
        if key in self.records:  # a type inside itself: the reader being compiled, called through a cell
            pending = self.records[key]
            return lambda buf, pos, scope, frame: pending[0](buf, pos, scope, frame)
        cell: list[Reader] = []
        self.records[key] = cell
        members: list[tuple[str, Reader]] = []
        for member in struct_.subcons:
            self.fields.add(str(member.name))
            if isinstance(member, Field):
                members.append((member.name, self._field(member)))
            elif isinstance(member, Instance):
                self.names.update(member.value.names)
                members.append((member.name, _instance(member.value)))
            else:
                raise Unsupported
        tags: dict[str, Any] = {}
        if presented is not None:
            if presented.view is not None:
                tags["_view"] = presented.view
            if presented.hidden:
                tags["_hidden"] = presented.hidden
            if presented.layout:
                tags["_layout"] = presented.layout
        tag_items = tuple(tags.items())
        names = tuple(name for name, _ in members)
        readers = tuple(reader for _, reader in members)
        Container = cs.Container

        def record(buf: bytes, pos: int, parent: dict[str, Any], frame: Frame) -> tuple[Any, int]:
            # the scope Construct gives a struct: its fields so far, the enclosing one, the root
            scope: dict[str, Any] = {"_": parent, "_root": parent["_root"], "_index": parent.get("_index")}
            for name, reader in zip(names, readers, strict=True):
                scope[name], pos = reader(buf, pos, scope, frame)
            out = Container()
            for name in names:
                out[name] = scope[name]
            for tag, value in tag_items:
                out[tag] = value
            return out, pos

        cell.append(record)
        return record

    def _with_args(self, construct: Any) -> Reader:
        """A parameterised type: its arguments evaluated where it is used, then its record read in
        a scope that holds them (as :class:`~.constructs.WithArgs` makes it, without ``_index``)."""
        inner = self.value(construct.subcon)
        args = tuple((name, _compile_expr(expr, self.names)) for name, expr in construct.args.items())
        defaults = tuple(construct.defaults.items())
        self.fields.update(construct.defaults)

        def read(buf: bytes, pos: int, scope: dict[str, Any], frame: Frame) -> tuple[Any, int]:
            params: dict[str, Any] = {"_": scope, "_root": scope["_root"]}
            params.update(defaults)
            for name, value_of in args:
                params[name] = value_of(scope, frame)
            return inner(buf, pos, params, frame)
        return read

    def _field(self, field: Any) -> Reader:
        from .constructs import MAX_DEPTH, PRIMITIVE_CODES, PrefixedBytes, RepeatUntil, SwitchOn

        if field.repeat == "eos" or isinstance(field.repeat, RepeatUntil):
            raise Unsupported
        one = self.value(field.subcon)
        condition = _compile_expr(field.condition, self.names) if field.condition is not None else None
        count_of = _compile_expr(field.repeat, self.names) if isinstance(field.repeat, Expression) else None
        contents = field.contents
        checks = _checks(field.valid, self.names)
        fixed_size = field.fixed_size
        # the element of a repeat, when a switch does not choose per element
        subcon = field.subcon
        per_element_switch = isinstance(subcon, SwitchOn) and "_index" in subcon.key.source
        switch_key = _compile_expr(subcon.key, self.names) \
            if isinstance(subcon, SwitchOn) and not per_element_switch else None
        case_readers: dict[Any, tuple[Reader, Any]] = {}
        default_case: tuple[Reader, Any] | None = None
        if switch_key is not None:
            case_readers = {k: (self.value(c), c) for k, c in subcon.cases.items()}
            default_case = (self.value(subcon.default), subcon.default) if subcon.default is not None else None
        codes = PRIMITIVE_CODES

        structure = fixed_size is None  # what the general path counts as one level deeper

        def repeat(buf: bytes, pos: int, scope: dict[str, Any], frame: Frame, count: int) -> tuple[Any, int]:
            if frame.check:
                left = frame.file_size - frame.base - pos
                if (fixed_size is not None and count * fixed_size > left) or count > left:
                    raise Reject
                frame.spend(count)
            element, element_reader = subcon, one
            if switch_key is not None:
                choice = case_readers.get(switch_key(scope, frame), default_case)
                if choice is None:
                    raise Reject
                element_reader, element = choice
            if count == 0:
                return cs.ListContainer(), pos
            code = field.bulk_code or codes.get(element)
            if code is not None:
                end = pos + count * _SIZES[code]
                if end > len(buf):
                    raise Short
                if count >= BULK_MIN_ITEMS:
                    return NumberArray(buf[pos:end], code), end
                return cs.ListContainer(struct.unpack_from(f"<{count}{code}", buf, pos)), end
            if isinstance(element, PrefixedBytes) and count >= BULK_MIN_ITEMS:
                return _strings(buf, pos, scope, frame, count, element)
            if count >= MIN_RECORDS and not per_element_switch:
                codec = codec_for(element)
                if codec is not None:
                    return _nested(buf, pos, scope, frame, count, codec)
            items = cs.ListContainer()
            for i in range(count):
                scope["_index"] = i
                item, pos = element_reader(buf, pos, scope, frame)
                items.append(item)
            return items, pos

        def read(buf: bytes, pos: int, scope: dict[str, Any], frame: Frame) -> tuple[Any, int]:
            if condition is not None and not condition(scope, frame):
                return None, pos
            if structure:
                frame.depth += 1
                if frame.depth > MAX_DEPTH:
                    raise Reject
            if count_of is None:
                value, end = one(buf, pos, scope, frame)
            else:
                count = count_of(scope, frame)
                if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                    raise Reject
                value, end = repeat(buf, pos, scope, frame, count)
            if structure:
                frame.depth -= 1
            if frame.check:
                if contents is not None and value != contents:
                    raise Reject
                for check in checks:
                    check(value, scope)
            return value, end

        return read

    def _prefixed(self, construct: Any) -> Reader:
        encoding = construct.encoding
        if construct.key is None:
            prefix = construct.prefix
            width_of: Callable[[dict[str, Any], Frame], struct.Struct] | None = None
        else:
            key = _compile_expr(construct.key, self.names)
            widths, default = construct.widths, construct.prefix

            def width_of(scope: dict[str, Any], frame: Frame) -> struct.Struct:
                chosen = widths.get(key(scope, frame), default)
                if chosen is None:
                    raise Reject
                return chosen  # type: ignore[no-any-return]
            prefix = None

        def read(buf: bytes, pos: int, scope: dict[str, Any], frame: Frame) -> tuple[Any, int]:
            head = prefix if width_of is None else width_of(scope, frame)
            try:
                (nbytes,) = head.unpack_from(buf, pos)
            except struct.error:
                raise Short from None
            start = pos + head.size
            end = start + nbytes
            if end > len(buf):
                raise Short
            data = buf[start:end]
            if encoding is None:
                return data, end
            try:
                return data.decode(encoding), end
            except UnicodeDecodeError:
                raise Reject from None
        return read

    def _sized(self, construct: Any) -> Reader:
        if construct.size is None:
            raise Unsupported  # `size: eos`: the rest of the file
        size_of = _compile_expr(construct.size, self.names)
        encoding = construct.encoding

        def read(buf: bytes, pos: int, scope: dict[str, Any], frame: Frame) -> tuple[Any, int]:
            nbytes = size_of(scope, frame)
            if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
                raise Reject
            end = pos + nbytes
            if end > len(buf):
                raise Short
            data = buf[pos:end]
            if encoding is None:
                return data, end
            try:
                return data.decode(encoding), end
            except UnicodeDecodeError:
                raise Reject from None
        return read

    def _switch(self, construct: Any) -> Reader:
        key_of = _compile_expr(construct.key, self.names)
        cases = {k: self.value(c) for k, c in construct.cases.items()}
        default = self.value(construct.default) if construct.default is not None else None

        def read(buf: bytes, pos: int, scope: dict[str, Any], frame: Frame) -> tuple[Any, int]:
            reader = cases.get(key_of(scope, frame), default)
            if reader is None:
                raise Reject
            return reader(buf, pos, scope, frame)
        return read


def _primitive(packer: struct.Struct) -> Reader:
    unpack, size = packer.unpack_from, packer.size

    def read(buf: bytes, pos: int, scope: dict[str, Any], frame: Frame) -> tuple[Any, int]:
        try:
            return unpack(buf, pos)[0], pos + size
        except struct.error:
            raise Short from None
    return read


def _flag(buf: bytes, pos: int, scope: dict[str, Any], frame: Frame) -> tuple[Any, int]:
    if pos >= len(buf):
        raise Short
    return buf[pos] != 0, pos + 1


def _fixed_bytes(length: int) -> Reader:
    def read(buf: bytes, pos: int, scope: dict[str, Any], frame: Frame) -> tuple[Any, int]:
        end = pos + length
        if end > len(buf):
            raise Short
        return buf[pos:end], end
    return read


def _instance(value: Expression) -> Reader:
    def read(buf: bytes, pos: int, scope: dict[str, Any], frame: Frame) -> tuple[Any, int]:
        return _evaluate(value, scope), pos
    return read


def _checks(clauses: list[Any], names: set[str]) -> list[Callable[[Any, dict[str, Any]], None]]:
    """Each ``valid:`` clause as a test that raises :class:`Reject`. A bound that is a number in
    the schema is compared directly; any other clause is the general path's own check."""
    out: list[Callable[[Any, dict[str, Any]], None]] = []
    for clause in clauses:
        for expr in (clause.eq, clause.minimum, clause.maximum, clause.expr, clause.guard, *(clause.any_of or ())):
            if expr is not None:
                names.update(expr.names - {"_"})
        simple = clause.guard is None and clause.eq is None and clause.any_of is None and clause.expr is None \
            and clause.unique is None and clause.disjoint is None
        if simple and _constant(clause.minimum) and _constant(clause.maximum):
            lo = clause.minimum(lambda n: None) if clause.minimum is not None else None
            hi = clause.maximum(lambda n: None) if clause.maximum is not None else None

            def bounds(value: Any, scope: dict[str, Any], lo: Any = lo, hi: Any = hi) -> None:
                try:
                    if (lo is not None and value < lo) or (hi is not None and value > hi):
                        raise Reject
                except TypeError:
                    raise Reject from None
            out.append(bounds)
        else:
            def general(value: Any, scope: dict[str, Any], clause: Any = clause) -> None:
                try:
                    clause.check(value, scope, "", 0)
                except FormatError:
                    raise Reject from None
            out.append(general)
    return out


def _constant(expr: Expression | None) -> bool:
    return expr is None or not expr.names


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
            return all(_evaluate(_HOISTED[key], scope) == value for key, value in self.hoisted.items())
        except Reject:
            return False


# -- the scan ------------------------------------------------------------------------------


def scan(codec: Codec, stream: Any, context: Any, count: int, offset: int, file_size: int,
         budget: list[int] | None, depth: int) -> RecordList | int:
    """Read ``count`` records from ``stream`` at ``offset``: a :class:`RecordList`, or the index of
    the first record the fast path does not decide (the stream is then at that record's start,
    and the budget as it was before it)."""
    left = file_size - offset
    buf = stream.read(min(left, max(count * codec.min_size, 1 << 20)))
    starts = _starts(count, left)
    # The records' enclosing scope: the struct holding the repeat, as it stands (a copy, so that
    # what is read after the repeat is not visible to the records, as it is not to the general path)
    scope = dict(context)
    hoisted: dict[int, Any] = {}
    frame = Frame(offset, file_size, True, budget, depth, hoisted)
    pos = 0
    read = codec.read
    i = 0
    while i < count:
        scope["_index"] = i
        spent = budget[0] if budget is not None else 0
        try:
            _, end = read(buf, pos, scope, frame)
        except Short:
            if budget is not None:
                budget[0] = spent
            frame.depth = depth
            if len(buf) < left:
                buf += stream.read(min(left - len(buf), max(len(buf), 1 << 20)))
                continue
            stream.seek(offset + pos)
            return i
        except (Reject, RecursionError, FormatError):
            if budget is not None:
                budget[0] = spent
            stream.seek(offset + pos)
            return i
        starts[i] = pos
        pos = end
        i += 1
    stream.seek(offset + pos)
    return RecordList(bytes(buf[:pos]), starts, BoundReader(codec, scope, offset, hoisted))
