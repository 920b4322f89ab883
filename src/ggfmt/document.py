"""What a parse returns: the parsed fields and references to the tensors (never their data)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .schema import Schema

# ggml type ids the legacy layouts hold, by name (gguf.GGMLQuantizationType has them all).
GGML_TYPE_NAMES = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 6: "q5_0", 7: "q5_1", 8: "q8_0", 30: "bf16"}


@dataclass(frozen=True)
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

    @property
    def is_null(self) -> bool:
        return len(self.ne) == 0

    @property
    def type_name(self) -> str:
        return GGML_TYPE_NAMES.get(self.ggml_type, str(self.ggml_type))

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

    def offset_of(self, path: str) -> int | None:
        """The byte offset where the field at ``path`` (``opt.ctx.iter``) starts, when known."""
        offsets = self.fields.get("_offsets") if isinstance(self.fields, Mapping) else None
        return offsets.get(path) if offsets else None

    def scalar_fields(self) -> Iterator[tuple[str, Any]]:
        """(dotted path, value) of every field that is not part of a tensor record."""
        yield from _scalars(self.fields, "")

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

SHOWN_ITEMS = 32  # of a long list of structures (a vocabulary, say), the first ones are listed


def _scalars(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    from .schema.constructs import PayloadRef, TensorContainer

    if isinstance(value, TensorContainer):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and not key.startswith("_"):
                yield from _scalars(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        records = all(isinstance(v, TensorContainer) for v in value)
        for i, item in enumerate(value):
            if i == SHOWN_ITEMS and len(value) > 2 * SHOWN_ITEMS and not records:
                yield f"{path}[{i}:{len(value)}]", f"... {len(value) - i} more (--json shows them all)"
                return
            yield from _scalars(item, f"{path}[{i}]")
    elif isinstance(value, PayloadRef):
        yield path, f"<{value.nbytes} bytes at {value.offset}>"
    else:
        yield path, value


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
    if isinstance(value, list):
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, PayloadRef):
        return {"offset": value.offset, "nbytes": value.nbytes}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and not math.isfinite(value):  # JSON has no NaN or infinities
        return NON_FINITE[str(value)]
    return value
