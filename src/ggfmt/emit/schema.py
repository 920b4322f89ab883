"""A plan written through a schema: the target layout's own YAML builds the file.

A table whose ``target:`` is a schema id (``ggla``) has metadata entries named after the
schema's header fields (``{key: r, type: i32, value: config.r}``), and its tensors become the
records of the schema's list of tensor records, the field whose repeated type declares
``tensor: {name, ggml_type, ne, data}`` roles. Payloads stream from the plan's sources.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..convert.plan import Plan
from ..errors import SchemaError
from ..io.sink import Progress
from . import Summary


def tensor_list_field(schema_id: str) -> tuple[str, dict[str, str]]:
    """The top-level field holding the schema's tensor records, and their roles
    (``{"name": "name", "ggml_type": "ftype", "ne": "ne", "data": "data"}`` for ggla)."""
    from ..schema import available_schemas, read_yaml

    path = available_schemas().get(schema_id)
    if path is None:
        raise SchemaError(schema_id, "no schema of that name to write")
    data = read_yaml(path, shared=True)
    types = data.get("types") or {}
    for item in data.get("seq") or []:
        spec = types.get(item.get("type")) if isinstance(item, Mapping) else None
        if isinstance(spec, Mapping) and isinstance(spec.get("tensor"), Mapping) and "repeat" in item:
            return str(item["id"]), {str(k): str(v) for k, v in spec["tensor"].items()}
    raise SchemaError(schema_id, "has no repeated field of tensor records (a type with `tensor:` roles), so no "
                                 "table can write tensors into it")


def schema_fields(plan: Plan, schema_id: str) -> dict[str, Any]:
    """The values from which the schema builds the file the plan describes."""
    field, roles = tensor_list_field(schema_id)
    fields: dict[str, Any] = {item.key: item.value for item in plan.metadata}
    fields[field] = [{roles["name"]: t.name, roles["ggml_type"]: t.ggml_type, roles["ne"]: list(t.ne),
                      roles["data"]: t.source} for t in plan.tensors]
    return fields


def write_schema_file(plan: Plan, schema_id: str, out_path: Path) -> None:
    from ..engine import build

    build(out_path, schema_id, schema_fields(plan, schema_id))


def write(plan: Plan, target: str, out_path: Path, progress: Progress | None = None) -> Summary:
    """The writer of a file the schema ``target`` builds (see :mod:`ggfmt.emit`): its header fields
    from the plan's metadata, its tensor records from the plan's tensors."""
    write_schema_file(plan, target, out_path)
    if progress is not None:  # (built in one call: its payloads are written when it returns)
        progress(plan.payload_bytes)
    return Summary(((len(plan.tensors), "tensor"), (len(plan.metadata), "header field")))
