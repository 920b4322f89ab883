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

from .errors import UsageError

if TYPE_CHECKING:  # the command line imports OUTTYPES; the tensor sources load only to convert
    from .tensors import PayloadSource

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


def retype(tensors: Sequence[Any], outtype: str | None) -> Retyped:
    """``tensors`` (OutputTensor) converted to ``outtype``; unchanged when it is None."""
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
        from .tensors import BlocksSource

        nbytes = type_nbytes(tensor.ne, new_type)
        source = BlocksSource(_converter(tensor.source, tensor.ne, tensor.ggml_type, new_type), nbytes)
        out.append(replace(tensor, ggml_type=new_type, source=source))
    notes = []
    if fallback:
        notes.append(f"{len(fallback)} tensors written as f16, their rows not a multiple of q8_0's 32-value "
                     f"blocks ({', '.join(fallback[:3])}{', ...' if len(fallback) > 3 else ''})")
    return Retyped(out, notes)


def type_nbytes(ne: tuple[int, ...], ggml_type: int) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
    return math.prod(ne) // block * size


def _converter(source: PayloadSource, ne: tuple[int, ...], from_type: int, to_type: int) -> Any:
    import numpy as np

    from .tensors import ArraySource, FileSlice

    row_bytes = ne[0] * (4 if from_type == 0 else 2)  # f32, or f16 / bf16
    rows = math.prod(ne[1:])
    step = max(1, BLOCK_BYTES // max(row_bytes, 1))

    def blocks() -> Iterator[Any]:
        # An array computed by a transform is computed once; a file range is read a block at a time.
        whole = np.ascontiguousarray(source.produce()).reshape(-1).view(np.uint8) \
            if isinstance(source, ArraySource) else None
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            if whole is not None:
                data: Any = whole[start * row_bytes:stop * row_bytes].tobytes()
            elif isinstance(source, FileSlice):
                data = FileSlice(source.path, source.offset + start * row_bytes, (stop - start) * row_bytes).read()
            else:
                raise TypeError("a block-computed tensor cannot be converted again")
            yield convert_rows(_as_f32(data, from_type, stop - start, ne[0]), to_type)

    return blocks


def _as_f32(data: bytes, from_type: int, n_rows: int, width: int) -> Any:
    """Rows of a tensor's bytes as f32."""
    import numpy as np

    if from_type == 0:
        array = np.frombuffer(data, dtype="<f4")
    elif from_type == 1:
        array = np.frombuffer(data, dtype="<f2").astype(np.float32)
    else:  # bf16
        array = (np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    return array.reshape(n_rows, width)


def convert_rows(rows: Any, ggml_type: int) -> Any:
    """f32 rows in ``ggml_type``'s bytes (f16 and f32 by numpy; bf16 and q8_0 by gguf-py's quantizer,
    which rounds as ggml does)."""
    import numpy as np

    if ggml_type == 0:
        return rows.astype(np.float32)
    if ggml_type == 1:
        return rows.astype(np.float16)
    import gguf

    return gguf.quants.quantize(rows, gguf.GGMLQuantizationType(ggml_type))
