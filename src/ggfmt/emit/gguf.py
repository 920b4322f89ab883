"""GGUF output: a plan (keys and tensors with their payload sources) written to a file.

The header, metadata and tensor infos are written by gguf-py's ``GGUFWriter``; the payloads
are then appended by ggfmt itself (:mod:`ggfmt.io.sink`), each aligned as GGUF requires: copied
from the input file when unchanged, computed one tensor at a time when a transform applies.
Nothing the size of the whole file is ever held in memory. The plan comes from
:mod:`ggfmt.convert.plan`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..convert.plan import Plan
from ..io.sink import Progress, Sink, open_sink
from . import Summary


def write(plan: Plan, target: str, out_path: Path, progress: Progress | None = None) -> Summary:
    """The writer of ``gguf`` (see :mod:`ggfmt.emit`): :func:`write_gguf`, and what it wrote
    (general.architecture, which gguf-py adds, among the keys)."""
    write_gguf(plan, out_path, progress)
    return Summary(((len(plan.tensors), "tensor"), (len(plan.metadata) + 1, "key")))


def write_gguf(plan: Plan, out_path: Path, progress: Progress | None = None) -> None:
    """Write ``plan`` to ``out_path``: header and metadata through gguf-py, then each payload.

    The payloads are appended through a :class:`~ggfmt.io.sink.Sink` (direct I/O where the file
    system allows), each at the alignment GGUF requires."""
    import gguf
    import numpy as np

    from ..convert.mapping import GGUF_VALUE_TYPES

    vt = gguf.GGUFValueType
    value_types = {name: vt[member] for name, member in GGUF_VALUE_TYPES.items()}
    writer = _writer_class()(out_path, plan.architecture)
    for item in plan.metadata:  # general.architecture comes first, from GGUFWriter itself
        if item.key == "general.alignment":  # the key, and where the writer puts the tensor data
            writer.add_custom_alignment(int(item.value))
        elif item.value_type.endswith("[]"):
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


def _writer_class() -> Any:
    """gguf-py's ``GGUFWriter``, packing a long array in one call instead of one per item.

    gguf-py packs an array item by item (three calls and a bytes concatenation each): 2.2 s of
    a 250,880-token vocabulary's 4.9 s conversion, its three arrays holding 750,000 items. The
    bytes are the same (``tests/test_emit_gguf.py`` holds them against gguf-py's own packing); a
    big-endian writer, an array of arrays and anything else go to gguf-py's packing itself."""
    import struct

    import gguf

    vt = gguf.GGUFValueType

    class Writer(gguf.GGUFWriter):
        def _pack_val(self, val: Any, vtype: Any, add_vtype: bool, sub_type: Any = None) -> bytes:
            if vtype == vt.ARRAY and sub_type is not None and isinstance(val, list | tuple) and len(val) \
                    and self.endianess == gguf.GGUFEndian.LITTLE:
                head = struct.pack("<I", vtype) if add_vtype else b""
                fmt = self._simple_value_packing.get(sub_type)
                if fmt is not None:
                    return head + struct.pack(f"<IQ{len(val)}{fmt}", sub_type, len(val), *val)
                if sub_type == vt.STRING and all(type(v) is str or type(v) is bytes for v in val):
                    size = struct.Struct("<Q").pack
                    packed = bytearray(head + struct.pack("<IQ", sub_type, len(val)))
                    for v in val:
                        encoded = v.encode("utf-8") if type(v) is str else v
                        packed += size(len(encoded))
                        packed += encoded
                    return bytes(packed)
            return super()._pack_val(val, vtype, add_vtype, sub_type)

    return Writer


def _pad(out: Sink, alignment: int) -> None:
    out.write(bytes(-out.tell() % alignment))
