"""Human-readable rendering of a parsed document (``fmt parse``).

By default the document reads as its users know it (:mod:`ggfmt.view`): fields by path, typed
``key = value`` entries where the schema declares a view (GGUF metadata, as gguf-dump shows it),
long arrays by their ends, then the tensor table and the totals per ggml type. ``raw`` shows the
records on the wire instead, for format debugging.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from .document import Document, TensorRef
from .text import escape
from .view import Section, Typed, is_sequence, items, selected

ARRAY_ENDS = 2  # a long array shows its first items and its last one
SHORT_ARRAY = 8  # arrays up to this long are shown whole
TEXT_LIMIT = 100  # characters of a string value before it is cut


def _scalar(value: Any, quoted: bool = False) -> str:
    kind = type(value)
    if kind is int or kind is bool:  # (most values: no text from the file in them)
        return str(value)
    if isinstance(value, bytes):
        return repr(value) if len(value) <= 16 else f"<{len(value)} bytes>"
    if isinstance(value, float):
        return f"{value:.9g}"
    if isinstance(value, str) and quoted:
        text = value if len(value) <= TEXT_LIMIT else value[:TEXT_LIMIT] + f"… ({len(value):,} characters)"
        return escape(repr(text))
    return escape(str(value))  # names and strings from the file: never raw control characters


def _value(value: Any, quoted: bool = False) -> str:
    if isinstance(value, Typed):
        return _value(value.value, quoted=True)
    if is_sequence(value):
        n = len(value)
        if n <= SHORT_ARRAY:
            return ", ".join(_item(value[i], quoted) for i in range(n)) if quoted else \
                "[" + ", ".join(_value(value[i]) for i in range(n)) + "]"
        ends = [_item(value[i], quoted) for i in range(ARRAY_ENDS)]
        shown = ", ".join(ends) + f", … {_item(value[n - 1], quoted)}"
        return shown if quoted else f"[{shown}] ({n:,} items)"
    return _scalar(value, quoted)


def _item(value: Any, quoted: bool) -> str:
    """An item of an array: an array inside it in brackets ([1, 2], [], … [3])."""
    if isinstance(value, Typed) and value.array:
        return f"[{_value(value.value, quoted=True)}]"
    return _value(value, quoted)


def _type(value: Typed) -> str:
    return f"[{len(value.value):,} × {value.type}]" if value.array else value.type  # noqa: RUF001 (as users write it)


def render(doc: Document, *, raw: bool = False, fields: Sequence[str] | None = None,
           tensors: bool = True) -> Iterator[str]:
    """The lines of ``fmt parse``'s report; ``fields`` are glob patterns selecting fields and keys."""
    schema = doc.schema
    count = f"{len(doc.tensors)} tensor{'' if len(doc.tensors) == 1 else 's'}"
    yield escape(f"{doc.source}: {schema.id} - {schema.title}")
    yield f"  {doc.size:,} bytes, {count}"
    plain: list[tuple[str, Any]] = []
    sections: list[Section] = []
    for path, value in (doc.scalar_fields() if raw else items(doc.fields)):
        if isinstance(value, Section):
            sections.append(value)
        elif selected(fields, path):
            plain.append((path, value))
    if plain:
        yield ""
        yield "fields:"
        width = max(len(escape(path)) for path, _ in plain)
        for path, value in plain:
            yield f"  {escape(path):<{width}}  {_value(value)}"
    for section in sections:
        # one pass over the entries (each made as it is read): a line's type and the rest, padded
        # once the widest type is known (the entries themselves are not held)
        rows = [(_type(value), f"{escape(key)} = {_value(value)}") for key, value in section.entries
                if selected(fields, key, f"{section.path}.{key}")]
        width = max((len(kind) for kind in {kind for kind, _ in rows}), default=0)
        yield ""
        yield f"{escape(section.path)}: {len(section.entries):,} keys" + \
            (f", {len(rows):,} shown" if len(rows) != len(section.entries) else "")
        for kind, rest in rows:
            yield f"  {kind:<{width}}  {rest}"
    if tensors:
        yield ""
        yield from _tensor_table(doc.tensors, raw)


def _tensor_table(tensors: list[TensorRef], raw: bool) -> Iterator[str]:
    yield "tensors:"
    with_path = raw or any(not t.name for t in tensors)  # nameless records are told apart by their path
    header = (("path",) if with_path else ()) + ("name", "type", "shape (ne)", "offset", "bytes")

    def row(t: TensorRef) -> tuple[str, ...]:
        return ((escape(t.path),) if with_path else ()) + (
            escape(t.name) or "-", t.type_name if not t.is_null else "-",
            " x ".join(map(str, t.ne)) if t.ne else "(null)", f"{t.offset:,}", f"{t.nbytes:,}")

    widths = [len(h) for h in header]
    for cells in map(row, tensors):  # (the rows are made again below: 263,000 are not held)
        widths = list(map(max, widths, map(len, cells)))
    right = {len(header) - 2, len(header) - 1}
    layout = "  " + "  ".join(f"{{:{'>' if i in right else '<'}{w}}}" for i, w in enumerate(widths))

    def line(cells: tuple[str, ...]) -> str:
        return layout.format(*cells).rstrip()

    yield line(header)
    for t in tensors:
        yield line(row(t))
    if tensors:
        yield ""
        yield from _totals(tensors)


def _totals(tensors: list[TensorRef]) -> Iterator[str]:
    """Tensors, parameters and bytes per ggml type, and in all."""
    by_type: dict[str, list[int]] = {}
    for t in tensors:
        if t.is_null:
            continue
        params = 1
        for n in t.ne:
            params *= n
        counts = by_type.setdefault(t.type_name, [0, 0, 0])
        counts[0] += 1
        counts[1] += params
        counts[2] += t.nbytes
    rows = [(name, f"{c[0]:,}", f"{c[1]:,}", f"{c[2]:,}") for name, c in sorted(by_type.items())]
    total = [sum(c[i] for c in by_type.values()) for i in range(3)]
    rows.append(("total", f"{total[0]:,}", f"{total[1]:,}", f"{total[2]:,}"))
    header = ("type", "tensors", "parameters", "bytes")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, *rows]:
        yield "  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                                  strict=True)))
