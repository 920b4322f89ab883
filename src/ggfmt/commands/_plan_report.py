"""``--dry-run``: what a conversion would write, shown without writing it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..ggml_types import type_name
from ..io.text import escape

SHOWN_ITEMS = 8  # of a long list value (a vocabulary), the first ones are shown


def _value(value: Any) -> str:
    if isinstance(value, list | tuple):
        shown = ", ".join(_value(v) for v in value[:SHOWN_ITEMS])
        more = f", ... ({len(value)} items)" if len(value) > SHOWN_ITEMS else ""
        return f"[{shown}{more}]"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float):
        return f"{value:.9g}"
    return str(value)


def _table(header: tuple[str, ...], rows: Sequence[tuple[Any, ...]], right: set[int]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [f"{c:>{w}}" if i in right else f"{c:<{w}}" for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def describe_plan(plan: Any, target: Path, description: str, kind: str = "gguf") -> str:
    """Keys (or a schema's header fields) with their types and values, then every tensor: name,
    type, ne, bytes."""
    gguf = kind == "gguf"
    lines = [f"would write {target} ({description}): {len(plan.tensors)} tensors, "
             f"{len(plan.metadata) + 1 if gguf else len(plan.metadata)} {'keys' if gguf else 'header fields'}, "
             f"{plan.payload_bytes:,} bytes of tensor data", "", "keys:" if gguf else "header:"]
    # general.architecture is written by the GGUF writer itself
    first = [("general.architecture", "string", repr(plan.architecture))] if gguf else []
    keys = [*first, *((m.key, m.value_type, _value(m.value)) for m in plan.metadata)]
    widths = [max(len(row[i]) for row in keys) for i in (0, 1)]
    lines += [f"  {key:<{widths[0]}}  {kind:<{widths[1]}}  {value}" for key, kind, value in keys]
    lines += ["", "tensors:"]
    rows = [(t.name, type_name(t.ggml_type), " x ".join(map(str, t.ne)), f"{t.nbytes:,}")
            for t in plan.tensors]
    lines += _table(("name", "type", "ne", "bytes"), rows, {3})
    return escape_lines(lines)


def describe_hf_conversion(tensors: list[Any], files: dict[str, Any], target: Path, description: str) -> str:
    """What a Hugging Face directory conversion would write: the weights, then each JSON file."""
    payload = sum(t.nbytes for t in tensors)
    lines = [f"would write {target}/ ({description}): model.safetensors with {len(tensors)} tensors, "
             f"{payload:,} bytes of tensor data; {', '.join(files)}"]
    for name, value in files.items():
        lines += ["", f"{name}:"]
        lines += [f"  {key} = {_value(item)}" for key, item in sorted(value.items())] if isinstance(value, dict) \
            else [f"  {_value(value)}"]
    lines += ["", "tensors:"]
    rows = [(t.name, t.dtype, " x ".join(map(str, t.shape)), f"{t.nbytes:,}") for t in tensors]
    lines += _table(("name", "dtype", "shape", "bytes"), rows, {3})
    return escape_lines(lines)


def escape_lines(lines: list[str]) -> str:
    return "\n".join(escape(line) for line in lines)
