"""An expression as Python source: the tree :class:`~.expr.Expression` accepted, written once as
one Python function instead of being walked node by node on every evaluation.

Every operation is the evaluator's own helper (``_binop`` with its bounds, ``_member``,
``_index``, the functions, the comprehension budget), so what a compiled expression computes,
refuses and says is what the evaluator does; only the walking is gone. Constants, names and
attributes from the schema never become source text: they are values in the function's
namespace (``K0``, ``K1`` ...), and names are looked up as the evaluator looks them up. An
expression whose tree uses something this module does not write (a chained comparison) keeps
the evaluator.

Values a size probe has not read (``UNKNOWN``) flow through as in the evaluator: ``and``, ``or``,
``if``-``else`` and comparisons give UNKNOWN when what decides them is unknown. The generated
readers of records in bulk (:mod:`.codegen`), which never see UNKNOWN, ask for plain Python
operators instead (``plain=True``).
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Iterator
from typing import Any

from . import expr as language
from .arrays import RecordList


class Unsupported(Exception):
    """A node this module does not write as Python."""


def compare(op: Callable[[Any, Any], Any], left: Any, right: Any) -> Any:
    if left is language.UNKNOWN or right is language.UNKNOWN:
        return language.UNKNOWN
    return True if op(left, right) else False  # noqa: SIM210 (the evaluator's True/False)


class _UnknownItem(Exception):
    """An item of a comprehension is UNKNOWN: so is the whole list."""


_SIZED = frozenset((list, tuple, str, bytes))


def comprehension(items: Any, make: Callable[[Any, Callable[[Any], Any]], list[Any]]) -> Any:
    """``make(items, spend)``: the comprehension itself, written as Python (``[spend(element) for x
    in items if condition]``), within the evaluator's budget: ``spend`` counts each item made (and
    the length of a sequence) and stops the list once past it, as the evaluator does."""
    if items is language.UNKNOWN:
        return language.UNKNOWN
    if not isinstance(items, language.ITERABLE) and type(items) is not _Rows and type(items) is not range:
        raise TypeError(f"a comprehension goes over a list, not {type(items).__name__}")
    budget = max(language.MAX_COMPREHENSION, 4 * language.sequence_room())
    spent = 0
    unknown = language.UNKNOWN

    def spend(value: Any) -> Any:
        nonlocal spent
        spent += 1 + len(value) if type(value) in _SIZED else 1
        if spent > budget:
            raise ValueError(f"a comprehension making more than {budget} items and characters")
        if value is unknown:
            raise _UnknownItem
        return value

    try:
        return make(items, spend)
    except _UnknownItem:
        return language.UNKNOWN


def field_at(base: Any, index: Any, attr: str, source: str) -> Any:
    """``base[index].attr``: of a list of records read in bulk, read from the field's column."""
    if type(base) is RecordList and type(index) is int:
        column = base.kept.get(attr)  # (kept once read often: indexed here, no call)
        if column is not None and 0 <= index < len(column):
            return column[index]
        if attr in base.reader.codec.fields:
            return base.field(index, attr)
    return language._member(language._index(base, index), attr, source)


def fields_of(items: Any, names: tuple[str, ...], source: str) -> Any:
    """The fields ``names`` of each record of ``items`` (a tuple each): of a list read in bulk,
    from its columns, without making the records; else each record's, as ``member`` reads them."""
    if items is language.UNKNOWN or not isinstance(items, language.ITERABLE):
        return items  # (what comprehension() refuses)
    if type(items) is RecordList and items.has_columns(*names):
        return _Rows(items.columns(*names))
    return _Rows(tuple(language._member(item, name, source) for name in names) for item in items)


class _Rows:
    """The fields of each record of a list, as :func:`fields_of` reads them."""

    __slots__ = ("rows",)

    def __init__(self, rows: Iterator[tuple[Any, ...]]) -> None:
        self.rows = rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return self.rows


def _attributes_only(name: str, trees: list[ast.expr]) -> list[str]:
    """The attributes read of ``name`` when every use of it in ``trees`` is ``name.attr`` (and no
    comprehension inside binds it again); else an empty list."""
    attrs: list[str] = []

    def visit(node: ast.AST) -> bool:
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == name:
            if node.attr not in attrs:
                attrs.append(node.attr)
            return True
        if isinstance(node, ast.Name) and node.id == name:
            return False  # the record itself is used
        if isinstance(node, ast.comprehension) and any(isinstance(t, ast.Name) and t.id == name
                                                       for t in ast.walk(node.target)):
            return False
        return all(visit(child) for child in ast.iter_child_nodes(node))

    return attrs if all(visit(tree) for tree in trees) else []


def _indexed_fields(variable: str, outer: dict[str, str], trees: list[ast.expr]) -> dict[str, tuple[ast.expr, str]]:
    """``L[variable].f`` in ``trees`` by its text (``vocab[i].text``), with ``L`` and ``f``: ``L`` a
    name that is neither ``variable`` nor a comprehension's (no comprehension inside ``trees``
    binds a name again)."""
    if any(isinstance(n, ast.ListComp) for tree in trees for n in ast.walk(tree)):
        return {}
    found: dict[str, tuple[ast.expr, str]] = {}
    for tree in trees:
        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Subscript) \
                    and isinstance(n.value.value, ast.Name) and isinstance(n.value.slice, ast.Name) \
                    and n.value.slice.id == variable and n.value.value.id != variable \
                    and n.value.value.id not in outer:
                found[f"{n.value.value.id}[{variable}].{n.attr}"] = (n.value.value, n.attr)
    return found


def column_of(base: Callable[[], Any], attr: str, source: str) -> Callable[[Any], Any]:
    """``lambda i: L[i].attr`` where ``base()`` gives ``L``: of a list read in bulk, its column's
    own item reader (an int index, as range() gives, reads what :func:`field_at` reads: a negative
    one from the end, one past the end an IndexError). A ``base`` that fails fails when an item is
    first read, as it would without this."""
    try:
        items = base()
    except Exception:  # (raised again where the expression reads an item)
        return lambda index: field_at(base(), index, attr, source)
    if type(items) is RecordList and attr in items.reader.codec.fields:
        return items.column(attr).__getitem__
    return lambda index: field_at(items, index, attr, source)


def range_of(count: Any) -> Any:
    """What ``range(count)`` lists, as a comprehension goes over it: counted, not held."""
    return count if count is language.UNKNOWN else language.counting(count)


def remembering(lookup: Callable[[str], Any]) -> Callable[[str], Any]:
    """``lookup``, each name's value kept once found."""
    found: dict[str, Any] = {}

    def remembered(name: str) -> Any:
        if name in found:
            return found[name]
        value = found[name] = lookup(name)
        return value

    return remembered


def remember(memo: dict[int, Any], argument: int, value: Any) -> Any:
    """``value``, the result of a function of the language for ``argument``, kept in ``memo`` when
    it is a number or a short text (every function gives the same result for the same arguments),
    up to :data:`MEMO_VALUES` values."""
    if type(value) in _MEMO_KINDS and len(memo) < MEMO_VALUES and (type(value) is not str or len(value) <= 64):
        memo[argument] = value
    return value


MEMO_VALUES = 4096  # values a memo keeps (of a ggml type id: a few dozen)
_MEMO_KINDS = frozenset((int, bool, float, str))


# what the generated source calls, by the names it calls them
HELPERS: dict[str, Any] = {
    "UNKNOWN": language.UNKNOWN, "member": language._member, "index_of": language._index,
    "slice_of": language._slice, "binop": language._binop, "unop": language._unknown_or, "call": language._call,
    "call_lookup": language._call_lookup, "mapping": language._mapping, "compare": compare,
    "comprehension": comprehension, "field_at": field_at, "fields_of": fields_of, "column_of": column_of,
    "remembering": remembering, "range_of": range_of, "bounded": language._bounded, "remember": remember,
}

# The operators whose result, of two integers, is no longer than the longer of them by more than a
# bit: written as Python's own when both sides are integers (a budget has nothing to stop)
_INT_OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mod: "%", ast.FloorDiv: "//", ast.BitAnd: "&",
                  ast.BitOr: "|", ast.BitXor: "^"}
# functions that return an integer (or fail), whatever their arguments
_INT_FUNCTIONS = frozenset(("ggml_type_size", "ggml_block_size", "ggml_nbytes", "len"))

# Python's spelling of each comparison the language allows
COMPARISONS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.In: "in",
               ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}
_OPERATORS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
              ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
              ast.NotIn: lambda a, b: a not in b, ast.Is: operator.is_, ast.IsNot: operator.is_not}


class PythonSource:
    """Writes expression trees as Python source.

    ``constant(value)`` names a value in the namespace the source runs in; ``name(identifier)``
    gives the source that reads a name of the language (``lookup(K3)``, a local variable);
    ``fresh(prefix)`` a new identifier. ``plain``: the values are never UNKNOWN.
    """

    def __init__(self, constant: Callable[[Any], str], name: Callable[[str], str], fresh: Callable[[str], str],
                 plain: bool = False, source: str | None = None,
                 once: Callable[[ast.expr], str | None] | None = None, ints: frozenset[str] = frozenset(),
                 int_lists: frozenset[str] = frozenset(), typed: bool = False) -> None:
        self.constant = constant
        self.name = name
        self.fresh = fresh
        self.plain = plain
        self.source = source  # the whole expression, as errors name it (else each node's own text)
        # the source of a part whose value is known before the expression runs (evaluated once
        # for many runs), or None: asked of each part, the largest first
        self.once = once
        self.ints = ints  # the names that hold an integer, whatever the input (a u32 field)
        self.int_lists = int_lists  # and those that hold a list of integers
        # whether an operation on values of unknown kinds tests for integers first (in code of
        # statements: an assignment expression may not stand in a comprehension's iterable)
        self.typed = typed
        self._in_comprehension = False

    def _source(self, node: ast.expr) -> str:
        return self.constant(self.source if self.source is not None else ast.unparse(node))

    def write(self, node: ast.expr, variables: dict[str, str] | None = None) -> str:
        """``node`` as Python; ``variables``: the comprehension variables in reach, by their Python names."""
        variables = variables or {}

        def sub(n: ast.expr) -> str:
            return self.write(n, variables)

        if self.once is not None and not variables and not self._in_comprehension:
            known = self.once(node)
            if known is not None:
                return known
        if isinstance(node, ast.Constant):
            return self.constant(node.value)
        if isinstance(node, ast.Name):
            if node.id in ("True", "False", "None"):
                return node.id
            if node.id in variables:
                return variables[node.id]
            return self.name(node.id)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and f"{node.value.id}.{node.attr}" in variables:  # a field of a comprehension's record
            return variables[f"{node.value.id}.{node.attr}"]
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Subscript) \
                and isinstance(node.value.value, ast.Name) and isinstance(node.value.slice, ast.Name) \
                and f"{node.value.value.id}[{node.value.slice.id}].{node.attr}" in variables:  # (see _indexed_fields)
            return f"{variables[f'{node.value.value.id}[{node.value.slice.id}].{node.attr}']}" \
                   f"({variables[node.value.slice.id]})"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Subscript) \
                and not isinstance(node.value.slice, ast.Slice):  # vocab[i].text: a column's item
            return f"field_at({sub(node.value.value)}, {sub(node.value.slice)}, {self.constant(node.attr)}, " \
                   f"{self._source(node)})"
        if isinstance(node, ast.Attribute):
            return f"member({sub(node.value)}, {self.constant(node.attr)}, {self._source(node)})"
        if isinstance(node, ast.Subscript):
            if isinstance(node.slice, ast.Slice):
                bounds = ", ".join(sub(b) if b is not None else "None"
                                   for b in (node.slice.lower, node.slice.upper, node.slice.step))
                return f"slice_of({sub(node.value)}, [{bounds}])"
            if self.plain and self._integers(node.value) and self.integer(node.slice):
                return f"{sub(node.value)}[{sub(node.slice)}]"  # (a list of integers: no name to refuse)
            return f"index_of({sub(node.value)}, {sub(node.slice)})"
        if isinstance(node, ast.List | ast.Tuple):
            return "[" + ", ".join(sub(e) for e in node.elts) + "]"
        if isinstance(node, ast.Dict):
            keys = ", ".join(sub(k) for k in node.keys if k is not None)
            return f"mapping([{keys}], [{', '.join(sub(v) for v in node.values)}])"
        if isinstance(node, ast.BinOp):
            spelled = _INT_OPERATORS.get(type(node.op)) if self.plain else None
            if spelled is not None and self.integer(node.left) and self.integer(node.right):
                return f"({sub(node.left)} {spelled} {sub(node.right)})"
            if spelled is not None and self.typed and not self._in_comprehension:
                # integers at run time (a field of a list, a value read once per scan): Python's own
                left, right = self.fresh("left"), self.fresh("right")
                general = f"binop({self.constant(language._BINOPS[type(node.op)])}, {left}, {right})"
                return f"({left} {spelled} {right} if (type({left} := {sub(node.left)}) is int) " \
                       f"& (type({right} := {sub(node.right)}) is int) else {general})"  # (& : both evaluated)
            return f"binop({self.constant(language._BINOPS[type(node.op)])}, {sub(node.left)}, {sub(node.right)})"
        if isinstance(node, ast.UnaryOp):
            if self.plain and isinstance(node.op, ast.Not):
                return f"(not {sub(node.operand)})"
            return f"unop({self.constant(language._UNARYOPS[type(node.op)])}, {sub(node.operand)})"
        if isinstance(node, ast.BoolOp):
            return self._boolean(node, sub)
        if isinstance(node, ast.Compare):
            if len(node.ops) != 1:
                raise Unsupported  # a chain: the evaluator's
            op = type(node.ops[0])
            if self.plain:
                return f"({sub(node.left)} {COMPARISONS[op]} {sub(node.comparators[0])})"
            return f"compare({self.constant(_OPERATORS[op])}, {sub(node.left)}, {sub(node.comparators[0])})"
        if isinstance(node, ast.IfExp):
            if self.plain:
                return f"({sub(node.body)} if {sub(node.test)} else {sub(node.orelse)})"
            test = self.fresh("test")
            return f"(UNKNOWN if ({test} := {sub(node.test)}) is UNKNOWN else ({sub(node.body)} if {test} " \
                   f"else {sub(node.orelse)}))"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            fn = language.FUNCTIONS[node.func.id]
            arguments = ", ".join(sub(a) for a in node.args)
            if self.plain:  # (no argument is UNKNOWN)
                called = f"{self.constant(fn)}({arguments})"
                called = called if fn in language._LOOKUPS or fn in language.SELF_BOUNDED else f"bounded({called})"
                key = self._memo_key(node.args, fn)
                if key is not None:
                    # of integer fields and lists of them (ggml_block_size(ggml_type), ggml_nbytes(ggml_type,
                    # ne)): one call per distinct argument met
                    memo = self.constant({})
                    if not key.isidentifier():  # (a tuple of the arguments: made once)
                        known = self.fresh("key")
                        key, made = known, f"({known} := {key})"
                    else:
                        made = key
                    return f"({memo}[{key}] if {made} in {memo} else remember({memo}, {key}, {called}))"
                return called
            call = "call_lookup" if fn in language._LOOKUPS else "call"
            return f"{call}({self.constant(fn)}, [{arguments}])"
        if isinstance(node, ast.ListComp):
            return self._comprehension(node, variables, sub)
        raise Unsupported

    def _memo_key(self, arguments: list[ast.expr], fn: Any) -> str | None:
        """The source of a call's memo key when its arguments are fields that hold integers or lists
        of them (a list as a tuple), else None (any other argument, or a lookup; a key made of
        several, where an assignment expression may not stand: inside a comprehension)."""
        if not arguments or fn in language._LOOKUPS:
            return None
        parts = []
        for argument in arguments:
            if not isinstance(argument, ast.Name):
                return None
            if self.integer(argument):
                parts.append(self.name(argument.id))
            elif self._integers(argument):
                parts.append(f"tuple({self.name(argument.id)})")
            else:
                return None
        if len(parts) == 1 and parts[0].isidentifier():
            return parts[0]
        if not self.typed or self._in_comprehension:
            return None
        return f"({', '.join(parts)}{',' if len(parts) == 1 else ''})"

    def integer(self, node: ast.expr) -> bool:
        """Whether ``node`` is an integer whatever the input: what Python's own operators may
        combine with no budget to keep (their results are no larger than their operands allow)."""
        if isinstance(node, ast.Constant):
            return type(node.value) is int
        if isinstance(node, ast.Name):
            return node.id in self.ints
        if isinstance(node, ast.BinOp):
            return type(node.op) in _INT_OPERATORS and self.integer(node.left) and self.integer(node.right)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return node.func.id in _INT_FUNCTIONS
        if isinstance(node, ast.Subscript) and not isinstance(node.slice, ast.Slice):
            return self._integers(node.value) and self.integer(node.slice)
        return False

    def _integers(self, node: ast.expr) -> bool:
        return isinstance(node, ast.Name) and node.id in self.int_lists

    def _comprehension(self, node: ast.ListComp, variables: dict[str, str], sub: Callable[[ast.expr], str]) -> str:
        """``comprehension(ITEMS, lambda items, spend: [spend(ELEMENT) for TARGET in items if ...])``,
        where ITEMS is the list itself; ``range_of(n)`` for ``range(n)`` (counted, not listed); or,
        when the variable is used only for its fields, ``fields_of(...)``: those fields' values,
        read from a bulk list's columns without making its records. ``L[i].f``, with ``i`` the
        variable, is read from ``L``'s column, found once (``column_of``, a default of the lambda)."""
        outer, self._in_comprehension = self._in_comprehension, True
        try:
            return self._comprehension_source(node, variables, sub)
        finally:
            self._in_comprehension = outer

    def _comprehension_source(self, node: ast.ListComp, variables: dict[str, str],
                              sub: Callable[[ast.expr], str]) -> str:
        generator = node.generators[0]
        assert isinstance(generator.target, ast.Name)
        variable, over = generator.target.id, generator.iter
        attrs = _attributes_only(variable, [node.elt, *generator.ifs])
        columns = ""
        if attrs:  # [t.score for t in vocab]
            names = {a: self.fresh("field") for a in attrs}
            inner = {**variables, **{f"{variable}.{a}": v for a, v in names.items()}}
            target = "(" + "".join(f"{v}, " for v in names.values()) + ")"
            items = f"fields_of({sub(over)}, {self.constant(tuple(attrs))}, {self._source(node)})"
        else:
            inner = {**variables, variable: self.fresh("item")}
            target = inner[variable]
            counted = isinstance(over, ast.Call) and isinstance(over.func, ast.Name) and over.func.id == "range" \
                and len(over.args) == 1 and not over.keywords
            items = f"range_of({sub(over.args[0])})" if counted else sub(over)  # type: ignore[attr-defined]
            # vocab[i].text with i the variable: the list's column, found once for all the items
            for key, (base, attr) in _indexed_fields(variable, variables, [node.elt, *generator.ifs]).items():
                inner[key] = self.fresh("column")
                source = self.constant(self.source if self.source is not None else key)  # (as _source names it)
                columns += f", {inner[key]}=column_of(lambda: {self.write(base, variables)}, " \
                           f"{self.constant(attr)}, {source})"
        listed, spend = self.fresh("items"), self.fresh("spend")
        conditions = "".join(f" if ({self.write(c, inner)})" for c in generator.ifs)  # (as the evaluator's all())
        return f"comprehension({items}, lambda {listed}, {spend}{columns}: " \
               f"[{spend}({self.write(node.elt, inner)}) for {target} in {listed}{conditions}])"

    def _boolean(self, node: ast.BoolOp, sub: Callable[[ast.expr], str]) -> str:
        values = [sub(v) for v in node.values]
        joiner = " and " if isinstance(node.op, ast.And) else " or "
        if self.plain:
            return "(" + joiner.join(values) + ")"
        # each value in turn, as the evaluator: an unknown one is the answer, a deciding one too
        decides = "not {0}" if isinstance(node.op, ast.And) else "{0}"
        text = values[-1]
        for value in reversed(values[:-1]):
            held = self.fresh("held")
            text = f"({held} if ({held} := {value}) is UNKNOWN or {decides.format(held)} else {text})"
        return text


def compile_function(tree: ast.expr, source: str, plain: bool = False) -> Callable[[Callable[[str], Any]], Any] | None:
    """``tree`` as one Python function of a lookup, or None when it uses something not written here."""
    namespace: dict[str, Any] = dict(HELPERS)
    counter = [0]

    def constant(value: Any) -> str:
        counter[0] += 1
        key = f"K{counter[0]}"
        namespace[key] = value
        return key

    def fresh(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    writer = PythonSource(constant, lambda name: f"lookup({constant(name)})", fresh, plain=plain, source=source)
    try:
        body = writer.write(tree)
    except Unsupported:
        return None
    # a name inside a comprehension is looked up once, not once per item (its value cannot change
    # while the expression runs; a name that is not found is asked for again, and fails again)
    prologue = "    lookup = remembering(lookup)\n" if any(isinstance(n, ast.ListComp) for n in ast.walk(tree)) else ""
    exec(compile(f"def evaluate(lookup):\n{prologue}    return {body}\n", "<ggfmt expression>", "exec"), namespace)
    return namespace["evaluate"]  # type: ignore[no-any-return]
