"""A record type compiled to Python source: the reader :mod:`.records` runs over a buffer.

Kaitai Struct and Construct's ``compile()`` turn a layout into a parser module; this does the
same for the record types that are read in bulk, one function per type, and one loop per list
(what a scan runs). A function reads its fields with ``struct.unpack_from`` at a position in a
``bytes`` buffer into local variables, evaluates the schema's expressions (a field read earlier
in the same record is a local variable; what a list's records read of the scopes around them,
``_root.version``, ``data_start``, ``infos[_index].offset``, once per scan; any other as Python
that calls the evaluator's own bounded operations, :mod:`.exprgen`), checks the ``valid:``
clauses, and returns the record as the general path makes it (a ``Container`` of the fields,
with the type's view tags) and the position after it.

Nothing from the schema is written into the source as text: field names, constants, structs and
expressions are values in the function's namespace, named ``K0``, ``K1`` ...; the source holds
only names this module makes. A function signals with :class:`Short` that its buffer ended (the
scan reads more of the file) and with :class:`Reject` anything else it does not decide (the
general path then reads the record, and says what is wrong with it).
"""

from __future__ import annotations

import ast
import re
import struct
from collections.abc import Callable
from typing import Any

import construct as cs

from ..errors import FormatError
from .arrays import BULK_MIN_ITEMS, ITEM_SIZES, NumberArray
from .expr import Expression, ExpressionError, context_lookup
from .exprgen import HELPERS, MEMO_VALUES, PythonSource, column_of
from .exprgen import Unsupported as NotWritten

Reader = Callable[..., tuple[Any, int]]  # (buffer, position, enclosing scope, frame) -> (value, end)

MISSING = object()


class Unsupported(Exception):
    """The construct is not one this module compiles."""


class Reject(Exception):
    """The compiled reader does not decide this record: the general path reads it."""


class Short(Exception):
    """The buffer ends before the record does."""


class Frame:
    """What one scan or one read shares: the buffer's place in the file, the bytes the file has,
    the values of expressions that are the same for every record (``_root.version``), whether
    to check, the parse's element budget, and how deep the structures are."""

    __slots__ = ("base", "budget", "check", "depth", "file_size", "hoisted", "params")

    def __init__(self, base: int, file_size: int, check: bool, budget: list[int] | None, depth: int,
                 hoisted: dict[int, Any]) -> None:
        self.base = base  # file offset of buffer position 0
        self.file_size = file_size
        self.check = check
        self.budget = budget
        self.depth = depth
        self.hoisted = hoisted
        self.params: dict[str, Any] = {}  # a list's records' parameters, when the same for all of them

    def spend(self, count: int) -> None:
        if self.budget is not None:
            self.budget[0] -= count
            if self.budget[0] < 0:
                raise Reject


class _ShortReaders(dict[str, list[Any]]):
    """struct code -> the reader of ``n`` numbers of it, by ``n`` below BULK_MIN_ITEMS (a tensor's
    dimensions: a prepared struct each, not a format string made and looked up per record)."""

    def __missing__(self, code: str) -> list[Any]:
        readers = self[code] = [struct.Struct(f"<{n}{code}").unpack_from for n in range(BULK_MIN_ITEMS)]
        return readers


SHORT_READERS = _ShortReaders()


# -- expressions, as the generated code calls them ------------------------------------------


def evaluate(expr: Expression, scope: dict[str, Any], value: Any = MISSING) -> Any:
    """``expr`` by the evaluator, in ``scope`` (``_`` is ``value`` when one is given)."""
    try:
        return expr(context_lookup(scope, None if value is MISSING else {"_": value}))
    except ExpressionError:
        raise Reject from None


def hoist(frame: Frame, expr: Expression, scope: dict[str, Any]) -> Any:
    """An expression of ``_root`` alone: evaluated on first use in a scan, then remembered."""
    value = frame.hoisted[id(expr)] = evaluate(expr, scope)
    return value


def column_reader(frame: Frame, key: int, reader: tuple[Expression, str, str], scope: dict[str, Any]) -> Any:
    """``L[i].f`` as a function of ``i``, for a list ``L`` the records of a scan read by their
    index (made once per scan, as :func:`~.exprgen.column_of` makes it for a comprehension; an
    index past the column fails, and the general path reports it)."""
    base, attr, source = reader
    found = frame.hoisted[key] = column_of(lambda: evaluate(base, scope), attr, source)
    return found


def lookup_name(scope: dict[str, Any], name: str) -> Any:
    """A name that is not a field read earlier in the record: found as the general path finds it
    (this record's scope, then each enclosing one)."""
    ctx: Any = scope
    while type(ctx) is dict or isinstance(ctx, dict):
        if name in ctx:
            return ctx[name]
        ctx = ctx.get("_")
    raise ExpressionError(f"unknown name {name!r}")


def check_clause(clause: Any, value: Any, scope: dict[str, Any]) -> None:
    """A ``valid:`` clause the generated code does not inline: the general path's own check."""
    try:
        clause.check(value, scope, "", 0)
    except FormatError:
        raise Reject from None


# the expressions evaluated once per scan, by id: what a list of records evaluates again to
# know whether its bytes read the same in another file
HOISTED: dict[int, Expression] = {}


# -- the generator -------------------------------------------------------------------------


class Generated:
    """The functions of one compilation: ``read`` reads a record of the list's type; ``loop(kind)``
    reads the whole list (what a scan runs, and what reads its columns again)."""

    def __init__(self, generator: Generator, top: str) -> None:
        self._generator = generator
        self.read: Reader = generator.namespace[top]
        self.tensors = generator.tensor_record is not None  # records listed as tensors, held as columns
        # what a tensor record holds besides its fields: its type's tags, and its roles
        presented = generator.top_record[1] if generator.top_record is not None else None
        self.extra: dict[str, Any] = presented.tags() if presented is not None else {}
        if self.tensors:
            self.extra["_roles"] = generator.tensor_record.roles
        self.fields = generator.top_fields
        self.names = generator.names  # the names its expressions read
        self.bound = generator.bound  # the names its records and parameters define
        self._loops: dict[str, Callable[..., Any]] = {}

    def loop(self, kind: str) -> Callable[..., Any]:
        """What a scan of the list runs (see :meth:`Generator.loop`), made once per kind."""
        if kind not in self._loops:
            self._loops[kind] = self._generator.loop(kind)
        return self._loops[kind]

    def derived(self) -> Callable[..., Any] | None:
        """The ``derived`` function of records that read no bytes, or None for any other records."""
        if "derived" not in self._loops:
            try:
                self._loops["derived"] = self._generator.loop("derived")
            except Unsupported:
                self._loops["derived"] = None  # type: ignore[assignment]
        return self._loops["derived"]


class Generator:
    def __init__(self, runtime: dict[str, Any]) -> None:
        self._runtime = runtime
        self._once_off = False  # (compiled again with nothing read once: see compile)
        self.namespace: dict[str, Any] = dict(runtime)
        self.namespace.update(Container=cs.Container, ListContainer=cs.ListContainer, Short=Short, Reject=Reject,
                              StructError=struct.error, MISSING=MISSING, evaluate=evaluate, hoist=hoist,
                              check_clause=check_clause, type=type, int=int, len=len,
                              lookup_name=lookup_name, ExpressionError=ExpressionError,
                              PayloadRef=_payload_ref(), column_reader=column_reader,
                              TensorContainer=_tensor_container(),
                              SIZES=ITEM_SIZES, FormatError=FormatError,
                              BULK_MIN_ITEMS=BULK_MIN_ITEMS, NumberArray=NumberArray, SHORT_READERS=SHORT_READERS)
        self.namespace.update(HELPERS)
        self.functions: dict[int, str] = {}  # construct id -> name of its generated function
        self.counter = 0
        self.names: set[str] = set()
        self.bound: set[str] = set()
        self.top_fields: tuple[str, ...] = ()
        self.top_record: tuple[Any, Any] | None = None  # (struct, presented) of the list's own type
        self.top_params: Any = None
        self.tensor_record: Any = None  # the list's type when it is a tensor record
        self.params_in_reach: frozenset[str] = frozenset()  # of the parameterised type being generated
        self.params_of: dict[int, frozenset[str]] = {}  # record construct id -> its type's parameters
        # what the function being written calls the enclosing scope: a record's is `parent` (its own
        # scope, `scope`, is made only when something reads it); a parameterised type's, `scope`
        self.enclosing = "scope"
        self.own_fields: frozenset[Any] = frozenset()  # the fields of the record being written
        self.int_fields: set[str] = set()  # those of them read as integers (u8 ... i64)
        self.int_list_fields: set[str] = set()  # and as lists of integers (a tensor's dimensions)
        self._repeat_seen = False  # whether the record being written has a repeat before this point
        self._made_here: dict[str, str] = {}  # scopes made where a record inside reads them, by mark
        # in a scan's loop: the keys of the values read once, held in its local variables
        self._loop_locals: set[int] | None = None
        # whether the function being written reads the list's own records, in the scope the scan
        # made: what they read of the enclosing scopes is the same for every record, read once
        self.scan_level = False
        self.top_key: int | None = None  # the list's own type, and whether a type inside it holds it
        self.top_inside_itself = False

    def constant(self, value: Any) -> str:
        name = f"K{self.counter}"
        self.counter += 1
        self.namespace[name] = value
        return name

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def define(self, lines: list[str]) -> None:
        exec(compile("\n".join(lines) + "\n", "<ggfmt records>", "exec"), self.namespace)

    # -- entry points ----------------------------------------------------------------------
    def compile(self, construct: cs.Construct) -> Generated:
        top = self.function(construct, top=True)
        if self.top_inside_itself and not self._once_off:
            # its records may be read inside other records, in other scopes: compiled again, every
            # value they read of the scopes around them looked up each time
            again = Generator(self._runtime)
            again.top_inside_itself = again._once_off = True
            return again.compile(construct)
        return Generated(self, top)

    def function(self, construct: cs.Construct, top: bool = False) -> str:
        """The name of the generated function that reads one value of ``construct``."""
        while isinstance(construct, cs.LazyBound):
            construct = construct.subconfunc()
        key = id(construct)
        if top:
            self.top_key = key
        if key in self.functions:
            self.top_inside_itself |= key == self.top_key
            return self.functions[key]
        name = self.fresh("read_")
        self.functions[key] = name  # before generating: a type inside itself calls itself by name
        outer_enclosing, self.enclosing = self.enclosing, "scope"  # (a record's own function says `parent`)
        outer_locals, self._loop_locals = self._loop_locals, None
        try:
            lines = self._function_lines(name, construct, top)
        finally:
            self.enclosing, self._loop_locals = outer_enclosing, outer_locals
        self.define(lines)
        return name

    def _function_lines(self, name: str, construct: cs.Construct, top: bool) -> list[str]:
        from .constructs import Presented, TensorRecord, WithArgs

        if isinstance(construct, WithArgs):
            if top:
                self.top_params = construct
            lines = self._with_args(name, construct)  # (not per list: a type may hold itself)
        elif isinstance(construct, Presented) and type(construct.subcon) is cs.Struct:
            lines = self._record(name, construct.subcon, construct, top)
        elif type(construct) is cs.Struct:
            lines = self._record(name, construct, None, top)
        elif isinstance(construct, TensorRecord) and type(construct.subcon) is cs.Struct and top:
            # a list of tensor records: each record made and listed as the general path lists it
            self.tensor_record = construct
            lines = self._record(name, construct.subcon, None, top)
        else:
            lines = [f"def {name}(buf, pos, scope, frame):", "    try:"]
            lines += self.value(construct, "v", 8, {})
            lines += [*_handlers(4), "    return v, pos"]
        return lines

    def loop(self, kind: str) -> Callable[..., Any]:
        """What a scan runs: a function that reads the list's records ``i`` to ``count`` from
        ``pos`` in one loop, noting where each starts in ``starts``, and returns (the index it
        stopped at, where that record starts, None at the end else Short or Reject: see
        :func:`_loop_handlers`). ``kind``: ``skim`` (each record checked, not made), ``columns``
        (each record's fields, a tuple, given to ``keep``), ``tensors`` (each tensor record's
        fields and instances, a tuple, given to ``keep`` once its roles are checked). ``derived``,
        for records that read no bytes (see :meth:`_derived_body`), is another function: from
        ``(i, count, outer, frame)`` the values of records ``i`` to ``count`` a list per field,
        or None when any check fails or any expression raises (the per-record loop then reads
        those records and decides)."""
        assert self.top_record is not None
        struct_, presented = self.top_record
        name = self.fresh("scan_")
        params = None
        if self.top_params is not None:  # (read in the scope of the type's parameters, made once if it can be)
            made = self.fresh("params_")
            self.define(self._with_args(made, self.top_params, per_list=True, give=True))
            params = (made, self._once_per_list(self.top_params))
        if kind == "derived" and params is not None:
            raise Unsupported  # (records read in their parameters' scope: the per-record loop)
        stop = {"skim": (), "columns": self.top_fields, "tensors": None, "derived": None}[kind]
        lines = self._record(name, struct_, presented, kind in ("tensors", "derived"), stop=stop, loop=kind,
                             params=params)
        self.define(lines)
        return self.namespace[name]  # type: ignore[no-any-return]

    # -- records ---------------------------------------------------------------------------
    def _with_args(self, name: str, construct: Any, inner: str | None = None, per_list: bool = False,
                   give: bool = False) -> list[str]:
        """A parameterised type: its arguments evaluated where it is used, then its record read in
        a scope that holds them (as :class:`~.constructs.WithArgs` makes it, without ``_index``).
        ``per_list``: the type of the list's own records, read in the list's scope: arguments that
        do not read ``_index`` are the same for every record, evaluated once per scan. ``give``:
        a function that returns that scope (what a scan's loop reads its records in)."""
        if inner is None and not give:
            subcon = construct.subcon
            while isinstance(subcon, cs.LazyBound):
                subcon = subcon.subconfunc()
            self.params_of[id(subcon)] = frozenset(construct.defaults)
            inner = self.function(subcon, top=self.top_record is None)
        defaults = self.constant(dict(construct.defaults))
        self.bound.update(construct.defaults)
        once = per_list and self._once_per_list(construct)
        key = self.constant(name)
        lines = [f"def {name}(buf, pos, scope, frame):"]
        pad = "    "
        if once:
            lines += [f"    params = frame.params.get({key})", "    if params is None:"]
            pad = "        "
        lines += [f"{pad}params = {{'_': scope, '_root': scope['_root']}}",
                  f"{pad}params.update({defaults})",
                  f"{pad}try:"]
        for param, expr in construct.args.items():
            lines.append(f"{pad}    params[{self.constant(param)}] = {self.expression(expr, {})}")
        lines.append(f"{pad}    pass")
        lines += _handlers(len(pad))
        if once:
            lines.append(f"        frame.params[{key}] = params")
        lines.append("    return params" if give else f"    return {inner}(buf, pos, params, frame)")
        return lines

    def _once_per_list(self, construct: Any) -> bool:
        """Whether a parameterised type's arguments are the same for every record of a list."""
        return not any("_index" in self._names_of(e) for e in construct.args.values())

    @staticmethod
    def _names_of(expression: Any) -> set[str]:
        names = getattr(expression, "names", None)
        return set(names) if names is not None else {"_index"}  # (unknown: as if it read it)

    def _record(self, name: str, struct_: cs.Struct, presented: Any, top: bool,
                stop: tuple[str, ...] | None = None, loop: str | None = None,
                params: tuple[str, bool] | None = None) -> list[str]:

        if top or self.top_record is None:
            self.top_record = (struct_, presented)
        outer = self.params_in_reach, self.enclosing, self.own_fields, self.int_fields, self.int_list_fields, \
            self.scan_level, self._repeat_seen
        self._repeat_seen = False
        self.params_in_reach = self.params_of.get(id(presented if presented is not None else struct_), frozenset())
        self.enclosing = "parent"
        self.own_fields = frozenset(getattr(member, "name", None) for member in struct_.subcons)
        self.int_fields, self.int_list_fields = set(), set()
        # (a type inside itself would read the enclosing values of another record: read each time)
        self.scan_level = (top or stop is not None) and not self.top_inside_itself
        try:
            return self._record_lines(name, struct_, presented, top, stop, loop, params)
        finally:
            self.params_in_reach, self.enclosing, self.own_fields, self.int_fields, self.int_list_fields, \
                self.scan_level, self._repeat_seen = outer

    def _record_lines(self, name: str, struct_: cs.Struct, presented: Any, top: bool,
                      stop: tuple[str, ...] | None, loop: str | None = None,
                      params: tuple[str, bool] | None = None) -> list[str]:
        self._loop_locals = set() if loop is not None else None
        try:
            if loop == "derived":
                return self._derived_lines(name, struct_)
            body, value = self._record_body(struct_, presented, top, stop, values=loop == "tensors")
            remembered = sorted(self._loop_locals or ())
        finally:
            self._loop_locals = None
        made = "scope = {'_': parent, '_root': parent['_root'], '_index': parent.get('_index')}"
        if loop is None:
            return _without_unread_scope([f"def {name}(buf, pos, parent, frame):", f"    {made}",
                                          "    check = frame.check", "    try:", *body, *_handlers(4),
                                          f"    return {value}, pos"], 1, self._made_here)
        # the whole list in one function: no call per record, the loop's own variables at hand
        kept = [f"            keep({value})"] if loop != "skim" else []
        # the records' enclosing scope: the list's, or the one of their type's parameters
        enclosing = f"{self.constant(self.namespace[params[0]])}(buf, pos, outer, frame)" if params else "outer"
        once = params is None or params[1]
        lines = [f"def {name}(buf, pos, i, count, outer, frame, starts, keep):",
                 "    check = frame.check",
                 "    budget = frame.budget",
                 "    spent = 0",
                 "    first = pos",
                 *(f"    h{key} = frame.hoisted.get({key}, MISSING)" for key in remembered),
                 "    try:",
                 *([f"        parent = {enclosing}"] if once else []),
                 "        for i in range(i, count):",
                 "            outer['_index'] = i",
                 *([] if once else [f"            parent = {enclosing}"]),
                 f"            {made}",
                 "            first = pos",
                 "            if budget is not None:",
                 "                spent = budget[0]",
                 *(f"    {line}" for line in body),
                 "            starts[i] = first",
                 *kept,
                 *_loop_handlers(),
                 "    return count, pos, None"]
        return _without_unread_scope(lines, lines.index(f"            {made}"), self._made_here)

    def _record_body(self, struct_: cs.Struct, presented: Any, top: bool,
                     stop: tuple[str, ...] | None, values: bool = False) -> tuple[list[str], str]:
        """The lines that read a record (inside a ``try``, 8 spaces in), and the value they make:
        the values of the fields ``stop`` (a tuple), None with no fields, else the record
        (``values``: the values of all its fields, a tuple, a tensor record's roles checked)."""
        from .compiler import Instance
        from .constructs import Field

        lines: list[str] = []
        local: dict[str, str] = {}  # field name -> the local variable holding it
        fields: list[str] = []
        for member in struct_.subcons:
            field_name = member.name
            if not isinstance(field_name, str):
                raise Unsupported
            self.bound.add(field_name)
            variable = f"f{len(fields)}"
            if isinstance(member, Field):
                lines += self.field(member, variable, 8, local)
                if _integer(member):
                    self.int_fields.add(field_name)
            elif isinstance(member, Instance):
                lines.append(f"        {variable} = {self.expression(member.value, local)}")
            else:
                raise Unsupported
            key = self.constant(field_name)
            lines.append(f"        scope[{key}] = {variable}")
            local[field_name] = variable
            fields.append(field_name)
            if stop and all(n in local for n in stop):
                return lines, "(" + "".join(f"{local[n]}, " for n in stop) + ")"
        if stop == ():
            return [*lines, "        pass"], "None"
        if stop is not None:
            raise Unsupported
        if top:
            self.top_fields = tuple(fields)
        tags = presented.tags() if presented is not None else {}
        tensor = top and self.tensor_record is not None
        if tensor:  # its roles' values checked as the general path checks them, without a copy
            record = self.constant(self.tensor_record)
            tests = " or ".join(self._role_test(role, local[field], field in self.int_list_fields)
                                for role, field, _, _ in self.tensor_record._kinds
                                if field in local and field not in self.int_fields)
            as_dict = "{" + ", ".join(f"{self.constant(n)}: {local[n]}" for n in fields) + "}"
            if tests:
                lines += [f"        if {tests}:", f"            {record}._check_roles({as_dict})"]
        if values:
            return lines, "(" + "".join(f"{local[n]}, " for n in fields) + ")"
        lines.append("        out = TensorContainer()" if tensor else "        out = Container()")
        for field_name in fields:
            lines.append(f"        out[{self.constant(field_name)}] = {local[field_name]}")
        for tag, value in tags.items():
            lines.append(f"        out[{self.constant(tag)}] = {self.constant(value)}")
        if tensor:
            lines.append(f"        out['_roles'] = {self.constant(self.tensor_record.roles)}")
        return lines, "out"

    def _derived_lines(self, name: str, struct_: cs.Struct) -> list[str]:
        """The ``derived`` function of a list whose records read no bytes: each member an
        instance, or a payload placed elsewhere (a GGUF's ``tensor_data``: its data at
        ``data_start + infos[_index].offset``, its name ``infos[_index].name``), neither naming
        another member nor reading anything of a record's own scope. Each member's values are one
        comprehension over the records' indexes, each check one pass over a column; a tensor
        record's roles are checked by column too. (263,156 tensors: 0.33 s a record at a time,
        0.22 s this way.)"""
        from .compiler import Instance
        from .constructs import MAX_DEPTH, Field, Payload

        lines = [f"        if frame.depth >= {MAX_DEPTH}:", "            return None"]  # (as each record checks it)
        columns: dict[str, str] = {}
        for member in struct_.subcons:
            column = f"c{len(columns)}"
            if isinstance(member, Instance):
                exprs = [member.value]
            elif isinstance(member, Field) and isinstance(member.subcon, Payload) and member.subcon.at is not None \
                    and member.subcon.size is not None and member.repeat is None and member.condition is None \
                    and not member.valid and member.contents is None:
                exprs = [member.subcon.size, member.subcon.at]
            else:
                raise Unsupported
            if any(self._names_of(e) & self.own_fields for e in exprs):
                raise Unsupported  # (a member read from another: a record at a time)
            self.bound.add(member.name)
            sources = [self.expression(e, {}) for e in exprs]
            if isinstance(member, Instance):
                lines.append(f"        {column} = [{sources[0]} for i in indexes]")
            else:
                lines += [f"        sizes = [{sources[0]} for i in indexes]",
                          f"        starts_ = [{sources[1]} for i in indexes]",
                          "        if [s for s in sizes if type(s) is not int or s < 0] or "
                          "[s for s in starts_ if type(s) is not int or s < 0]:",
                          "            return None",
                          "        room = frame.file_size",
                          "        if [s for s, a in zip(sizes, starts_) if s > room - a]:",
                          "            return None",
                          f"        {column} = list(map(PayloadRef, starts_, sizes))"]
            columns[member.name] = column
        if tuple(columns) != self.top_fields:
            raise Unsupported  # (the values are given in the order of the record's fields)
        if self.tensor_record is not None:  # its roles' values checked as the records' loop checks them
            for role, field, _, _ in self.tensor_record._kinds:
                test = self._role_test(role, "v", False)
                lines += [f"        if [v for v in {columns[field]} if {test}]:", "            return None"]
        body = "\n".join(lines)
        if "_index" in body or re.search(r"\bscope\b|evaluate\(|read_", body):
            raise Unsupported  # (something reads a record's own scope: the per-record loop sets it)
        remembered = sorted(self._loop_locals or ())
        return [f"def {name}(i, count, outer, frame):",
                "    parent = outer",
                "    indexes = range(i, count)",
                *(f"    h{key} = frame.hoisted.get({key}, MISSING)" for key in remembered),
                "    try:",
                *lines,
                f"    except (StructError, Short, Reject, FormatError, {_NOT_DECIDED}):",
                "        return None",
                f"    return [{', '.join(columns.values())}]"]

    def _scope(self, local: dict[str, str]) -> str:
        """The record's scope, as a record read inside it sees it: in a record function, made where
        it is needed from the fields read so far (a GGUF pair whose value is an array), so that a
        record that needs none (a pair of a number) makes none; ``scope`` itself once a repeat has
        set its ``_index``, or in any other function. (A mark here: the record's function is done
        with it once written, see :func:`_without_unread_scope`.)"""
        if self.enclosing != "parent" or self._repeat_seen:
            return "scope"
        fields = "".join(f", {self.constant(name)}: {variable}" for name, variable in local.items())
        mark = f"@{len(self._made_here)}@"
        self._made_here[mark] = f"{{'_': parent, '_root': parent['_root'], '_index': parent.get('_index'){fields}}}"
        return mark

    @staticmethod
    def _role_test(role: str, variable: str, integers: bool) -> str:
        """A test that holds when a tensor role's value may be of the wrong kind (the general check
        then decides): a quick one, of the exact types the records are read as. ``integers``: the
        field is read as integers (a short list of them, or a long array, which the check refuses)."""
        if role == "ne":
            if integers:
                return f"type({variable}) is not ListContainer"
            return f"not (type({variable}) is ListContainer and not [n for n in {variable} if type(n) is not int])"
        kind = {"data": "PayloadRef", "name": "str", "ggml_type": "int"}[role]
        return f"type({variable}) is not {kind}"

    # -- fields ----------------------------------------------------------------------------
    def field(self, field: Any, variable: str, indent: int, local: dict[str, str]) -> list[str]:
        """A field (see :class:`~.constructs.Field`): ``if``, the depth of structures, its value
        or repeat, ``contents`` and ``valid:``; its value in ``variable``."""
        from .constructs import MAX_DEPTH, RepeatUntil

        if field.repeat == "eos" or isinstance(field.repeat, RepeatUntil):
            raise Unsupported
        pad = " " * indent
        lines: list[str] = []
        if field.condition is not None:
            lines.append(f"{pad}if not {self.expression(field.condition, local)}:")
            lines.append(f"{pad}    {variable} = None")
            lines.append(f"{pad}else:")
            pad += "    "
            indent += 4
        structure = field.fixed_size is None  # what the general path counts as one level deeper
        value = self.value(field.subcon, variable, indent, local) if field.repeat is None else \
            self._repeat(field, variable, indent, local)
        if structure and not any("read_" in line for line in value):  # (no call of a reader: read_N, read_repeat)
            # a value read here, with nothing inside it (a string): the level it would reach, checked
            lines += [f"{pad}if frame.depth >= {MAX_DEPTH}:", f"{pad}    raise Reject", *value]
        elif structure:
            lines += [f"{pad}frame.depth += 1", f"{pad}if frame.depth > {MAX_DEPTH}:", f"{pad}    raise Reject",
                      *value, f"{pad}frame.depth -= 1"]
        else:
            lines += value
        checks = self._checks(field, variable, local)
        if checks:
            lines.append(f"{pad}if check:")
            lines += [f"{pad}    {line}" for line in checks]
        return lines

    def _checks(self, field: Any, variable: str, local: dict[str, str]) -> list[str]:
        """``contents`` and each ``valid:`` clause (``_`` is the value) as tests that raise Reject."""
        lines = []
        if field.contents is not None:
            lines += [f"if {variable} != {self.constant(field.contents)}:", "    raise Reject"]
        for clause in field.valid:
            if clause.unique is not None or clause.disjoint is not None:  # of a list: the general check
                lines.append(f"check_clause({self.constant(clause)}, {variable}, scope)")
                continue

            def ev(expr: Expression) -> str:
                return self.expression(expr, local, value=variable, integer=_integer(field))

            tests = []
            if clause.eq is not None:
                tests.append(f"{variable} != {ev(clause.eq)}")
            if clause.any_of is not None:
                tests.append(f"{variable} not in [{', '.join(ev(e) for e in clause.any_of)}]")
            if clause.minimum is not None:
                tests.append(f"{variable} < {ev(clause.minimum)}")
            if clause.maximum is not None:
                tests.append(f"{variable} > {ev(clause.maximum)}")
            if clause.expr is not None:
                tests.append(f"not {ev(clause.expr)}")
            indent = ""
            if clause.guard is not None:
                lines.append(f"if {ev(clause.guard)}:")
                indent = "    "
            elif clause.expr is not None and _pure_call(clause.expr) and _integer(field):
                # a function of the value alone (ggml_type_size(_) > 0): decided once per value met
                passed = self.constant(set())
                tests.pop()
                lines += [f"if {variable} not in {passed}:",
                          f"    if not {ev(clause.expr)}:", "        raise Reject",
                          f"    if len({passed}) < {MEMO_VALUES}:", f"        {passed}.add({variable})"]
            for test in tests:
                lines += [f"{indent}if {test}:", f"{indent}    raise Reject"]
        return lines

    def _repeat(self, field: Any, variable: str, indent: int, local: dict[str, str]) -> list[str]:
        """``repeat: COUNT``: the count checked against the bytes left and spent from the budget,
        then the elements, read by :func:`~.records.read_repeat` (one call per repeat)."""
        from .constructs import SwitchOn

        pad = " " * indent
        count = self.fresh("n")
        self._repeat_seen = True  # (read_repeat sets the scope's _index)
        lines = [f"{pad}{count} = {self.expression(field.repeat, local)}",
                 f"{pad}if type({count}) is not int or {count} < 0:",
                 f"{pad}    raise Reject",
                 f"{pad}if check:",
                 f"{pad}    left = frame.file_size - frame.base - pos"]
        if field.fixed_size is not None:
            lines.append(f"{pad}    if {count} * {field.fixed_size} > left:")
            lines.append(f"{pad}        raise Reject")
        lines += [f"{pad}    if {count} > left:",
                  f"{pad}        raise Reject",
                  *([f"{pad}    if budget is not None:",  # (the loop's own budget: Frame.spend, inline)
                     f"{pad}        budget[0] -= {count}",
                     f"{pad}        if budget[0] < 0:",
                     f"{pad}            raise Reject"] if self._loop_locals is not None else
                    [f"{pad}    frame.spend({count})"]),
                  f"{pad}if {count} == 0:",
                  f"{pad}    {variable} = ListContainer()",
                  f"{pad}else:"]
        subcon = field.subcon
        per_element = isinstance(subcon, SwitchOn) and "_index" in subcon.key.source
        numbers = self._number_codes(field, local)
        if numbers is not None:  # numbers (a tensor's dimensions): read here, no call
            codes, key, otherwise = numbers
            if field.condition is None and set(codes.values()) | {otherwise} <= _INTEGER_CODES:
                self.int_list_fields.add(field.name)  # (a list of integers, or a NumberArray when long)
            code = self.fresh("code")
            lines += [f"{pad}    {code} = {self.constant(codes)}.get({key if key is not None else 'None'}, "
                      f"{self.constant(otherwise)})",
                      f"{pad}    if {code} is None:",
                      f"{pad}        raise Reject",
                      f"{pad}    end = pos + {count} * SIZES[{code}]",
                      f"{pad}    if end > len(buf):",
                      f"{pad}        raise Short",
                      f"{pad}    if {count} >= BULK_MIN_ITEMS:",
                      f"{pad}        {variable} = NumberArray(buf[pos:end], {code})",
                      f"{pad}    else:",
                      f"{pad}        {variable} = ListContainer(SHORT_READERS[{code}][{count}](buf, pos))",
                      f"{pad}    pos = end"]
            return lines
        if isinstance(subcon, SwitchOn) and not per_element:
            cases = {k: (c, self.function(c)) for k, c in subcon.cases.items()}
            default = (subcon.default, self.function(subcon.default)) if subcon.default is not None else None
            key = self.expression(subcon.key, local)
            plan = self.constant(_Plan(field.bulk_code, cases, default, False, self.namespace))
            lines.append(f"{pad}    {variable}, pos = read_repeat(buf, pos, scope, frame, {count}, {plan}, {key})")
        else:
            plan = self.constant(_Plan(field.bulk_code, {None: (subcon, self.function(subcon))}, None, per_element,
                                       self.namespace))
            lines.append(f"{pad}    {variable}, pos = read_repeat(buf, pos, scope, frame, {count}, {plan}, None)")
        return lines

    def _number_codes(self, field: Any, local: dict[str, str]) -> tuple[dict[Any, Any], str | None, str | None] | None:
        """When every element of a repeat is a primitive number, whatever its switch chooses: the
        struct code of each choice, the source of the switch's key (None: no switch) and the code
        of its default (None: none)."""
        from .constructs import PRIMITIVE_CODES, SwitchOn

        subcon = field.subcon
        if field.bulk_code is not None:
            return {None: field.bulk_code}, None, None
        if not isinstance(subcon, SwitchOn) or "_index" in subcon.key.source:
            return None
        choices = list(subcon.cases.values()) + ([subcon.default] if subcon.default is not None else [])
        if not all(c in PRIMITIVE_CODES for c in choices):
            return None
        return {k: PRIMITIVE_CODES[c] for k, c in subcon.cases.items()}, self.expression(subcon.key, local), \
            PRIMITIVE_CODES[subcon.default] if subcon.default is not None else None

    # -- values ----------------------------------------------------------------------------
    def value(self, construct: cs.Construct, variable: str, indent: int, local: dict[str, str]) -> list[str]:
        """Lines that read one value of ``construct`` at ``pos`` into ``variable`` and advance ``pos``."""
        from .constructs import PRIMITIVE_CODES, Payload, PrefixedBytes, Presented, SizedBytes, SwitchOn, WithArgs

        pad = " " * indent
        while isinstance(construct, cs.LazyBound):
            construct = construct.subconfunc()
        code = "?" if construct is cs.Flag else PRIMITIVE_CODES.get(construct)
        if code is not None:
            packer = struct.Struct("<" + code)
            return [f"{pad}{variable} = {self.constant(packer)}.unpack_from(buf, pos)[0]",
                    f"{pad}pos += {packer.size}"]
        if isinstance(construct, cs.Bytes) and isinstance(construct.length, int):
            return [f"{pad}end = pos + {construct.length}",
                    f"{pad}if end > len(buf):",
                    f"{pad}    raise Short",
                    f"{pad}{variable} = buf[pos:end]",
                    f"{pad}pos = end"]
        if isinstance(construct, PrefixedBytes):
            return self._prefixed(construct, variable, pad, local)
        if isinstance(construct, Payload):
            if construct.at is None or construct.size is None:
                raise Unsupported  # in place: the data would be read into the buffer
            size, start = self.fresh("size"), self.fresh("start")
            return [f"{pad}{size} = {self.expression(construct.size, local)}",
                    f"{pad}{start} = {self.expression(construct.at, local)}",
                    f"{pad}if type({size}) is not int or {size} < 0 or type({start}) is not int or {start} < 0:",
                    f"{pad}    raise Reject",
                    f"{pad}if {size} > frame.file_size - {start}:",
                    f"{pad}    raise Reject",
                    f"{pad}{variable} = PayloadRef({start}, {size})"]
        if isinstance(construct, SizedBytes):
            if construct.size is None:
                raise Unsupported  # `size: eos`
            size = self.fresh("size")
            return [f"{pad}{size} = {self.expression(construct.size, local)}",
                    f"{pad}if type({size}) is not int or {size} < 0:",
                    f"{pad}    raise Reject",
                    f"{pad}start = pos",
                    f"{pad}pos += {size}",
                    *self._take(variable, pad, construct.encoding)]
        if isinstance(construct, SwitchOn):
            return self._switch(construct, variable, indent, local)
        if isinstance(construct, WithArgs | Presented) or type(construct) is cs.Struct:
            return [f"{pad}{variable}, pos = {self.function(construct)}(buf, pos, {self._scope(local)}, frame)"]
        raise Unsupported

    def _prefixed(self, construct: Any, variable: str, pad: str, local: dict[str, str]) -> list[str]:
        if construct.key is None:
            prefix = self.constant(construct.prefix)
            lines = []
        else:
            widths, default = self.constant(construct.widths), self.constant(construct.prefix)
            prefix = self.fresh("prefix")
            lines = [f"{pad}{prefix} = {widths}.get({self.expression(construct.key, local)}, {default})",
                     f"{pad}if {prefix} is None:",
                     f"{pad}    raise Reject"]
        return [*lines,
                f"{pad}start = pos + {prefix}.size",
                f"{pad}pos = start + {prefix}.unpack_from(buf, pos)[0]",
                *self._take(variable, pad, construct.encoding)]

    def _take(self, variable: str, pad: str, encoding: str | None) -> list[str]:
        """The bytes from ``start`` to ``pos`` (the buffer must hold them), decoded when text."""
        lines = [f"{pad}if pos > len(buf):",
                 f"{pad}    raise Short",
                 f"{pad}{variable} = buf[start:pos]"]
        if encoding is not None:
            lines.append(f"{pad}{variable} = {variable}.decode({self.constant(encoding)})")
        return lines

    def _switch(self, construct: Any, variable: str, indent: int, local: dict[str, str]) -> list[str]:
        """A switch: a table of structs for the cases that are primitives, a call for the others."""
        from .constructs import PRIMITIVE_CODES, PrefixedBytes

        pad = " " * indent
        key = self.fresh("key")
        packer = self.fresh("packer")
        table: dict[Any, struct.Struct] = {}
        others: dict[Any, str] = {}
        strings: dict[Any, Any] = {}  # (read here, no call: a GGUF string value)
        for case, sub in construct.cases.items():
            while isinstance(sub, cs.LazyBound):
                sub = sub.subconfunc()
            code = "?" if sub is cs.Flag else PRIMITIVE_CODES.get(sub)
            if code is not None:
                table[case] = struct.Struct("<" + code)
            elif isinstance(sub, PrefixedBytes):
                strings[case] = sub
            else:
                others[case] = self.function(sub)
        default = construct.default
        while isinstance(default, cs.LazyBound):
            default = default.subconfunc()
        code = "?" if default is cs.Flag else PRIMITIVE_CODES.get(default)
        if code is not None and not strings and not others:  # (a width by version: u32, else u64)
            fallback = self.constant(struct.Struct("<" + code))
            default = None
        else:
            fallback = "None"
        lines = [f"{pad}{key} = {self.expression(construct.key, local)}",
                 f"{pad}{packer} = {self.constant(table)}.get({key}, {fallback})",
                 f"{pad}if {packer} is not None:",
                 f"{pad}    {variable} = {packer}.unpack_from(buf, pos)[0]",
                 f"{pad}    pos += {packer}.size"]
        for case, string in strings.items():
            lines.append(f"{pad}elif {key} == {self.constant(case)}:")
            lines += self._prefixed(string, variable, pad + "    ", local)
        for case, function in others.items():  # (functions called by name: a type may be inside itself)
            lines += [f"{pad}elif {key} == {self.constant(case)}:",
                      f"{pad}    {variable}, pos = {function}(buf, pos, {self._scope(local)}, frame)"]
        lines.append(f"{pad}else:")
        if default is not None:
            lines.append(f"{pad}    {variable}, pos = {self.function(default)}(buf, pos, {self._scope(local)}, frame)")
        else:
            lines.append(f"{pad}    raise Reject")
        return lines

    # -- expressions -----------------------------------------------------------------------
    def expression(self, expr: Expression, local: dict[str, str], value: str | None = None,
                   integer: bool = False) -> str:
        """Python source for an expression's value: a local variable, a value evaluated once per
        scan, or the expression itself as Python that calls the evaluator's own bounded operations
        (``_binop``, ``_member``, the functions). ``value``: the variable ``_`` names (a ``valid:``
        clause's value); ``integer``: whether it holds an integer."""
        self.names.update(expr.names - {"_"} if value is not None else expr.names)
        source = expr.source.strip()
        if value is None and source in local:
            return local[source]
        if "_root" in expr.names and expr.names != {"_root"}:
            self.names.add("_root+")  # reads the root along with a record's fields: not evaluated once
        if value is None and expr.names == {"_root"}:
            HOISTED[id(expr)] = expr
            # (_root: the enclosing scope's)
            return self._remembered(id(expr), f"hoist(frame, {self.constant(expr)}, {self.enclosing})")
        try:
            return self._python(ast.parse(source, mode="eval").body, local, value, integer)
        except NotWritten:  # (a chained comparison): the evaluator itself
            if value is None:
                return f"evaluate({self.constant(expr)}, scope)"
            return f"evaluate({self.constant(expr)}, scope, {value})"

    def _python(self, node: ast.expr, local: dict[str, str], value: str | None, integer: bool = False) -> str:
        """An expression's tree (the evaluator accepted it) as Python source over the record's scope:
        a field read earlier is its local variable, a parameter of the type its frame's entry,
        ``_`` the value being checked (in a ``valid:`` clause) or the enclosing scope."""
        in_record = self.enclosing == "parent"

        def name(identifier: str) -> str:
            # (a record's _, _root and _index are its enclosing scope's: read from there)
            if identifier == "_":
                return value if value is not None else "parent" if in_record else "scope['_']"
            if identifier == "_root":
                return f"{self.enclosing}['_root']"
            if identifier == "_index":
                return "parent.get('_index')" if in_record else "scope['_index']"
            if identifier in local:
                return local[identifier]
            if identifier in self.params_in_reach:  # a parameter: in the frame the record is read in
                return f"parent[{self.constant(identifier)}]"
            if in_record and identifier not in self.own_fields:  # not one of its own: the enclosing scopes'
                return f"lookup_name(parent, {self.constant(identifier)})"
            return f"lookup_name(scope, {self.constant(identifier)})"

        ints = frozenset(n for n in self.int_fields if n in local) | ({"_"} if value is not None and integer else set())
        once = self._once(local, value) if in_record and self.scan_level else None
        int_lists = frozenset(n for n in self.int_list_fields if n in local)
        return PythonSource(self.constant, name, self.fresh, plain=True, once=once, ints=ints, int_lists=int_lists,
                            typed=True).write(node)

    def _once(self, local: dict[str, str], value: str | None) -> Callable[[ast.expr], str | None]:
        """What a scan-level record reads of its enclosing scopes, evaluated once per scan: a part
        of an expression that names no field of the record, nor ``_index`` (``infos``,
        ``data_start``, ``_root.alignment.value``), and ``L[_index].f`` of such a list as its
        column, one call per record."""
        def enclosing(tree: ast.expr) -> bool:
            names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
            if not names or names & {"True", "False", "None"} == names:
                return False
            if any(isinstance(n, ast.ListComp) for n in ast.walk(tree)):
                return False
            mine = set(local) | set(self.own_fields) | set(self.params_in_reach) | {"_index"}
            if value is not None:
                mine.add("_")
            return not names & mine

        def once(node: ast.expr) -> str | None:
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Subscript) \
                    and isinstance(node.value.slice, ast.Name) and node.value.slice.id == "_index" \
                    and enclosing(node.value.value):
                base = self._hoisted(node.value.value)
                reader = self.constant((base, node.attr, ast.unparse(node)))
                key = id(self.namespace[reader])
                index = "i" if self._loop_locals is not None else "parent.get('_index')"
                return f"{self._remembered(key, f'column_reader(frame, {key}, {reader}, parent)')}({index})"
            if (isinstance(node, ast.Name) and node.id == "_root") or not enclosing(node):
                return None
            expr = self._hoisted(node)
            return self._remembered(id(expr), f"hoist(frame, {self.constant(expr)}, parent)")

        return once

    def _remembered(self, key: int, compute: str) -> str:
        """A value the same for every record of a scan: the frame's, once ``compute`` (which keeps
        it there) has run; in a scan's loop, a local variable of the loop besides."""
        if self._loop_locals is None:
            return f"(frame.hoisted[{key}] if {key} in frame.hoisted else {compute})"
        self._loop_locals.add(key)
        return f"(h{key} if h{key} is not MISSING else (h{key} := {compute}))"

    def _hoisted(self, node: ast.expr) -> Expression:
        """A part of an expression as one evaluated once per scan (kept in HOISTED)."""
        expr = Expression(ast.unparse(node))
        HOISTED[id(expr)] = expr
        return expr


_INTEGER_CODES = frozenset((None, *"bBhHiIqQ"))


def _pure_call(expr: Expression) -> bool:
    """Whether an expression reads ``_`` alone and calls a function (of the language's: each the
    same for the same arguments), so that its value for a value is worth remembering."""
    if not expr.names <= {"_"}:
        return False
    return any(isinstance(node, ast.Call) for node in ast.walk(ast.parse(expr.source.strip(), mode="eval")))


def _integer(field: Any) -> bool:
    """Whether a field always holds an integer: a single integer primitive, read unconditionally."""
    from .constructs import PRIMITIVE_CODES

    subcon = field.subcon
    while isinstance(subcon, cs.LazyBound):
        subcon = subcon.subconfunc()
    code = PRIMITIVE_CODES.get(subcon)
    return code is not None and code not in "efd" and field.repeat is None and field.condition is None


class _Plan:
    """A repeat's elements: its functions looked up by name when it first runs (the function of a
    type inside itself exists only once its generation ends)."""

    __slots__ = ("bulk_code", "cases", "default", "namespace", "per_element")

    def __init__(self, bulk_code: str | None, cases: dict[Any, tuple[Any, str]], default: tuple[Any, str] | None,
                 per_element: bool, namespace: dict[str, Any]) -> None:
        self.bulk_code = bulk_code
        self.cases = cases
        self.default = default
        self.per_element = per_element
        self.namespace = namespace

    def element(self, key: Any) -> tuple[Any, Reader] | None:
        """The element construct and its function, for a switch's key (None: no switch)."""
        chosen = self.cases.get(key, self.default)
        if chosen is None:
            return None
        construct, name = chosen
        return construct, self.namespace[name]


def _tensor_container() -> Any:
    from .constructs import TensorContainer

    return TensorContainer


def _payload_ref() -> Any:
    from .constructs import PayloadRef

    return PayloadRef


_STORE = re.compile(r"\s*scope\[K\d+\] = f\d+")


_MARK = re.compile(r"@\d+@")  # (see Generator._scope)


def _without_unread_scope(lines: list[str], made: int, made_here: dict[str, str]) -> list[str]:
    """A record function without its scope (made on line ``made``) when nothing reads the scope
    (no expression looks up a name, no record inside it names it as its parent): the fields are
    local variables only, and a record costs no dictionary (a vocabulary entry: its length, its
    text, its score); a record read inside it then gets one made where it is read. When the scope
    is read, that record gets the scope itself (the same fields: each is stored as it is read)."""
    rest = [line for line in lines[made + 1:] if not _STORE.fullmatch(line)]
    if any("scope" in line for line in rest):
        return [_MARK.sub("scope", line) for line in lines]
    return [*lines[:made], *(_MARK.sub(lambda m: made_here[m.group()], line) for line in rest)]


def _loop_handlers() -> list[str]:
    """What ends a scan's loop early: the record at ``first`` is one its buffer does not hold
    (Short: the scan reads more of the file), or one it does not decide (Reject: the general path
    reads it); the budget as it was before that record."""
    return ["    except (StructError, Short):",
            "        if budget is not None:",
            "            budget[0] = spent",
            "        return i, first, Short",
            f"    except (Reject, FormatError, {_NOT_DECIDED}):",
            "        if budget is not None:",
            "            budget[0] = spent",
            "        return i, first, Reject"]


# what a generated reader meets in a record it leaves to the general path: text that does not
# decode, a comparison of values of different kinds, an expression that fails, and the like
_NOT_DECIDED = "UnicodeDecodeError, TypeError, ValueError, KeyError, IndexError, ArithmeticError, RecursionError, " \
    "ExpressionError"


def _handlers(indent: int) -> list[str]:
    """What the body of a function turns into Short and Reject: a struct read past the buffer's
    end; text that does not decode, a comparison of values of different kinds, and the like."""
    pad = " " * indent
    return [f"{pad}except StructError:",
            f"{pad}    raise Short from None",
            f"{pad}except ({_NOT_DECIDED}):",
            f"{pad}    raise Reject from None"]
