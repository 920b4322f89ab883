"""Human-readable rendering of a parsed document (``fmt parse``).

By default the document reads as its users know it (:mod:`ggfmt.view`): fields by path, typed
``key = value`` entries where the schema declares a view (GGUF metadata, as gguf-dump shows it),
long arrays by their ends, then the tensor table and the totals per ggml type. ``raw`` shows the
records on the wire instead, for format debugging.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .. import ggml_types
from ..document import Document, TensorRef, TensorTable, by_column
from ..io.text import escape
from ..view import Entries, Section, Typed, is_sequence, items, selected, typed_value

ARRAY_ENDS = 2  # a long array shows its first items and its last one
SHORT_ARRAY = 8  # arrays up to this long are shown whole
TEXT_LIMIT = 100  # characters of a string value before it is cut
_NUMBERS = frozenset((int, float, bool))  # values shown as they are, with the name of their type


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
    if schema.application:
        yield escape(f"  written by {schema.application}")
    if schema.current:
        yield escape(f"  current: {schema.current}")
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
        yield from _section(section, fields)
    if tensors:
        yield ""
        yield from _tensor_table(doc.tensors, raw)


def _section(section: Section, fields: Sequence[str] | None) -> Iterator[str]:
    """A keyed section: a line per entry shown, its type padded to the widest one's. Two passes
    over the entries (the first for the width and the count), neither holding the lines; from a
    list read in bulk, no :class:`Typed` made of a number (a GGUF of a million pairs)."""
    def pairs() -> tuple[Any, Iterable[tuple[str, Any, Any]]]:
        """(the view, (key, type field, value) of each entry) from the columns, else (None,
        (key, None, Typed) of each entry)."""
        columns = section.entries.fields() if isinstance(section.entries, Entries) else None
        if columns is not None:
            return columns
        return None, ((key, None, value) for key, value in section.entries)

    def named(spec: Any, kind: Any) -> str:
        return spec.type_names.get(kind) or str(kind)

    def shown() -> Iterator[tuple[str, str, Any]]:
        """(key, type's name, value: a number as the file holds it, anything else as Typed)"""
        spec, rows = pairs()
        for key, kind, value in rows:
            if fields is not None and not selected(fields, key, f"{section.path}.{key}"):
                continue
            if spec is None:
                yield key, _type(value), value
            elif type(value) in _NUMBERS:
                yield key, named(spec, kind), value
            else:
                typed = typed_value(spec, kind, value)
                yield key, _type(typed), typed

    count, kinds = 0, set()
    spec, rows = pairs()
    if spec is not None and fields is None:  # (every pair shown: a number's kind from its type field alone)
        numbers: set[Any] = set()
        for _, kind, value in rows:
            count += 1
            if type(value) in _NUMBERS:
                numbers.add(kind)
            else:
                kinds.add(_type(typed_value(spec, kind, value)))
        kinds.update(named(spec, kind) for kind in numbers)
    else:
        for _, kind, _ in shown():
            count += 1
            kinds.add(kind)
    width = max(map(len, kinds), default=0)
    yield ""
    yield f"{escape(section.path)}: {len(section.entries):,} keys" + \
        (f", {count:,} shown" if count != len(section.entries) else "")
    for key, kind, value in shown():
        line = f"{key} = {value}" if type(value) is int else f"{key} = {_value(value, quoted=True)}"
        if not (line.isascii() and line.isprintable()):  # (escape()'s own first test, without a call)
            line = escape(line)  # (a value's text is already escaped: kept as is)
        yield f"  {kind:<{width}}  {line}"


def _tensor_table(tensors: Sequence[TensorRef], raw: bool) -> Iterator[str]:
    """A row per tensor, then the totals per type; read by column (a parse's tensors are held so:
    263,000 rows are formatted without a TensorRef each)."""
    yield "tensors:"
    table = by_column(tensors)
    with_path = raw or not all(table.names)  # nameless records are told apart by their path
    header = (("path",) if with_path else ()) + ("name", "type", "shape (ne)", "offset", "bytes")
    type_names = {g: ggml_types.type_name(g) for g in set(table.ggml_types)}
    # the cells that are text, a list per column (the numbers are formatted by the line's layout)
    names = table.names if all(n and n.isascii() and n.isprintable() for n in table.names) else \
        [escape(n) or "-" for n in table.names]  # (escape()'s own first test, without a call per name)
    cells = ([[escape(p) for p in table.paths()]] if with_path else []) + [
        names, [type_names[g] if ne else "-" for g, ne in zip(table.ggml_types, table.nes, strict=True)],
        [" x ".join(map(str, ne)) if ne else "(null)" for ne in table.nes]]
    # a column of numbers is as wide as its largest or its most negative number
    widths = [max(len(h), max(map(len, column), default=0)) for h, column in zip(header, cells, strict=False)]
    for numbers in (table.offsets, table.nbytes):
        widths.append(max(len(header[len(widths)]), len(f"{max(numbers, default=0):,}"),
                          len(f"{min(numbers, default=0):,}")))
    text_layout = "  " + "  ".join(f"{{:<{w}}}" for w in widths[:-2])
    yield f"{text_layout}  {{:>{widths[-2]}}}  {{:>{widths[-1]}}}".format(*header)
    yield from map(f"{text_layout}  {{:>{widths[-2]},}}  {{:>{widths[-1]},}}".format, *cells, table.offsets,
                   table.nbytes)
    if len(table):
        yield ""
        yield from _totals(table, type_names)


def _totals(table: TensorTable, type_names: dict[int, str]) -> Iterator[str]:
    """Tensors, parameters and bytes per ggml type, and in all."""
    by_type: dict[str, list[int]] = {}
    for ggml_type, ne, nbytes in zip(table.ggml_types, table.nes, table.nbytes, strict=True):
        if not ne:  # (a null tensor)
            continue
        counts = by_type.setdefault(type_names[ggml_type], [0, 0, 0])
        counts[0] += 1
        counts[1] += math.prod(ne)
        counts[2] += nbytes
    rows = [(name, f"{c[0]:,}", f"{c[1]:,}", f"{c[2]:,}") for name, c in sorted(by_type.items())]
    total = [sum(c[i] for c in by_type.values()) for i in range(3)]
    rows.append(("total", f"{total[0]:,}", f"{total[1]:,}", f"{total[2]:,}"))
    header = ("type", "tensors", "parameters", "bytes")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, *rows]:
        yield "  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                                  strict=True)))
