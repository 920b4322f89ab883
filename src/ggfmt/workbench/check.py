"""``fmt schema check``: a linter for schemas and mapping tables, one line per problem with
``file:line:column``.

What it finds: what the language's definition (schema/language.json) refuses (unknown keys,
wrong types), what the compiler refuses (unknown types, bad expressions), names an expression
uses that nothing defines, fields without a ``doc``, a ``meta.id`` that is not the file name,
types nothing uses, and, for the tables that convert a schema, a ``from:`` naming a field the
schema lacks. With ``--parse FILE``, a sample is parsed (the first mismatch, with its offset)
and, where a table converts it, planned (an input tensor no entry selects is reported).

The JSON Schema validator (the ``jsonschema`` package) is imported here only: its import costs
about 70 ms, which every parse would otherwise pay.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import FormatError, SchemaError, UsageError
from ..schema.compiler import Namespace
from ..schema.expr import FUNCTIONS, Expression, ExpressionError
from ..schema.language import definition
from . import magic_clashes, meta_of

# names every expression may use without a definition in the schema
ENGINE_NAMES = {"_", "_root", "_index", "_io", "True", "False", "None", *FUNCTIONS}
# keys of a field whose values are expressions


@dataclass(frozen=True)
class Problem:
    file: Path
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class _Positions:
    """Where each value of a YAML file is (line, column, 1-based), by its path of keys and indices."""

    def __init__(self, text: str) -> None:
        self._root = yaml.compose(text)

    def at(self, path: tuple[Any, ...]) -> tuple[int, int]:
        node, found = self._root, self._root
        for step in path:
            if isinstance(node, yaml.MappingNode):
                match = next(((k, v) for k, v in node.value if k.value == step), None)
                if match is None:
                    break
                found, node = match[0], match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
                node = found = node.value[step]
            else:
                break
        target = found if found is not None else node
        if target is None:
            return 1, 1
        return target.start_mark.line + 1, target.start_mark.column + 1


def check_paths(paths: list[Path], sample: Path | None = None) -> list[Problem]:
    problems: list[Problem] = []
    for path in paths:
        problems.extend(check_file(path))
    if sample is not None and paths:
        problems.extend(check_sample(paths[0], sample))
    return problems


def check_file(path: Path) -> list[Problem]:
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        positions = _Positions(text)
    except (OSError, UnicodeDecodeError) as e:
        return [Problem(path, 1, 1, f"cannot be read: {getattr(e, 'strerror', None) or e}")]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        return [Problem(path, line, column, f"not valid YAML: {getattr(e, 'problem', e)}")]
    if not isinstance(data, Mapping):
        return [Problem(path, 1, 1, "a schema or table is a YAML mapping")]
    if "recognise" in data and "seq" not in data and "meta" not in data:  # a bundle declaration (bundles/*.yaml)
        return list(_bundle_problems(path, data, positions))
    is_table = "source" in data or "target" in data or "metadata" in data or "tensors" in data
    kind = "table" if is_table else "layout"
    found = list(_against_language(path, data, positions, kind))
    if found:  # the rest assumes the file's shape is right
        return found
    if is_table:
        return list(_table_problems(path, data, positions))
    return list(_layout_problems(path, data, positions))


def _against_language(path: Path, data: Any, positions: _Positions, kind: str) -> Iterator[Problem]:
    import jsonschema  # type: ignore[import-untyped]

    language = dict(definition())
    language["$ref"] = f"#/$defs/{kind}"
    validator = jsonschema.Draft202012Validator(language)
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        at = tuple(error.absolute_path)
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in at).removeprefix(".")
        if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
            allowed = sorted(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - set(allowed), key=str):  # each at its own line
                line, column = positions.at((*at, key))
                yield Problem(path, line, column, f"{where}: unknown key {key} (allowed: {', '.join(allowed)})"
                              if where else f"unknown key {key} (allowed: {', '.join(allowed)})")
            continue
        line, column = positions.at(at)
        yield Problem(path, line, column, f"{where or '(top)'}: {_language_message(error)}")


def _language_message(error: Any) -> str:
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, Mapping) else []
        return f"unknown key{'s' if len(extra) > 1 else ''} {', '.join(extra)} (allowed: {', '.join(allowed)})"
    one_key_each = _one_key_each(error)
    if one_key_each and isinstance(error.instance, Mapping):
        # alternatives told apart by one key each ({json: F} or {model_card: F}): name the keys
        present = [k for k in one_key_each if k in error.instance]
        if len(present) > 1:
            return f"{' and '.join(present)} together: only one of them"
        if not present:
            return f"needs one of {', '.join(one_key_each)}"
    if error.validator in ("anyOf", "oneOf") and error.context:
        return _language_message(_meant_alternative(error))
    if error.validator == "not" and set(error.validator_value) == {"required"}:
        return f"{', '.join(error.validator_value['required'])}: not allowed here"
    if error.validator == "propertyNames" or "propertyNames" in error.schema_path:
        return f"{error.instance!r} is not a key of the language (a YAML flow mapping split at a comma? quote the text)"
    return str(error.message)


def _one_key_each(error: Any) -> list[str]:
    """The keys of a choice whose alternatives each require one key (and may say more), else []."""
    if error.validator not in ("anyOf", "oneOf"):
        return []
    alternatives = error.validator_value
    required = [a.get("required") for a in alternatives if isinstance(a, Mapping)]
    singles = [r[0] for r in required if isinstance(r, list) and len(r) == 1]
    return [str(k) for k in singles] if len(singles) == len(alternatives) else []


def _meant_alternative(error: Any) -> Any:
    """The complaint of the alternative the value was meant to be: not one of another type, then the
    one with the fewest complaints, and among its complaints not one that only misses a required key
    or has keys of another kind."""
    by_alternative: dict[Any, list[Any]] = {}
    for e in error.context:
        by_alternative.setdefault(e.relative_schema_path[0], []).append(e)
    depth = len(error.absolute_path)
    fitting = [errs for errs in by_alternative.values()
               if not any(e.validator == "type" and len(e.absolute_path) == depth for e in errs)]
    candidates = min(fitting or list(by_alternative.values()), key=len)
    rank = {"required": 2, "additionalProperties": 1}
    return min(candidates, key=lambda e: (rank.get(e.validator, 0), -len(e.absolute_path), str(e.message)))


# -- bundles -----------------------------------------------------------------------------------

def _bundle_problems(path: Path, data: Mapping[str, Any], positions: _Positions) -> Iterator[Problem]:
    """What the language's definition refuses (unknown keys, a field with two readers), what loading
    the declaration refuses (bad expressions, an include of nothing), and checks about files the
    declaration does not read."""
    from ..sources.bundles import load_bundle

    found = list(_against_language(path, data, positions, "bundle"))
    yield from found
    if found:  # the rest assumes the declaration's shape is right
        return
    try:
        bundle = load_bundle(path)
    except SchemaError as e:
        yield Problem(path, 1, 1, e.message)
        return
    files = {file for _, file, _ in bundle.fields.values()}
    for i, check in enumerate(bundle.checks):
        if check.file not in files:
            line, column = positions.at(("checks", i, "file"))
            yield Problem(path, line, column, f"checks[{i}]: {check.file} is not a file the declaration reads "
                                              f"(its fields read {', '.join(sorted(files))})")


# -- layouts -----------------------------------------------------------------------------------

def _layout_problems(path: Path, data: Mapping[str, Any], positions: _Positions) -> Iterator[Problem]:
    meta = meta_of(data)
    if meta.get("id") != path.stem:
        line, column = positions.at(("meta", "id"))
        yield Problem(path, line, column, f"meta.id {meta.get('id')!r} is not the file's name {path.stem!r}: "
                                          "imports and --schema use file names")
    try:
        from ..schema import load_yaml_schema, namespace_of

        load_yaml_schema(path)
        namespace = namespace_of(path)  # its types and those it imports, as a parse resolves them
    except SchemaError as e:
        line, column = _where_in(e, data, positions)
        yield Problem(path, line, column, _unprefixed(str(e), path))
        return
    clashes = magic_clashes(path)
    if clashes and "recognise" not in data:
        line, column = positions.at(("seq", 0))
        yield Problem(path, line, column, f"its magic is also that of {', '.join(clashes)}: give it a `recognise:` "
                                          "rule, or a file both read to the end is a tie that needs --schema")
    types = data.get("types") or {}
    yield from _fields_lint(path, ("seq",), data.get("seq") or [], positions)
    for name, typedef in types.items():
        if isinstance(typedef, Mapping):
            yield from _fields_lint(path, ("types", name, "seq"), typedef.get("seq") or [], positions)
            if not typedef.get("doc"):
                line, column = positions.at(("types", name))
                yield Problem(path, line, column, f"type {name} has no doc")
    yield from _undefined_names(path, data, positions, namespace)
    yield from _unused_types(path, data, positions, namespace)
    yield from _tables_of(path, data, positions, namespace)


def _unprefixed(text: str, path: Path) -> str:
    """A message without the file name the line already starts with."""
    for prefix in (f"{path}: ", f"{path.name}: "):
        text = text.removeprefix(prefix)
    return text


def _where_in(error: SchemaError, data: Mapping[str, Any], positions: _Positions) -> tuple[int, int]:
    """The position a compiler error names (`type T, seq[i]`), else the top of the file."""
    import re

    text = str(error)
    match = re.search(r"type (\S+), seq\[(\d+)\]", text)
    if match:
        name, index = match.group(1), int(match.group(2))
        if name in (data.get("types") or {}):
            return positions.at(("types", name, "seq", index))
        return positions.at(("seq", index))
    return 1, 1


def _fields_lint(path: Path, at: tuple[Any, ...], seq: list[Any], positions: _Positions) -> Iterator[Problem]:
    for i, spec in enumerate(seq):
        if isinstance(spec, Mapping) and "align" not in spec and not spec.get("doc"):
            line, column = positions.at((*at, i))
            yield Problem(path, line, column, f"field {spec.get('id')} has no doc")


def _expressions(data: Mapping[str, Any], namespace: Namespace, root: str) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """(path in the file, source) of every expression of the layout and of its own types."""
    yield from namespace.types[root].layout.expressions()
    for name in data.get("types") or {}:
        if str(name) in namespace.types:
            for at, source in namespace.types[str(name)].layout.expressions():
                yield ("types", name, *at), source


def _defined_names(path: Path, namespace: Namespace) -> set[str]:
    """Every name a field, instance or parameter of the layout (or of what it imports) defines;
    a shared part is read inside the schemas that import it, so their names are in scope too."""
    names: set[str] = set()
    for space in [namespace, *(space for _, space in _importing_namespaces(path))]:
        for typedef in space.types.values():
            names.update(typedef.layout.defines())
    return names


def _importing_namespaces(path: Path) -> list[tuple[Path, Namespace]]:
    """The schemas that import ``path``'s, each with its types as the engine resolves them."""
    from ..schema import namespace_of

    found = []
    for other in _importers(path):
        try:
            found.append((other, namespace_of(other)))
        except SchemaError:
            continue  # its own check says why
    return found


def _importers(path: Path) -> list[Path]:
    """The schemas of the search path (and of ``path``'s folder) that import ``path``'s schema."""
    from ..schema import available_schemas, read_yaml

    found = {p.resolve(): p for p in [*available_schemas().values(), *path.parent.glob("*.yaml")]}
    out = []
    for candidate in found.values():
        try:
            other = read_yaml(candidate, shared=True)
        except SchemaError:
            continue
        if path.stem in (meta_of(other).get("imports") or []):
            out.append(candidate)
    return out


def _undefined_names(path: Path, data: Mapping[str, Any], positions: _Positions,
                     namespace: Namespace) -> Iterator[Problem]:
    defined = _defined_names(path, namespace) | ENGINE_NAMES
    for at, source in _expressions(data, namespace, _root(data, path)):
        try:
            names = Expression(source).names
        except ExpressionError:
            continue  # the compiler has said so
        for name in sorted(names - defined):
            line, column = positions.at(at)
            yield Problem(path, line, column, f"{name!r} in {source!r} is defined by no field, instance or "
                                              "parameter of the schema or its imports")


def _unused_types(path: Path, data: Mapping[str, Any], positions: _Positions,
                  namespace: Namespace) -> Iterator[Problem]:
    own = [str(k) for k in data.get("types") or {}]
    used: set[str] = set()

    def visit(space: Namespace, name: str) -> None:
        for named in space.types[name].layout.type_names():
            if named in space.types and named not in used:
                used.add(named)
                visit(space, named)

    visit(namespace, _root(data, path))
    for other, space in _importing_namespaces(path):  # a shared part's types are used by its importers
        for name, typedef in list(space.types.items()):
            if typedef.source == other.name:  # the importer's own types, not the shared part's
                visit(space, name)
    for name in own:
        if name not in used:
            line, column = positions.at(("types", name))
            yield Problem(path, line, column, f"type {name} is used by no field (reachable from the layout's seq)")


def _root(data: Mapping[str, Any], path: Path) -> str:
    """The name the loader gives the layout's own type."""
    return str(meta_of(data).get("id") or path.stem)


def _tables_of(path: Path, data: Mapping[str, Any], positions: _Positions,
               namespace: Namespace) -> Iterator[Problem]:
    """A `from:` of a table converting this layout must name one of its fields."""
    from ..convert.mapping import table_headers, table_path, table_sources

    schema_id = str(meta_of(data).get("id", path.stem))
    fields = _defined_names(path, namespace)
    for name, table in table_headers():
        if schema_id not in table_sources(table):
            continue
        table_file = table_path(name)
        table_positions = _Positions(table_file.read_text(encoding="utf-8"))
        for at, entry in _table_entries(table.get("tensors") or [], ("tensors",)):
            source = entry.get("from")
            if isinstance(source, str):
                try:
                    names = Expression(source).names
                except ExpressionError:
                    continue
                group_names = {str(g) for g in _group_names(table, at)}
                for missing in sorted(names - fields - group_names - ENGINE_NAMES):
                    line, column = table_positions.at((*at, "from"))
                    yield Problem(table_file, line, column,
                                  f"from: {source}: {schema_id} has no field {missing!r}")


def _table_entries(items: list[Any], at: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Mapping[str, Any]]]:
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            continue
        if "items" in item:
            yield from _table_entries(item["items"], (*at, i, "items"))
        else:
            yield (*at, i), item


def _group_names(table: Mapping[str, Any], at: tuple[Any, ...]) -> Iterator[str]:
    """The names the `for` groups around an entry bind (`as`, and bid)."""
    node: Any = table
    for step in at:
        node = node[step]
        if isinstance(node, Mapping) and "for" in node:
            yield str(node.get("as", "item"))
            yield "bid"


# -- tables ------------------------------------------------------------------------------------

def _table_problems(path: Path, data: Mapping[str, Any], positions: _Positions) -> Iterator[Problem]:
    from ..convert.mapping import _load

    try:
        _load(path, ())
    except SchemaError as e:
        message = _unprefixed(str(e), path)
        line, column = positions.at(_entry_path(message.split(": ", 1)[0]))
        yield Problem(path, line, column, message)


def _entry_path(where: str) -> tuple[Any, ...]:
    """``metadata[0], value`` or ``options.scale`` (where the loader says a mistake is) as a path
    of keys and indices into the file: the position of the deepest part the file has."""
    import re

    steps: list[Any] = []
    for part in re.split(r", |\.", where):
        match = re.fullmatch(r"([\w-]+)((?:\[\d+\])*)", part)
        if match is None:
            break
        steps.append(match[1])
        steps.extend(int(i) for i in re.findall(r"\[(\d+)\]", match[2]))
    return tuple(steps)


# -- a sample file ------------------------------------------------------------------------------

def check_sample(schema: Path, sample: Path) -> list[Problem]:
    """Parse ``sample`` with ``schema`` (the first mismatch, with its offset), then plan its
    conversion where a table converts it (an input tensor no entry selects, say)."""
    from ..engine import parse

    try:
        doc = parse(sample, str(schema))
    except (FormatError, SchemaError, UsageError) as e:
        return [Problem(sample, 1, 1, _unprefixed(str(e), sample))]
    from ..convert import _settings, _table_or_none
    from ..convert.plan import plan_gguf

    problems = []
    for target in ("gguf",):
        table = _table_or_none(doc.schema.id, target)
        if table is None:
            continue
        try:
            plan_gguf(doc, table, None, _settings(table, {}, None))
        except UsageError:
            continue  # an option the conversion needs and the check cannot know: not the sample's fault
        except (FormatError, SchemaError) as e:
            problems.append(Problem(sample, 1, 1, f"{table.name}: {_unprefixed(str(e), sample)}"))
    return problems
