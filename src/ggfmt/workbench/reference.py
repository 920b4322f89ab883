"""A reference of one part of the language, in Markdown, written from its definition
(schema/language.json), so that the docs cannot say other than what ggfmt accepts.

``python -m ggfmt.workbench.reference bundle > docs/bundle-language.md`` (``make schema-docs``); a
test holds the published file to it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from typing import Any

from ..schema.language import definition


def markdown(name: str, title: str) -> str:
    """The definition ``name`` and every definition it refers to, one table of keys each."""
    defs = definition()["$defs"]
    lines = [f"# {title}", "", "<!-- written by `make schema-docs` from src/ggfmt/schema/language.json -->", ""]
    for part in _reachable(name, defs):
        spec = defs[part]
        lines += [f"## `{part}`", "", str(spec.get("description", "")), "", *_choice(spec)]
        lines += ["| key | value | required | meaning |", "| --- | --- | --- | --- |"]
        required = set(spec.get("required", []))
        for key, value in spec.get("properties", {}).items():
            shown = _shape(value).replace("|", "\\|")
            doc = str(value.get("description", "")).replace("|", "\\|")
            lines.append(f"| `{key}` | {shown} | {'yes' if key in required else ''} | {doc} |")
        lines.append("")
    return "\n".join(lines)


def _choice(spec: Mapping[str, Any]) -> list[str]:
    """A sentence for a choice of required keys ({json: F} or {model_card: F})."""
    for word, how in (("oneOf", "exactly one of"), ("anyOf", "at least one of")):
        keys = [k for a in spec.get(word, []) for k in a.get("required", [])]
        if keys:
            return [f"It has {how}: {', '.join(f'`{k}`' for k in keys)}.", ""]
    return []


def _shape(value: Mapping[str, Any]) -> str:
    """What a key takes, in a few words: `string`, `list of string`, [`bundle_field`](#bundle_field)..."""
    if "$ref" in value:
        target = str(value["$ref"]).rsplit("/", 1)[-1]
        return "an expression" if target == "expression" else f"[`{target}`](#{target})"
    if "enum" in value:
        return " or ".join(f"`{v}`" for v in value["enum"])
    for word in ("anyOf", "oneOf"):
        if word in value:
            return " or ".join(_shape(a) for a in value[word])
    kind = value.get("type")
    if kind == "array":
        return f"list of {_shape(value.get('items', {}))}"
    if kind == "object" and isinstance(value.get("additionalProperties"), Mapping):
        return f"mapping of name to {_shape(value['additionalProperties'])}"
    if kind == "object" and "properties" in value:
        return "{" + ", ".join(f"{k}: {_shape(v)}" for k, v in value["properties"].items()) + "}"
    return str(kind or "any value")


def _reachable(name: str, defs: Mapping[str, Any]) -> Iterator[str]:
    """``name``, then the definitions its keys refer to, each once, the expression language aside."""
    seen: list[str] = []
    todo = [name]
    while todo:
        part = todo.pop(0)
        if part in seen or part == "expression":
            continue
        seen.append(part)
        todo.extend(_refs(defs[part]))
    yield from seen


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        if "$ref" in node:
            yield str(node["$ref"]).rsplit("/", 1)[-1]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


if __name__ == "__main__":
    part = sys.argv[1] if len(sys.argv) > 1 else "bundle"
    sys.stdout.write(markdown(part, f"The {part} language: reference"))
