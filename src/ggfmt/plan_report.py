"""``--dry-run``: what a conversion would write, shown without writing it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .ggml_types import type_name
from .text import escape

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


def describe_gguf_plan(plan: Any, target: Path, description: str) -> str:
    """Keys with their types and values, then every tensor: name, type, ne, bytes."""
    lines = [f"would write {target} ({description}): {len(plan.tensors)} tensors, {len(plan.metadata) + 1} keys, "
             f"{plan.payload_bytes:,} bytes of tensor data", "", "keys:"]
    keys = [("general.architecture", "string", repr(plan.architecture)),  # written by the GGUF writer itself
            *((m.key, m.value_type, _value(m.value)) for m in plan.metadata)]
    widths = [max(len(row[i]) for row in keys) for i in (0, 1)]
    lines += [f"  {key:<{widths[0]}}  {kind:<{widths[1]}}  {value}" for key, kind, value in keys]
    lines += ["", "tensors:"]
    rows = [(t.name, type_name(t.ggml_type), " x ".join(map(str, t.ne)), f"{t.nbytes:,}")
            for t in plan.tensors]
    lines += _table(("name", "type", "ne", "bytes"), rows, {3})
    return escape_lines(lines)


def describe_ggla_fields(fields: dict[str, Any], target: Path) -> str:
    records = fields["tensors"]
    total = sum(r["data"].nbytes for r in records)
    lines = [f"would write {target} (PEFT adapter -> ggla): {len(records)} tensors, r {fields['r']}, "
             f"alpha {fields['lora_alpha']}, {total:,} bytes of tensor data", "", "tensors:"]
    rows = [(r["name"], type_name(r["ftype"]), " x ".join(map(str, r["ne"])),
             f"{r['data'].nbytes:,}") for r in records]
    lines += _table(("name", "type", "ne", "bytes"), rows, {3})
    return escape_lines(lines)


def describe_hf_conversion(conversion: Any, target: Path) -> str:
    lines = [f"would write {target}/ (Gemma checkpoint -> Hugging Face): model.safetensors with "
             f"{len(conversion.tensors)} tensors, {conversion.payload_bytes:,} bytes of tensor data; config.json",
             "", "config.json:"]
    lines += [f"  {key} = {_value(value)}" for key, value in sorted(conversion.config.items())]
    lines += ["", "tensors:"]
    rows = [(t.name, t.dtype, " x ".join(map(str, t.shape)), f"{t.nbytes:,}")
            for t in conversion.tensors]
    lines += _table(("name", "dtype", "shape", "bytes"), rows, {3})
    return escape_lines(lines)


def escape_lines(lines: list[str]) -> str:
    return "\n".join(escape(line) for line in lines)
