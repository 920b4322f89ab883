"""``--outtype``: the tensor type of an output, as llama.cpp's converters take it.

A conversion declares which output types make sense for it (its mapping table's ``outtypes``;
the first is its default when the source has no single type). Matrices (2-D and more) take the
requested type; vectors (norms, biases) stay f32, as llama.cpp's converters keep them. A
matrix whose rows do not split into q8_0's 32-value blocks is written as f16 instead, as
llama.cpp's converter does, and the summary says so. Tensors are converted in blocks of rows,
so memory stays flat whatever their size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:  # the command line imports OUTTYPES; the tensor sources load only to convert
    from ..io.tensors import PayloadSource

OUTTYPES = ("f32", "f16", "bf16", "q8_0")
GGML_TYPES = {"f32": 0, "f16": 1, "q8_0": 8, "bf16": 30}
TYPE_NAMES = {v: k for k, v in GGML_TYPES.items()}
BLOCK_BYTES = 8 << 20  # rows converted at a time: about this many bytes of f32


def check_outtype(outtype: str | None, allowed: Sequence[str], what: str) -> None:
    if outtype is not None and not allowed:
        raise UsageError(f"--outtype {outtype}: {what} keeps the tensor types of its source")
    if outtype is not None and outtype not in allowed:
        raise UsageError(f"--outtype {outtype}: {what} can be written as {', '.join(allowed)}")


@dataclass(frozen=True)
class Retyped:
    tensors: list[Any]  # OutputTensor, each with its new type and source
    notes: list[str]  # what the summary should say (tensors that could not take the type)


def target_type(ne: tuple[int, ...], ggml_type: int, outtype: str) -> int:
    """The ggml type a tensor of ``ne`` gets for ``outtype``."""
    if ggml_type not in TYPE_NAMES or len(ne) < 2:  # vectors stay as they are (f32), as in llama.cpp
        return ggml_type
    if outtype == "q8_0" and ne[0] % 32:
        return GGML_TYPES["f16"]
    return GGML_TYPES[outtype]


def retype(tensors: Sequence[Any], outtype: str | None, source: str = "") -> Retyped:
    """``tensors`` (OutputTensor) converted to ``outtype``; unchanged when it is None. ``source`` names
    the input in errors (a value the new type cannot hold, a type that cannot be converted)."""
    if outtype is None:
        return Retyped(list(tensors), [])
    out, fallback = [], []
    for tensor in tensors:
        new_type = target_type(tensor.ne, tensor.ggml_type, outtype)
        if outtype == "q8_0" and new_type == GGML_TYPES["f16"] and len(tensor.ne) >= 2:
            fallback.append(tensor.name)
        if new_type == tensor.ggml_type:
            out.append(tensor)
            continue
        from ..io.tensors import BlocksSource

        where = TensorPlace(source, tensor.name, outtype)
        _check_readable(where, tensor.ggml_type)
        nbytes = type_nbytes(tensor.ne, new_type)
        converter = _converter(tensor.source, tensor.ne, tensor.ggml_type, new_type, where)
        out.append(replace(tensor, ggml_type=new_type, source=BlocksSource(converter, nbytes)))
    notes = []
    if fallback:
        notes.append(f"{len(fallback)} tensors written as f16, their rows not a multiple of q8_0's 32-value "
                     f"blocks ({', '.join(fallback[:3])}{', ...' if len(fallback) > 3 else ''})")
    return Retyped(out, notes)


@dataclass(frozen=True)
class TensorPlace:
    """Which tensor of which input a conversion is at, for its errors."""

    source: str
    tensor: str
    outtype: str

    def error(self, message: str) -> UsageError:
        head = f"{self.source}: " if self.source else ""
        return UsageError(f"{head}tensor {self.tensor}: --outtype {self.outtype}: {message}")


def type_nbytes(ne: tuple[int, ...], ggml_type: int) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
    return math.prod(ne) // block * size


def _check_readable(where: TensorPlace, ggml_type: int) -> None:
    """Refuse, before anything is written, a tensor type whose values ggfmt cannot compute."""
    if ggml_type in (GGML_TYPES["f32"], GGML_TYPES["f16"], GGML_TYPES["bf16"]):  # read by numpy
        return
    import gguf
    import numpy as np

    from .. import ggml_types

    try:
        kind = gguf.GGMLQuantizationType(ggml_type)
        gguf.quants.dequantize(np.zeros(ggml_types.type_size(ggml_type), dtype=np.uint8), kind)
    except (ValueError, NotImplementedError):
        raise where.error(f"its type {ggml_types.type_name(ggml_type)} cannot be converted (gguf-py has no "
                          "dequantization of it); leave --outtype out to keep it as it is") from None


def _converter(source: PayloadSource, ne: tuple[int, ...], from_type: int, to_type: int,
               where: TensorPlace) -> Any:
    from .. import ggml_types

    row_bytes = ggml_types.nbytes(from_type, (ne[0],))
    rows = math.prod(ne[1:])
    step = max(1, BLOCK_BYTES // max(ne[0] * 4, 1))  # rows whose values take about BLOCK_BYTES as f32

    def blocks() -> Iterator[Any]:
        for first, data in _row_pieces(source, row_bytes, rows, step):
            n = len(data) // row_bytes
            yield convert_rows(as_f32(data, from_type, n, ne[0]), to_type, where, first)

    return blocks


def _row_pieces(source: PayloadSource, row_bytes: int, rows: int, step: int) -> Iterator[tuple[int, bytes]]:
    """(first row, bytes of up to ``step`` whole rows) of any payload source, in order: a file range
    read a piece at a time, a computed array computed once, a block-computed payload regrouped."""
    import numpy as np

    from ..io.tensors import BlocksSource, FileSlice

    piece = step * row_bytes
    if isinstance(source, FileSlice):
        for first in range(0, rows, step):
            count = min(step, rows - first)
            yield first, FileSlice(source.path, source.offset + first * row_bytes, count * row_bytes).read()
        return
    if isinstance(source, BlocksSource):
        pending, first = bytearray(), 0
        for block in source.blocks():
            pending += np.ascontiguousarray(block).tobytes()
            while len(pending) >= piece:
                yield first, bytes(pending[:piece])
                del pending[:piece]
                first += step
        if pending:
            yield first, bytes(pending)
        return
    whole = source.read() if hasattr(source, "read") else np.ascontiguousarray(source.produce()).tobytes()
    for first in range(0, rows, step):
        yield first, whole[first * row_bytes:(first + step) * row_bytes]


def as_f32(data: bytes, from_type: int, n_rows: int, width: int) -> Any:
    """Rows of a tensor's bytes as f32 values: f32, f16 and bf16 by numpy, every quantized type by
    its real block layout (gguf-py's dequantization, which follows ggml's)."""
    import numpy as np

    if from_type == GGML_TYPES["f32"]:
        array = np.frombuffer(data, dtype="<f4")
    elif from_type == GGML_TYPES["f16"]:
        array = np.frombuffer(data, dtype="<f2").astype(np.float32)
    elif from_type == GGML_TYPES["bf16"]:  # the high half of an f32
        array = (np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        import gguf

        blocks = np.frombuffer(data, dtype=np.uint8).reshape(n_rows, -1)
        array = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType(from_type)).astype(np.float32)
    return array.reshape(n_rows, width)



def _q8_0_max() -> float:
    """q8_0's largest value: a block's scale, amax / 127, is an f16."""
    from ..schema.compiler import FLOAT_MAX

    return 127 * FLOAT_MAX["f16"]


def convert_rows(rows: Any, ggml_type: int, where: TensorPlace, first_row: int) -> Any:
    """f32 rows in ``ggml_type``'s bytes (f16 and f32 by numpy; bf16 and q8_0 by gguf-py's quantizer,
    which rounds as ggml does). A finite value the type cannot hold is an error naming the tensor
    and the row, never a silent inf; q8_0, which has no inf or NaN, refuses those too."""
    import numpy as np

    if ggml_type == GGML_TYPES["f32"]:
        return rows.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        if ggml_type == GGML_TYPES["f16"]:
            out = rows.astype(np.float16)
            _check_range(rows, np.isinf(out) & np.isfinite(rows), "f16", where, first_row)
            return out
        import gguf

        if ggml_type == GGML_TYPES["q8_0"]:
            _check_range(rows, ~np.isfinite(rows) | (np.abs(rows) > _q8_0_max()), "q8_0", where, first_row)
        out = gguf.quants.quantize(rows, gguf.GGMLQuantizationType(ggml_type))
        if ggml_type == GGML_TYPES["bf16"]:
            back = (np.ascontiguousarray(out).view("<u2").astype(np.uint32) << 16).view(np.float32)
            _check_range(rows, np.isinf(back) & np.isfinite(rows), "bf16", where, first_row)
        return out


def _check_range(rows: Any, bad: Any, type_name: str, where: TensorPlace, first_row: int) -> None:
    import numpy as np

    from ..schema.compiler import FLOAT_MAX

    if not bad.any():
        return
    row, column = (int(i) for i in np.argwhere(bad)[0])
    value = float(rows[row, column])
    what = {"f16": f"beyond f16's range (magnitude up to {FLOAT_MAX['f16']:g})", "bf16": "beyond bf16's range",
            "q8_0": f"beyond q8_0's range (a block's scale is an f16: magnitude up to {_q8_0_max():,.0f})"
            if np.isfinite(value) else "not a number q8_0 can hold"}[type_name]
    raise where.error(f"the value {value:g} at row {first_row + row}, column {column} is {what}; "
                      "choose another --outtype (f32 keeps every value)")
