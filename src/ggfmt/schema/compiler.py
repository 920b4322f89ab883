"""Compile a YAML schema (see ``docs/schema-language.md``) into a Construct tree.

The compiler only builds objects: it never evaluates an expression and never imports
anything named in a schema.  Expressions are parsed and checked here (so a hostile schema
is refused when it is loaded) and evaluated later, against parsed fields, by the engine.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import construct as cs

from ..errors import SchemaError
from .constructs import (
    PRIMITIVE_CODES,
    AlignTo,
    ChooseBySize,
    Field,
    Payload,
    Position,
    PrefixedBytes,
    Presented,
    RepeatUntil,
    SizedBytes,
    SwitchOn,
    TensorRecord,
    Validation,
    ViewSpec,
    WithArgs,
    evaluate,
    join_path,
    static_size,
)
from .expr import Expression, ExpressionError
from .language import keys
from .spec import TypeSpec, type_spec

# name -> (Construct leaf, size in bytes); all little-endian.
PRIMITIVES: dict[str, tuple[cs.Construct, int]] = {
    "u8": (cs.Int8ul, 1), "u16": (cs.Int16ul, 2), "u32": (cs.Int32ul, 4), "u64": (cs.Int64ul, 8),
    "i8": (cs.Int8sl, 1), "i16": (cs.Int16sl, 2), "i32": (cs.Int32sl, 4), "i64": (cs.Int64sl, 8),
    "f16": (cs.Float16l, 2), "f32": (cs.Float32l, 4), "f64": (cs.Float64l, 8),
    "bool": (cs.Flag, 1),  # one byte, 0 or not
}
# the values each integer primitive holds (a GGUF key's type, a value typed on the command line)
INT_RANGES: dict[str, tuple[int, int]] = {
    name: (-(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1) if name[0] == "i" else (0, (1 << (8 * size)) - 1)
    for name, (_, size) in PRIMITIVES.items() if name[0] in "iu"}
# the largest finite value of each float primitive: its largest bit pattern below infinity
FLOAT_MAX: dict[str, float] = {name: struct.unpack(code, raw)[0] for name, code, raw in
                               (("f16", "<e", b"\xff\x7b"), ("f32", "<f", b"\xff\xff\x7f\x7f"),
                                ("f64", "<d", b"\xff\xff\xff\xff\xff\xff\xef\x7f"))}
SIZED_TYPES = {"bytes", "str", "payload"}

FIELD_KEYS = keys("field")  # the keys of each kind of item, from the language's one definition
# `size-prefix`: the integer types a size may be stored as, and their struct formats
SIZE_PREFIXES = {"u8": "<B", "u16": "<H", "u32": "<I", "u64": "<Q"}
ONE_OF_KEYS = keys("one-of")
TYPE_KEYS = keys("type")
VIEW_KEYS = keys("view")
VALID_KEYS = keys("valid")


@dataclass
class Param:
    name: str
    default: Any = None
    doc: str = ""
    type: str | None = None  # int, float, str or bool: how a value given as text (--set) is read

    def parse(self, text: str) -> Any:
        """A value given on the command line, read as the declared type (undeclared: an integer
        when it looks like one, else the text)."""
        kind = self.type or ("int" if text.lstrip("-").isdigit() else "str")
        try:
            return read_text(kind, text)
        except ValueError:
            raise ValueError(f"{self.name} takes a value of type {kind}, not {text!r}") from None


BOOLEAN_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def read_text(kind: str, text: str) -> Any:
    """A value typed on the command line (``--set``, ``--option``) as ``kind``: int (any base
    Python reads: 0x10), float, bool (true/false, 1/0, yes/no), float[] (comma-separated) or
    anything else as the text; ValueError when it is not one."""
    if kind == "int":
        return int(text, 0)
    if kind == "float":
        return float(text)
    if kind == "float[]":
        return [float(v) for v in text.split(",")]
    if kind == "bool":
        if text.lower() not in BOOLEAN_WORDS:
            raise ValueError("expected true or false")
        return BOOLEAN_WORDS[text.lower()]
    return text


PARAM_TYPES = ("int", "float", "str", "bool")


@dataclass
class TypeDef:
    """One type of the schema namespace, compiled on first use."""

    name: str
    spec: dict[str, Any]
    source: str
    layout: TypeSpec  # its fields in order, what they name, define and compute
    params: dict[str, Param] = field(default_factory=dict)
    compiled: cs.Construct | None = None


class Instance(cs.Construct):  # type: ignore[misc]
    """A computed value (``instances:``); reads and writes nothing."""

    def __init__(self, name: str, value: Expression) -> None:
        super().__init__()
        self.name = name
        self.field_name = name
        self.value = value
        self.flagbuildnone = True

    def _static_size(self) -> int:
        return 0

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        return evaluate(self.value, context, join_path(path, self.field_name), None)

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        return evaluate(self.value, context, join_path(path, self.field_name), None)


def _expr(source: Any, where: str) -> Expression:
    try:
        return Expression(source)
    except ExpressionError as e:
        raise SchemaError(where, str(e)) from None


def _params(spec: Any, where: str) -> dict[str, Param]:
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise SchemaError(where, "`params` must be a mapping of parameter names")
    out = {}
    for name, p in spec.items():
        p = p or {}
        if not isinstance(p, Mapping):
            raise SchemaError(where, f"parameter {name!r} must be a mapping (default, doc, type)")
        kind = p.get("type")
        if kind is not None and kind not in PARAM_TYPES:
            raise SchemaError(where, f"parameter {name!r}: type {kind!r} is not one of {', '.join(PARAM_TYPES)}")
        out[str(name)] = Param(str(name), p.get("default"), str(p.get("doc", "")), kind)
    return out


class Namespace:
    """The types a schema can name: its own ``types``, plus those of the schemas it imports."""

    def __init__(self, source: str, load_import: Callable[[str], Namespace]) -> None:
        self.source = source
        self.types: dict[str, TypeDef] = {}
        self.enums: dict[str, dict[Any, str]] = {}  # enum name -> {value: name}
        self._load_import = load_import

    def check_endless(self, root: str) -> None:
        """Refuse a type that contains itself whatever the file holds (through fields with no `if`,
        no `repeat` and no switch): parsing it could never end. A type inside itself only under a
        condition (a GGUF array of arrays) is read as deep as the file nests it, up to a
        limit that is reported in one line."""
        def always(layout: TypeSpec) -> list[str]:
            return [str(f.type) for f in layout.fields
                    if isinstance(f.type, str) and "if" not in f.raw and "repeat" not in f.raw]

        def visit(name: str, trail: list[str]) -> None:
            if name in trail:
                cycle = " -> ".join([*trail[trail.index(name):], name])
                raise SchemaError(self.source, f"type {name!r} contains itself in every case ({cycle}): "
                                               "reading it could never end; give the field an `if` or a `repeat`")
            typedef = self.types.get(name)
            if typedef is None or name in done:
                return
            for sub in always(typedef.layout):
                visit(sub, [*trail, name])
            done.add(name)

        done: set[str] = set()
        visit(root, [])

    def add(self, name: str, spec: Mapping[str, Any], source: str) -> None:
        if name in self.types and self.types[name].spec is not spec:
            raise SchemaError(source, f"type {name!r} is defined twice (also in {self.types[name].source})")
        where = f"{source}: type {name}"
        unknown = set(spec) - TYPE_KEYS
        if unknown:
            raise SchemaError(where, f"unknown keys {sorted(unknown)} (allowed: {sorted(TYPE_KEYS)})")
        self.types[name] = TypeDef(name, dict(spec), source, type_spec(name, spec, source, where),
                                   _params(spec.get("params"), where))
        for sub_name, sub in (spec.get("types") or {}).items():
            if not isinstance(sub, Mapping):
                raise SchemaError(where, f"type {sub_name!r} must be a mapping")
            self.add(str(sub_name), sub, source)

    def add_enums(self, spec: Any, source: str) -> None:
        """``enums: {NAME: {VALUE: LABEL, ...}}``: names for the values of fields with ``enum: NAME``."""
        if spec is None:
            return
        if not isinstance(spec, Mapping) or not all(
                isinstance(e, Mapping) and all(isinstance(k, int) and isinstance(v, str) for k, v in e.items())
                for e in spec.values()):
            raise SchemaError(source, "`enums` maps enum names to {integer: name, ...}")
        for name, values in spec.items():
            if name in self.enums and self.enums[name] != dict(values):
                raise SchemaError(source, f"enum {name!r} is defined twice, differently")
            self.enums[str(name)] = dict(values)

    def merge(self, other: Namespace) -> None:
        for name, values in other.enums.items():
            self.add_enums({name: values}, self.source)
        for name, typedef in other.types.items():
            if name in self.types and self.types[name] is not typedef:
                if self.types[name].spec is typedef.spec:
                    continue
                raise SchemaError(self.source, f"imported type {name!r} clashes with one of {self.types[name].source}")
            self.types[name] = typedef

    def import_schema(self, name: str) -> None:
        self.merge(self._load_import(name))

    # -- sizes, as the compiled nodes state them -----------------------------------------
    def field_size(self, spec: Mapping[str, Any], where: str) -> int | None:
        """The bytes a field of this namespace always takes; None when they depend on the file."""
        sizes = [static_size(member) for member in self._compile_field(spec, where)]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)

    def type_size(self, name: str) -> int | None:
        """The bytes a record of the type ``name`` always takes; None when they depend on the file."""
        return static_size(self.construct(name))

    # -- compilation -------------------------------------------------------------------
    def construct(self, name: str) -> cs.Construct:
        typedef = self.types.get(name)
        if typedef is None:
            raise SchemaError(self.source, f"unknown type {name!r} (known: {', '.join(sorted(self.types))})")
        if typedef.compiled is None:
            # A placeholder breaks endless recursion through self-referencing types.
            typedef.compiled = cs.LazyBound(lambda: self.construct(name))
            typedef.compiled = self._compile_type(typedef)
        return typedef.compiled

    def _compile_type(self, typedef: TypeDef) -> cs.Construct:
        where = f"{typedef.source}: type {typedef.name}"
        spec = typedef.spec
        members: list[cs.Construct] = []
        seen: set[str] = set()
        fields = [f.raw for f in typedef.layout.fields]
        for item in typedef.layout.fields:
            for member in self._compile_field(item.raw, f"{where}, seq[{item.index}]"):
                if member.name is not None:
                    if member.name in seen:
                        raise SchemaError(where, f"field {member.name!r} is defined twice")
                    seen.add(member.name)
                members.append(member)
        for name, inst in (spec.get("instances") or {}).items():
            if not isinstance(inst, Mapping) or "value" not in inst:
                raise SchemaError(where, f"instance {name!r} needs a `value` expression")
            if name in seen:
                raise SchemaError(where, f"instance {name!r} has the name of a field")
            members.append(Instance(str(name), _expr(inst["value"], f"{where}, instance {name}")))
        struct: cs.Construct = cs.Struct(*members)
        if spec.get("tensor") is not None:
            roles = spec["tensor"]
            named = seen | {str(n) for n in spec.get("instances") or {}}
            if not isinstance(roles, Mapping) or set(roles) != set(TensorRecord.ROLES) \
                    or not all(v in named for v in roles.values()):
                raise SchemaError(where, f"`tensor:` must map each of {', '.join(TensorRecord.ROLES)} "
                                         "to a field of the type")
            struct = TensorRecord(struct, {str(k): str(v) for k, v in roles.items()}, where)
        hidden = frozenset(str(f["id"]) for f in fields if isinstance(f, Mapping) and f.get("hidden") is True)
        layout = frozenset(str(f["id"]) for f in fields if isinstance(f, Mapping) and f.get("layout") is True)
        view = self._view(spec, fields, seen | {str(n) for n in spec.get("instances") or {}}, where)
        if hidden or layout or view is not None:
            if spec.get("tensor") is not None:
                raise SchemaError(where, "a tensor record is shown in the tensor table: it takes no `view` "
                                         "and no `hidden` fields")
            struct = Presented(struct, view, hidden, layout)
        return struct

    def _view(self, spec: Mapping[str, Any], fields: list[Any], named: set[str], where: str) -> ViewSpec | None:
        """A type's ``view: {key: FIELD, type: FIELD, value: FIELD}``: how a record of it reads to a
        user (``key = value`` with the type's name, as gguf-dump shows GGUF metadata)."""
        view = spec.get("view")
        if view is None:
            return None
        if not isinstance(view, Mapping) or set(view) - VIEW_KEYS or "value" not in view \
                or not all(isinstance(v, str) and v in named for v in view.values()):
            raise SchemaError(where, "`view` is {key: FIELD, type: FIELD, value: FIELD} (value required) naming "
                                     f"fields of the type (it has: {', '.join(sorted(named))})")
        type_names: dict[Any, str] = {}
        if "type" in view:
            type_field = next((f for f in fields if isinstance(f, Mapping) and f.get("id") == view["type"]), {})
            type_names = self.enums.get(str(type_field.get("enum")), {})
        return ViewSpec(view.get("key"), view.get("type"), str(view["value"]), type_names)

    def _compile_field(self, spec: Mapping[str, Any], where: str) -> list[cs.Construct]:
        if "align" in spec:
            extra = set(spec) - {"align", "doc"}
            modulus = spec["align"]
            if extra or isinstance(modulus, bool) or not isinstance(modulus, int | str) \
                    or (isinstance(modulus, int) and modulus <= 0):
                raise SchemaError(where, "an alignment item is `{align: N, doc: ...}` with a positive integer N "
                                         "or an expression giving one")
            return [AlignTo(_expr(modulus, f"{where}, align"))]
        name = spec.get("id")
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise SchemaError(where, f"`id` must be an identifier not starting with '_', got {name!r}")
        where = f"{where} ({name})"
        if "one-of" in spec:
            return self._compile_one_of(name, spec, where)

        type_spec = spec.get("type")
        params: dict[str, Any] = {}
        typedef = self.types.get(type_spec) if isinstance(type_spec, str) else None
        if typedef is not None:
            params = {k: v for k, v in spec.items() if k in typedef.params}
        unknown = set(spec) - FIELD_KEYS - set(params)
        if unknown:
            raise SchemaError(where, f"unknown keys {sorted(unknown)} (allowed: {sorted(FIELD_KEYS)}"
                                     + (f", parameters {sorted(typedef.params)}" if typedef else "") + ")")

        if "enum" in spec and spec["enum"] not in self.enums:
            raise SchemaError(where, f"unknown enum {spec['enum']!r} (the schema's `enums`: "
                                     f"{', '.join(sorted(self.enums)) or 'none'})")
        for flag in ("hidden", "layout"):
            if flag in spec and not isinstance(spec[flag], bool):
                raise SchemaError(where, f"`{flag}` is true or false")
        contents = _contents(spec.get("contents"), where)
        if contents is not None and type_spec is not None:
            raise SchemaError(where, "`contents` fixes the bytes themselves: give it without a `type`")
        fixed_size: int | None = None
        if type_spec is None:
            if contents is None:
                raise SchemaError(where, "a field needs a `type` (or `contents`)")
            subcon, fixed_size = cs.Bytes(len(contents)), len(contents)
        elif isinstance(type_spec, Mapping):
            subcon = self._compile_switch(type_spec, where)
        elif type_spec in PRIMITIVES:
            subcon, fixed_size = PRIMITIVES[type_spec]
        elif type_spec in ("str", "bytes") and "size-prefix" in spec:
            if "size" in spec:
                raise SchemaError(where, "give `size` or `size-prefix`, not both")
            subcon = _prefixed({k: spec[k] for k in ("type", "size-prefix", "encoding") if k in spec}, where)
        elif type_spec in SIZED_TYPES:
            if "size" not in spec:
                raise SchemaError(where, f"type {type_spec} needs a `size` expression (or a `size-prefix`)")
            size = None if spec["size"] == "eos" else _expr(spec["size"], where)  # eos: to the end
            if size is None and "at" in spec:
                raise SchemaError(where, "`size: eos` cannot be combined with `at`")
            subcon = Payload(size, _expr(spec["at"], f"{where}, at") if "at" in spec else None) \
                if type_spec == "payload" else \
                SizedBytes(size, _encoding(spec.get("encoding", "utf-8"), where) if type_spec == "str" else None)
        elif type_spec == "offset":
            subcon = Position()
        elif typedef is not None:
            subcon = self.construct(type_spec)
            if typedef.params:
                args = {k: _expr(v, f"{where}, argument {k}") for k, v in params.items()}
                defaults = {k: p.default for k, p in typedef.params.items()}
                subcon = WithArgs(subcon, args, defaults)
        else:
            known = f"primitives: {', '.join(PRIMITIVES)}; sized: {', '.join(sorted(SIZED_TYPES))}; " \
                    f"types: {', '.join(sorted(self.types))}"
            raise SchemaError(where, f"unknown type {type_spec!r} ({known})")
        if "size" in spec and type_spec not in SIZED_TYPES:
            raise SchemaError(where, "`size` only applies to bytes, str and payload")
        if "at" in spec and type_spec != "payload":
            raise SchemaError(where, "`at` only applies to payload")

        repeat_spec = spec.get("repeat")
        repeat: Expression | RepeatUntil | str | None = None
        if repeat_spec == "eos":
            repeat = "eos"
        elif isinstance(repeat_spec, Mapping):
            if set(repeat_spec) != {"until"}:
                raise SchemaError(f"{where}, repeat", "a mapping under `repeat` is `{until: EXPR}`")
            repeat = RepeatUntil(_expr(repeat_spec["until"], f"{where}, repeat until"))
        elif repeat_spec is not None:
            repeat = _expr(repeat_spec, f"{where}, repeat")
        return [Field(
            name, subcon,
            fixed_size=fixed_size,
            repeat=repeat,
            condition=_expr(spec["if"], f"{where}, if") if "if" in spec else None,
            valid=validation(spec.get("valid"), where) if "valid" in spec else None,
            contents=contents,
            rebuild=_expr(spec["rebuild"], f"{where}, rebuild") if "rebuild" in spec else None,
            bulk_code=PRIMITIVE_CODES.get(subcon) if isinstance(type_spec, str) and type_spec in PRIMITIVES else None,
        )]

    def _compile_switch(self, spec: Mapping[str, Any], where: str) -> cs.Construct:
        if set(spec) - {"switch-on", "cases"} or "switch-on" not in spec or not isinstance(spec.get("cases"), Mapping):
            raise SchemaError(where, "a switch type is `{switch-on: EXPR, cases: {VALUE: TYPE, ...}}`")
        cases: dict[Any, cs.Construct] = {}
        default = None
        for key, type_name in spec["cases"].items():
            if isinstance(type_name, Mapping) and isinstance(key, str | int | bool) \
                    and type_name.get("type") in self.types:  # {type: family_tensor, era: 1}: with arguments
                sub = self._with_arguments(str(type_name["type"]), type_name, f"{where}, case {key!r}")
            elif isinstance(type_name, Mapping) and isinstance(key, str | int | bool):
                sub = _prefixed(type_name, f"{where}, case {key!r}")  # {type: str, size-prefix: u64}
            elif not isinstance(type_name, str) or not isinstance(key, str | int | bool):
                raise SchemaError(where, f"switch case {key!r}: a case is `VALUE: TYPE_NAME`, not {type_name!r}")
            else:
                sub = PRIMITIVES[type_name][0] if type_name in PRIMITIVES else self.construct(str(type_name))
            if key == "_":
                default = sub
            else:
                cases[key] = sub
        return SwitchOn(_expr(spec["switch-on"], f"{where}, switch-on"), cases, default)

    def _with_arguments(self, type_name: str, spec: Mapping[str, Any], where: str) -> cs.Construct:
        """A switch case's named type with the arguments its other keys give its parameters."""
        typedef = self.types[type_name]
        args = {k: v for k, v in spec.items() if k != "type"}
        unknown = set(args) - set(typedef.params)
        if unknown:
            raise SchemaError(where, f"{', '.join(sorted(map(str, unknown)))} not a parameter of {type_name} "
                                     f"(its parameters: {', '.join(sorted(typedef.params)) or 'none'})")
        sub = self.construct(type_name)
        if not typedef.params:
            return sub
        return WithArgs(sub, {k: _expr(v, f"{where}, argument {k}") for k, v in args.items()},
                        {k: p.default for k, p in typedef.params.items()})

    def _compile_one_of(self, name: str, spec: Mapping[str, Any], where: str) -> list[cs.Construct]:
        unknown = set(spec) - ONE_OF_KEYS
        if unknown:
            raise SchemaError(where, f"unknown keys {sorted(unknown)} for one-of (allowed: {sorted(ONE_OF_KEYS)})")
        if spec.get("by") != "size":
            raise SchemaError(where, "one-of needs `by: size` (the only way of choosing it knows)")
        choice = spec.get("choice")
        if not isinstance(choice, str) or not choice.isidentifier() or choice.startswith("_"):
            raise SchemaError(where, "one-of needs `choice: NAME`, the field that records the chosen alternative")
        alternatives = spec["one-of"]
        if not isinstance(alternatives, Mapping) or len(alternatives) < 2:
            raise SchemaError(where, "one-of needs at least two alternatives `{name: type, ...}`")
        constructs = {str(k): self.construct(str(v)) for k, v in alternatives.items()}
        select = _expr(spec["select"], f"{where}, select") if spec.get("select") is not None else None
        chooser = ChooseBySize(constructs, select, name)
        chooser.name = choice
        return [chooser, Field(name, SwitchOn(Expression(choice), constructs, None))]


def _prefixed(spec: Mapping[str, Any], where: str) -> PrefixedBytes:
    """``{type: str|bytes, size-prefix: WIDTH, encoding: ...}``; WIDTH is u8, u16, u32 or u64, or a
    switch among them (``{switch-on: _root.version, cases: {1: u32, _: u64}}``)."""
    prefix = spec.get("size-prefix")
    shape = "a size-prefixed value is {type: str or bytes, size-prefix: " \
            f"{' or '.join(SIZE_PREFIXES)} (or a switch-on among them), encoding: ...}}"
    if spec.get("type") not in ("str", "bytes") or set(spec) - {"type", "size-prefix", "encoding"}:
        raise SchemaError(where, shape)
    encoding = _encoding(spec.get("encoding", "utf-8"), where) if spec["type"] == "str" else None
    if isinstance(prefix, Mapping):
        cases = prefix.get("cases")
        if set(prefix) != {"switch-on", "cases"} or not isinstance(cases, Mapping) or not cases \
                or not all(isinstance(v, str) and v in SIZE_PREFIXES for v in cases.values()):
            raise SchemaError(where, shape)
        widths = {k: SIZE_PREFIXES[v] for k, v in cases.items() if k != "_"}
        default = SIZE_PREFIXES[cases["_"]] if "_" in cases else None
        return PrefixedBytes(default, encoding, _expr(prefix["switch-on"], f"{where}, size-prefix"), widths)
    if prefix not in SIZE_PREFIXES:
        raise SchemaError(where, shape)
    return PrefixedBytes(SIZE_PREFIXES[prefix], encoding)


def _encoding(name: Any, where: str) -> str:
    """A text encoding Python knows (utf-8, latin-1, ...); codecs such as rot13 or zlib are not text."""
    import codecs

    try:
        info = codecs.lookup(str(name))
    except LookupError:
        raise SchemaError(where, f"encoding {name!r} is not one Python knows (for example utf-8, latin-1)") from None
    if not getattr(info, "_is_text_encoding", True):
        raise SchemaError(where, f"encoding {name!r} is not a text encoding")
    return info.name


def _contents(value: Any, where: str) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError:
            raise SchemaError(where, f"`contents` {value!r} has characters beyond \\xff; give bytes as "
                                     "a list of byte values") from None
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value)
    raise SchemaError(where, "`contents` is a string or a list of byte values")


def validation(spec: Any, where: str) -> list[Validation]:
    """``valid:`` is an expression (equality), a clause mapping, or a list of clause mappings."""
    if isinstance(spec, list):
        if not all(isinstance(clause, Mapping) for clause in spec):
            raise SchemaError(f"{where}, valid", "a list under `valid` holds clause mappings; "
                                                 "write an expected list as `{eq: [...]}`")
        return [_clause(clause, f"{where}, valid[{i}]") for i, clause in enumerate(spec)]
    return [_clause(spec, f"{where}, valid")]


def _clause(spec: Any, where: str) -> Validation:
    if not isinstance(spec, Mapping):
        return Validation(eq=_expr(spec, where))
    unknown = set(spec) - VALID_KEYS
    if unknown:
        raise SchemaError(where, f"unknown keys {sorted(unknown)} (allowed: {sorted(VALID_KEYS)})")
    if not set(spec) - {"if"}:
        raise SchemaError(where, "a clause needs one of eq, any-of, min, max, expr, unique, disjoint")
    any_of = spec.get("any-of")
    if any_of is not None and not isinstance(any_of, list):
        raise SchemaError(where, "`any-of` is a list")
    unique = spec.get("unique")
    if unique is not None and not _field_path(unique):
        raise SchemaError(where, "`unique` is a dotted field path of the list's items, such as name")
    disjoint = spec.get("disjoint")
    if disjoint is not None and not (isinstance(disjoint, list) and len(disjoint) == 2
                                     and all(_field_path(p) for p in disjoint)):
        raise SchemaError(where, "`disjoint` is [START, SIZE]: two dotted field paths of the list's items")
    return Validation(
        eq=_expr(spec["eq"], where) if "eq" in spec else None,
        any_of=[_expr(v, where) for v in any_of] if any_of is not None else None,
        minimum=_expr(spec["min"], where) if "min" in spec else None,
        maximum=_expr(spec["max"], where) if "max" in spec else None,
        expr=_expr(spec["expr"], where) if "expr" in spec else None,
        guard=_expr(spec["if"], where) if "if" in spec else None,
        unique=unique,
        disjoint=(disjoint[0], disjoint[1]) if disjoint is not None else None,
    )


def _field_path(text: Any) -> bool:
    """A dotted path of field names (``key.name``); no private or empty parts."""
    return isinstance(text, str) and all(part.isidentifier() and not part.startswith("_")
                                         for part in text.split("."))
