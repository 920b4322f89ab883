"""The schema expression language: a small, safe subset of Python expressions.

Schemas and mapping tables compute sizes, counts, conditions and values with expressions
such as ``model.n_embd * 4`` or ``[past] if past > 0 else []``.  An expression is parsed with
:mod:`ast`, every node is checked against a whitelist, and the tree is turned into a chain of
closures once, at load time.  Nothing is ever passed to ``eval``; a schema from a stranger can
read parsed fields and do arithmetic, nothing more:

* literals (int, float, str, bool, None), lists and tuples;
* names, resolved by the caller against parsed fields (never against Python globals);
  a name starting with ``_`` is refused, except ``_`` itself (the value being checked by
  ``valid``), ``_root`` and ``_index`` (the position of the element being parsed in a repeat);
* attribute access ``a.b`` and indexing ``a[i]`` on parsed values only (mappings and
  sequences); attributes starting with ``_`` are refused;
* arithmetic ``+ - * / // %``, bit operations, comparisons, ``and or not``, ``x if c else y``;
* calls of the whitelisted pure functions in :data:`FUNCTIONS` only.

A value may be :data:`UNKNOWN` (the schema engine uses it while computing the size of a
layout without reading it); any operation on an unknown value yields :data:`UNKNOWN`.
"""

from __future__ import annotations

import ast
import functools
import math
import operator
import re
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, cast

from .. import ggml_types
from . import vocab
from .arrays import NumberArray, RecordList, StringArray, TensorRecords

# What expressions treat as lists: lists, and the bulk arrays long repeats are read into
SEQUENCE: tuple[type[Sequence[Any]], ...] = (list, tuple, NumberArray, StringArray, RecordList, TensorRecords)
SLICEABLE: tuple[type[Sequence[Any]], ...] = (*SEQUENCE, str, bytes)
INDEXABLE: tuple[type[Any], ...] = (Mapping, *SLICEABLE)
ITERABLE: tuple[type[Sequence[Any]], ...] = (*SEQUENCE, str, bytes)  # (bytes: their values, 0 to 255)


class _Unknown:
    """A value the engine has not read (see :func:`ggfmt.schema.constructs.probe_size`)."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()

Lookup = Callable[[str], Any]
Evaluator = Callable[[Lookup], Any]


class ExpressionError(Exception):
    """An expression is not part of the language, or failed while being evaluated."""


# Budgets that keep any expression, from any schema, small and quick: the largest sequence or
# string it may build (``[0] * n``), the largest integer (in bits; sizes and offsets need 64),
# and the longest expression text. The sequence budget grows with the input being read (see
# input_room): a list with an item per token of a 250,880-token vocabulary is as legitimate as
# the file holding it, and costs what reading that file costs.
MAX_SEQUENCE = 1 << 16
MAX_INT_BITS = 256
MAX_SOURCE = 4096

_ROOM: ContextVar[int] = ContextVar("ggfmt_sequence_room", default=MAX_SEQUENCE)


@contextmanager
def input_room(nbytes: int) -> Iterator[None]:
    """Inside, an expression may build sequences and strings as long as the input of ``nbytes``
    bytes it reads (an item takes at least a byte of it), and never less than MAX_SEQUENCE."""
    token = _ROOM.set(max(MAX_SEQUENCE, nbytes))
    try:
        yield
    finally:
        _ROOM.reset(token)


def sequence_room() -> int:
    """The longest sequence or string an expression may build here."""
    return _ROOM.get()


_SMALL = frozenset((bool, float, type(None)))


def _bounded(value: Any) -> Any:
    """``value``, unless it is past the budgets above."""
    kind = type(value)
    if kind in _SMALL:
        return value
    if kind is int:
        if value.bit_length() > MAX_INT_BITS:
            raise ValueError(f"an integer of more than {MAX_INT_BITS} bits")
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ValueError(f"an integer of more than {MAX_INT_BITS} bits")
    if isinstance(value, list | str | bytes | tuple) and len(value) > (room := sequence_room()):
        raise ValueError(f"a sequence of more than {room} items")
    return value


def _product(values: Sequence[Any]) -> Any:
    result = 1
    for v in values:
        if v is UNKNOWN:
            return UNKNOWN
        result = _bounded(result * v)
    return result


def _sum(values: Sequence[Any], start: Any = 0) -> Any:
    # Step by step within the budget: sum() of lists would concatenate without bound.
    result = start
    for v in values:
        if v is UNKNOWN:
            return UNKNOWN
        if isinstance(result, list | str) and isinstance(v, list | str) and \
                len(result) + len(v) > (room := sequence_room()):
            raise ValueError(f"a sequence of more than {room} items")
        result = _bounded(result + v)
    return result


def _find(items: Sequence[Any], path: str, wanted: Any) -> Any:
    """The first item of ``items`` whose field at the dotted ``path`` equals ``wanted``, else None:
    ``find(metadata, 'key', 'general.alignment')``."""
    if not isinstance(items, SEQUENCE) or not isinstance(path, str):
        raise TypeError("find(items, 'field.path', value) takes a list and a dotted field path")
    names = path.split(".")
    if any(not n or n.startswith("_") for n in names):
        raise ValueError(f"find: {path!r} is not a field path")
    if isinstance(items, RecordList) and len(names) == 1 and items.has_columns(names[0]):
        for index, (value,) in enumerate(items.columns(names[0])):  # the one field, not the whole records
            if value == wanted:
                return items[index]
        return None
    for item in items:
        value = item
        for name in names:
            value = value.get(name) if isinstance(value, Mapping) else None
        if value == wanted:
            return item
    return None


def context_lookup(context: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> Callable[[str], Any]:
    """Resolve expression names as a parse sees them: ``extra``, then the current struct's fields,
    then its parents' (each struct's context holds its parent as ``_``), to the root."""

    def lookup(name: str) -> Any:
        if extra is not None and name in extra:
            return extra[name]
        if name == "_root":
            return context.get("_root", context)
        ctx: Mapping[str, Any] | None = context
        while ctx is not None:
            if name in ctx:
                return ctx[name]
            parent = ctx.get("_")
            ctx = parent if isinstance(parent, Mapping) else None
        raise ExpressionError(f"unknown name {name!r}")

    return lookup


def _ggml_int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"a ggml type id is an integer, not {type(value).__name__}")
    return value


def _ggml_type_name(t: Any) -> str:
    return ggml_types.type_name(_ggml_int(t))


def _ggml_block_size(t: Any) -> int:
    return ggml_types.block_size(_ggml_int(t))


def _ggml_type_size(t: Any) -> int:
    return ggml_types.type_size(_ggml_int(t))


def _ggml_legacy(t: Any) -> bool:
    return _ggml_int(t) in ggml_types.LEGACY_TYPES


def _legacy_ggml_type(era: Any, word: Any) -> int:
    if era not in (1, 2, 3):
        raise ValueError(f"legacy_ggml_type(era, word): era is 1, 2 or 3, not {era!r}")
    return ggml_types.legacy_type(era, _ggml_int(word))


def _ggml_nbytes(t: Any, ne: Any) -> int:
    if not isinstance(ne, SEQUENCE):
        raise TypeError("ggml_nbytes(type, ne) takes a list of dimensions")
    for n in ne:  # (a loop, an exact type first: called for each of hundreds of thousands of tensor infos)
        if (type(n) is not int and not isinstance(n, int)) or n < 0:
            raise TypeError("ggml_nbytes(type, ne) takes a list of dimensions")
    return ggml_types.nbytes(t if type(t) is int else _ggml_int(t), ne)


def _str(value: Any) -> str:
    if isinstance(value, (*SEQUENCE, Mapping)):
        raise TypeError("str() takes a number or a string")
    return str(value)


def _affix(text: Any, affix: Any, what: str) -> tuple[str, str]:
    if not isinstance(text, str) or not isinstance(affix, str):
        raise TypeError(f"{what}(text, {what[:-4]}) takes two strings")
    return text, affix


_FORMAT_SPEC = re.compile(r"[<>^=]?[+\- ]?#?0?[0-9]{0,2}(\.[0-9]{1,2})?[bcdeEfFgGnoxX%]?")


def _format(value: Any, spec: Any) -> str:
    """``format(255, '02X')`` is 'FF': Python's format specifications, widths and precisions
    of at most two digits (a text never grows past a hundred characters this way)."""
    if not isinstance(spec, str) or not _FORMAT_SPEC.fullmatch(spec):
        raise ValueError(f"format(value, spec): {spec!r} is not a format specification such as '02X' or '.3f'")
    if not isinstance(value, int | float | str) or _too_big(value):
        raise TypeError("format(value, spec) formats a number or a string")
    return format(value, spec)


def _too_big(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS


def _replace(text: Any, old: Any, new: Any) -> Any:
    """``text`` with every ``old`` replaced by ``new``; bytes take str arguments as UTF-8. (Called
    for each token of a vocabulary: the usual case, exact types, tested first.)"""
    if not (type(old) is str and type(new) is str and old and type(text) in (str, bytes)) and (
            not all(isinstance(v, str) for v in (old, new)) or not old or not isinstance(text, str | bytes)):
        raise TypeError("replace(text, old, new) takes a text and two strings (the first not empty)")
    if isinstance(text, bytes):
        old, new = _utf8(old), _utf8(new)
    grows = len(new) - len(old)  # (a replacement no longer than what it replaces cannot pass the bound)
    length = len(text) + (text.count(old) * grows if grows > 0 else 0)
    if length > MAX_SEQUENCE and length > (room := sequence_room()):  # (never less than MAX_SEQUENCE)
        raise ValueError(f"a string of more than {room} characters")
    return text.replace(old, new)


@functools.lru_cache(maxsize=64)
def _utf8(text: str) -> bytes:
    return text.encode()


def _startswith(text: Any, prefix: Any) -> bool:
    checked, start = _affix(text, prefix, "startswith")
    return checked.startswith(start)


def _endswith(text: Any, suffix: Any) -> bool:
    checked, end = _affix(text, suffix, "endswith")
    return checked.endswith(end)


def _join(separator: Any, items: Any) -> str:
    if not isinstance(separator, str) or not isinstance(items, list | tuple) \
            or not all(isinstance(i, str) for i in items):
        raise TypeError("join(separator, items) takes a string and a list of strings")
    if len(separator) * max(len(items) - 1, 0) + sum(len(i) for i in items) > (room := sequence_room()):
        raise ValueError(f"a string of more than {room} characters")
    return separator.join(items)


def _split(text: Any, separator: Any) -> list[str]:
    """``text`` cut at every ``separator``: never more items than the text has characters, plus one."""
    if not isinstance(text, str) or not isinstance(separator, str) or not separator:
        raise TypeError("split(text, separator) takes a string and a non-empty separator")
    return text.split(separator)


def _sqrt(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError("sqrt takes a number of at least 0")
    return math.sqrt(value)


# what PEFT's rank_pattern and alpha_pattern keys may hold: a module's dotted name or its end
_MODULE_KEY = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")


def _pattern_value(patterns: Any, module: Any, default: Any) -> Any:
    """The value of the first key of ``patterns`` (PEFT's ``rank_pattern``/``alpha_pattern``) that
    is the module's dotted name or its end (``q_proj``, ``layers.0.self_attn.q_proj``), else
    ``default``, as PEFT chooses it. A key written as a regular expression is not evaluated: an
    error says so rather than a guess."""
    if not isinstance(patterns, Mapping) or not isinstance(module, str):
        raise TypeError("pattern_value(patterns, module, default) takes a mapping and a module name")
    for key, value in patterns.items():
        if not isinstance(key, str) or not _MODULE_KEY.fullmatch(key):
            raise ValueError(f"the pattern key {str(key)[:80]!r} is not a module name (ggfmt does not evaluate "
                             "regular expressions from a config)")
        if module == key or module.endswith("." + key):
            return value
    return default


def _model_tensor(name: Any, arch: Any) -> bool:
    """Whether ``name`` (``blk.3.attn_q.weight``; ``.weight`` or ``.bias`` may end it) is a tensor
    of the architecture ``arch`` by gguf-py's names."""
    if not isinstance(name, str) or not isinstance(arch, str):
        raise TypeError("model_tensor(name, arch) takes two strings")
    return ggml_types.is_model_tensor(name, arch)


def _gguf_name(name: Any, arch: Any) -> str | None:
    """The GGUF name of a Hugging Face module or tensor by gguf-py's map (its ``TensorNameMap``):
    ``gguf_name('model.layers.3.self_attn.q_proj', 'qwen2')`` is ``'blk.3.attn_q'``; None when
    gguf-py maps no such name for that architecture."""
    if not isinstance(name, str) or not isinstance(arch, str):
        raise TypeError("gguf_name(name, arch) takes a name and an architecture")
    return ggml_types.gguf_name_of(name, arch)


def _get(mapping: Any, key: Any, default: Any = None) -> Any:
    """``mapping[key]`` if the mapping has it, else ``default``: a config key that may be absent.
    A key starting with ``_`` is read from a plain JSON object only (``_name_or_path`` of a Hugging
    Face config), never from a parsed record, whose ``_`` keys are the engine's own."""
    if not isinstance(mapping, Mapping) or not isinstance(key, str) \
            or (key.startswith("_") and type(mapping) is not dict):
        raise TypeError("get(mapping, 'key', default) takes a mapping and a key")
    return mapping.get(key, default)


def _keys(mapping: Any) -> list[Any]:
    """The keys of a mapping in their order (a vocab.json's tokens): never longer than the mapping,
    which exists already, so not bounded as a built sequence is."""
    if not isinstance(mapping, Mapping):
        raise TypeError("keys(mapping) takes a mapping")
    return list(mapping)


def _range(*bounds: Any) -> list[int]:
    """``range(count)``: ``[0, 1, ..., count - 1]``, the layers of a model for a `for` group;
    ``range(start, stop)``: ``[start, ..., stop - 1]``, a vocabulary's ids past its first."""
    return list(counting(*bounds))


def counting(*bounds: Any) -> range:
    """The numbers ``range(count)`` or ``range(start, stop)`` lists, checked as it checks them."""
    if not 1 <= len(bounds) <= 2 or any(isinstance(b, bool) or not isinstance(b, int) for b in bounds):
        raise TypeError("range(count) or range(start, stop) takes integers")
    start, stop = (0, bounds[0]) if len(bounds) == 1 else bounds
    if stop - start > (room := sequence_room()):
        raise ValueError(f"a sequence of more than {room} items")
    return range(start, max(stop, start))


def _mapping(keys: list[Any], values: list[Any]) -> dict[str, Any]:
    if not all(isinstance(k, str) for k in keys):
        raise TypeError("the keys of a mapping are strings")
    return dict(zip(keys, values, strict=True))


def _merge(*mappings: Any) -> dict[str, Any]:
    """One mapping of all the given ones' keys, a later one's value winning (a config with defaults
    under it, fields set over it)."""
    if not all(isinstance(m, Mapping) for m in mappings):
        raise TypeError("merge(mapping, ...) takes mappings")
    merged: dict[str, Any] = {}
    for mapping in mappings:
        merged.update(mapping)
    return merged


def _ord(char: Any) -> int:
    """The code point of a one-character string (a byte's value: ``b[0]``)."""
    if not isinstance(char, str) or len(char) != 1:
        raise TypeError("ord(char) takes one character")
    return ord(char)


def _chr(code: Any) -> str:
    """The character of a code point, 0 to 0x10FFFF."""
    if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 0x10FFFF:
        raise TypeError("chr(code) takes a code point from 0 to 0x10FFFF")
    return chr(code)


def _f32_from_bits(bits: Any) -> float:
    """The f32 whose bit pattern is the u32 ``bits`` (a value a header stored as an integer word)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 0 <= bits < 1 << 32:
        raise TypeError("f32_from_bits(bits) takes a u32")
    value: float = struct.unpack("<f", struct.pack("<I", bits))[0]
    return value


def _lookup(items: Any) -> dict[Any, int]:
    """Each item of ``items`` to the index where it first stands: a dict built once, so that
    looking a token up is not a walk of the vocabulary (``get(lookup(tokens), '<|endoftext|>')``)."""
    if not isinstance(items, ITERABLE):
        raise TypeError("lookup(items) takes a list")
    found: dict[Any, int] = {}
    for i, item in enumerate(items):
        if not isinstance(item, str | bytes | int) or isinstance(item, bool):
            raise TypeError(f"lookup(items): item {i} is a {type(item).__name__}, not text or a number")
        found.setdefault(item, i)
    return found


def _pick(mapping: Any, names: Any) -> dict[str, Any]:
    """The entries of ``mapping`` whose keys are in ``names``, in the order of ``names``."""
    if not isinstance(mapping, Mapping) or not isinstance(names, list | tuple):
        raise TypeError("pick(mapping, names) takes a mapping and a list of keys")
    return {n: mapping[n] for n in names if n in mapping}


def _type_of(value: Any) -> str:
    """``'int'``, ``'float'``, ``'str'``, ``'bool'``, ``'list'``, ``'dict'`` or ``'none'``: what a
    value from a JSON config is, so that a check can say a number must be an integer."""
    for kind, types in (("bool", bool), ("int", int), ("float", float), ("str", str), ("list", SEQUENCE),
                        ("dict", Mapping)):
        if isinstance(value, types):
            return kind
    return "none" if value is None else type(value).__name__


def shown(value: Any, limit: int = 120) -> str:
    """A short rendering of a value for a one-line message: huge integers by their size, long
    text and lists cut at ``limit`` characters."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "find": _find,
    "type_of": _type_of,
    "get": _get,
    "keys": _keys,
    "merge": _merge,
    "pick": _pick,
    "range": _range,
    "str": _str,
    "join": _join,
    "model_tensor": _model_tensor,
    "gguf_name": _gguf_name,
    "split": _split,
    "sqrt": _sqrt,
    "pattern_value": _pattern_value,
    "startswith": _startswith,
    "format": _format,
    "replace": _replace,
    "endswith": _endswith,
    # the ggml type registry (gguf-py's table): names, elements and bytes per block, tensor bytes
    "ggml_type_name": _ggml_type_name,
    "ggml_block_size": _ggml_block_size,
    "ggml_type_size": _ggml_type_size,
    "ggml_nbytes": _ggml_nbytes,
    # 2023 block layouts ggml has changed since (ggfmt's ids, see ggml_types.LEGACY_TYPES)
    "ggml_legacy": _ggml_legacy,
    "legacy_ggml_type": _legacy_ggml_type,
    # bytes and characters
    "ord": _ord,
    "chr": _chr,
    "f32_from_bits": _f32_from_bits,
    "lookup": _lookup,
    # vocabularies as today's tokenizers want them (schema/vocab.py)
    "byte_level": vocab.byte_level,
    "byte_level_from_chars": vocab.byte_level_from_chars,
    "decode": vocab.decode,
    "bpe_merges": vocab.bpe_merges,
    "index_of": vocab.index_of,
    "len": len,
    "prod": _product,
    "sum": _sum,
    "min": min,
    "max": max,
    "abs": abs,
    "int": int,
    "ceil": math.ceil,
}

_LOOKUPS = (_get, _find)
# functions whose results are bounded by the functions themselves (a length, a value from ggml's
# table of types): no second check of them
SELF_BOUNDED = (_replace, len, _ggml_type_size, _ggml_block_size, _ggml_legacy)

_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
    ast.BitXor: operator.xor,
    ast.LShift: operator.lshift,
    ast.RShift: operator.rshift,
}
_UNARYOPS: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Not: operator.not_,
    ast.Invert: operator.invert,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_ALLOWED_UNDERSCORE_NAMES = {"_", "_root", "_index"}  # _index: the element's position in a repeat
COMPILE_AFTER = 8  # evaluations after which an expression runs as Python (see Expression._compile_python)


class _Binding:
    """``name := value``, handed up the lookups of an evaluation to the frame of its local names."""

    __slots__ = ("name", "value")

    def __init__(self, name: str, value: Any) -> None:
        self.name = name
        self.value = value


def _with_locals(body: Evaluator, assigned: frozenset[str], source: str) -> Evaluator:
    """``body`` evaluated with a frame for its local names (``:=``), one per evaluation, as in
    Python: a comprehension's ``:=`` gives the name to the whole expression."""
    def run(lookup: Lookup) -> Any:
        frame: dict[str, Any] = {}

        def scoped(name: Any) -> Any:
            if isinstance(name, _Binding):
                frame[name.name] = name.value
                return name.value
            if name in assigned:
                if name in frame:
                    return frame[name]
                raise ExpressionError(f"expression {source!r}: {name!r} is read before `{name} := ...` gives it "
                                      "a value")
            return lookup(name)

        return body(scoped)

    return run


def _comprehension_variables(tree: ast.AST) -> set[str]:
    return {t.id for n in ast.walk(tree) if isinstance(n, ast.comprehension) for t in [n.target]
            if isinstance(t, ast.Name)}


class Expression:
    """A compiled expression: ``Expression("n_embd * 4")(lookup)``."""

    __slots__ = ("_assigned", "_calls", "_fn", "_known", "_locals", "_tree", "names", "source")

    def __init__(self, source: str | int | float | bool | list[Any] | None, known: bool = False) -> None:
        """``known``: the values it reads are never :data:`UNKNOWN` (a conversion's, read from a parsed
        document, never from a size probe): written as Python, its comparisons and choices are
        Python's own operators."""
        self._known = known
        if isinstance(source, list):
            # A YAML list of expressions: [model.n_embd, model.n_vocab]
            text = "[" + ", ".join(item if isinstance(item, str) else repr(item) for item in source) + "]"
        else:
            text = source if isinstance(source, str) else repr(source)
        self.source = text
        if len(text) > MAX_SOURCE:
            raise ExpressionError(f"expression {text[:40]!r}... is longer than {MAX_SOURCE} characters")
        try:
            tree = ast.parse(text.strip(), mode="eval")
            self.names: set[str] = set()
            self._locals: list[str] = []  # the variables of the comprehensions being compiled
            # local names: `(w := len(t)) * w` gives w a value the rest of the expression reads
            self._assigned = {n.target.id for n in ast.walk(tree) if isinstance(n, ast.NamedExpr)
                              and isinstance(n.target, ast.Name)}
            for name in sorted(self._assigned & _comprehension_variables(tree)):
                raise ExpressionError(f"expression {text!r}: giving {name!r} a value (a local name is a plain "
                                      "name that no comprehension uses as its variable) is not allowed")
            body = self._compile(tree.body)
            self._fn = _with_locals(body, frozenset(self._assigned), text) if self._assigned else body
            self._tree: ast.expr | None = tree.body
            # a comprehension may run over a whole vocabulary: Python from its first evaluation
            comprehension = any(isinstance(n, ast.ListComp) for n in ast.walk(tree))
            self._calls = COMPILE_AFTER - 1 if comprehension else 0
        except SyntaxError as e:
            raise ExpressionError(f"expression {text!r} is not valid: {e.msg}") from None
        except (RecursionError, MemoryError):
            raise ExpressionError(f"expression {text[:40]!r}... is nested too deeply") from None

    def __call__(self, lookup: Lookup) -> Any:
        if self._tree is not None:
            self._calls += 1
            if self._calls == COMPILE_AFTER:
                self._compile_python()
        try:
            return self._fn(lookup)  # what it computed is bounded step by step; what it looked up is the file's
        except ExpressionError:
            raise
        except RecursionError:
            raise ExpressionError(f"expression {self.source!r} is nested too deeply") from None
        except (ArithmeticError, TypeError, ValueError, IndexError, KeyError) as e:
            raise ExpressionError(f"expression {self.source!r} failed: {type(e).__name__}: {e}") from None

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"

    def _compile_python(self) -> None:
        """From now on, run the expression as one Python function (:mod:`.exprgen`): written once
        an expression has been evaluated a few times, so that a schema's many expressions that
        run once each cost nothing at start-up."""
        from .exprgen import compile_function

        assert self._tree is not None
        try:
            fn = compile_function(self._tree, self.source, plain=self._known)
        except (RecursionError, MemoryError, SyntaxError):  # too deep for Python's compiler: as it was
            fn = None
        if fn is not None:
            self._fn = fn
        self._tree = None

    # -- compilation -------------------------------------------------------------------
    def _compile_slice(self, value: ast.expr, part: ast.Slice) -> Evaluator:
        """``name[:-6]``, ``items[1:3]``, ``text[::-1]``: a slice of a string or a list (never
        longer than what is sliced)."""
        base = self._compile(value)
        bounds = [self._compile(b) if b is not None else (lambda lookup: None)
                  for b in (part.lower, part.upper, part.step)]
        return lambda lookup: _slice(base(lookup), [b(lookup) for b in bounds])

    def _compile_comprehension(self, node: ast.ListComp) -> Evaluator:
        """``[f(x) for x in items if c(x)]``: one ``for`` (so the result is never longer than a
        list that exists already), a plain variable, and a budget on what the items add up to."""
        if len(node.generators) != 1:
            raise self._refuse(node, "a comprehension with more than one `for`")
        generator = node.generators[0]
        target = generator.target
        if generator.is_async or not isinstance(target, ast.Name) or target.id.startswith("_"):
            raise self._refuse(node, "a comprehension variable that is not a plain name")
        items = self._compile(generator.iter)
        self._locals.append(target.id)
        try:
            element = self._compile(node.elt)
            conditions = [self._compile(c) for c in generator.ifs]
        finally:
            self._locals.pop()
        return lambda lookup: _comprehension(items(lookup), target.id, element, conditions, lookup)

    def _refuse(self, node: ast.AST, what: str) -> ExpressionError:
        return ExpressionError(f"expression {self.source!r}: {what} is not allowed")

    def _compile(self, node: ast.expr) -> Evaluator:
        if isinstance(node, ast.Constant):
            value = node.value
            # bytes: a token or a magic compared as the file holds it (b'<|endoftext|>')
            if not isinstance(value, int | float | str | bool | bytes) and value is not None:
                raise self._refuse(node, f"the constant {value!r}")
            return lambda lookup: value
        if isinstance(node, ast.Name):
            name = node.id
            if name.startswith("_") and name not in _ALLOWED_UNDERSCORE_NAMES:
                raise self._refuse(node, f"the name {name!r}")
            if name in ("True", "False", "None"):
                constant = {"True": True, "False": False, "None": None}[name]
                return lambda lookup: constant
            if name not in self._locals and name not in self._assigned:
                self.names.add(name)
            return lambda lookup: lookup(name)
        if isinstance(node, ast.NamedExpr):
            local = node.target.id
            if local.startswith("_") or local in self._locals:
                raise self._refuse(node, f"giving {local!r} a value (a local name is a plain name that no "
                                         "comprehension uses as its variable)")
            compiled = self._compile(node.value)
            # (handed up through the lookups, which pass on what is not theirs, to the frame)
            return lambda lookup: lookup(cast(str, _Binding(local, compiled(lookup))))
        if isinstance(node, ast.Attribute):
            attr = node.attr
            if attr.startswith("_"):
                raise self._refuse(node, f"the attribute {attr!r}")
            base = self._compile(node.value)
            return lambda lookup: _member(base(lookup), attr, self.source)
        if isinstance(node, ast.Subscript):
            if isinstance(node.slice, ast.Slice):
                return self._compile_slice(node.value, node.slice)
            base = self._compile(node.value)
            index = self._compile(node.slice)
            return lambda lookup: _index(base(lookup), index(lookup))
        if isinstance(node, ast.ListComp):
            return self._compile_comprehension(node)
        if isinstance(node, ast.List | ast.Tuple):
            items = [self._compile(e) for e in node.elts]
            return lambda lookup: [item(lookup) for item in items]
        if isinstance(node, ast.Dict):  # {'dtype': name}: written as it is, so never larger than its text
            if any(k is None for k in node.keys):
                raise self._refuse(node, "** in a mapping")
            keys = [self._compile(k) for k in node.keys if k is not None]
            values = [self._compile(v) for v in node.values]
            return lambda lookup: _mapping([k(lookup) for k in keys], [v(lookup) for v in values])
        if isinstance(node, ast.BinOp):
            binop = _BINOPS.get(type(node.op))
            if binop is None:
                raise self._refuse(node, f"the operator {type(node.op).__name__}")
            left, right = self._compile(node.left), self._compile(node.right)
            return lambda lookup: _binop(binop, left(lookup), right(lookup))
        if isinstance(node, ast.UnaryOp):
            unop = _UNARYOPS[type(node.op)]
            operand = self._compile(node.operand)
            return lambda lookup: _unknown_or(unop, operand(lookup))
        if isinstance(node, ast.BoolOp):
            values = [self._compile(v) for v in node.values]
            is_and = isinstance(node.op, ast.And)
            return lambda lookup: _boolop(is_and, values, lookup)
        if isinstance(node, ast.Compare):
            first = self._compile(node.left)
            ops = [_CMPOPS[type(op)] for op in node.ops]
            rest = [self._compile(c) for c in node.comparators]
            return lambda lookup: _compare(first(lookup), ops, rest, lookup)
        if isinstance(node, ast.IfExp):
            test, body, orelse = self._compile(node.test), self._compile(node.body), self._compile(node.orelse)
            return lambda lookup: _ifexp(test(lookup), body, orelse, lookup)
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                func = ast.unparse(node.func)
                raise self._refuse(node, f"calling {func!r} (only {', '.join(sorted(FUNCTIONS))} may be called)")
            if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                raise self._refuse(node, "keyword or star arguments")
            fn = FUNCTIONS[node.func.id]
            args = [self._compile(a) for a in node.args]
            if fn in _LOOKUPS:  # what they return was read, not computed: the file's, like a[i]
                return lambda lookup: _call_lookup(fn, [a(lookup) for a in args])
            return lambda lookup: _call(fn, [a(lookup) for a in args])
        raise self._refuse(node, f"the construct {type(node).__name__}")


MAX_COMPREHENSION = 1 << 24  # items plus the lengths of the sequences a comprehension makes


def _comprehension(items: Any, name: str, element: Evaluator, conditions: list[Evaluator], lookup: Lookup) -> Any:
    if items is UNKNOWN:
        return UNKNOWN
    if not isinstance(items, ITERABLE):
        raise TypeError(f"a comprehension goes over a list, not {type(items).__name__}")
    result = []
    spent = 0
    budget = max(MAX_COMPREHENSION, 4 * sequence_room())
    for item in items:
        def inner(n: str, item: Any = item) -> Any:
            return item if n == name else lookup(n)

        if not all(c(inner) for c in conditions):
            continue
        value = element(inner)
        if value is UNKNOWN:
            return UNKNOWN
        spent += 1 + (len(value) if isinstance(value, list | tuple | str | bytes) else 0)
        if spent > budget:
            raise ValueError(f"a comprehension making more than {budget} items and characters")
        result.append(value)
    return result


def _member(value: Any, attr: str, source: str) -> Any:
    if value is UNKNOWN:
        return UNKNOWN
    if isinstance(value, Mapping):
        if attr in value:
            return value[attr]
        raise ExpressionError(f"expression {source!r}: no field {attr!r} (has: {_public_keys(value)})")
    raise ExpressionError(f"expression {source!r}: {type(value).__name__} value has no field {attr!r}")


def _public_keys(value: Mapping[str, Any]) -> str:
    return ", ".join(k for k in value if isinstance(k, str) and not k.startswith("_"))


def _index(base: Any, index: Any) -> Any:
    if base is UNKNOWN or index is UNKNOWN:
        return UNKNOWN
    if isinstance(index, str) and index.startswith("_"):
        raise ValueError(f"the name {index!r} is not allowed")  # what `a._b` refuses, `a['_b']` refuses too
    if isinstance(base, INDEXABLE):
        return base[index]
    raise TypeError(f"{type(base).__name__} cannot be indexed")


def _slice(base: Any, bounds: list[Any]) -> Any:
    if base is UNKNOWN or UNKNOWN in bounds:
        return UNKNOWN
    if not all(b is None or (isinstance(b, int) and not isinstance(b, bool)) for b in bounds):
        raise TypeError("slice bounds are integers")
    if not isinstance(base, SLICEABLE):
        raise TypeError(f"{type(base).__name__} cannot be sliced")
    return base[slice(*bounds)]


def _binop(fn: Callable[[Any, Any], Any], left: Any, right: Any) -> Any:
    if left is UNKNOWN or right is UNKNOWN:
        return UNKNOWN
    if fn is operator.mul and (isinstance(left, list | str) or isinstance(right, list | str)):
        count = right if isinstance(left, list | str) else left
        seq = left if isinstance(left, list | str) else right
        if isinstance(count, int) and count * len(seq) > (room := sequence_room()):
            raise ValueError(f"sequence of more than {room} items")
    if fn is operator.lshift and isinstance(right, int) and right > 64:
        raise ValueError("shift by more than 64 bits")
    if fn is operator.mod and isinstance(left, str | bytes):
        raise ValueError("string formatting with % is not part of the language")
    if fn is operator.add and isinstance(left, list | str) and isinstance(right, list | str) \
            and len(left) + len(right) > (room := sequence_room()):
        raise ValueError(f"a sequence of more than {room} items")
    return _bounded(fn(left, right))


def _unknown_or(fn: Callable[[Any], Any], value: Any) -> Any:
    return UNKNOWN if value is UNKNOWN else _bounded(fn(value))


def _boolop(is_and: bool, values: list[Evaluator], lookup: Lookup) -> Any:
    result: Any = is_and
    for v in values:
        result = v(lookup)
        if result is UNKNOWN:
            return UNKNOWN
        if is_and and not result:
            return result
        if not is_and and result:
            return result
    return result


def _compare(first: Any, ops: list[Callable[[Any, Any], Any]], rest: list[Evaluator], lookup: Lookup) -> Any:
    left = first
    for op, right_fn in zip(ops, rest, strict=True):
        right = right_fn(lookup)
        if left is UNKNOWN or right is UNKNOWN:
            return UNKNOWN
        if not op(left, right):
            return False
        left = right
    return True


def _ifexp(test: Any, body: Evaluator, orelse: Evaluator, lookup: Lookup) -> Any:
    if test is UNKNOWN:
        return UNKNOWN
    return body(lookup) if test else orelse(lookup)


def _call_lookup(fn: Callable[..., Any], args: list[Any]) -> Any:
    if any(a is UNKNOWN for a in args):
        return UNKNOWN
    return fn(*args)


def _call(fn: Callable[..., Any], args: list[Any]) -> Any:
    if any(a is UNKNOWN for a in args):
        return UNKNOWN
    return _bounded(fn(*args))

