"""The schema author's tools: ``fmt schema list`` and ``fmt schema show``.

``list`` names every schema found, where it comes from and the conversions it has; ``show`` is a
generated reference for one layout (Markdown, or JSON): its fields in order with their type,
size and offset where they are static, their conditions and docs, its types, and what the
tables that convert it make of it. ``docs/schemas/*.md`` are ``show``'s output for every
shipped schema.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import SchemaError
from ..io.resources import data_dirs
from ..io.text import escape
from ..schema import available_schemas, catalog, namespace_of, read_yaml
from ..schema import magic_of as catalog_magic
from ..schema.compiler import Namespace
from ..schema.spec import TypeSpec, type_spec


def meta_of(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """A schema's ``meta`` mapping (empty when it has none, or something else)."""
    meta = data.get("meta")
    return meta if isinstance(meta, Mapping) else {}


def origin(path: Path) -> str:
    """Where a schema or table comes from: ggfmt itself, or a folder of the search path."""
    builtin = [d.resolve() for d in data_dirs("schemas") + data_dirs("mappings")]
    return "built-in" if path.resolve().parent in builtin else str(path.parent)


def conversions(schema_id: str) -> list[dict[str, str]]:
    """The tables whose ``source:`` names ``schema_id``: their name and target."""
    from ..convert.mapping import table_headers, table_sources

    found = []
    for name, data in table_headers():
        if schema_id in table_sources(data) and data.get("target"):
            found.append({"table": name, "target": str(data["target"])})
    return found


def schema_list() -> list[dict[str, Any]]:
    """Every schema found, in search order: id, file, title, magic, origin, conversions, and the
    others that share its magic."""
    rows: list[dict[str, Any]] = []
    for info in catalog():
        data = read_yaml(info.path, shared=True)
        meta = meta_of(data)
        schema_id = str(meta.get("id", info.name))
        rows.append({"id": schema_id, "file": str(info.path), "title": info.title,
                     "magic": info.magic.decode("latin-1") if info.magic else None,
                     "origin": origin(info.path), "conversions": conversions(schema_id),
                     "recognise": "recognise" in data})
    for row in rows:  # the others with its magic, which a parse without --schema tries too
        row["shares_magic_with"] = [r["id"] for r in rows if r is not row and r["magic"] and r["magic"] == row["magic"]]
    return rows


def magic_clashes(path: Path) -> list[str]:
    """The other schemas found whose magic is the one of the schema at ``path``."""
    data = read_yaml(path, shared=True)
    mine = catalog_magic(data)
    if mine is None:
        return []
    return [info.name for info in catalog() if info.magic == mine and info.path.resolve() != path.resolve()]


def list_lines(rows: list[dict[str, Any]]) -> Iterator[str]:
    width = max((len(r["id"]) for r in rows), default=2)
    for r in rows:
        magic = f"magic {r['magic']!r}" if r["magic"] else "(shared part)"
        made = ", ".join(f"{c['target']} via {c['table']}" for c in r["conversions"])
        where = "" if r["origin"] == "built-in" else f" [{r['origin']}]"
        shared = ""
        if r["shares_magic_with"]:
            told = "told apart by its recognise rule" if r["recognise"] else "no recognise rule: a tie where both fit"
            shared = f"  (magic shared with {len(r['shares_magic_with'])} others; {told})"
        yield f"{r['id']:<{width}}  {magic:<15} {r['title']}{where}" + (f"  -> {made}" if made else "") + shared


# -- show ------------------------------------------------------------------------------------

def schema_path(name: str) -> Path:
    """A schema by name (the search path) or by path."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise SchemaError(name, "no such schema file")
        return path
    found = available_schemas().get(name)
    if found is None:
        raise SchemaError(name, f"no schema of that name (known: {', '.join(sorted(available_schemas()))})")
    return found


def _text(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _compact(value: Any) -> str:
    """A condition as its YAML reads: `min: 1, max: 4`, clauses of a list joined by `;`."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_compact(v)}" for k, v in value.items())
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        return "; ".join(_compact(v) for v in value)
    if isinstance(value, list):
        return "[" + ", ".join(_compact(v) for v in value) + "]"
    return _text(value)


def _type_text(spec: Mapping[str, Any]) -> str:
    kind = spec.get("type")
    if kind is None and "contents" in spec:
        return f"contents {spec['contents']!r}"
    if isinstance(kind, Mapping):
        cases = kind.get("cases") or {}
        shown = ", ".join(f"{k}: {v if isinstance(v, str) else v.get('type', v)}" for k, v in cases.items())
        return f"switch-on {kind.get('switch-on')}: {shown}"
    if "one-of" in spec:
        return "one of " + ", ".join(str(v) for v in (spec.get("one-of") or {}).values())
    return str(kind)


def _layout(namespace: Namespace | None, name: str, raw: Any, where: str) -> TypeSpec:
    """The type ``name`` as the engine reads it; where the schema does not load (`fmt schema check`
    says why), as written, so that it can still be shown."""
    if namespace is not None and name in namespace.types:
        return namespace.types[name].layout
    seq = raw.get("seq") if isinstance(raw, Mapping) else None
    items = [spec for spec in seq if isinstance(spec, Mapping)] if isinstance(seq, list) else []
    return type_spec(name, {"seq": items}, where, where)


def _fields(layout: TypeSpec, namespace: Namespace | None, where: str) -> list[dict[str, Any]]:
    """A row per field; sizes as the compiled nodes state them (none where the schema does not
    compile: `fmt schema check` says why)."""
    rows, offset = [], 0
    for item in layout.fields:
        spec = item.raw
        size = _size(namespace, spec, f"{where}, seq[{item.index}]")
        if "align" in spec:
            rows.append({"id": "(padding)", "type": f"align {spec['align']}", "size": None,
                         "offset": offset, "conditions": "", "doc": _text(spec.get("doc"))})
            offset = None  # type: ignore[assignment]
            continue
        size_text = size if size is not None else _text(spec.get("size") or spec.get("size-prefix") or "")
        conditions = "; ".join(f"{k}: {_compact(spec[k])}" for k in ("repeat", "if", "at", "valid", "enum", "rebuild")
                               if k in spec)
        rows.append({"id": str(spec.get("id")), "type": _type_text(spec), "size": size_text or None,
                     "offset": offset, "conditions": conditions, "doc": _text(spec.get("doc"))})
        offset = offset + size if offset is not None and size is not None else None  # type: ignore[assignment]
    return rows


def _size(namespace: Namespace | None, spec: Mapping[str, Any], where: str) -> int | None:
    if namespace is None:
        return None
    try:
        return namespace.field_size(spec, where)
    except SchemaError:
        return None


def _type_size(namespace: Namespace | None, name: str) -> int | None:
    if namespace is None:
        return None
    try:
        return namespace.type_size(name)
    except SchemaError:
        return None


def _namespace(path: Path) -> Namespace | None:
    try:
        return namespace_of(path)
    except SchemaError:
        return None


def describe(name: str) -> dict[str, Any]:
    """``fmt schema show``: one layout, as data (Markdown is made of it)."""
    path = schema_path(name)
    data = read_yaml(path, shared=True)
    meta = meta_of(data)
    schema_id = str(meta.get("id", path.stem))
    namespace = _namespace(path)
    own_types = data.get("types") or {}
    return {
        "id": schema_id,
        "title": _text(meta.get("title", schema_id)),
        "file": f"schemas/{path.name}" if origin(path) == "built-in" else str(path),
        "doc": str(data.get("doc") or "").strip(),
        "imports": list(meta.get("imports") or []),
        "application": _text(meta.get("application")),
        "current": _text(meta.get("current")),
        "recognise": ({"expr": _text(data["recognise"].get("expr")), "doc": _text(data["recognise"].get("doc"))}
                      if isinstance(data.get("recognise"), Mapping) else None),
        "params": {str(k): _text(v.get("doc") if isinstance(v, Mapping) else v)
                   for k, v in (data.get("params") or {}).items()},
        "fields": _fields(_layout(namespace, schema_id, data, path.name), namespace, path.name),
        "instances": {str(k): {"value": _text(v.get("value")), "doc": _text(v.get("doc"))}
                      for k, v in (data.get("instances") or {}).items() if isinstance(v, Mapping)},
        "types": {str(k): {"doc": _text(v.get("doc")), "size": _type_size(namespace, str(k)),
                           "params": sorted(str(p) for p in (v.get("params") or {})),
                           "fields": _fields(_layout(namespace, str(k), v, f"{path.name}: type {k}"), namespace,
                                             f"{path.name}: type {k}")}
                  for k, v in own_types.items() if isinstance(v, Mapping)},
        "conversions": [_table(c["table"], c["target"]) for c in conversions(schema_id)],
    }


def _table(name: str, target: str) -> dict[str, Any]:
    from ..convert.mapping import table_path

    data = read_yaml(table_path(name), shared=True)
    keys: list[dict[str, str]] = []
    tensors: list[dict[str, str]] = []
    _walk_table(data.get("metadata") or [], keys, "metadata", "")
    _walk_table(data.get("tensors") or [], tensors, "tensors", "")
    return {"table": name, "target": target, "doc": _text(data.get("doc")), "keys": keys, "tensors": tensors}


def _walk_table(items: list[Any], out: list[dict[str, str]], section: str, when: str) -> None:
    from ..convert.mapping import table_path

    for item in items:
        if not isinstance(item, Mapping):
            continue
        cond = " and ".join(c for c in (when, _text(item.get("when")),
                                        f"for each {item.get('as', 'item')} of {item['for']}"
                                        if "for" in item else "") if c)
        if "include" in item:
            included = read_yaml(table_path(str(item["include"])), shared=True)
            _walk_table(included.get(section) or [], out, section, cond)
        elif "items" in item:
            _walk_table(item["items"], out, section, cond)
        elif section == "metadata":
            key = _gguf_key(item)
            what = f"copy of {item['copy']}" if "copy" in item else f"{item.get('type', '')} {_text(item.get('value'))}"
            if "copy" in item:
                key = ", ".join(item.get("keys") or ["*"]) + (f" except {', '.join(item['except'])}"
                                                               if item.get("except") else "")
            out.append({"key": key, "value": what.strip(), "when": cond})
        else:
            source = next((f"{k} {_text(item[k])}" for k in ("from", "match", "tensor") if k in item), "")
            name = _tensor_name(item)
            transforms = ", ".join(str(t) for t in item.get("transforms") or [])
            out.append({"input": source, "output": "(dropped)" if item.get("drop") else name,
                        "transforms": transforms, "when": cond})


def _gguf_key(item: Mapping[str, Any]) -> str:
    from ..convert.mapping import gguf_key

    if "gguf" in item:
        try:
            return gguf_key(str(item["gguf"]), "")
        except SchemaError:
            return str(item["gguf"])
    return str(item.get("key", ""))


def _tensor_name(item: Mapping[str, Any]) -> str:
    from ..convert.mapping import gguf_tensor_name

    if "gguf" in item:
        try:
            base = gguf_tensor_name(str(item["gguf"]), "")
        except SchemaError:
            base = str(item["gguf"])
        return base + str(item.get("suffix", ".weight"))
    return str(item.get("name", ""))


def _cell(value: Any) -> str:
    """Text inside a table cell (also inside a code span there): the cell's bars escaped."""
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _prose(value: Any) -> str:
    """A schema author's text (a title, a doc) as Markdown that shows it and nothing else: HTML
    tags shown, not taken (``<script>`` is text), no line of it a heading."""
    text = "" if value is None else str(value)
    text = text.replace("<", "&lt;")  # no tag opens without it
    return "\n".join("\\" + line if line.lstrip().startswith(("#", "=", "---", ">")) else line
                     for line in text.split("\n"))


def _terminal_safe(page: str) -> str:
    """Every line with control characters, escape sequences and bidi controls escaped (a schema from
    a shared folder is somebody else's text: it must not drive the terminal it is shown on)."""
    return "\n".join(escape(line) for line in page.split("\n"))


def markdown(desc: dict[str, Any]) -> str:
    """The reference page of one layout."""
    lines = [f"# `{desc['id']}` — {_cell(_prose(desc['title']))}", "",
             f"Generated by `fmt schema show {desc['id']}` from `{desc['file']}`; do not edit.", ""]
    if desc["doc"]:
        lines += [_prose(desc["doc"]), ""]
    if desc["application"]:
        lines += [f"Written by {_prose(desc['application'])}.", ""]
    if desc["current"]:
        lines += [f"Current: {_prose(desc['current'])}.", ""]
    if desc["recognise"]:
        rule = desc["recognise"]
        lines += [f"Recognised, among the layouts with its magic, by `{_cell(rule['expr'])}`"
                  + (f": {_prose(rule['doc'])}" if rule["doc"] else "."), ""]
    if desc["imports"]:
        lines += ["Imports: " + ", ".join(f"`{i}`" for i in desc["imports"]) + ".", ""]
    if desc["params"]:
        lines += ["## Parameters", "", "| name | doc |", "|---|---|"]
        lines += [f"| `{k}` | {_cell(_prose(v))} |" for k, v in desc["params"].items()] + [""]
    if desc["fields"]:
        lines += ["## Fields", "", *_field_table(desc["fields"])]
    if desc["instances"]:
        lines += ["## Computed values", "", "| name | value | doc |", "|---|---|---|"]
        lines += [f"| `{k}` | `{_cell(v['value'])}` | {_cell(_prose(v['doc']))} |"
                  for k, v in desc["instances"].items()]
        lines.append("")
    if desc["types"]:
        lines += ["## Types", ""]
        for name, t in desc["types"].items():
            size = f" ({t['size']} bytes)" if t["size"] is not None else ""
            params = f" Parameters: {', '.join(f'`{p}`' for p in t['params'])}." if t["params"] else ""
            lines += [f"### `{name}`{size}", "", (_prose(t["doc"]) + params).strip(), ""]
            if t["fields"]:
                lines += _field_table(t["fields"])
    for table in desc["conversions"]:
        lines += [f"## Conversion to {table['target']}: `{table['table']}`", "", _prose(table["doc"]), ""]
        if table["keys"]:
            lines += ["| key | value | when |", "|---|---|---|"]
            lines += [f"| `{_cell(k['key'])}` | `{_cell(k['value'])}` | {_cell(_prose(k['when']))} |"
                      for k in table["keys"]]
            lines.append("")
        if table["tensors"]:
            lines += ["| input | output | transforms | when |", "|---|---|---|---|"]
            lines += [f"| `{_cell(t['input'])}` | `{_cell(t['output'])}` | {_cell(_prose(t['transforms']))} | "
                      f"{_cell(_prose(t['when']))} |" for t in table["tensors"]]
            lines.append("")
    return _terminal_safe("\n".join(lines).rstrip() + "\n")


def _field_table(fields: list[dict[str, Any]]) -> list[str]:
    lines = ["| offset | field | type | size | conditions | doc |", "|---|---|---|---|---|---|"]
    for f in fields:
        offset = "" if f["offset"] is None else str(f["offset"])
        lines.append(f"| {offset} | `{_cell(f['id'])}` | {_cell(f['type'])} | {_cell(f['size'])} | "
                     f"{_cell(_prose(f['conditions']))} | {_cell(_prose(f['doc']))} |")
    return [*lines, ""]
