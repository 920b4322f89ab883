"""The report of ``fmt diff``: one line per difference, or one JSON document."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

from ..diff import Comparison, KeyChange, TensorChange
from ..document import TensorRef
from ..io.text import escape
from ..view import Typed, is_sequence, plain
from ._parse_report import _type, _value

MARKS = {"added": "+", "removed": "-"}


def _shown(value: Any) -> str:
    if isinstance(value, Typed):
        return f"{_type(value)} {_value(value)}"
    return _value(value)


def _tensor(t: TensorRef) -> str:
    return f"{t.type_name} {' x '.join(map(str, t.ne))}" if not t.is_null else "(null)"


def _key_line(change: KeyChange) -> str:
    key = escape(change.key)
    if change.change == "added":
        return f"  + {key}: {_shown(change.b)}"
    if change.change == "removed":
        return f"  - {key}: {_shown(change.a)}"
    line = f"  ~ {key}: {_shown(change.a)} -> {_shown(change.b)}"
    if change.first_difference is not None:
        i = change.first_difference
        a = change.a.value if isinstance(change.a, Typed) else change.a
        b = change.b.value if isinstance(change.b, Typed) else change.b
        at_a = _value(a[i], True) if i < len(a) else "(none)"
        at_b = _value(b[i], True) if i < len(b) else "(none)"
        line += f"; lengths {len(a):,} and {len(b):,}, first difference at [{i:,}]: {at_a} -> {at_b}"
    return line


def _tensor_line(change: TensorChange) -> str:
    name = escape(change.name)
    if change.change == "added":
        assert change.b is not None
        return f"  + {name}: {_tensor(change.b)}"
    if change.change == "removed":
        assert change.a is not None
        return f"  - {name}: {_tensor(change.a)}"
    assert change.a is not None and change.b is not None
    if change.change in ("type", "shape"):
        line = f"  ~ {name}: {_tensor(change.a)} -> {_tensor(change.b)}"
    else:
        assert change.sha256 is not None
        line = f"  ~ {name}: content differs (sha256 {change.sha256[0][:16]}… -> {change.sha256[1][:16]}…)"
    if change.max_abs is not None:
        line += f"; max abs difference {change.max_abs:.6g}, max relative difference {change.max_rel:.6g}"
    return line


def render(comparison: Comparison, label_a: str, label_b: str) -> Iterator[str]:
    yield f"--- {escape(label_a)}"
    yield f"+++ {escape(label_b)}"
    if comparison.keys:
        yield "keys:"
        yield from (_key_line(c) for c in comparison.keys)
    if comparison.tensors:
        yield "tensors:"
        yield from (_tensor_line(c) for c in comparison.tensors)
    n_keys, n_tensors = len(comparison.keys), len(comparison.tensors)
    if comparison.equal:
        yield (f"equal: the same keys and values, {comparison.tensors_compared} tensors of the same type, shape "
               "and bytes")
    else:
        yield f"{n_keys} key{'' if n_keys == 1 else 's'} and {n_tensors} tensor{'' if n_tensors == 1 else 's'} differ"


def _summary(value: Any) -> Any:
    """A value for the JSON report: arrays by their type and length only."""
    if isinstance(value, Typed) and value.array:
        return {"type": value.label, "length": len(value.value)}
    if is_sequence(value):
        return {"length": len(value)}
    return plain(value)


def _finite(value: float | None) -> Any:
    return value if value is None or math.isfinite(value) else str(value)


def as_json(comparison: Comparison, a: str, b: str) -> str:
    from ..document import _plain

    keys = []
    for c in comparison.keys:
        entry: dict[str, Any] = {"key": c.key, "change": c.change}
        if c.a is not None or c.change == "removed":
            entry["a"] = _plain(_summary(c.a), c.key)
        if c.b is not None or c.change == "added":
            entry["b"] = _plain(_summary(c.b), c.key)
        if c.first_difference is not None:
            entry["first_difference"] = c.first_difference
        keys.append(entry)
    tensors = []
    for t in comparison.tensors:
        item: dict[str, Any] = {"name": t.name, "change": t.change}
        for side, ref in (("a", t.a), ("b", t.b)):
            if ref is not None:
                item[side] = {"type": ref.type_name, "ne": list(ref.ne), "nbytes": ref.nbytes}
        if t.sha256 is not None:
            item["sha256"] = list(t.sha256)
        if t.max_abs is not None:
            item["max_abs"], item["max_rel"] = _finite(t.max_abs), _finite(t.max_rel)
        tensors.append(item)
    return json.dumps({"a": a, "b": b, "equal": comparison.equal, "keys": keys, "tensors": tensors,
                       "tensors_compared": comparison.tensors_compared}, indent=1, allow_nan=False) + "\n"
