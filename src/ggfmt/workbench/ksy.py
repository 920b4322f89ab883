"""``fmt schema export-ksy``: a ggfmt layout as a Kaitai Struct ``.ksy``, for the layouts that need
no ggfmt extension, so that Kaitai's tools (its Web IDE) show a file's bytes with ggfmt's names.

Tensor payloads become byte blocks of their ``size``; padding to an absolute multiple becomes a
byte block sized from ``_io.pos``; expressions are translated (``a if c else b`` to
``c ? a : b``, ``len(x)`` to ``x.size``, ``prod(ne)`` of a list of at most 4 dimensions to its
product term by term). What Kaitai cannot say is listed and the export refused: imports,
parameters, `one-of`, size prefixes, payloads `at` an offset, `offset` fields, `unique` and
`disjoint` checks, and the functions of ggfmt's expression language other than `len` and `prod`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..errors import UsageError
from ..io.text import escape
from ..schema import read_yaml
from ..schema.compiler import PRIMITIVES
from ..schema.language import keys
from ..schema.spec import TypeSpec
from . import meta_of

# Kaitai's name of each primitive: its kind and its bytes (a bool a u1; Kaitai has no f16)
KSY_TYPES = {name: {"i": "s", "f": "f"}.get(name[0], "u") + str(size) for name, (_, size) in PRIMITIVES.items()
             if name != "f16"}
FIELD_KEYS = keys("field") | keys("one-of")  # any other key of a field is an argument of its type's parameters
MAX_DIMS = 4  # ggml's: prod(ne) is written out term by term
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.FloorDiv: "/", ast.Mod: "%", ast.BitAnd: "&",
        ast.BitOr: "|", ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>"}
_CMP = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}


class _Refused(Exception):
    pass


def _ident(name: str) -> str:
    return name.replace("-", "_").lower()


def expression(source: Any, missing: list[str], where: str) -> Any:
    """A ggfmt expression in Kaitai's expression language."""
    if not isinstance(source, str):
        return source
    try:
        return _expr(ast.parse(source.strip(), mode="eval").body)
    except _Refused as e:
        missing.append(f"{where}: {e} in {source!r}")
        return source
    except SyntaxError:
        missing.append(f"{where}: {source!r} is not an expression")
        return source


def _expr(node: ast.expr) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, bool):
        return "true" if node.value else "false"
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return repr(node.value)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return '"' + node.value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_expr(node.value)}.{node.attr}"
    if isinstance(node, ast.Subscript) and not isinstance(node.slice, ast.Slice):
        return f"{_expr(node.value)}[{_expr(node.slice)}]"
    if isinstance(node, ast.List):
        return "[" + ", ".join(_expr(e) for e in node.elts) + "]"
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return f"({_expr(node.left)} {_OPS[type(node.op)]} {_expr(node.right)})"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return f"-{_expr(node.operand)}"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return f"not {_expr(node.operand)}"
    if isinstance(node, ast.BoolOp):
        word = " and " if isinstance(node.op, ast.And) else " or "
        return "(" + word.join(_expr(v) for v in node.values) + ")"
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMP:
        return f"{_expr(node.left)} {_CMP[type(node.ops[0])]} {_expr(node.comparators[0])}"
    if isinstance(node, ast.IfExp):
        return f"({_expr(node.test)} ? {_expr(node.body)} : {_expr(node.orelse)})"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) == 1:
        arg = _expr(node.args[0])
        if node.func.id == "len":
            return f"{arg}.size"
        if node.func.id == "prod":
            return "(" + " * ".join(f"({arg}.size > {i} ? {arg}[{i}] : 1)" for i in range(MAX_DIMS)) + ")"
        if node.func.id == "min" or node.func.id == "max":
            return f"{arg}.{node.func.id}"
    raise _Refused(f"{ast.unparse(node)!r} has no Kaitai form")


def _field(spec: Mapping[str, Any], where: str, missing: list[str], pads: list[int]) -> dict[str, Any] | None:
    if "align" in spec:
        modulus = expression(spec["align"], missing, f"{where} align")
        pads[0] += 1
        return {"id": f"pad_{pads[0]}", "size": f"({modulus} - _io.pos % {modulus}) % {modulus}",
                "doc": str(spec.get("doc") or "Padding to an absolute multiple.")}
    name = str(spec.get("id"))
    at = f"{where}.{name}"
    for key in ("one-of", "size-prefix", "at"):
        if key in spec:
            missing.append(f"{at}: `{key}`")
    out: dict[str, Any] = {"id": _ident(name)}
    kind = spec.get("type")
    if kind is None and "contents" in spec:
        contents = spec["contents"]
        out["contents"] = list(contents.encode("latin-1")) if isinstance(contents, str) else contents
    elif isinstance(kind, Mapping):
        cases = {}
        for key, case in (kind.get("cases") or {}).items():
            if not isinstance(case, str):
                missing.append(f"{at}: a case that is not a type name")
                continue
            cases[key] = KSY_TYPES.get(case, _ident(case))
        out["type"] = {"switch-on": expression(kind.get("switch-on"), missing, at), "cases": cases}
    elif kind in KSY_TYPES:
        out["type"] = KSY_TYPES[kind]
    elif kind in ("bytes", "payload", "str"):
        size = spec.get("size")
        out["size-eos" if size == "eos" else "size"] = True if size == "eos" else expression(size, missing, at)
        if kind == "str":
            out["type"] = "str"
            out["encoding"] = str(spec.get("encoding", "UTF-8"))
    elif kind == "offset" or kind == "f16":
        missing.append(f"{at}: type {kind}")
    elif isinstance(kind, str):
        out["type"] = _ident(kind)
    for key in spec:  # arguments of a parameterised type
        if key not in FIELD_KEYS:
            missing.append(f"{at}: the type parameter {key}")
    repeat = spec.get("repeat")
    if repeat == "eos":
        out["repeat"] = "eos"
    elif isinstance(repeat, Mapping):
        out["repeat"] = "until"
        out["repeat-until"] = expression(repeat.get("until"), missing, at)
    elif repeat is not None:
        out["repeat"] = "expr"
        out["repeat-expr"] = expression(repeat, missing, at)
    if "if" in spec:
        out["if"] = expression(spec["if"], missing, at)
    # (Kaitai checks each element of a repeated field; ggfmt's checks of a whole list stay ggfmt's)
    valid = _valid(spec.get("valid"), missing, at) if repeat is None else None
    if valid is not None:
        out["valid"] = valid
    if spec.get("doc"):
        out["doc"] = " ".join(str(spec["doc"]).split())
    return out


def _valid(valid: Any, missing: list[str], at: str) -> Any:
    if valid is None:
        return None
    clauses = valid if isinstance(valid, list) else [valid]
    if len(clauses) != 1:
        missing.append(f"{at}: more than one `valid` clause")
        return None
    clause = clauses[0]
    if not isinstance(clause, Mapping):
        return {"eq": clause}
    out = {}
    for key, value in clause.items():
        if key in ("eq", "min", "max", "expr"):
            out[key] = expression(value, missing, at)
        elif key == "any-of":
            out[key] = [expression(v, missing, at) for v in value]
        else:
            missing.append(f"{at}: `valid: {key}`")
    return out


def _type(layout: TypeSpec, where: str, missing: list[str]) -> dict[str, Any]:
    spec = layout.raw
    if layout.params:
        missing.append(f"{where}: parameters")
    pads = [0]
    seq = [f for f in (_field(item.raw, where, missing, pads) for item in layout.fields) if f]
    out: dict[str, Any] = {"seq": seq}
    if spec.get("doc"):
        out["doc"] = str(spec["doc"]).strip()
    instances = {}
    for name, inst in layout.instances.items():
        if isinstance(inst, Mapping):
            instances[_ident(str(name))] = {"value": expression(inst.get("value"), missing, f"{where}.{name}"),
                                            **({"doc": " ".join(str(inst["doc"]).split())} if inst.get("doc") else {})}
    if instances:
        out["instances"] = instances
    return out


_KAITAI_ID = re.compile(r"[a-z][a-z0-9_]*")


def export(path: Path) -> str:
    """The ``.ksy`` of the schema at ``path``; UsageError listing what Kaitai cannot say. The schema
    is first loaded as every command loads it (its checks: expression sizes, `contents` bytes, ...)."""
    from ..schema import load_schema, namespace_of

    load_schema(str(path))
    data = read_yaml(path, shared=True)
    meta = meta_of(data)
    root = str(meta.get("id") or path.stem)  # the layout's type, named as the loader names it
    namespace = namespace_of(path)  # the types as a parse resolves them: the layout's, then its own types
    missing: list[str] = []
    if meta.get("imports"):
        missing.append(f"meta: imports ({', '.join(meta['imports'])})")
    ksy: dict[str, Any] = {"meta": {"id": _ident(str(meta.get("id", path.stem))), "endian": "le"}}
    if meta.get("title"):
        ksy["meta"]["title"] = str(meta["title"])
    extension = meta.get("file-extension")
    if extension:
        ksy["meta"]["file-extension"] = extension
    if data.get("doc"):
        ksy["doc"] = str(data["doc"]).strip()
    body = _type(namespace.types[root].layout, "seq", missing)
    ksy.update({k: v for k, v in body.items() if k != "doc"})
    types = {}
    for name, typedef in namespace.types.items():
        if name != root:  # (no imports: every other type is the schema's own)
            types[_ident(name)] = _type(typedef.layout, f"types.{name}", missing)
    if types:
        ksy["types"] = types
    missing += [f"{where}: {name!r} is not an id Kaitai takes (a lower-case letter, then lower-case letters, "
                "digits and _)" for where, name in _ids(ksy) if not _KAITAI_ID.fullmatch(name)]
    if missing:
        raise UsageError(f"{path.name} needs what Kaitai Struct cannot say: " + "; ".join(missing))
    header = (f"# Exported by `fmt schema export-ksy` from {escape(path.name)}: tensor payloads are byte blocks, "
              "and\n"
              "# the checks of whole lists are ggfmt's only.\n")
    return header + yaml.safe_dump(ksy, sort_keys=False, allow_unicode=True, width=100)


def _ids(ksy: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(where, id) of the meta id, every field's and every type's name."""
    found = [("meta.id", str(ksy["meta"]["id"]))]

    def of_type(typedef: Mapping[str, Any], where: str) -> None:
        for field in typedef.get("seq") or []:
            found.append((f"{where}.seq", str(field.get("id"))))
        for name in typedef.get("instances") or {}:
            found.append((f"{where}.instances", str(name)))

    of_type(ksy, "seq")
    for name, typedef in (ksy.get("types") or {}).items():
        found.append(("types", str(name)))
        of_type(typedef, f"types.{name}")
    return found
