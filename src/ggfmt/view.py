"""A parsed document as its users read it: fields by path, and the typed ``key = value`` entries
that a schema's ``view:`` declares (GGUF metadata), instead of the records on the wire.

``fmt parse``, ``fmt parse --json`` and ``fmt diff`` all read documents through this module;
``--raw`` bypasses it and shows the wire-level records.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .schema.arrays import BULK_SEQUENCES, ReadOnDemand, RecordList, TensorRecords
from .schema.constructs import PayloadRef, TensorContainer, ViewSpec

SHARED_NUMBERS = 4096  # whole numbers of a keyed section whose Typed is made once (see Entries)
SHOWN_RECORDS = 32  # of a long list of records without a view (a vocabulary, say), the first ones are listed


# (slots: a diff holds one per key of each file; not frozen: a frozen dataclass is three times
# slower to make, and a GGUF may hold a million pairs; hashed as if frozen, never changed)
@dataclass(slots=True, unsafe_hash=True)
class Typed:
    """A value with the name of its type (``u32``, ``str``); an array holds the type of its items
    and a sequence of them (of :class:`Typed` when the items are themselves arrays)."""

    type: str
    value: Any
    array: bool = False

    @property
    def label(self) -> str:
        """``u32``; ``str[]`` for an array of strings."""
        return f"{self.type}[]" if self.array else self.type


class Entries(ReadOnDemand):
    """A keyed section's (key, typed value) pairs, each made when it is read: a GGUF of a million
    pairs is walked, not held twice (its records and their views)."""

    def __init__(self, records: Sequence[Any], key_field: str) -> None:
        self._records = records
        self._key = key_field

    def __len__(self) -> int:
        return len(self._records)

    def _item(self, index: int) -> Any:
        record = self._records[index]
        return str(record[self._key]), typed(record)

    def __iter__(self) -> Iterator[tuple[str, Typed]]:
        fields = self.fields()
        if fields is None:
            for record in self._records:
                yield str(record[self._key]), typed(record)
            return
        spec, rows = fields
        # a whole number's Typed made once per (type, value) and shared (a Typed is never changed):
        # a diff holds one per pair of each file, and most pairs of a large section hold few values
        shared: dict[tuple[Any, Any, Any], Typed] = {}
        for key, type_value, value in rows:
            kind = type(value)
            if kind is not int and kind is not bool:
                yield str(key), typed_value(spec, type_value, value)
                continue
            known = shared.get((type_value, kind, value))
            if known is None:
                known = typed_value(spec, type_value, value)
                if len(shared) < SHARED_NUMBERS:
                    shared[type_value, kind, value] = known
            yield str(key), known

    def fields(self) -> tuple[ViewSpec, Iterator[tuple[Any, Any, Any]]] | None:
        """The view, and each pair's key, type and value fields as the file holds them, read from
        a list read in bulk without making its records (nor a :class:`Typed` of a number: see
        :func:`typed_value`); None when the records are not such a list."""
        records = self._records
        spec = _spec(records[0]) if isinstance(records, RecordList) and len(records) else None
        if not isinstance(records, RecordList) or spec is None or spec.type is None \
                or not records.has_columns(self._key, spec.type, spec.value):
            return None
        return spec, records.columns(self._key, spec.type, spec.value)


@dataclass(frozen=True)
class Section:
    """A repeated field whose records have a keyed view: its entries by key, in file order."""

    path: str
    entries: Sequence[tuple[str, Typed]]


class TypedItems(ReadOnDemand):
    """The typed values of a list of records with a view (a GGUF array of arrays), each made when
    it is read: 820,000 arrays are not held twice."""

    def __init__(self, records: Sequence[Any]) -> None:
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def _item(self, index: int) -> Any:
        return typed(self.records[index])

    def __iter__(self) -> Iterator[Typed]:
        for record in self.records:
            yield typed(record)

    def identical(self, other: object) -> bool:
        """The same values for certain, without reading them (see :meth:`RecordList.identical`)."""
        return isinstance(other, TypedItems) and isinstance(self.records, RecordList) \
            and self.records.identical(other.records)


Item = tuple[str, Any]  # (field path, value): a value, a Typed, or a Section's entries


_SEQUENCES = (list, tuple, TypedItems, *BULK_SEQUENCES)
_PLAIN_SEQUENCES = frozenset(_SEQUENCES)


_SCALARS = frozenset((int, float, str, bytes, bool, type(None)))


def is_sequence(value: Any) -> bool:
    # (the type itself first: an isinstance check against these abstract sequences is slow)
    kind = type(value)
    if kind in _SCALARS:
        return False
    return kind in _PLAIN_SEQUENCES or isinstance(value, _SEQUENCES)


def is_records(value: Any) -> bool:
    """A non-empty list of records (a compiled list of records always is one)."""
    if isinstance(value, RecordList | TensorRecords):
        return len(value) > 0
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _spec(value: Any) -> ViewSpec | None:
    spec = value.get("_view") if isinstance(value, dict) else None  # (parsed records are dicts)
    return spec if type(spec) is ViewSpec else None


def typed(record: Mapping[str, Any]) -> Typed:
    """The typed value of a record with a ``view`` (its key aside)."""
    spec = _spec(record)
    assert spec is not None
    return typed_value(spec, record[spec.type] if spec.type is not None else None, record[spec.value])


def typed_value(spec: ViewSpec, type_value: Any, value: Any) -> Typed:
    """The typed value of a record with the view ``spec``, from its type and value fields (also
    read from a bulk list's columns, the record never made)."""
    if _spec(value) is not None:  # the value is itself a typed record (a GGUF array): it says what it is
        return typed(value)
    name = spec.type_names.get(type_value, str(type_value)) if spec.type is not None else ""
    if not is_sequence(value):
        return Typed(name, value)
    if len(value) and _spec(value[0]) is not None:
        value = TypedItems(value) if isinstance(value, RecordList) else [typed(item) for item in value]
    return Typed(name, value, array=True)


def keyed_entry(record: Any) -> tuple[str, Typed] | None:
    """A keyed record's key and typed value (a GGUF metadata pair); None for any other value."""
    spec = _spec(record)
    if spec is None or spec.key is None:
        return None
    return str(record[spec.key]), typed(record)


def _tensor_records(value: Any) -> bool:
    """A non-empty list of tensor records only (a GGUF's tensors: the tensor table lists them)."""
    if isinstance(value, TensorRecords):
        return len(value) > 0
    return isinstance(value, list) and bool(value) and type(value[0]) is TensorContainer \
        and all(isinstance(v, TensorContainer) for v in value)


def _keyed_records(value: Any) -> bool:
    if not isinstance(value, list | RecordList) or not value:
        return False
    spec = _spec(value[0])
    return spec is not None and spec.key is not None


def items(fields: Any, path: str = "", raw: bool = False) -> Iterator[Item]:
    """(path, value) of every field a user reads: a record with a view as its :class:`Typed` value,
    a list of keyed records as a :class:`Section`; hidden fields, tensor records and ``_`` entries
    left out; of a long list of other records, the first :data:`SHOWN_RECORDS`. With ``raw``, every
    field of every record as the file holds it (views and ``hidden`` ignored)."""
    if isinstance(fields, TensorContainer):
        return
    if isinstance(fields, Mapping):
        if not raw and _spec(fields) is not None and path:
            yield path, typed(fields)
            return
        hidden = fields.get("_hidden") or () if not raw else ()
        for key, item in fields.items():
            if isinstance(key, str) and not key.startswith("_") and key not in hidden:
                yield from items(item, f"{path}.{key}" if path else key, raw)
    elif _tensor_records(fields):  # (the tensor table shows them)
        return
    elif not raw and _keyed_records(fields):
        key_field = _spec(fields[0]).key  # type: ignore[union-attr]
        assert key_field is not None
        yield path, Section(path, Entries(fields, key_field))
    elif is_records(fields):
        for i, item in enumerate(fields):
            if i == SHOWN_RECORDS and len(fields) > 2 * SHOWN_RECORDS:
                yield f"{path}[{i}:{len(fields)}]", f"... {len(fields) - i} more (--json shows them all)"
                return
            yield from items(item, f"{path}[{i}]", raw)
    elif isinstance(fields, PayloadRef):
        yield path, f"<{fields.nbytes} bytes at {fields.offset}>"
    else:
        yield path, fields


def selected(patterns: Sequence[str] | None, *names: str) -> bool:
    """Whether a field path or key matches one of ``--fields``' glob patterns (all do without any)."""
    return not patterns or any(fnmatch.fnmatchcase(name, p) for name in names for p in patterns)


def plain(value: Any) -> Any:
    """A typed value as JSON holds it: ``{"type": "u32", "value": 32}``, arrays in full."""
    if isinstance(value, Typed) and not value.type:  # a view with no type: the value alone
        return plain(value.value)
    if isinstance(value, Typed):
        inner = [plain(v) for v in value.value] if value.array and value.value and \
            isinstance(value.value[0], Typed) else value.value
        return {"type": value.label, "value": inner}
    if isinstance(value, Section):
        return {key: plain(v) for key, v in value.entries}
    return value


_LEFT_OUT = object()


def tree(fields: Any, patterns: Sequence[str] | None = None, path: str = "") -> Any:
    """The fields as nested mappings and lists for ``--json``: records with a view as their typed
    value, keyed records as a mapping by key, hidden fields and tensor records left out, every list
    in full. With ``patterns``, only the fields and keys they select (and the records holding them)."""
    if isinstance(fields, TensorContainer):
        return _LEFT_OUT
    if isinstance(fields, Mapping):
        if _spec(fields) is not None and path:
            return plain(typed(fields)) if selected(patterns, path) else _LEFT_OUT
        hidden = fields.get("_hidden") or ()
        out = {}
        for key, item in fields.items():
            if isinstance(key, str) and not key.startswith("_") and key not in hidden:
                value = tree(item, patterns, f"{path}.{key}" if path else key)
                if value is not _LEFT_OUT:
                    out[key] = value
        return out if out or not patterns or selected(patterns, path) else _LEFT_OUT
    if _tensor_records(fields):
        return _LEFT_OUT
    if _keyed_records(fields):
        section = next(v for _, v in items(fields, path))
        entries = {k: plain(v) for k, v in section.entries if selected(patterns, k, f"{path}.{k}", path)}
        return entries if entries or not patterns else _LEFT_OUT
    if is_records(fields):
        records = [tree(item, patterns, f"{path}[{i}]") for i, item in enumerate(fields)]
        return records if not patterns or any(r is not _LEFT_OUT and r != {} for r in records) else _LEFT_OUT
    return fields if selected(patterns, path) else _LEFT_OUT


def json_tree(fields: Any, patterns: Sequence[str] | None = None) -> dict[str, Any]:
    value = tree(fields, patterns)
    return value if isinstance(value, dict) else {}
