"""GGUF output: a plan (keys and tensors with their payload sources) written to a file.

The header, metadata and tensor infos are written by gguf-py's ``GGUFWriter``; the payloads
are then appended by ggfmt itself (:mod:`ggfmt.sink`), each aligned as GGUF requires: copied
from the input file when unchanged, computed one tensor at a time when a transform applies.
Nothing the size of the whole file is ever held in memory.  :func:`plan_gguf` resolves a mapping table against a
parsed document; the adapter converters build plans of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..document import Document, TensorRef
from ..engine import tensor_ref
from ..errors import FormatError, SchemaError
from ..mapping import (
    BLOCK_ID,
    MappingTable,
    MatchEntry,
    MetadataEntry,
    Scope,
    TensorEntry,
    evaluate_entry,
    fill_template,
    table_scope,
    walk,
)
from ..schema.constructs import TensorContainer
from ..sink import Progress, Sink, open_sink
from ..tensors import FileSlice, PayloadSource

_INT_RANGES = {
    "u8": (0, 2**8 - 1), "i8": (-(2**7), 2**7 - 1), "u16": (0, 2**16 - 1), "i16": (-(2**15), 2**15 - 1),
    "u32": (0, 2**32 - 1), "i32": (-(2**31), 2**31 - 1), "u64": (0, 2**64 - 1), "i64": (-(2**63), 2**63 - 1),
}


@dataclass(frozen=True)
class MetadataValue:
    key: str
    value_type: str
    value: Any


@dataclass(frozen=True)
class OutputTensor:
    """A tensor of the output and where its bytes come from."""

    name: str
    ne: tuple[int, ...]
    ggml_type: int
    source: PayloadSource

    @property
    def nbytes(self) -> int:
        return self.source.nbytes


@dataclass
class GGUFPlan:
    architecture: str
    metadata: list[MetadataValue]
    tensors: list[OutputTensor]
    warnings: list[str] = field(default_factory=list)  # input tensors a table leaves out on purpose

    @property
    def payload_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


MAX_TENSOR_NAME = 63  # ggml's GGML_MAX_NAME (64) less the terminating NUL; gguf-py does not export it


def check_plan(plan: GGUFPlan, source: str) -> None:
    """What current llama.cpp requires of every tensor, whichever conversion planned it:
    a unique name of at most 63 bytes and at least one element."""
    seen: set[str] = set()
    for tensor in plan.tensors:
        if len(tensor.name.encode()) > MAX_TENSOR_NAME:
            raise FormatError("", None, f"the output tensor name {tensor.name[:40]!r}... is longer than the "
                                        f"{MAX_TENSOR_NAME} bytes a ggml tensor name can have", source)
        if tensor.name in seen:
            raise FormatError("", None, f"the output would hold two tensors named {tensor.name}", source)
        seen.add(tensor.name)
        if 0 in tensor.ne:
            raise FormatError("", None, f"the output tensor {tensor.name} would have a zero dimension "
                                        f"(ne {list(tensor.ne)}); llama.cpp reads no empty tensor", source)


def plan_gguf(doc: Document, table: MappingTable) -> GGUFPlan:
    """Resolve ``table`` against ``doc``: every key with its value, every tensor with its source."""
    if table.architecture is None:
        raise SchemaError(table.name, "a GGUF mapping needs `architecture`")
    architecture = str(table.architecture)
    scopes = table_scope(table, [doc.params, doc.fields])  # a field shadows a parameter of the same name
    metadata = resolve_metadata(table, scopes, architecture, str(doc.source), doc)
    tensors = []
    names: set[str] = set()
    matchers: list[tuple[MatchEntry, list[Scope]]] = []
    used: set[str] = set()  # paths of the input tensors a `from:` entry took
    for entry, entry_scopes in walk(table.tensors, scopes):
        if isinstance(entry, MatchEntry):
            matchers.append((entry, entry_scopes))
            continue
        assert isinstance(entry, TensorEntry)
        record = evaluate_entry(entry.source, entry_scopes, entry.where)
        if not isinstance(record, TensorContainer):
            raise SchemaError(entry.where, f"`from: {entry.source.source}` is not a tensor record")
        ref = tensor_ref(record, entry.source.source)
        bid = next((s[BLOCK_ID] for s in reversed(entry_scopes) if BLOCK_ID in s), None)
        name = fill_template(entry.name_template, entry.where, bid=bid)
        if ref.is_null:
            raise FormatError(ref.path, ref.offset, f"is a null tensor but {table.name} maps it to {name}")
        if name in names:
            raise SchemaError(entry.where, f"tensor {name} is mapped twice")
        names.add(name)
        used.add(ref.path)
        tensors.append(OutputTensor(name, ref.ne, ref.ggml_type, FileSlice(doc.source, ref.offset, ref.nbytes)))
    warnings: list[str] = []
    if matchers:
        for ref in doc.tensors:  # in the input's order
            if ref.path in used:
                continue
            planned = _matched(ref, matchers, doc)
            if planned is None:
                why = f"{ref.name or ref.path} is selected by no entry of {table.name}"
                if table.unmatched == "warn":
                    warnings.append(f"{why}; not converted")
                    continue
                raise FormatError(ref.path, ref.offset, f"{why} (a table says `unmatched: warn` to leave such "
                                                        "tensors out)", str(doc.source))
            if planned.name in names:
                raise FormatError(ref.path, ref.offset, f"becomes {planned.name}, which another tensor already "
                                                        "became", str(doc.source))
            names.add(planned.name)
            tensors.append(planned)
    return GGUFPlan(architecture, metadata, tensors, warnings)


def _matched(ref: TensorRef, matchers: list[tuple[MatchEntry, list[Scope]]], doc: Document) -> OutputTensor | None:
    """The output tensor the first `match:` entry that selects ``ref`` makes of it, or None."""
    for entry, entry_scopes in matchers:
        found = entry.pattern.fullmatch(ref.name)
        if found is None:
            continue
        captures: dict[str, Any] = {k: int(v) if k == BLOCK_ID else v for k, v in found.groupdict().items()}
        # the selected tensor itself: its name, ne (ggml order) and type name, beside the captures
        tensor = {"tensor": {"name": ref.name, "ne": list(ref.ne), "type": ref.type_name}}
        scopes = [*entry_scopes, tensor, captures]
        if entry.when is not None and not evaluate_entry(entry.when, scopes, entry.where):
            continue
        name = fill_template(entry.name_template, entry.where, **captures)
        return _transformed(ref, name, entry, scopes, doc)
    return None


def _transformed(ref: TensorRef, name: str, entry: MatchEntry, scopes: list[Scope], doc: Document) -> OutputTensor:
    """``ref`` as ``name``, through the entry's transforms (applied when it is written)."""

    from ..tensors import ArraySource
    from ..transforms import DTYPE_OF_GGML_TYPE, GGML_TYPE_OF_DTYPE, TRANSFORMS, from_bytes

    source = FileSlice(doc.source, ref.offset, ref.nbytes)
    if not entry.transforms:
        return OutputTensor(name, ref.ne, ref.ggml_type, source)
    dtype = DTYPE_OF_GGML_TYPE.get(ref.ggml_type)
    if dtype is None:
        raise FormatError(ref.path, ref.offset, f"{ref.name} is {ref.type_name}; transforms apply to f32 and f16 "
                                                "tensors", str(doc.source))
    shape = tuple(reversed(ref.ne))
    steps = []
    for call in entry.transforms:
        transform = TRANSFORMS[call.name]
        args = [evaluate_entry(a, scopes, f"{entry.where}, {call.source}") for a in call.args]
        try:
            shape = transform.shape(shape, *args)
            dtype = transform.dtype(dtype, *args) if transform.dtype is not None else dtype
        except (TypeError, ValueError) as e:
            raise FormatError(ref.path, ref.offset, f"{ref.name}: {call.source}: {e}", str(doc.source)) from None
        steps.append((transform, args))

    def produce() -> Any:
        array = from_bytes(source.read(), ref.ggml_type, ref.ne)
        for transform, args in steps:
            array = transform.apply(array, *args)
        return array

    return OutputTensor(name, tuple(reversed(shape)), GGML_TYPE_OF_DTYPE[dtype], ArraySource.of(produce, shape, dtype))


def resolve_metadata(table: MappingTable, scopes: list[Scope], architecture: str, source: str,
                     doc: Document | None = None) -> list[MetadataValue]:
    """Every metadata entry of ``table`` that applies, evaluated in ``scopes`` and type-checked.

    A value that does not fit its GGUF type is reported at the field it came from when the
    value is a plain field path of ``doc`` (``opt.ctx.iter``)."""
    metadata = []
    keys: set[str] = {"general.architecture"}  # written by the GGUF writer itself
    for entry, entry_scopes in walk(table.metadata, scopes):
        assert isinstance(entry, MetadataEntry)
        value = evaluate_entry(entry.value, entry_scopes, entry.where)
        key = fill_template(entry.key, entry.where, arch=architecture)
        if key in keys:
            raise SchemaError(entry.where, f"the key {key} is written twice")
        keys.add(key)
        field = entry.value.source if doc is not None and doc.offset_of(entry.value.source) is not None else ""
        where = (field, doc.offset_of(field) if doc is not None and field else None)
        metadata.append(MetadataValue(key, entry.value_type, _checked(value, entry.value_type, key, source, where)))
    return metadata


def _checked(value: Any, value_type: str, key: str, source: str, where: tuple[str, int | None] = ("", None)) -> Any:
    def bad(why: str) -> FormatError:
        return FormatError(where[0], where[1], f"{why} for the GGUF key {key}", source)

    if value_type.endswith("[]"):
        if not isinstance(value, list | tuple):
            raise bad(f"expected a list, got {value!r}")
        return [_checked(item, value_type[:-2], key, source, where) for item in value]

    if value_type in _INT_RANGES:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(f"expected an integer, got {value!r}")
        lo, hi = _INT_RANGES[value_type]
        if not lo <= value <= hi:
            raise bad(f"{value} does not fit in {value_type}")
        return value
    if value_type in ("f32", "f64"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise bad(f"expected a number, got {value!r}")
        return float(value)
    if value_type == "bool":
        return bool(value)
    if not isinstance(value, str):
        raise bad(f"expected a string, got {value!r}")
    return value


def write_gguf(plan: GGUFPlan, out_path: Path, progress: Progress | None = None) -> None:
    """Write ``plan`` to ``out_path``: header and metadata through gguf-py, then each payload.

    The payloads are appended through a :class:`~ggfmt.sink.Sink` (direct I/O where the file
    system allows), each at the alignment GGUF requires."""
    import gguf
    import numpy as np

    vt = gguf.GGUFValueType
    value_types = {
        "u8": vt.UINT8, "i8": vt.INT8, "u16": vt.UINT16, "i16": vt.INT16, "u32": vt.UINT32, "i32": vt.INT32,
        "u64": vt.UINT64, "i64": vt.INT64, "f32": vt.FLOAT32, "f64": vt.FLOAT64, "bool": vt.BOOL,
        "string": vt.STRING,
    }
    writer = gguf.GGUFWriter(out_path, plan.architecture)
    for item in plan.metadata:  # general.architecture comes first, from GGUFWriter itself
        if item.value_type.endswith("[]"):
            writer.add_key_value(item.key, item.value, vt.ARRAY, sub_type=value_types[item.value_type[:-2]])
        else:
            writer.add_key_value(item.key, item.value, value_types[item.value_type])
    for t in plan.tensors:
        # gguf-py takes the numpy shape (reversed ne) and the ggml type; the numpy dtype only
        # matters to it for uint8 (byte-shaped quantized data), which ggfmt never passes.
        writer.add_tensor_info(t.name, list(reversed(t.ne)), np.dtype(np.float32), t.nbytes,
                               raw_dtype=gguf.GGMLQuantizationType(t.ggml_type))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
    finally:
        writer.close()
    alignment = writer.data_alignment
    with open_sink(out_path) as out:
        for t in plan.tensors:
            _pad(out, alignment)
            start = out.tell()
            t.source.write_to(out, progress)
            if out.tell() - start != t.nbytes:
                raise OSError(f"tensor {t.name}: {out.tell() - start} bytes written, {t.nbytes} expected")
        _pad(out, alignment)


def _pad(out: Sink, alignment: int) -> None:
    out.write(bytes(-out.tell() % alignment))
