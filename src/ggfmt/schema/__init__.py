"""Schemas: finding them (by name, by magic, by path) and loading them.

A schema is a YAML file in a schema directory (the ``schemas/`` folder shipped with ggfmt,
plus any folder listed in ``GGFMT_SCHEMA_PATH``), or a Python module exposing a Construct
object as ``schema``, loaded only from a path the user names (being code, it is never
picked up by a search).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import io
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import Any

import construct as cs

from ..errors import SchemaError, UsageError
from ..io.resources import data_dirs
from . import yaml_cache
from .compiler import Namespace, Param, _params
from .expr import Expression, ExpressionError
from .language import keys

MAX_SCHEMA_BYTES = 1 << 20
# YAML aliases share one node among many places; text made of them (a "billion laughs" file)
# expands past any memory. A schema or table with more nodes than this, counted with every
# alias expanded, is refused before anything walks it.
MAX_YAML_NODES = 200_000
TOP_KEYS = keys("layout")  # from the language's one definition (schema/language.json)
META_KEYS = keys("meta")


@dataclass
class Schema:
    """A loaded schema: the root Construct plus what the engine and the CLI need to know."""

    id: str
    title: str
    doc: str
    source: str
    construct: cs.Construct
    params: dict[str, Param] = field(default_factory=dict)
    trailing: bool = False
    enums: dict[str, dict[Any, str]] = field(default_factory=dict)  # `enums:`, name -> {value: label}
    registers_tensors: bool = True  # its tensor records list themselves as parsed (a Python schema's may not)
    # what must hold of a parsed file for it to be this layout rather than another with its magic
    recognise: Expression | None = None
    application: str = ""  # the programs that wrote or read such files
    current: str = ""  # what makes such a file current when no table converts it


@dataclass(frozen=True)
class SchemaInfo:
    """What the catalogue knows of a schema file without compiling it."""

    name: str
    path: Path
    title: str
    magic: bytes | None


def schema_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("GGFMT_SCHEMA_PATH", "").split(os.pathsep) if p]
    return [*extra, *data_dirs("schemas")]


def read_yaml(path: Path, *, shared: bool = False) -> dict[str, Any]:
    """A schema or mapping file's YAML (safe loader only), parsed once per version of the file.

    Callers get a fresh copy to change as they like, or with ``shared`` the cached object
    itself (for read-only looks, which then cost nothing)."""
    try:
        stat = path.stat()
    except OSError as e:
        raise SchemaError(str(path), f"cannot be read: {e.strerror}") from None
    if not S_ISREG(stat.st_mode):  # a FIFO would block the read for ever
        raise SchemaError(str(path), "is not a regular file")
    if stat.st_size > MAX_SCHEMA_BYTES:
        raise SchemaError(str(path), f"larger than {MAX_SCHEMA_BYTES} bytes")
    parsed = _parsed_yaml(path, stat.st_mtime_ns, stat.st_size)
    return parsed if shared else copy.deepcopy(parsed)


@functools.lru_cache(maxsize=256)
def _parsed_yaml(path: Path, mtime_ns: int, size: int) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_SCHEMA_BYTES + 1)
    except OSError as e:
        raise SchemaError(str(path), f"cannot be read: {e.strerror}") from None
    if len(raw) > MAX_SCHEMA_BYTES:  # (grown since it was looked at)
        raise SchemaError(str(path), f"larger than {MAX_SCHEMA_BYTES} bytes")
    data = yaml_cache.load(raw)
    kept = isinstance(data, dict)  # (anything else is a broken entry: the YAML is read again)
    if not kept:
        import yaml  # (only when a file is not kept already: see yaml_cache)

        stream = io.BytesIO(raw)
        stream.name = str(path)  # (PyYAML's messages name the file as they did when it read it)
        try:
            data = yaml.load(stream, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError as e:
            raise SchemaError(str(path), f"is not valid YAML: {e}".replace("\n", " ")) from None
        except RecursionError:
            raise SchemaError(str(path), "is nested too deeply") from None
    if not isinstance(data, dict):
        raise SchemaError(str(path), "a schema is a YAML mapping (meta, doc, seq, types, ...)")
    if _nodes(data, MAX_YAML_NODES) > MAX_YAML_NODES:
        raise SchemaError(str(path), f"holds more than {MAX_YAML_NODES} values once its aliases are expanded")
    if not kept:
        yaml_cache.store(raw, data)
    return data


def _nodes(value: Any, budget: int) -> int:
    """How many values ``value`` holds with aliases expanded, counting no further than ``budget``."""
    count, stack = 0, [value]
    while stack and count <= budget:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            count += len(item) // 64  # long strings weigh more: a few long ones repeated by aliases add up
    return count


def _find_file(name: str, near: Path | None = None) -> Path:
    directories = [*([near] if near is not None else []), *schema_dirs()]
    for directory in directories:
        path = directory / f"{name}.yaml"
        if path.is_file():
            return path
    raise SchemaError(name, f"no schema named {name!r} (looked in {', '.join(str(d) for d in directories)})")


class _Loader:
    """Loads YAML schema files and their imports once each."""

    def __init__(self) -> None:
        self.namespaces: dict[Path, Namespace] = {}
        self.loading: set[Path] = set()

    def namespace(self, path: Path) -> tuple[Namespace, dict[str, Any]]:
        path = path.resolve()
        data = read_yaml(path)
        if path in self.namespaces:
            return self.namespaces[path], data
        if path in self.loading:
            raise SchemaError(str(path), "imports itself (through a cycle of imports)")
        self.loading.add(path)
        try:
            source = path.name
            unknown = set(data) - TOP_KEYS
            if unknown:
                raise SchemaError(source, f"unknown top-level keys {sorted(unknown)} (allowed: {sorted(TOP_KEYS)})")
            meta = data.get("meta") or {}
            unknown = set(meta) - META_KEYS
            if unknown:
                raise SchemaError(source, f"unknown meta keys {sorted(unknown)} (allowed: {sorted(META_KEYS)})")
            if meta.get("endian", "le") != "le":
                raise SchemaError(source, "only little-endian schemas (`endian: le`) are supported")
            schema_id = str(meta.get("id") or path.stem)
            ns = Namespace(source, lambda name: self.namespace(_find_file(name, path.parent))[0])
            for imported in meta.get("imports") or []:
                ns.import_schema(str(imported))
            ns.add_enums(data.get("enums"), source)
            body = {k: v for k, v in data.items()
                    if k in ("doc", "params", "seq", "instances", "types", "tensor", "view")}
            ns.add(schema_id, body, source)
            self.namespaces[path] = ns
            return ns, data
        finally:
            self.loading.discard(path)


def namespace_of(path: Path) -> Namespace:
    """The types the schema at ``path`` can name (its own and those it imports), resolved as a
    parse resolves them: what the author's tools ask for sizes and types."""
    return _Loader().namespace(path)[0]


def magic_of(data: Mapping[str, Any]) -> bytes | None:
    """A schema's magic: the ``contents`` of its first field, if it has one."""
    seq = data.get("seq") or []
    first = seq[0] if isinstance(seq, list) and seq and isinstance(seq[0], Mapping) else {}
    magic = first.get("contents")
    try:
        if isinstance(magic, str) and magic:
            return magic.encode("latin-1")
        if isinstance(magic, list) and magic:
            return bytes(magic)
    except (UnicodeEncodeError, ValueError, TypeError):
        raise SchemaError("contents", f"{magic!r} is not a string of bytes or a list of byte values") from None
    return None


def load_yaml_schema(path: Path) -> Schema:
    try:
        return _load_yaml_schema(path)
    except SchemaError:
        raise
    except RecursionError:
        raise SchemaError(str(path), "a type contains itself (or the schema is nested too deeply)") from None
    except (TypeError, ValueError, LookupError, AttributeError, UnicodeError) as e:
        # The loader checks what it knows to check; anything else malformed lands here, not in a crash.
        raise SchemaError(str(path), f"malformed: {type(e).__name__}: {e}") from None


def _checked_root(ns: Namespace, schema_id: str) -> Any:
    ns.check_endless(schema_id)
    return ns.construct(schema_id)


def _load_yaml_schema(path: Path) -> Schema:
    ns, data = _Loader().namespace(path)
    meta = data.get("meta") or {}
    schema_id = str(meta.get("id") or path.stem)
    return Schema(
        id=schema_id,
        title=str(meta.get("title", schema_id)),
        doc=" ".join(str(data.get("doc", "")).split()),
        source=str(path),
        construct=_checked_root(ns, schema_id),
        params=_params(data.get("params"), path.name),
        trailing=bool(meta.get("trailing", False)),
        enums=ns.enums,
        recognise=_recognise(data.get("recognise"), path.name),
        application=" ".join(str(meta.get("application", "")).split()),
        current=" ".join(str(meta.get("current", "")).split()),
    )


def _recognise(spec: Any, source: str) -> Expression | None:
    """``recognise: {expr: EXPR, doc: TEXT}``."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping) or set(spec) - {"expr", "doc"} or "expr" not in spec:
        raise SchemaError(source, "`recognise` is {expr: EXPR, doc: TEXT}")
    try:
        return Expression(spec["expr"])
    except ExpressionError as e:
        raise SchemaError(f"{source}: recognise", str(e)) from None


def load_python_schema(path: Path) -> Schema:
    spec = importlib.util.spec_from_file_location(f"ggfmt_user_schema_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's own code: its failure is theirs to see, not a ggfmt bug
        raise SchemaError(str(path), f"the Python schema module failed while loading: "
                                     f"{type(e).__name__}: {e}") from None
    construct = getattr(module, "schema", None)
    if not isinstance(construct, cs.Construct):
        raise SchemaError(str(path), "a Python schema module must define `schema`, a Construct object")
    params = {str(k): Param(str(k), v) for k, v in (getattr(module, "params", None) or {}).items()}
    return Schema(
        id=str(getattr(module, "id", path.stem)),
        title=str(getattr(module, "title", path.stem)),
        doc=str(getattr(module, "__doc__", "") or "").strip(),
        source=str(path),
        construct=construct,
        params=params,
        trailing=bool(getattr(module, "trailing", False)),
        registers_tensors=False,
    )


def load_schema(name_or_path: str | os.PathLike[str]) -> Schema:
    """Load a schema by name (``ggcp``) or by path (``my.yaml``, ``my_layout.py``)."""
    text = os.fspath(name_or_path)
    path = Path(text)
    if text.endswith(".py"):
        if not path.is_file():
            raise UsageError(f"{text}: no such Python schema file")
        return load_python_schema(path)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        if not path.is_file():
            raise UsageError(f"{text}: no such schema file")
        return load_yaml_schema(path)
    return _load_named(text)


def _load_named(name: str) -> Schema:
    try:
        path = _find_file(name)
        stat = path.stat()
        return _load_version(path, stat.st_mtime_ns, stat.st_size)
    except SchemaError as e:
        if e.source == name:
            raise UsageError(f"unknown schema {name!r}; known: {', '.join(sorted(available_schemas()))}") from None
        raise
    except OSError as e:
        raise SchemaError(name, f"cannot be read: {e.strerror}") from None


@functools.lru_cache(maxsize=256)
def _load_version(path: Path, mtime_ns: int, size: int) -> Schema:
    """A schema file compiled once per version of it: a process that runs several commands (a
    library user, a test) sees the file a name finds, and its changes, as they are at each command
    (the files it imports are those of its first compilation)."""
    return load_yaml_schema(path)


def available_schemas() -> dict[str, Path]:
    """Every schema file found in the schema directories, by name (first one wins)."""
    found: dict[str, Path] = {}
    for directory in schema_dirs():
        for path in sorted(directory.glob("*.yaml")):
            found.setdefault(path.stem, path)
    return found


def catalog() -> Iterator[SchemaInfo]:
    """Name, title and magic of every schema file found, read without compiling them.

    A file that cannot be read as a schema is skipped with one warning line: one broken file in
    a shared schema folder must not stop every other parse."""
    for name, path in available_schemas().items():
        try:
            data = read_yaml(path, shared=True)
            meta = data.get("meta") or {}
            if not isinstance(meta, Mapping):
                raise SchemaError(str(path), "`meta` must be a mapping")
            info = SchemaInfo(name, path, str(meta.get("title", name)), magic_of(data))
        except (SchemaError, TypeError, ValueError) as e:
            reason = str(e).removeprefix(f"{path}: ")
            _warn_once(f"skipped schema {path}: {reason}")
            continue
        yield info


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    from ..io.text import escape

    if message not in _warned:
        _warned.add(message)
        print(f"fmt: warning: {escape(message)}", file=sys.stderr)


def detect_schema(path: Path) -> Schema:
    """The schema whose magic (the ``contents`` of its first field) starts ``path``; the first
    of the longest magics when several do (see :func:`detect_schemas`)."""
    return detect_schemas(path)[0]


def detect_schemas(path: Path) -> list[Schema]:
    """Every schema whose magic (the ``contents`` of its first field) starts ``path``, longest
    magic first: the candidates a parse tries, which their ``recognise:`` rules tell apart."""
    from ..io.inputs import open_binary

    try:
        with open_binary(path) as f:
            head = f.read(64)
    except OSError as e:
        raise UsageError(f"{path}: cannot be read: {e.strerror}") from None
    magics = [(info.name, info.magic) for info in catalog() if info.magic is not None]
    matches = [(name, magic) for name, magic in magics if head.startswith(magic)]
    if not matches:
        known = ", ".join(f"{name} ({magic!r})" for name, magic in magics)
        raise UsageError(f"{path}: its first bytes {head[:4]!r} match no schema's magic (known: {known}); "
                         "name one with --schema")
    ordered = sorted(matches, key=lambda m: -len(m[1]))  # (stable: search order among equals)
    if len(ordered) == 1:
        return [_load_named(ordered[0][0])]
    loaded = []
    for name, _ in ordered:
        try:
            loaded.append(_load_named(name))
        except SchemaError as e:  # one broken schema must not stop the parses the others can make
            _warn_once(f"skipped schema {name}: {e}")
    if not loaded:
        raise SchemaError(ordered[0][0], "no schema with this magic loads (`fmt schema check` says why)")
    return loaded
