"""Name-mapping tables: which parsed field becomes which GGUF key or tensor.

A table (``mappings/<name>.yaml``) has two lists, ``metadata`` and ``tensors``.  Entries use
gguf-py's own names wherever gguf-py has them (``gguf: Attention.HEAD_COUNT`` is
``gguf.Keys.Attention.HEAD_COUNT``; ``gguf: ATTN_Q`` is ``gguf.TENSOR_NAMES[MODEL_TENSOR.ATTN_Q]``)
and spell the name out (``key:``, ``name:``) where it has none.  Values and sources are
expressions of the schema language, evaluated against the parsed fields.  An item may also
be ``{include: other-table}`` or a group ``{items: [...], when: EXPR, for: EXPR, as: NAME}``;
inside a ``for`` group, ``bid`` is the index of the element (GGUF's block id).
See ``docs/schema-language.md``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import SchemaError, UsageError
from ..io.resources import data_dirs
from ..schema import read_yaml
from ..schema.expr import Expression, ExpressionError
from ..schema.language import enum, keys

# the value types a table may write, by the names tables use, and gguf-py's GGUFValueType name of each
GGUF_VALUE_TYPES = {"u8": "UINT8", "i8": "INT8", "u16": "UINT16", "i16": "INT16", "u32": "UINT32", "i32": "INT32",
                    "u64": "UINT64", "i64": "INT64", "f32": "FLOAT32", "f64": "FLOAT64", "bool": "BOOL",
                    "string": "STRING"}
SCALAR_TYPES = set(GGUF_VALUE_TYPES)
VALUE_TYPES = SCALAR_TYPES | {f"{t}[]" for t in SCALAR_TYPES}  # "f32[]": a GGUF array of f32
METADATA_KEYS = keys("metadata_entry")
COPY_KEYS = keys("copy_entry")
TENSOR_KEYS = keys("tensor_entry")
GROUP_KEYS = keys("group")
BLOCK_ID = "bid"  # the index inside a `for` group: gguf-py's tensor name templates call it bid
TOP_KEYS = keys("table")
CHECK_KEYS = keys("check")
WARNING_KEYS = keys("warning")
# what a capture may match: `{bid}` a block number, `{name}` one dot-free part, `{name:any}` any text
CAPTURE_KINDS = {"": "[^.]+", "any": ".+"}
OPTION_KEYS = keys("option")
TENSOR_TEST_KEYS = keys("tensor_test")
# what an option holds: a value, or `weights`, a second weights file whose tensors join the input's
# `json`: a JSON file, read as a value (its path is NAME_file)
# `document`: a file ggfmt parses (its schema found by its magic), read as its fields (a vocab model's
# GGUF metadata, say)
OPTION_TYPES = enum("option", "type")
UNMATCHED = ("error", "warn")  # what becomes of an input tensor no `match:` entry selects


@dataclass(frozen=True)
class MetadataEntry:
    key: str  # may hold "{arch}"
    value_type: str
    value: Expression
    when: Expression | None
    where: str


@dataclass(frozen=True)
class CopyEntry:
    """``copy: EXPR``: every typed pair of a keyed section (a GGUF's ``metadata``, the input's or a
    second file's) written as it is, with its own GGUF type; ``keys`` and ``except`` are glob
    patterns of the keys taken and left out."""

    records: Expression
    keys: tuple[str, ...]
    skip: tuple[str, ...]
    when: Expression | None
    where: str


@dataclass(frozen=True)
class TensorEntry:
    source: Expression
    name_template: str  # may hold "{bid}"
    when: Expression | None
    where: str


@dataclass(frozen=True)
class Check:
    """A condition with the one-line message that says what is wrong when it does not hold;
    ``{name}`` in the message is the value of ``name`` where the condition was evaluated."""

    expr: Expression
    message: str
    field: str  # the input field the message is about (its offset is reported); may be empty
    where: str
    id: str | None = None  # its name, by which a table built on this one replaces it


@dataclass(frozen=True)
class TransformCall:
    """A named transform with its arguments (expressions): ``rope_permute(n_head)``."""

    name: str
    args: list[Expression]
    source: str


@dataclass(frozen=True)
class TensorTest:
    """``kv_tiled: {match: PATTERN, holds: "kv_copies(n_head)"}``: a name that is true when the data of
    every input tensor the pattern selects passes the test (one at a time, before anything is
    written), so that keys and entries can depend on what the tensors hold."""

    name: str
    pattern: re.Pattern[str]
    call: TransformCall  # the test and its argument expressions (they see the tensor and the captures)
    where: str
    written: str = ""  # the pattern as the table writes it


@dataclass(frozen=True)
class MatchEntry:
    """Input tensors selected by name: ``match: "layers.{bid}.attention.wq.weight"``; each
    ``{capture}`` is one dot-free part of the name (``{bid}`` a block number) and is a name in
    the entry's ``name``, ``when`` and transform arguments."""

    pattern: re.Pattern[str]
    name_template: str
    transforms: list[TransformCall]
    when: Expression | None
    where: str
    require: list[Check] = field(default_factory=list)  # after the table's own `require`
    drop: bool = False  # the selected tensors are left out, as the table says
    refuse: str | None = None  # the selected tensors cannot be converted: why, and what would work instead


@dataclass(frozen=True)
class NamedEntry:
    """One input tensor by its name, ``tensor: "text_model.encoder.layers.{bid}.mlp.fc1.weight"``
    (``{name}`` fields are values in scope, such as a `for` group's ``bid``): written where the
    entry is, so a table gives the output the model's order; a tensor that is not there is an error."""

    input_template: str | list[str]  # a list: several tensors, joined by concat
    name_template: str
    transforms: list[TransformCall]
    when: Expression | None
    where: str
    require: list[Check] = field(default_factory=list)


@dataclass(frozen=True)
class Option:
    """A command-line option a conversion takes (``--text-only`` is ``text_only``), a name its
    entries can use; None when not given and without a default."""

    name: str
    type: str
    default: Any
    doc: str
    valid: list[Any] = field(default_factory=list)  # Validation clauses a given value must pass
    flags: tuple[str, ...] = ()  # its spellings as the table declares them (none: just `flag`)
    metavar: str | tuple[str, ...] | None = None  # a tuple: that many values (--image-mean R G B)
    exclusive: str | None = None  # the set of options of which at most one is given
    required: bool = False  # it (or, with `exclusive`, one of its set) must be given
    hidden: bool = False  # taken, not shown by --help (an upstream spelling)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def spellings(self) -> tuple[str, ...]:
        return self.flags or (self.flag,)


@dataclass(frozen=True)
class OptionGroup:
    """Options of a command shown together by --help, under the heading the tables give them
    (None: among the command's own options); each with its help text."""

    heading: str | None
    options: list[tuple[Option, str, str]]  # (option, its help text, the table that spells it)


@dataclass(frozen=True)
class Group:
    items: list[Any]
    when: Expression | None
    each: Expression | None
    item_name: str


@dataclass
class MappingTable:
    name: str
    doc: str
    architecture: str | Expression | None  # an expression: the input's own
    metadata: list[Any]
    tensors: list[Any]
    # the values --outtype may take for this conversion; absent: only the source's own types
    outtypes: list[str] = field(default_factory=list)
    unmatched: str = "error"  # an input tensor no `match:` entry selects: an error, or a warning
    values: list[tuple[str, Expression]] = field(default_factory=list)  # names the entries may use
    # names computed for each tensor a `match:` entry selects, before `require` and the transforms
    tensor_values: list[tuple[str, Expression]] = field(default_factory=list)
    tensor_tests: list[TensorTest] = field(default_factory=list)  # names from the data of input tensors
    require: list[Check] = field(default_factory=list)  # what every selected input tensor must satisfy
    checks: list[Check] = field(default_factory=list)  # what the input as a whole must satisfy
    warnings: list[Check] = field(default_factory=list)  # `expr` is when the warning is given
    notes: list[Check] = field(default_factory=list)  # what the summary tells, `expr` when it is told
    arch_option: bool = False  # --arch may name another architecture gguf-py knows
    # the sort key of the tensors `match:` entries make (default: the input's order); it sees
    # what `require` sees and `output`, the output name
    order: Expression | None = None
    # text replaced in every input tensor's name before `match:` patterns are tried
    # (``{".default.weight": ".weight"}``); `tensor.name` stays the name as stored
    rename_inputs: dict[str, str] = field(default_factory=dict)
    options: dict[str, Option] = field(default_factory=dict)  # what the conversion takes on the command line
    # the entries apply --outtype themselves (the name `outtype`, with their casts); otherwise every
    # float tensor is converted to it once planned
    applies_outtype: bool = False
    # plain data the entries use by name (the configs of a model's released sizes), as written
    constants: dict[str, Any] = field(default_factory=dict)
    # a directory output's JSON files besides the weights: file name -> the value written (config.json)
    json_files: dict[str, Expression] = field(default_factory=dict)
    # a Hugging Face output's tokenizer class (transformers), which saves --tokenizer's file beside it
    hf_tokenizer: str | None = None
    output: Expression | None = None  # the default output's name beside a file input
    given: frozenset[str] = frozenset()  # the settings the table (or one it includes) gives itself


def mapping_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("GGFMT_MAPPING_PATH", "").split(os.pathsep) if p]
    return [*extra, *data_dirs("mappings")]


def _find(name: str) -> Path:
    for directory in mapping_dirs():
        path = directory / f"{name}.yaml"
        if path.is_file():
            return path
    raise UsageError(f"no mapping table named {name!r} (looked in {', '.join(map(str, mapping_dirs()))})")


def table_path(name: str) -> Path:
    """The file of the table named ``name`` (the first in search order)."""
    return _find(name)


def mapping_exists(name: str) -> bool:
    return any((d / f"{name}.yaml").is_file() for d in mapping_dirs())


def table_headers() -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(name, YAML) of every table in search order, read once per process; a broken table is
    reported when it is named, not when others are looked through."""
    for directory in mapping_dirs():
        for path in sorted(directory.glob("*.yaml")):
            try:
                data = read_yaml(path, shared=True)
            except SchemaError:
                continue
            yield path.stem, data


def table_sources(data: Mapping[str, Any]) -> list[str]:
    """The ids a table's ``source:`` names: one, or a list of layouts converted alike."""
    declared = data.get("source")
    return [str(s) for s in declared] if isinstance(declared, list) else [str(declared)] if declared else []


def table_for(source: str, target: str) -> str | None:
    """The name of the table that converts ``source`` (a schema or bundle id) to ``target``
    (``gguf``): the first, in search order, whose ``source:`` (a name, or a list of the layouts
    one table converts alike) and ``target:`` say so; else the table named ``<source>-<target>``
    if there is one. None when no table converts it."""
    for name, data in table_headers():
        if source in table_sources(data) and data.get("target") == target:
            return name
    conventional = f"{source}-{target}"
    return conventional if mapping_exists(conventional) else None


def load_mapping(name: str) -> MappingTable:
    """The table ``name``, loaded once per version of its file (a process that converts again
    after the file changed, as a test or a long-lived caller does, reads it again)."""
    path = _find(name)
    try:
        stat = path.stat()
    except OSError:
        return _load(path, ())  # says what is wrong with it
    return _load_version(path, stat.st_mtime_ns, stat.st_size, stat.st_ino)


@cache
def _load_version(path: Path, mtime_ns: int, size: int, inode: int) -> MappingTable:
    return _load(path, ())


def _load(path: Path, including: tuple[str, ...]) -> MappingTable:
    source = path.name
    if path.stem in including:
        raise SchemaError(source, f"includes itself through {' -> '.join(including)}")
    data = read_yaml(path)
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise SchemaError(source, f"unknown keys {sorted(unknown)} (allowed: {sorted(TOP_KEYS)})")
    chain = (*including, path.stem)
    table = None  # the tables it is built on, one on the other
    for name in _included_names(data.get("include"), source):
        try:
            found = _find(name)
        except UsageError:  # a mistake of this table, not of the command line
            raise SchemaError(f"{source}: include", f"no mapping table named {name!r}") from None
        included = _load(found, chain)
        table = included if table is None else _on_top_of(table, included)
    # the names a `match:` entry's output name may use besides its captures: the tensor_values
    tensor_names = frozenset(_mapping_of(data.get("tensor_values"), f"{source}: tensor_values")) \
        | frozenset(name for name, _ in (table.tensor_values if table else []))
    own = MappingTable(
        name=path.stem,
        doc=" ".join(str(data.get("doc", "")).split()),
        architecture=_architecture(data.get("architecture"), source),
        metadata=_items(data.get("metadata") or [], "metadata", f"{source}: metadata", chain),
        tensors=_items(data.get("tensors") or [], "tensors", f"{source}: tensors", chain, tensor_names),
        outtypes=_outtypes(data.get("outtypes"), source),
        unmatched=_unmatched(data.get("unmatched", "error"), source),
        values=_values(data.get("values"), source, "values"),
        tensor_values=_values(data.get("tensor_values"), source, "tensor_values"),
        tensor_tests=_tensor_tests(data.get("tensor_tests"), f"{source}: tensor_tests"),
        require=_checks(data.get("require"), f"{source}: require", CHECK_KEYS, "expr"),
        checks=_checks(data.get("checks"), f"{source}: checks", CHECK_KEYS, "expr"),
        warnings=_checks(data.get("warnings"), f"{source}: warnings", WARNING_KEYS, "when"),
        notes=_checks(data.get("notes"), f"{source}: notes", WARNING_KEYS, "when"),
        arch_option=_flag(data.get("arch_option", False), f"{source}: arch_option"),
        order=_opt_expr(data, "order", source),
        rename_inputs=_renames(data.get("rename_inputs"), f"{source}: rename_inputs"),
        options=_options(data.get("options"), f"{source}: options"),
        applies_outtype=_flag(data.get("applies_outtype", False), f"{source}: applies_outtype"),
        constants=_constants(data.get("constants"), f"{source}: constants"),
        hf_tokenizer=str(data["hf_tokenizer"]) if data.get("hf_tokenizer") else None,
        output=_opt_expr(data, "output", source),
        given=frozenset(data) & frozenset(INHERITED_SETTINGS),
        json_files={str(name): _expr(text, f"{source}: json_files.{name}")
                    for name, text in _mapping_of(data.get("json_files"), f"{source}: json_files").items()},
    )
    return own if table is None else _on_top_of(table, own)


def _included_names(spec: Any, where: str) -> list[str]:
    """``include: gpt2-gguf`` or a list: the tables this one is built on, in order."""
    if spec is None:
        return []
    names = spec if isinstance(spec, list) else [spec]
    if not names or not all(isinstance(n, str) and n for n in names):
        raise SchemaError(f"{where}: include", "names a table, or a list of tables, this one is built on")
    return names


# a table's settings it takes from the tables it includes unless it gives them itself (its name,
# doc, source and target are its own)
INHERITED_SETTINGS = ("architecture", "outtypes", "unmatched", "arch_option", "order", "rename_inputs",
                      "applies_outtype", "hf_tokenizer", "output")


def _on_top_of(base: MappingTable, top: MappingTable) -> MappingTable:
    """``top`` built on ``base`` (``include:``): base's options, constants, values, checks, keys and
    tensors, then top's; what top names again (a value, an option, a constant, a check's `id`, a key
    it writes, a `match:` pattern or `tensor:` it takes) replaces base's in base's place."""
    settings = {name: getattr(top if name in top.given else base, name) for name in INHERITED_SETTINGS}
    return MappingTable(
        name=top.name, doc=top.doc, metadata=_replaced(base.metadata, top.metadata, _entry_key),
        tensors=_replaced(base.tensors, top.tensors, _entry_key),
        values=_replaced(base.values, top.values, lambda v: v[0]),
        tensor_values=_replaced(base.tensor_values, top.tensor_values, lambda v: v[0]),
        tensor_tests=_replaced(base.tensor_tests, top.tensor_tests, lambda t: t.name),
        require=_replaced(base.require, top.require, _check_id), checks=_replaced(base.checks, top.checks, _check_id),
        warnings=_replaced(base.warnings, top.warnings, _check_id), notes=_replaced(base.notes, top.notes, _check_id),
        options={**base.options, **top.options},
        constants={**base.constants, **top.constants}, json_files={**base.json_files, **top.json_files},
        given=base.given | top.given, **settings)


def _check_id(check: Check) -> str | None:
    return check.id  # (a check without an id is never replaced)


def _entry_key(entry: Any) -> Any:
    """What makes two entries the same one: a key's name, a `match:` pattern, a `tensor:` name."""
    if isinstance(entry, MetadataEntry):
        return ("key", entry.key)
    if isinstance(entry, MatchEntry):
        return ("match", entry.pattern.pattern)
    if isinstance(entry, NamedEntry):
        return ("tensor", str(entry.input_template))
    return None  # (a group, a copy or a `from:` entry is never replaced)


def _replaced(base: list[Any], top: list[Any], key: Callable[[Any], Any]) -> list[Any]:
    """``base`` with each item ``top`` gives again (by ``key``) in its place, then top's others;
    several top items of one key all go where base's first was."""
    top_keys: dict[Any, list[Any]] = {}
    for item in top:
        if key(item) is not None:
            top_keys.setdefault(key(item), []).append(item)
    out: list[Any] = []
    placed = set()
    for item in base:
        k = key(item)
        if k is None or k not in top_keys:
            out.append(item)
        elif k not in placed:
            out.extend(top_keys[k])
            placed.add(k)
    return out + [item for item in top if key(item) is None or key(item) not in placed]


def _mapping_of(spec: Any, where: str) -> Mapping[str, Any]:
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise SchemaError(where, "must be a mapping")
    return spec


def _constants(spec: Any, where: str) -> dict[str, Any]:
    constants = dict(_mapping_of(spec, where))
    for name in constants:
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise SchemaError(where, f"{name!r} is not a name")
    return constants


def _options(spec: Any, where: str) -> dict[str, Option]:
    """``options: {text_only: {type: bool, default: false, doc: ...}}``."""
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise SchemaError(where, "is a mapping of option names to {type, default, doc}")
    out = {}
    for name, option in spec.items():
        at = f"{where}.{name}"
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise SchemaError(where, f"{name!r} is not a name")
        if not isinstance(option, Mapping):
            raise SchemaError(at, "is a mapping with `type` (and `default`, `doc`)")
        _check_keys(option, OPTION_KEYS, at)
        if option.get("type") not in OPTION_TYPES:
            raise SchemaError(at, f"`type` is one of {', '.join(OPTION_TYPES)}")
        from ..schema.compiler import validation

        valid = validation(option["valid"], at) if "valid" in option else []
        flags = tuple(str(f) for f in option.get("flags") or ())
        default_flag = "--" + name.replace("_", "-")
        if flags and default_flag not in flags:  # messages name an option by it
            raise SchemaError(at, f"`flags` include {default_flag}")
        metavar = option.get("metavar")
        doc = " ".join(str(option.get("doc", "")).split())
        out[name] = Option(name, str(option["type"]), option.get("default"), doc, valid, flags,
                           tuple(str(m) for m in metavar) if isinstance(metavar, list) else metavar,
                           option.get("exclusive"), bool(option.get("required")), bool(option.get("hidden")))
    return out


def command_line_options(target: str) -> list[OptionGroup]:
    """The options the conversions to ``target`` declare, grouped as their tables' headings say,
    in search order. An option several tables declare is one option: shown where a table spells
    it (`flags:`), else where it is first declared, its help the docs of all of them. A table whose
    options are malformed is passed over here; using it reports what is wrong."""
    homes: dict[str, tuple[str | None, Option, str]] = {}
    docs: dict[str, list[str]] = {}
    for name, data in table_headers():
        if data.get("target") != target:
            continue
        try:
            options = _declared_options(name, data, ())
        except (SchemaError, UsageError):
            continue
        heading = data.get("options_heading")
        for option in options.values():
            known = homes.get(option.name)
            if known is None or (option.flags and not known[1].flags):
                homes[option.name] = (heading if isinstance(heading, str) else None, option, name)
            docs.setdefault(option.name, []).append(option.doc)
    groups: dict[str | None, OptionGroup] = {}
    for option_name, (heading, option, table) in homes.items():
        first = [option.doc, *(d for d in docs[option_name] if d != option.doc)]
        help_text = "; ".join(dict.fromkeys(d for d in first if d))
        groups.setdefault(heading, OptionGroup(heading, [])).options.append((option, help_text, table))
    return list(groups.values())


def _declared_options(name: str, data: Mapping[str, Any], including: tuple[str, ...]) -> dict[str, Option]:
    """The options a table takes, those of the tables it includes first, read from their YAML
    alone (--help names them without loading every table)."""
    if name in including:
        raise SchemaError(name, f"includes itself through {' -> '.join(including)}")
    options: dict[str, Option] = {}
    for included in _included_names(data.get("include"), name):
        options.update(_declared_options(included, read_yaml(_find(included), shared=True), (*including, name)))
    return {**options, **_options(data.get("options"), f"{name}: options")}


def _renames(spec: Any, where: str) -> dict[str, str]:
    if spec is None:
        return {}
    if not isinstance(spec, Mapping) or not all(isinstance(k, str) and k and isinstance(v, str)
                                                for k, v in spec.items()):
        raise SchemaError(where, "is a mapping of text to the text that replaces it")
    return dict(spec)


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise SchemaError(where, f"expected true or false, got {value!r}")
    return value


def _checks(specs: Any, where: str, allowed: frozenset[str], condition: str) -> list[Check]:
    """``[{expr: "r > 0", field: r, message: "..."}]`` (``when`` instead of ``expr`` for warnings)."""
    if specs is None:
        return []
    if not isinstance(specs, list):
        raise SchemaError(where, "must be a list")
    out = []
    for i, spec in enumerate(specs):
        at = f"{where}[{i}]"
        if not isinstance(spec, Mapping):
            raise SchemaError(at, "must be a mapping")
        _check_keys(spec, allowed, at)
        if condition not in spec or not isinstance(spec.get("message"), str):
            raise SchemaError(at, f"needs `{condition}` (an expression) and `message` (text)")
        out.append(Check(_expr(spec[condition], f"{at}, {condition}"), check_message(spec["message"], at),
                         str(spec.get("field", "")), at, str(spec["id"]) if "id" in spec else None))
    return out


def check_message(template: str, where: str) -> str:
    """A message template: text with bare ``{name}`` fields (checked now, filled when it is given)."""
    import string

    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        raise SchemaError(where, f"message {template!r}: {e}") from None
    for _text, name, spec, conversion in parts:
        if name is not None and (not name.isidentifier() or name.startswith("_") or spec or conversion):
            raise SchemaError(where, f"message {template!r}: {{{name}}} is not a bare name")
    return template


MAX_MESSAGE_VALUE = 80  # characters of one value shown in a message


def fill_message(template: str, scopes: list[Scope], where: str, shorten: bool = True) -> str:
    """The message (or, not ``shorten``ed, a tensor name) with each ``{name}`` replaced by its value
    in ``scopes``."""
    import string

    lookup = _lookup(scopes)
    out = []
    for text, name, _spec, _conversion in string.Formatter().parse(template):
        out.append(text)
        if name is not None:
            try:
                value = str(lookup(name))
            except ExpressionError:
                raise SchemaError(where, f"the message uses {{{name}}}, which has no value here") from None
            out.append(value if not shorten or len(value) <= MAX_MESSAGE_VALUE
                       else value[:MAX_MESSAGE_VALUE - 3] + "...")
    return "".join(out)


def _values(spec: Any, where: str, section: str) -> list[tuple[str, Expression]]:
    """``values: {first_layer: "base.num_hidden_layers - config.num_layers"}``: names computed once,
    when first used (each may use the others), that every entry of the table can use."""
    if spec is None:
        return []
    if not isinstance(spec, Mapping):
        raise SchemaError(where, f"`{section}` is a mapping of names to expressions")
    out = []
    for name, text in spec.items():
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise SchemaError(where, f"{section}: {name!r} is not a name")
        out.append((name, _expr(text, f"{where}: {section}.{name}")))
    return out


def table_scope(table: MappingTable, scopes: list[Scope], section: str = "values") -> list[Scope]:
    """``scopes`` with the table's `values` (or `tensor_values`) added, each evaluated when it is
    first used: so a value may assume what the table's `checks` (run before any entry) have made
    sure of."""
    values = getattr(table, section)
    return [*scopes, _LazyValues(values, scopes, f"{table.name}: {section}")] if values else scopes


class _LazyValues(Mapping[str, Any]):
    """A table's `values`, each computed once, when first looked up. A value sees all the others,
    in any order (as Kaitai's instances do), so that a table built on another (``include:``) can
    give a value the other's values use; a value that comes back to itself is the table's mistake."""

    def __init__(self, values: list[tuple[str, Expression]], scopes: list[Scope], where: str) -> None:
        self._exprs = dict(values)
        self._order = [name for name, _ in values]
        self._scopes = scopes
        self._where = where
        self._computed: dict[str, Any] = {}
        self._computing: list[str] = []

    def __getitem__(self, name: str) -> Any:
        if name in self._computed:
            return self._computed[name]
        expr = self._exprs[name]  # KeyError: not a value; the lookup goes on to the next scope
        if name in self._computing:
            cycle = " -> ".join([*self._computing[self._computing.index(name):], name])
            raise SchemaError(f"{self._where}.{name}", f"the values use each other in a circle: {cycle}")
        self._computing.append(name)
        try:
            # the value's own name, used in it, is the one in the scopes outside (a field it adjusts)
            value = _eval(expr, [*self._scopes, _Others(self, name)], f"{self._where}.{name}")
        finally:
            self._computing.pop()
        self._computed[name] = value
        return value

    def __contains__(self, name: object) -> bool:  # without computing it
        return name in self._exprs

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)


class _Others(Mapping[str, Any]):
    """A table's values but one: those the one may use."""

    def __init__(self, values: _LazyValues, own: str) -> None:
        self._values = values
        self._own = own

    def __getitem__(self, name: str) -> Any:
        if name == self._own:
            raise KeyError(name)
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        return name != self._own and name in self._values

    def __iter__(self) -> Iterator[str]:
        return (name for name in self._values if name != self._own)

    def __len__(self) -> int:
        return len(self._values) - 1


def _unmatched(value: Any, where: str) -> str:
    if value not in UNMATCHED:
        raise SchemaError(where, f"`unmatched` is one of {', '.join(UNMATCHED)}, not {value!r}")
    return str(value)


def _outtypes(value: Any, where: str) -> list[str]:
    from .outtype import OUTTYPES

    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v in OUTTYPES for v in value):
        raise SchemaError(f"{where}: outtypes", f"expected a list of {', '.join(OUTTYPES)}, got {value!r}")
    return list(value)


def _expr(value: Any, where: str) -> Expression:
    try:
        return Expression(value, known=True)  # (a table reads parsed documents, never a size probe's UNKNOWN)
    except ExpressionError as e:
        raise SchemaError(where, str(e)) from None


def _opt_expr(spec: Mapping[str, Any], key: str, where: str) -> Expression | None:
    return _expr(spec[key], f"{where}, {key}") if key in spec else None


def _items(specs: Any, section: str, where: str, chain: tuple[str, ...],
           tensor_names: frozenset[str] = frozenset()) -> list[Any]:
    """The entries of a section; ``tensor_names``: the table's `tensor_values`, which a `match:`
    entry's output name may use beside its captures."""
    if not isinstance(specs, list):
        raise SchemaError(where, "must be a list")
    out: list[Any] = []
    for i, spec in enumerate(specs):
        at = f"{where}[{i}]"
        if not isinstance(spec, Mapping):
            raise SchemaError(at, "must be a mapping")
        if "include" in spec:
            try:
                found = _find(str(spec["include"]))
            except UsageError:  # a mistake of this table, not of the command line
                raise SchemaError(at, f"include: no mapping table named {str(spec['include'])!r}") from None
            included = _load(found, chain)
            out.extend(getattr(included, section))
        elif "items" in spec:
            _check_keys(spec, GROUP_KEYS, at)
            out.append(Group(
                items=_items(spec["items"], section, f"{at}.items", chain, tensor_names),
                when=_opt_expr(spec, "when", at),
                each=_opt_expr(spec, "for", at),
                item_name=str(spec.get("as", "item")),
            ))
        elif section == "metadata" and "copy" in spec:
            out.append(_copy_entry(spec, at))
        elif section == "metadata":
            out.append(_metadata_entry(spec, at))
        else:
            out.append(_tensor_entry(spec, at, tensor_names))
    return out


def _check_keys(spec: Mapping[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    unknown = set(spec) - allowed
    if unknown:
        raise SchemaError(where, f"unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")


def _metadata_entry(spec: Mapping[str, Any], where: str) -> MetadataEntry:
    _check_keys(spec, METADATA_KEYS, where)
    if ("key" in spec) == ("gguf" in spec):
        raise SchemaError(where, "give exactly one of `key` (a literal name) and `gguf` (a gguf.Keys name)")
    key = check_template(str(spec["key"]) if "key" in spec else gguf_key(str(spec["gguf"]), where),
                         {"arch", BLOCK_ID, "id"}, where)  # gguf-py spells a group's index {id} in its keys
    value_type = spec.get("type")
    if value_type not in VALUE_TYPES:
        raise SchemaError(where, f"`type` {value_type!r} is not one of {', '.join(sorted(VALUE_TYPES))}")
    if "value" not in spec:
        raise SchemaError(where, "needs a `value` expression")
    return MetadataEntry(key, str(value_type), _expr(spec["value"], f"{where}, value"),
                         _opt_expr(spec, "when", where), where)


def _copy_entry(spec: Mapping[str, Any], where: str) -> CopyEntry:
    _check_keys(spec, COPY_KEYS, where)
    patterns = {}
    for name in ("keys", "except"):
        value = spec.get(name, ["*"] if name == "keys" else [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SchemaError(where, f"`{name}` is a list of key patterns such as 'tokenizer.*'")
        patterns[name] = tuple(value)
    return CopyEntry(_expr(spec["copy"], f"{where}, copy"), patterns["keys"], patterns["except"],
                     _opt_expr(spec, "when", where), where)


def _architecture(value: Any, where: str) -> str | Expression | None:
    """`architecture: llama`, or `{value: EXPR}`: the input's own (a GGUF's general.architecture)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping) and set(value) == {"value"}:
        return _expr(value["value"], f"{where}: architecture")
    raise SchemaError(where, "`architecture` is a name (llama) or {value: EXPR}")


def _tensor_entry(spec: Mapping[str, Any], where: str,
                  tensor_names: frozenset[str] = frozenset()) -> TensorEntry | MatchEntry | NamedEntry:
    _check_keys(spec, TENSOR_KEYS, where)
    if len({"from", "match", "tensor"} & set(spec)) != 1:
        raise SchemaError(where, "needs one of `from` (a parsed tensor record), `match` (a pattern of tensor names) "
                                 "and `tensor` (one tensor's name)")
    if "match" in spec:
        return _match_entry(spec, where, tensor_names)
    if "tensor" in spec:
        if spec.get("drop"):
            raise SchemaError(where, "`drop` applies to `match` entries")
        transforms = spec.get("transforms") or []
        if not isinstance(transforms, list):
            raise SchemaError(where, "`transforms` is a list such as [transpose, 'rope_permute(n_head)']")
        inputs = spec["tensor"]
        if isinstance(inputs, list):  # several tensors, joined
            if len(inputs) < 2 or not transforms or not str(transforms[0]).startswith("concat"):
                raise SchemaError(where, "a `tensor:` list names two or more tensors, joined by concat(axis) as "
                                         "the entry's first transform")
            template: str | list[str] = [check_message(str(t), where) for t in inputs]
        else:
            if any(str(t).startswith("concat") for t in transforms):
                raise SchemaError(where, "concat joins the tensors of a `tensor:` list")
            template = check_message(str(inputs), where)
        return NamedEntry(template, check_message(_output_name(spec, where), where),
                          [_transform_call(t, f"{where}, transforms[{i}]") for i, t in enumerate(transforms)],
                          _opt_expr(spec, "when", where), where,
                          _checks(spec.get("require"), f"{where}, require", CHECK_KEYS, "expr"))
    if "transforms" in spec:
        raise SchemaError(where, "`transforms` apply to `match` entries")
    template = check_template(_output_name(spec, where), {"bid"}, where)
    return TensorEntry(_expr(spec["from"], f"{where}, from"), template, _opt_expr(spec, "when", where), where)


def _output_name(spec: Mapping[str, Any], where: str) -> str:
    """A tensor entry's output name template: gguf-py's name (``gguf: ATTN_Q``) or a literal one."""
    if ("name" in spec) == ("gguf" in spec):
        raise SchemaError(where, "give exactly one of `name` (literal) and `gguf` (a gguf.MODEL_TENSOR name)")
    if "gguf" in spec:
        return gguf_tensor_name(str(spec["gguf"]), where) + str(spec.get("suffix", ".weight"))
    return str(spec["name"]) + str(spec.get("suffix", ""))


def _match_entry(spec: Mapping[str, Any], where: str, tensor_names: frozenset[str] = frozenset()) -> MatchEntry:
    pattern, captures = _name_pattern(str(spec["match"]), where)
    if spec.get("drop") is True:
        if set(spec) - {"match", "when", "drop", "doc"}:
            raise SchemaError(where, "a `drop: true` entry has only `match` and `when`")
        return MatchEntry(pattern, "", [], _opt_expr(spec, "when", where), where, drop=True)
    if "refuse" in spec:
        if set(spec) - {"match", "when", "refuse", "doc"} or not isinstance(spec["refuse"], str):
            raise SchemaError(where, "a `refuse: MESSAGE` entry has only `match` and `when`, and a message")
        return MatchEntry(pattern, "", [], _opt_expr(spec, "when", where), where,
                          refuse=check_message(spec["refuse"], where))
    template = check_template(_output_name(spec, where), set(captures) | tensor_names, where)
    transforms = spec.get("transforms") or []
    if not isinstance(transforms, list):
        raise SchemaError(where, "`transforms` is a list such as [transpose, 'rope_permute(n_head)']")
    if any(str(t).startswith("concat") for t in transforms):
        raise SchemaError(where, "concat joins the tensors of a `tensor:` list, not what a `match:` selects")
    return MatchEntry(pattern, template, [_transform_call(t, f"{where}, transforms[{i}]")
                                          for i, t in enumerate(transforms)],
                      _opt_expr(spec, "when", where), where,
                      _checks(spec.get("require"), f"{where}, require", CHECK_KEYS, "expr"))


def _name_pattern(pattern: str, where: str) -> tuple[re.Pattern[str], list[str]]:
    """A `match:` pattern as a regular expression, and its captures."""
    import string

    regex, captures = "", []
    try:
        parts = list(string.Formatter().parse(pattern))
    except ValueError as e:
        raise SchemaError(where, f"match {pattern!r}: {e}") from None
    for text, capture, spec_, conversion in parts:
        regex += re.escape(text)
        if capture is None:
            continue
        if not capture.isidentifier() or capture.startswith("_") or conversion or capture in captures \
                or spec_ not in CAPTURE_KINDS or (capture == BLOCK_ID and spec_):
            raise SchemaError(where, f"match {pattern!r}: {{{capture}{':' + spec_ if spec_ else ''}}} is not a "
                                     "capture ({name}, {name:any} or {bid}, each name once)")
        captures.append(capture)
        # a block number has no leading zero, so that layers.01 and layers.1 are not the same block
        kind = "0|[1-9][0-9]{0,8}" if capture == BLOCK_ID else CAPTURE_KINDS[spec_]
        regex += f"(?P<{capture}>{kind})"
    return re.compile(regex), captures


def _tensor_tests(spec: Any, where: str) -> list[TensorTest]:
    """``tensor_tests: {kv_tiled: {match: PATTERN, holds: "kv_copies(n_head)"}}``."""
    from .transforms import TESTS

    out = []
    for name, test in _mapping_of(spec, where).items():
        at = f"{where}.{name}"
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise SchemaError(where, f"{name!r} is not a name")
        if not isinstance(test, Mapping) or not isinstance(test.get("match"), str) or "holds" not in test:
            raise SchemaError(at, "is `{match: PATTERN, holds: TEST(ARGS)}`")
        _check_keys(test, TENSOR_TEST_KEYS, at)
        pattern, _ = _name_pattern(str(test["match"]), at)
        out.append(TensorTest(name, pattern, _transform_call(test["holds"], f"{at}, holds", TESTS, "test"), at,
                              str(test["match"])))
    return out


def _transform_call(text: Any, where: str, registry: Mapping[str, Any] | None = None,
                    kind: str = "transform") -> TransformCall:
    """``transpose`` or ``scale(alpha / r)``: a registered transform (or, given its ``registry``,
    a test) and its argument expressions."""
    import ast

    from .transforms import TRANSFORMS

    registry = TRANSFORMS if registry is None else registry
    example = "scale(2)" if kind == "transform" else "kv_copies(n_head)"
    source = str(text)
    try:
        node = ast.parse(source, mode="eval").body
    except SyntaxError:
        raise SchemaError(where, f"{source!r} is not a {kind} call such as {example}") from None
    call = node if isinstance(node, ast.Call) else None
    name_node = call.func if call is not None else node
    if not isinstance(name_node, ast.Name) or (call is not None and call.keywords):
        raise SchemaError(where, f"{source!r} is not a {kind} call such as {example}")
    if name_node.id not in registry:
        raise SchemaError(where, f"{name_node.id!r} is not a {kind} (there are {', '.join(sorted(registry))})")
    args = [_expr(ast.unparse(a), where) for a in (call.args if call is not None else [])]
    return TransformCall(name_node.id, args, source)


def check_template(template: str, allowed: set[str] | frozenset[str], where: str) -> str:
    """A key or tensor-name template: text with ``{name}`` fields from ``allowed`` only.

    Checked when the table is loaded: no attribute or index (``{arch.__class__}``), no
    conversion or format spec, no positional field, so filling it can only insert a value."""
    import string

    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        raise SchemaError(where, f"name template {template!r}: {e}") from None
    for _text, field_name, spec, conversion in parts:
        if field_name is None:
            continue
        if spec or conversion:
            raise SchemaError(where, f"name template {template!r}: {{{field_name}}} has a format spec or "
                                     "conversion; a field is written as its bare name, such as {bid}")
        if field_name not in allowed:
            raise SchemaError(where, f"name template {template!r}: {{{field_name}}} is not one of "
                                     f"{', '.join('{' + a + '}' for a in sorted(allowed))}")
    return template


def template_names(template: str) -> list[str]:
    """The ``{name}`` fields of a checked template."""
    import string

    return [name for _text, name, _spec, _conversion in string.Formatter().parse(template) if name is not None]


def lookup_in(scopes: list[Scope], name: str, where: str) -> Any:
    """The value of ``name`` in ``scopes`` (the innermost first)."""
    try:
        return _lookup(scopes)(name)
    except ExpressionError as e:
        raise SchemaError(where, str(e)) from None


def fill_template(template: str, where: str, **values: Any) -> str:
    """A checked template with its fields filled in; a field without a value is the table's mistake."""
    import string

    for _text, field_name, _spec, _conversion in string.Formatter().parse(template):
        if field_name is not None and values.get(field_name) is None:
            raise SchemaError(where, f"{template!r} uses {{{field_name}}}, which has no value here "
                                     "(bid exists inside a `for` group only)")
    return template.format(**values)


def gguf_key(symbol: str, where: str) -> str:
    """``Attention.HEAD_COUNT`` -> ``gguf.Keys.Attention.HEAD_COUNT`` (a class walk, no eval)."""
    import gguf

    node: Any = gguf.Keys
    for part in symbol.removeprefix("Keys.").split("."):
        if not part.isidentifier() or part.startswith("_") or part not in vars(node):
            raise SchemaError(where, f"gguf.Keys has no {symbol!r}")
        node = vars(node)[part]
    if not isinstance(node, str):
        raise SchemaError(where, f"gguf.Keys.{symbol} is not a key name")
    return node


def gguf_tensor_name(symbol: str, where: str) -> str:
    """``ATTN_Q`` -> ``blk.{bid}.attn_q`` through gguf.MODEL_TENSOR and gguf.TENSOR_NAMES."""
    import gguf

    member = gguf.MODEL_TENSOR.__members__.get(symbol.removeprefix("MODEL_TENSOR."))
    if member is None or member not in gguf.TENSOR_NAMES:
        raise SchemaError(where, f"gguf.MODEL_TENSOR has no {symbol!r}")
    return str(gguf.TENSOR_NAMES[member])


# -- resolution against a parsed document -----------------------------------------------------

Scope = Mapping[str, Any]


def _lookup(scopes: list[Scope]) -> Callable[[str], Any]:
    def lookup(name: str) -> Any:
        for scope in reversed(scopes):
            if name in scope:
                return scope[name]
        raise ExpressionError(f"unknown name {name!r}")

    return lookup


def _eval(expr: Expression, scopes: list[Scope], where: str) -> Any:
    try:
        return expr(_lookup(scopes))
    except ExpressionError as e:
        raise SchemaError(where, str(e)) from None


MAX_WALK_STEPS = 100_000  # entries a table may visit, `for` groups expanded: far above any model's tensors


def walk(items: list[Any], scopes: list[Scope], budget: list[int] | None = None) -> Iterator[tuple[Any, list[Scope]]]:
    """Each entry (MetadataEntry or TensorEntry) that applies, with the scopes to evaluate it in.
    ``budget`` counts the entries visited, so that nested `for` groups cannot run without end."""
    budget = budget if budget is not None else [MAX_WALK_STEPS]
    for item in items:
        budget[0] -= 1
        if budget[0] < 0:
            raise SchemaError(getattr(item, "where", "group"), f"the table visits more than {MAX_WALK_STEPS} "
                                                               "entries once its `for` groups are expanded")
        # (a `match:` entry's `when` sees its captures: it is evaluated for each tensor it selects)
        if item.when is not None and not isinstance(item, MatchEntry) \
                and not _eval(item.when, scopes, getattr(item, "where", "group")):
            continue
        if isinstance(item, Group):
            if item.each is None:
                yield from walk(item.items, scopes, budget)
                continue
            sequence = _eval(item.each, scopes, "group `for`")
            if not isinstance(sequence, list | tuple):
                raise SchemaError("group `for`", f"{item.each.source!r} is {type(sequence).__name__}, not a list")
            for index, element in enumerate(sequence):
                yield from walk(item.items, [*scopes, {item.item_name: element, BLOCK_ID: index}], budget)
        else:
            yield item, scopes


def evaluate_entry(expr: Expression, scopes: list[Scope], where: str) -> Any:
    return _eval(expr, scopes, where)


def table_uses(table: MappingTable, name: str) -> bool:
    """Whether any expression of ``table`` looks up ``name`` (``base``: whether the conversion needs
    the base model's files)."""
    return name in _names(table)


def _names(table: MappingTable) -> set[str]:
    exprs: list[Expression | None] = [e for _, e in [*table.values, *table.tensor_values]]
    exprs += [a for test in table.tensor_tests for a in test.call.args]
    exprs += [c.expr for c in [*table.require, *table.checks, *table.warnings, *table.notes]]
    exprs.append(table.order)

    def items(entries: list[Any]) -> None:
        for entry in entries:
            if isinstance(entry, Group):
                exprs.extend([entry.when, entry.each])
                items(entry.items)
            elif isinstance(entry, MetadataEntry):
                exprs.extend([entry.value, entry.when])
            elif isinstance(entry, TensorEntry):
                exprs.extend([entry.source, entry.when])
            elif isinstance(entry, MatchEntry | NamedEntry):
                exprs.append(entry.when)
                exprs.extend(c.expr for c in entry.require)
                exprs.extend(a for call in entry.transforms for a in call.args)

    items(table.metadata)
    items(table.tensors)
    return {n for e in exprs if e is not None for n in e.names}
