"""What a parse returns: the parsed fields and references to the tensors (never their data)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as quote
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import ggml_types  # (light: its tables are read when first asked for)
from .schema.arrays import NumberArray, RecordList, StringArray

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


@dataclass
class Document:
    """A parsed file: its schema, its fields (nested mappings and lists) and its tensors."""

    source: Path
    schema: Schema
    fields: Any
    tensors: list[TensorRef]
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
            names = {t: ggml_types.type_name(t) for t in {tensor.ggml_type for tensor in self.tensors}}
            for first in range(0, len(self.tensors), 4096):  # (in batches, as the fields)
                out.write("".join(("," if i else "") + "\n  " + _tensor_json(tensor, names) for i, tensor in
                                  enumerate(self.tensors[first:first + 4096], first)))
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


def _tensor_json(tensor: TensorRef, type_names: Mapping[int, str]) -> str:
    """``_dumps(tensor.as_json())``, written out, the same members in the same order (263,000
    tensors: a JSON encoder's call each is most of the time; a loop over ``as_json()``'s items
    measured 0.7 s slower on them); its strings quoted by the same function json.dumps uses."""
    return f'{{"path": {quote(tensor.path)}, "name": {quote(tensor.name)}, ' \
        f'"type": {quote(type_names[tensor.ggml_type])}, "ggml_type": {tensor.ggml_type}, ' \
        f'"ne": [{", ".join(map(str, tensor.ne))}], "offset": {tensor.offset}, "nbytes": {tensor.nbytes}}}'


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
    elif isinstance(value, list | RecordList) and value and isinstance(value[0], Mapping):
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
    if isinstance(value, RecordList):
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
