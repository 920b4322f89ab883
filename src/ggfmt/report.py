"""Human-readable rendering of a parsed document (``fmt parse``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .document import Document, TensorRef
from .text import escape


def _value(value: Any) -> str:
    if isinstance(value, bytes):
        return repr(value) if len(value) <= 16 else f"<{len(value)} bytes>"
    if isinstance(value, float):
        return f"{value:.9g}"
    if isinstance(value, list):
        shown = ", ".join(_value(v) for v in value[:16])
        return f"[{shown}, ... ({len(value)} items)]" if len(value) > 16 else f"[{shown}]"
    return escape(str(value))  # names and strings from the file: never raw control characters


def render(doc: Document) -> Iterator[str]:
    """The lines of ``fmt parse``'s report. They are made one at a time (column widths come from
    a first pass that keeps no text), so that a header of many items is not held twice."""
    schema = doc.schema
    count = f"{len(doc.tensors)} tensor{'' if len(doc.tensors) == 1 else 's'}"
    yield escape(f"{doc.source}: {schema.id} - {schema.title}")
    yield f"  {doc.size:,} bytes, {count}"
    yield ""
    width = max((len(escape(path)) for path, _ in doc.scalar_fields()), default=0)
    yield "fields:"
    for path, value in doc.scalar_fields():
        yield f"  {escape(path):<{width}}  {_value(value)}"
    yield ""
    yield "tensors:"
    header = ("path", "name", "type", "ne", "offset", "bytes")

    def row(t: TensorRef) -> tuple[str, ...]:
        return (escape(t.path), escape(t.name) or "-", t.type_name if not t.is_null else "-",
                " x ".join(map(str, t.ne)) if t.ne else "(null)", f"{t.offset:,}", f"{t.nbytes:,}")

    widths = [len(h) for h in header]
    for t in doc.tensors:
        widths = [max(w, len(c)) for w, c in zip(widths, row(t), strict=True)]
    right = {4, 5}

    def line(cells: tuple[str, ...]) -> str:
        padded = [f"{c:>{w}}" if i in right else f"{c:<{w}}"
                  for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  " + "  ".join(padded).rstrip()

    yield line(header)
    for t in doc.tensors:
        yield line(row(t))
