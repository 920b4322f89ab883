"""``fmt diff A B``: what differs between two parsed documents, as their users read them.

Keys are compared through :mod:`ggfmt.view` (a GGUF's metadata by key, with its type; another
layout's fields by path), so two GGUFs of different versions compare by what they say, not by
how many bytes their lengths take. Fields a schema marks ``layout: true`` (a GGUF's version,
counts and data offset) describe the file rather than its content and are not compared.
Tensors are matched by name and compared by type, shape and content; content by a SHA-256 of
each tensor's bytes, read in pieces, never whole; with ``values``, also the largest absolute and
relative difference of float tensors of the same shape. Arrays are summarised by their length and
the first index at which they differ.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .document import Document, TensorRef
from .errors import InputShrank
from .schema.arrays import NumberArray, RecordList, StringArray
from .view import Section, Typed, TypedItems, is_sequence, items

CHUNK = 1 << 22  # bytes of a tensor read at a time
FLOAT_TYPES = {"f32": "<f4", "f16": "<f2", "f64": "<f8", "bf16": "bf16"}


@dataclass
class KeyChange:
    key: str
    change: str  # added, removed, changed
    a: Any = None  # Typed or plain value
    b: Any = None
    first_difference: int | None = None  # arrays: the first index where they differ


@dataclass
class TensorChange:
    name: str
    change: str  # added, removed, type, shape, content
    a: TensorRef | None = None
    b: TensorRef | None = None
    sha256: tuple[str, str] | None = None
    max_abs: float | None = None
    max_rel: float | None = None


@dataclass
class Comparison:
    keys: list[KeyChange] = field(default_factory=list)
    tensors: list[TensorChange] = field(default_factory=list)
    tensors_compared: int = 0

    @property
    def equal(self) -> bool:
        return not self.keys and not self.tensors


def keyed(doc: Document) -> dict[str, Any]:
    """Every compared key or field path of ``doc`` with its (typed) value."""
    layout = _layout_fields(doc)
    out: dict[str, Any] = {}
    for path, value in items(doc.fields):
        if isinstance(value, Section):
            out.update(value.entries)
        elif path.split(".")[0].split("[")[0] not in layout:
            out[path] = value
    return out


def _layout_fields(doc: Document) -> frozenset[str]:
    layout = doc.fields.get("_layout") if isinstance(doc.fields, dict) else None
    return frozenset(layout or ())


def same(a: Any, b: Any) -> bool:
    """Equal values, a NaN equal to a NaN of the same bits (a file equals itself)."""
    if isinstance(a, Typed) and isinstance(b, Typed):
        return a.type == b.type and a.array == b.array and same(a.value, b.value)
    if isinstance(a, float) and isinstance(b, float):
        return a == b or struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, NumberArray) and isinstance(b, NumberArray) and a.code == b.code:
        return a.tobytes() == b.tobytes()
    if isinstance(a, StringArray) and isinstance(b, StringArray) and a == b:
        return True
    if isinstance(a, RecordList | TypedItems) and a.identical(b):  # the same bytes read the same way
        return True
    if is_sequence(a) and is_sequence(b):
        return len(a) == len(b) and first_difference(a, b) is None
    return type(a) is type(b) and bool(a == b)


def first_difference(a: Sequence[Any], b: Sequence[Any]) -> int | None:
    for i in range(min(len(a), len(b))):
        if not same(a[i], b[i]):
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def compare(a: Document, b: Document, *, values: bool = False) -> Comparison:
    result = Comparison()
    keys_a, keys_b = keyed(a), keyed(b)
    for key, value in keys_a.items():
        if key not in keys_b:
            result.keys.append(KeyChange(key, "removed", a=value))
        elif not same(value, keys_b[key]):
            other = keys_b[key]
            index = None
            if isinstance(value, Typed) and isinstance(other, Typed) and value.array and other.array:
                index = first_difference(value.value, other.value)
            elif is_sequence(value) and is_sequence(other):
                index = first_difference(value, other)
            result.keys.append(KeyChange(key, "changed", a=value, b=other, first_difference=index))
    result.keys.extend(KeyChange(key, "added", b=value) for key, value in keys_b.items() if key not in keys_a)

    tensors_b = {tensor_key(t): t for t in b.tensors}
    names_a = {tensor_key(t) for t in a.tensors}
    for t in a.tensors:
        other = tensors_b.get(tensor_key(t))
        if other is None:
            result.tensors.append(TensorChange(tensor_key(t), "removed", a=t))
            continue
        result.tensors_compared += 1
        if t.ggml_type != other.ggml_type or t.ne != other.ne:
            change = TensorChange(tensor_key(t), "type" if t.ggml_type != other.ggml_type else "shape", a=t, b=other)
            if values and t.ne == other.ne:
                _value_differences(a, t, b, other, change)
            result.tensors.append(change)
            continue
        digest_a, digest_b = _sha256(a, t), _sha256(b, other)
        if digest_a != digest_b:
            change = TensorChange(tensor_key(t), "content", a=t, b=other, sha256=(digest_a, digest_b))
            if values:
                _value_differences(a, t, b, other, change)
            result.tensors.append(change)
    result.tensors.extend(TensorChange(tensor_key(t), "added", b=t) for t in b.tensors if tensor_key(t) not in names_a)
    return result


def tensor_key(t: TensorRef) -> str:
    """What matches a tensor with its counterpart: its name, or for a nameless one (a 2023
    checkpoint's optimizer state) its field path."""
    return t.name or t.path


def _chunks(doc: Document, t: TensorRef, size: int = CHUNK) -> Iterator[bytes]:
    """The tensor's bytes in pieces of ``size`` (a multiple of its element size)."""
    if t.load is not None:  # a tensor only torch reads: loaded (one at a time)
        data = t.load().tobytes()
        for start in range(0, len(data), size):
            yield data[start:start + size]
        return
    path = t.file if t.file is not None else doc.source
    with open(path, "rb") as f:
        offset, left = t.offset, t.nbytes
        while left:
            piece = os.pread(f.fileno(), min(size, left), offset)
            if not piece:
                raise InputShrank(offset, left, str(path))
            yield piece
            offset += len(piece)
            left -= len(piece)


def _sha256(doc: Document, t: TensorRef) -> str:
    digest = hashlib.sha256()
    for piece in _chunks(doc, t):
        digest.update(piece)
    return digest.hexdigest()


def _floats(data: bytes, type_name: str) -> Any:
    import numpy as np

    if type_name == "bf16":
        return (np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return np.frombuffer(data, dtype=FLOAT_TYPES[type_name]).astype(np.float64)


def _value_differences(a: Document, ta: TensorRef, b: Document, tb: TensorRef, change: TensorChange) -> None:
    """The largest absolute and relative difference of two float tensors of one shape, read in step."""
    import numpy as np

    if ta.type_name not in FLOAT_TYPES or tb.type_name not in FLOAT_TYPES:
        return
    elements = 1 << 19  # per piece
    size_a = ta.nbytes // max(math.prod(ta.ne), 1)
    size_b = tb.nbytes // max(math.prod(tb.ne), 1)
    max_abs = max_rel = 0.0
    for piece_a, piece_b in zip(_chunks(a, ta, elements * size_a), _chunks(b, tb, elements * size_b), strict=True):
        x, y = _floats(piece_a, ta.type_name), _floats(piece_b, tb.type_name)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            # equal values (an inf equal to the same inf, a NaN to a NaN) differ by 0; a NaN against a
            # number, or inf against -inf, by inf: they differ, and no NaN may hide it from the maximum
            same = (x == y) | (np.isnan(x) & np.isnan(y))
            delta = np.abs(x - y)
            delta[np.isnan(delta)] = np.inf
            delta[same] = 0
            scale = np.maximum(np.abs(x), np.abs(y))
            rel = np.where(delta == 0, 0.0, np.where(np.isfinite(scale) & (scale > 0), delta / scale, np.inf))
        if delta.size:
            max_abs, max_rel = max(max_abs, float(delta.max())), max(max_rel, float(rel.max()))
    change.max_abs, change.max_rel = max_abs, max_rel


def source_label(path: Path, doc: Document) -> str:
    version = doc.fields.get("version") if isinstance(doc.fields, dict) else None
    return f"{path} ({doc.schema.id}" + (f", version {version})" if isinstance(version, int) else ")")
