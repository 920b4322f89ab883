"""Human-readable rendering of a parsed document (``fmt parse``)."""

from __future__ import annotations

from typing import Any

from .document import Document
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


def render(doc: Document) -> str:
    schema = doc.schema
    count = f"{len(doc.tensors)} tensor{'' if len(doc.tensors) == 1 else 's'}"
    lines = [escape(f"{doc.source}: {schema.id} - {schema.title}"), f"  {doc.size:,} bytes, {count}", ""]
    fields = [(escape(path), value) for path, value in doc.scalar_fields()]
    width = max((len(path) for path, _ in fields), default=0)
    lines.append("fields:")
    for path, value in fields:
        lines.append(f"  {path:<{width}}  {_value(value)}")
    lines.append("")
    lines.append("tensors:")
    header = ("path", "name", "type", "ne", "offset", "bytes")
    rows = [(escape(t.path), escape(t.name) or "-", t.type_name if not t.is_null else "-",
             " x ".join(map(str, t.ne)) if t.ne else "(null)", f"{t.offset:,}", f"{t.nbytes:,}")
            for t in doc.tensors]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    right = {4, 5}
    for row in [header, *rows]:
        cells = [f"{c:>{w}}" if i in right else f"{c:<{w}}" for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)
