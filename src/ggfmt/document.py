"""What a parse returns: the parsed fields and references to the tensors (never their data)."""

from __future__ import annotations

import bisect
import itertools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as quote
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, overload

from . import ggml_types  # (light: its tables are read when first asked for)
from .schema.arrays import NumberArray, RecordList, StringArray, TensorRecords

if TYPE_CHECKING:
    from .schema import Schema

# ggml type ids the legacy layouts hold, by name (gguf.GGMLQuantizationType has them all).


# (slots: a GGUF may list 263,000 of them; not frozen, as a frozen dataclass takes three times as
# long to make: hashed as if frozen, never changed once made)
@dataclass(slots=True, unsafe_hash=True)
class TensorRef:
    """A tensor as the file holds it: where its data is, not the data.

    ``ne`` is in ggml order (``ne[0]`` varies fastest; the numpy shape is its reverse).
    A record with no dimensions is a null tensor (an absent optional tensor): no data.
    """

    path: str
    name: str
    ggml_type: int
    ne: tuple[int, ...]
    offset: int
    nbytes: int
    # the file that holds the data when it is not the Document's own ``source`` (a second
    # weights file a conversion option names, such as a LLaVA projector)
    file: Path | None = None
    # a tensor only torch could read (a legacy pickle's): its array as stored, loaded when written;
    # ``offset`` is then meaningless
    load: Any = None

    @property
    def is_null(self) -> bool:
        return len(self.ne) == 0

    @property
    def type_name(self) -> str:
        return ggml_types.type_name(self.ggml_type)

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "name": self.name, "type": self.type_name, "ggml_type": self.ggml_type,
                "ne": list(self.ne), "offset": self.offset, "nbytes": self.nbytes}


class TensorTable(Sequence[TensorRef]):
    """The tensors of a parse held as columns, a :class:`TensorRef` made when one is read: a
    list per attribute, and the path of each tensor made from its list's path when asked for.
    (A GGUF of 263,000 tensors: five lists, not 263,000 objects and their paths; the tensor
    table and ``--json`` read the columns.)"""

    __slots__ = ("_lists", "ggml_types", "names", "nbytes", "nes", "offsets")

    def __init__(self) -> None:
        self.names: list[str] = []
        self.ggml_types: list[int] = []
        self.nes: list[Sequence[int]] = []
        self.offsets: list[int] = []
        self.nbytes: list[int] = []
        self._lists: list[tuple[int, int, str, bool]] = []  # (first index, count, path, a list's path)

    def add(self, path: str, name: str, ggml_type: int, ne: Sequence[int], offset: int, nbytes: int) -> None:
        """One tensor record's tensor, at ``path``."""
        self._lists.append((len(self.names), 1, path, False))
        self.names.append(str(name))
        self.ggml_types.append(int(ggml_type))
        self.nes.append(ne)
        self.offsets.append(offset)
        self.nbytes.append(nbytes)

    def add_list(self, path: str, names: Sequence[str], ggml_types: Sequence[int], nes: Sequence[Sequence[int]],
                 offsets: Sequence[int], nbytes: Sequence[int]) -> None:
        """The tensors of a list of tensor records at ``path``, by column."""
        self._lists.append((len(self.names), len(names), path, True))
        self.names.extend(map(str, names))
        self.ggml_types.extend(map(int, ggml_types))
        self.nes.extend(nes)
        self.offsets.extend(offsets)
        self.nbytes.extend(nbytes)

    def paths(self) -> Iterator[str]:
        """The path of each tensor, in order."""
        for _, count, path, is_list in self._lists:
            if is_list:
                yield from (f"{path}[{i}]" for i in range(count))
            else:
                yield path

    def _path(self, index: int) -> str:
        first, _, path, is_list = self._lists[bisect.bisect_right(self._lists, index, key=itemgetter(0)) - 1]
        return f"{path}[{index - first}]" if is_list else path

    def __len__(self) -> int:
        return len(self.names)

    @overload
    def __getitem__(self, index: int) -> TensorRef: ...
    @overload
    def __getitem__(self, index: slice) -> list[TensorRef]: ...

    def __getitem__(self, index: int | slice) -> TensorRef | list[TensorRef]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return TensorRef(self._path(index), self.names[index], self.ggml_types[index],
                         tuple(map(int, self.nes[index])), self.offsets[index], self.nbytes[index])

    def __iter__(self) -> Iterator[TensorRef]:
        for path, name, ggml_type, ne, offset, nbytes in zip(self.paths(), self.names, self.ggml_types, self.nes,
                                                              self.offsets, self.nbytes, strict=True):
            yield TensorRef(path, name, ggml_type, tuple(map(int, ne)), offset, nbytes)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TensorTable({len(self)} tensors)"


def by_column(tensors: Sequence[TensorRef]) -> TensorTable:
    """``tensors`` held as columns (a parse's tensors already are): what the tensor table and
    ``--json`` show of each (a reference's ``file`` and ``load`` are not kept)."""
    if isinstance(tensors, TensorTable):
        return tensors
    table = TensorTable()
    for t in tensors:
        table.add(t.path, t.name, t.ggml_type, t.ne, t.offset, t.nbytes)
    return table


@dataclass
class Document:
    """A parsed file: its schema, its fields (nested mappings and lists) and its tensors."""

    source: Path
    schema: Schema
    fields: Any
    tensors: Sequence[TensorRef]  # a TensorTable, from a parse of a schema's records
    size: int
    params: dict[str, Any] = field(default_factory=dict)  # the schema's parameters, as the parse used them
    # a directory's Document: the file each top-level field was read from (``config`` ->
    # adapter_config.json), so that a message about ``config.r`` names that file
    field_files: dict[str, Path] = field(default_factory=dict)
    directory: Path | None = None  # a directory input (a bundle): the directory the user named
    # tensors a reader could not take as references (complex, sparse, views), with the reason:
    # an error when a conversion needs one, nothing when its table drops it
    unread: dict[str, str] = field(default_factory=dict)

    @property
    def origin(self) -> Path:
        """What the user named: the directory of a bundle, else the file."""
        return self.directory if self.directory is not None else self.source

    def locate(self, path: str) -> tuple[str, str, int | None]:
        """(file, field path in it, byte offset when known) of the field at ``path``."""
        top, _, rest = path.partition(".")
        if top in self.field_files:
            return str(self.field_files[top]), rest, None
        return str(self.source), path, self.offset_of(path) if path else None

    def offset_of(self, path: str) -> int | None:
        """The byte offset where the field at ``path`` (``opt.ctx.iter``) starts, when known."""
        offsets = self.fields.get("_offsets") if isinstance(self.fields, Mapping) else None
        return offsets.get(path) if offsets else None

    def scalar_fields(self) -> Iterator[tuple[str, Any]]:
        """(dotted path, value) of every field that is not part of a tensor record, as the file holds it."""
        from .view import items

        yield from items(self.fields, raw=True)

    def write_view_json(self, out: TextIO, patterns: list[str] | None = None, tensors: bool = True) -> None:
        """The document as its users read it (:mod:`ggfmt.view`): typed keys as ``{"type": "u32",
        "value": 32}``, arrays in full; ``patterns`` select fields and keys."""
        from .view import json_tree

        self._write(out, json_tree(self.fields, patterns), tensors)

    def write_json(self, out: TextIO) -> None:
        """The document as :meth:`as_json` gives it (the records as the file holds them)."""
        self._write(out, self.fields, True)

    def _write(self, out: TextIO, fields: Any, tensors: bool) -> None:
        """Written piece by piece: a record at a time and a list of numbers or strings in one call,
        so that a header of millions of items is neither copied whole nor encoded element by
        element in Python."""
        out.write(f'{{"file": {_dumps(str(self.source))}, "schema": {_dumps(self.schema.id)}, '
                  f'"size": {self.size},\n "fields": ')
        pieces: list[str] = []
        for piece in _json_pieces(fields, "", 1):
            pieces.append(piece)
            if len(pieces) >= 4096:  # written in batches: a write call per piece would dominate
                out.write("".join(pieces))
                pieces.clear()
        out.write("".join(pieces))
        if tensors:
            out.write(',\n "tensors": [')
            table = by_column(self.tensors)
            names = {t: ggml_types.type_name(t) for t in set(table.ggml_types)}
            rows = zip(table.paths(), table.names, table.ggml_types, table.nes, table.offsets, table.nbytes,
                       strict=True)
            lines = ["\n  " + _tensor_json(row, names) for row in itertools.islice(rows, 1)]
            while lines:  # (in batches, as the fields)
                out.write("".join(lines))
                lines = [",\n  " + _tensor_json(row, names) for row in itertools.islice(rows, 4096)]
            out.write("\n ]")
        out.write("\n}\n")

    def as_json(self) -> dict[str, Any]:
        return {
            "file": str(self.source),
            "schema": self.schema.id,
            "size": self.size,
            "fields": to_plain(self.fields),
            "tensors": [t.as_json() for t in self.tensors],
        }


# How --json writes the floats JSON cannot hold (the names JavaScript gives them), so that the
# document stays valid for strict parsers (jq, JSON.parse) and no value is lost.
NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}

def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False)  # non-ASCII escaped: no bidi control reaches a terminal


def _tensor_json(row: tuple[str, str, int, Sequence[int], int, int], type_names: Mapping[int, str]) -> str:
    """``_dumps(tensor.as_json())`` of a tensor's row of its table (path, name, ggml type, ne,
    offset, bytes), written out, the same members in the
    same order (263,000 tensors: a JSON encoder's call each is most of the time; a loop over
    ``as_json()``'s items measured 0.7 s slower on them); its strings quoted by the same function
    json.dumps uses."""
    path, name, ggml_type, ne, offset, nbytes = row
    return f'{{"path": {quote(path)}, "name": {quote(name)}, "type": {quote(type_names[ggml_type])}, ' \
        f'"ggml_type": {ggml_type}, "ne": [{", ".join(map(str, map(int, ne)))}], "offset": {offset}, ' \
        f'"nbytes": {nbytes}}}'


def _json_pieces(value: Any, path: str, depth: int) -> Iterator[str]:
    """JSON text of ``value`` as :func:`to_plain` makes it, in pieces; mappings and lists of records
    one member per line, other lists on one line."""
    from .schema.constructs import TensorContainer

    indent = "\n" + " " * (depth + 1)
    if isinstance(value, Mapping) and not isinstance(value, TensorContainer):
        members = [(k, v) for k, v in value.items() if isinstance(k, str) and not k.startswith("_")]
        if all(isinstance(v, int | float | str | bytes) or v is None for _, v in members):
            yield _dumps({k: _plain(v, "") for k, v in members})  # a record of plain values: one line
            return
        yield "{"
        for i, (key, item) in enumerate(members):
            yield ("," if i else "") + indent + _dumps(key) + ": "
            yield from _json_pieces(item, f"{path}.{key}" if path else key, depth + 1)
        yield "\n" + " " * depth + "}" if members else "}"
    elif isinstance(value, list | RecordList | TensorRecords) and value and isinstance(value[0], Mapping):
        yield "["
        for i, item in enumerate(value):
            yield ("," if i else "") + indent
            yield from _json_pieces(item, f"{path}[{i}]", depth + 1)
        yield "\n" + " " * depth + "]"
    elif isinstance(value, list) and all(isinstance(v, int | str) for v in value):
        yield _dumps(value)  # numbers or strings, millions of them perhaps: one C call
    elif isinstance(value, NumberArray | StringArray):
        yield _dumps(_plain(value, path))
    else:
        yield _dumps(_plain(value, path))


def to_plain(value: Any) -> Any:
    """JSON-ready copy of parsed fields; a tensor record becomes ``{"tensor": its path}``."""
    return _plain(value, "")


def _plain(value: Any, path: str) -> Any:
    from .schema.constructs import PayloadRef, TensorContainer

    if isinstance(value, TensorContainer):
        return {"tensor": path}
    if isinstance(value, Mapping):
        return {k: _plain(v, f"{path}.{k}" if path else k)
                for k, v in value.items() if isinstance(k, str) and not k.startswith("_")}
    if isinstance(value, NumberArray):
        numbers = value.tolist()
        return numbers if value.code not in "efd" else [_finite(v) for v in numbers]
    if isinstance(value, StringArray):
        return [v.hex() if isinstance(v, bytes) else v for v in value]
    if isinstance(value, RecordList | TensorRecords):
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, list):
        if all(isinstance(v, int | float | str) for v in value):  # no paths to make for leaves
            return [_finite(v) if isinstance(v, float) else v for v in value]
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, PayloadRef):
        return {"offset": value.offset, "nbytes": value.nbytes}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float):
        return _finite(value)
    return value


def _finite(value: float) -> float | str:
    # JSON has no NaN or infinities
    return value if math.isfinite(value) else NON_FINITE[str(value)]
