"""A schema's types as the engine and the author's tools both read them: each type with its
fields in order, each field with what it names (its type, the types of its cases or
alternatives), what it defines and every expression it holds, with that expression's path in the
file.

The compiler makes Construct nodes of these (``Namespace``), ``fmt schema show`` makes its rows of
them, ``fmt schema check`` its lint (names no field defines, types no field uses) and
``export-ksy`` its translation: one reading of the YAML, not one per tool. A field keeps the
mapping it was written as (``raw``) for the checks that name its keys.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import SchemaError
from .language import keys

# The keys of a field whose text is an expression (a `size: eos` is a word, not one).
EXPRESSION_KEYS = ("repeat", "size", "if", "rebuild", "at", "select")
# The clauses of `valid:` that hold expressions.
VALID_EXPRESSION_KEYS = ("expr", "if", "eq", "min", "max")
FIELD_KEYS = keys("field")


@dataclass(frozen=True)
class FieldSpec:
    """One item of a type's ``seq``: a field, an alignment, or a choice of alternatives."""

    index: int
    raw: Mapping[str, Any]

    @property
    def id(self) -> str | None:
        value = self.raw.get("id")
        return str(value) if value is not None else None

    @property
    def is_align(self) -> bool:
        return "align" in self.raw

    @property
    def is_one_of(self) -> bool:
        return "one-of" in self.raw

    @property
    def type(self) -> Any:
        """A type's name, a switch (``{switch-on, cases}``), or None (``contents``, alignment)."""
        return self.raw.get("type")

    @property
    def doc(self) -> str:
        return " ".join(str(self.raw.get("doc") or "").split())

    def defines(self) -> Iterator[str]:
        """The names the field gives its reader: its id, and a choice's name."""
        for key in ("id", "choice"):
            if key in self.raw:
                yield str(self.raw[key])

    def type_names(self) -> Iterator[str]:
        """The types it names: its type, its switch's cases, its alternatives."""
        yield from _type_names(self.type)
        for alternative in (self.raw.get("one-of") or {}).values():
            yield str(alternative)

    def expressions(self) -> Iterator[tuple[tuple[Any, ...], str]]:
        """(path within the field, source) of every expression it holds, arguments included."""
        for key in EXPRESSION_KEYS:
            value = self.raw.get(key)
            if isinstance(value, str) and value != "eos":
                yield (key,), value
        if isinstance(self.raw.get("align"), str):
            yield ("align",), self.raw["align"]
        kind = self.type
        if isinstance(kind, Mapping) and isinstance(kind.get("switch-on"), str):
            yield ("type", "switch-on"), kind["switch-on"]
        cases = kind.get("cases") if isinstance(kind, Mapping) else None
        for case, target in (cases.items() if isinstance(cases, Mapping) else ()):
            for name, argument in (target.items() if isinstance(target, Mapping) else ()):
                if name not in ("type", "size-prefix", "encoding") and isinstance(argument, str):
                    yield ("type", "cases", case, name), argument  # an argument of the case's type
        valid = self.raw.get("valid")
        for clause in valid if isinstance(valid, list) else [valid]:
            if isinstance(clause, Mapping):
                for key in VALID_EXPRESSION_KEYS:
                    if isinstance(clause.get(key), str):
                        yield ("valid", key), clause[key]
        if self.is_one_of or self.is_align:  # (their keys are their own, not a type's arguments)
            return
        for key, value in self.raw.items():  # arguments of the type's parameters
            if key not in FIELD_KEYS and isinstance(value, str):
                yield (key,), value


@dataclass(frozen=True)
class TypeSpec:
    """A type (or a schema's top level): its fields, instances and parameters."""

    name: str
    source: str  # the file it is written in
    raw: Mapping[str, Any]
    fields: tuple[FieldSpec, ...]

    @property
    def instances(self) -> Mapping[str, Any]:
        found = self.raw.get("instances") or {}
        return found if isinstance(found, Mapping) else {}

    @property
    def params(self) -> Mapping[str, Any]:
        found = self.raw.get("params") or {}
        return found if isinstance(found, Mapping) else {}

    def defines(self) -> Iterator[str]:
        """The names its fields, instances and parameters give expressions."""
        for field in self.fields:
            yield from field.defines()
        yield from (str(name) for name in self.instances)
        yield from (str(name) for name in self.params)

    def type_names(self) -> Iterator[str]:
        for field in self.fields:
            yield from field.type_names()

    def expressions(self) -> Iterator[tuple[tuple[Any, ...], str]]:
        """(path from the type, source) of every expression of its fields and instances."""
        for field in self.fields:
            for at, source in field.expressions():
                yield ("seq", field.index, *at), source
        for name, instance in self.instances.items():
            if isinstance(instance, Mapping) and isinstance(instance.get("value"), str):
                yield ("instances", name, "value"), instance["value"]


def type_spec(name: str, raw: Mapping[str, Any], source: str, where: str) -> TypeSpec:
    """The type ``name`` as written (``raw``: its ``seq``, ``instances``, ``params``...)."""
    items = raw.get("seq") or []
    if not isinstance(items, list):
        raise SchemaError(where, f"`seq` is a list of fields, not {type(items).__name__}")
    fields = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise SchemaError(where, f"seq item {i} must be a mapping")
        fields.append(FieldSpec(i, item))
    return TypeSpec(name, source, raw, tuple(fields))


def _type_names(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for case in (value.get("cases") or {}).values():
            yield from _type_names(case.get("type") if isinstance(case, Mapping) else case)
