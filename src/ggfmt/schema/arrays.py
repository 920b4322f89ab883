"""Bulk arrays: long repeats of a primitive or of a length-prefixed string, held as one object.

A vocabulary of 150,000 tokens read as 150,000 Python strings costs seconds and tens of
megabytes; read as one block of bytes with the start of each item, it costs one pass over the
bytes. :class:`NumberArray` holds a repeated primitive in one typed array (read in one call);
:class:`StringArray` holds the file's own bytes of a repeated length-prefixed string and decodes
an item when it is asked for; :class:`RecordList` holds the bytes of a repeated record and
decodes a record when it is asked for (see :mod:`.records`). All are read-only sequences of
plain Python values, so the schema's expressions, the reports and ``--json`` use them as they use
lists; ``numpy()`` gives a numpy view of a :class:`NumberArray` without a copy.

(The array module rather than numpy holds the numbers: a parse does not otherwise import numpy,
whose import costs about as much as parsing a large header.)
"""

from __future__ import annotations

import array
import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

from ..errors import FormatError, Truncated

# Below this many items a repeat is read into a list: small lists (a tensor's dimensions) are
# cheaper as lists, and a list is what a schema author expects to see.
BULK_MIN_ITEMS = 64


# bytes of one item of each number code NumberArray holds
ITEM_SIZES = {code: struct.calcsize("<" + code) for code in "BHIQbhiqefd"}


class ReadOnDemand(Sequence[Any]):
    """A read-only sequence whose items are made when they are read: a subclass gives ``__len__``,
    ``_item(index)`` for an index in range, and ``identical(other)`` when it can tell equality
    without reading the items."""

    __slots__ = ()

    def _item(self, index: int) -> Any:
        raise NotImplementedError

    def identical(self, other: object) -> bool:
        return False

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self._item(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._item(index)

    def __eq__(self, other: object) -> bool:
        if self.identical(other):
            return True
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def tolist(self) -> list[Any]:
        return list(self)


class NumberArray(Sequence[Any]):
    """``count`` primitives of one type (``code``: the struct code, ``"<I"`` for u32 ...)."""

    __slots__ = ("_items", "code")

    def __init__(self, data: bytes, code: str) -> None:
        self.code = code
        if code == "e":  # f16, which the array module lacks: kept as bytes, read on access
            self._items: Any = data
        else:
            items = array.array(code)
            items.frombytes(data)
            if sys.byteorder == "big":
                items.byteswap()
            self._items = items

    def __len__(self) -> int:
        return len(self._items) // 2 if self.code == "e" else len(self._items)

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if self.code == "e":
            return self.tolist()[index]
        if isinstance(index, slice):
            return self._items[index].tolist()
        return self._items[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.tolist() if self.code == "e" else self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, NumberArray):
            return (self.code == other.code and self.tobytes() == other.tobytes()) or self.tolist() == other.tolist()
        if isinstance(other, list | tuple):
            return len(self) == len(other) and self.tolist() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def tolist(self) -> list[Any]:
        if self.code == "e":
            return list(struct.unpack(f"<{len(self._items) // 2}e", self._items))
        return list(self._items.tolist())

    def tobytes(self) -> bytes:
        """The items as the file holds them (little-endian)."""
        if self.code == "e":
            return bytes(self._items)
        if sys.byteorder == "big":
            swapped = array.array(self.code, self._items)
            swapped.byteswap()
            return swapped.tobytes()
        return bytes(self._items.tobytes())

    def numpy(self) -> Any:
        """The items as a numpy array (a view of this array's memory, read-only)."""
        import numpy as np

        return np.frombuffer(self.tobytes() if self.code == "e" or sys.byteorder == "big" else self._items,
                             dtype=np.dtype("<" + self.code))

    def __repr__(self) -> str:
        return f"NumberArray({len(self)} x {self.code})"


class StringArray(ReadOnDemand):
    """``count`` length-prefixed strings (or byte strings, when ``encoding`` is None) as the file
    holds them: ``wire`` is the bytes of the whole repeat, prefixes included, and ``starts`` the
    start of each item's text in it. An item is decoded when it is read; text that is not valid
    in the encoding is then a :class:`FormatError` naming the item and its byte offset."""

    __slots__ = ("encoding", "offset", "path", "prefix_size", "starts", "wire")

    def __init__(self, wire: bytes, starts: array.array[int], prefix_size: int, encoding: str | None,
                 offset: int, path: str) -> None:
        self.wire = wire
        self.starts = starts
        self.prefix_size = prefix_size
        self.encoding = encoding
        self.offset = offset  # where the repeat starts in the file
        self.path = path

    def __len__(self) -> int:
        return len(self.starts)

    def _bounds(self, index: int) -> tuple[int, int]:
        start = self.starts[index]
        end = self.starts[index + 1] - self.prefix_size if index + 1 < len(self.starts) else len(self.wire)
        return start, end

    def _item(self, index: int) -> Any:
        start, end = self._bounds(index)
        data = self.wire[start:end]
        if self.encoding is None:
            return data
        try:
            return data.decode(self.encoding)
        except UnicodeDecodeError as e:
            raise FormatError(f"{self.path}[{index}]", self.offset + start + e.start,
                              f"not valid {self.encoding}: {e.reason}") from None

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]

    def identical(self, other: object) -> bool:
        return isinstance(other, StringArray) and self.prefix_size == other.prefix_size \
            and self.encoding == other.encoding and self.wire == other.wire

    def __repr__(self) -> str:
        return f"StringArray({len(self)} items)"


class RecordList(ReadOnDemand):
    """``count`` records of one type as the file holds them: ``wire`` is the bytes of the whole
    repeat, ``starts`` the start of each record in it, and ``reader`` the compiled reader of
    :mod:`.records` that decodes one. A record is decoded when it is read, into a new container
    each time: to change records, change a copy (``list(records)``)."""

    __slots__ = ("_last", "_reads", "kept", "reader", "starts", "wire")

    def __init__(self, wire: bytes, starts: array.array[int], reader: Any) -> None:
        self.wire = wire
        self.starts = starts
        self.reader = reader
        # the record read last, with its index: expressions read one record field by field
        # (infos[_index].offset, then infos[_index].nbytes)
        self._last: tuple[int, Any] = (-1, None)
        self._reads: dict[str, int] = {}  # field -> how often one record's value was asked for
        # field -> every record's value, once asked for often (or checked whole: see scan)
        self.kept: dict[str, list[Any]] = {}

    @property
    def offset(self) -> int:
        """Where the repeat starts in the file."""
        return int(self.reader.offset)

    def __len__(self) -> int:
        return len(self.starts)

    def _item(self, index: int) -> Any:
        if self._last[0] == index:
            return self._last[1]
        record = self.reader.decode(self.wire, self.starts[index], index)
        self._last = (index, record)
        return record

    def __iter__(self) -> Iterator[Any]:
        decode, wire, starts = self.reader.decode, self.wire, self.starts
        for i in range(len(starts)):
            yield decode(wire, starts[i], i)

    def field(self, index: int, name: str) -> Any:
        """Field ``name`` (one of the records' own) of record ``index``: ``vocab[i].text``. Once
        a field has been asked for :data:`COLUMN_AFTER` times, every field asked for so far is read
        in one pass and kept (a list per field, not the records), and indexed from then on."""
        column = self.kept.get(name)
        if column is None:
            reads = self._reads[name] = self._reads.get(name, 0) + 1
            if reads < COLUMN_AFTER:
                return self[index][name]
            # every field asked for so far and not yet kept, in one pass (a tensor's name, type, shape)
            self._keep(tuple(n for n in self._reads if n not in self.kept))
            column = self.kept[name]
        if index < 0:
            index += len(column)
        if not 0 <= index < len(column):
            raise IndexError(index)
        return column[index]

    def column(self, name: str) -> list[Any]:
        """Field ``name`` of every record, kept once read (a scan keeps every field of a list that
        a check reads whole: a tensor's offset and size are checked, then its name and type asked for)."""
        if name not in self.kept:
            self._keep((name,))
        return self.kept[name]

    def _keep(self, names: tuple[str, ...]) -> None:
        """Read the fields ``names`` of every record in one pass, and keep them."""
        self.kept.update(self.reader.column_lists(self.wire, self.starts, names))

    def has_columns(self, *names: str) -> bool:
        """Whether :meth:`columns` can give the fields ``names`` (the records' own fields)."""
        return set(names) <= set(self.reader.codec.fields)

    def columns(self, *names: str) -> Iterator[tuple[Any, ...]]:
        """Fields ``names`` of every record (a tuple each), in order, read without making the
        records (a GGUF's keys, to find one); from the columns kept, when they are."""
        if all(name in self.kept for name in names):
            return zip(*(self.kept[name] for name in names), strict=True)
        return iter(self.reader.columns(self.wire, self.starts, tuple(names)))

    def identical(self, other: object) -> bool:
        """The same records for certain, without reading them: the same bytes, read the same way."""
        return isinstance(other, RecordList) and self.reader.same_layout(other.reader) and self.wire == other.wire

    def __repr__(self) -> str:
        return f"RecordList({len(self)} records)"


class TensorRecords(ReadOnDemand):
    """A long list of tensor records held as columns, a list per field in the record's order:
    a record (``make()``, its fields, then ``extra``: its tags and roles) is made when it is read,
    a new container each time. A GGUF's 263,000 tensor infos become one list per field here, not
    263,000 containers; the tensor table reads the columns."""

    __slots__ = ("columns", "extra", "make")

    def __init__(self, columns: dict[str, list[Any]], extra: dict[str, Any], make: Callable[[], Any]) -> None:
        self.columns = columns
        self.extra = extra
        self.make = make

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), ()))

    def _item(self, index: int) -> Any:
        record = self.make()
        for name, column in self.columns.items():
            record[name] = column[index]
        record.update(self.extra)
        return record

    def has_columns(self, *names: str) -> bool:
        """Whether ``names`` are the records' own fields (see :meth:`RecordList.has_columns`)."""
        return set(names) <= self.columns.keys()

    def column(self, name: str) -> list[Any]:
        """Field ``name`` of every record."""
        return self.columns[name]

    def __repr__(self) -> str:
        return f"TensorRecords({len(self)} records)"


# how often a field of single records of a list is read before the whole column is (see RecordList.field)
COLUMN_AFTER = 64

# the sequences a parse makes of long repeats, besides lists
BULK_SEQUENCES = (NumberArray, StringArray, RecordList, TensorRecords)


def read_strings(stream: Any, count: int, prefix: struct.Struct, encoding: str | None, path: str,
                 offset: int, file_size: int) -> StringArray:
    """``count`` length-prefixed strings from ``stream`` (at ``offset``) in one pass over their
    bytes. Each size is checked against the bytes left in the file before anything is read."""
    size = prefix.size
    left = file_size - offset
    if count * size > left:
        raise Truncated(path, offset, count * size, left,
                        f"{count} strings need at least {count * size} bytes, only {left} left in the file")
    chunk = 1 << 20
    wire = bytearray(stream.read(min(left, max(count * size, chunk))))
    unpack = prefix.unpack_from
    starts = array.array("Q")
    mark = starts.append
    pos = 0
    for i in range(count):
        head_end = pos + size
        if head_end > len(wire):
            wire += stream.read(min(left - len(wire), max(head_end - len(wire), chunk)))
            if head_end > len(wire):
                raise Truncated(f"{path}[{i}]", offset + pos, size, len(wire) - pos,
                                f"unexpected end of file: a {size}-byte size expected")
        (nbytes,) = unpack(wire, pos)
        pos = head_end + nbytes
        if pos > len(wire):
            if nbytes > left - head_end:
                raise Truncated(f"{path}[{i}]", offset + head_end - size, size + nbytes, left - head_end + size,
                                f"a size of {nbytes} bytes, only {left - head_end} left in the file")
            wire += stream.read(min(left - len(wire), max(pos - len(wire), chunk)))
        mark(head_end)
    del wire[pos:]
    stream.seek(offset + pos)
    return StringArray(bytes(wire), starts, size, encoding, offset, path)
