"""Small named tensor transforms that conversions apply, one tensor at a time (numpy).

Arrays are in numpy order: a tensor with ggml ne [n0, n1] is the array of shape (n1, n0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import ggml_types

# the ggml types numpy arrays are written as (ids from gguf-py's table)
# bf16 has no numpy dtype: a bf16 array is held as its 16-bit patterns (what cast('bf16') makes)
BF16_BITS = np.dtype("<u2")
GGML_TYPE_OF_DTYPE: dict[np.dtype[Any], int] = {np.dtype(np.float32): ggml_types.type_id("f32"),
                                                np.dtype(np.float16): ggml_types.type_id("f16"),
                                                BF16_BITS: ggml_types.type_id("bf16")}
DTYPE_OF_GGML_TYPE: dict[int, np.dtype[Any]] = {v: k for k, v in GGML_TYPE_OF_DTYPE.items() if k != BF16_BITS}


def transpose(array: Any) -> np.ndarray[Any, Any]:
    """The transpose, laid out contiguously (what ``tofile`` of a transposed view writes)."""
    return np.ascontiguousarray(np.asarray(array).T)


def rope_permute(rows: Any, n_head: int) -> np.ndarray[Any, Any]:
    """Reorder the rows of a q or k projection (or of its LoRA B factor) for rope, as current
    llama.cpp's converter does: within each head, the rows of the two interleaved halves
    become consecutive. ``n_head`` is the number of heads the rows belong to (n_head for q,
    n_head_kv for k)."""
    rows = np.asarray(rows)
    if n_head <= 0 or rows.shape[0] % (2 * n_head):
        raise ValueError(f"{rows.shape[0]} rows cannot be split into {n_head} heads of two halves")
    head_half = rows.shape[0] // n_head // 2
    permuted: np.ndarray[Any, Any] = rows.reshape(n_head, 2, head_half, *rows.shape[1:]).swapaxes(1, 2)
    return np.ascontiguousarray(permuted.reshape(rows.shape))


def scale(array: Any, factor: float) -> np.ndarray[Any, Any]:
    """``array * factor`` in the array's own dtype (computed in float32)."""
    array = np.asarray(array)
    scaled: np.ndarray[Any, Any] = (array.astype(np.float32) * np.float32(factor)).astype(array.dtype)
    return scaled


BF16 = ggml_types.type_id("bf16")


def read_dtype(ggml_type: int) -> np.dtype[Any] | None:
    """What a tensor of ``ggml_type`` is transformed as: f32 and f16 as they are, bf16 widened to
    f32 (numpy has no bf16); None for the types transforms do not take."""
    return np.dtype(np.float32) if ggml_type == BF16 else DTYPE_OF_GGML_TYPE.get(ggml_type)


def from_bytes(data: bytes, ggml_type: int, ne: tuple[int, ...]) -> np.ndarray[Any, Any]:
    """The array a tensor's bytes hold (f32, f16, or bf16 widened to f32)."""
    shape = tuple(reversed(ne))
    if ggml_type == BF16:  # the high half of an f32's bits
        return (np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    dtype: np.dtype[Any] | None = DTYPE_OF_GGML_TYPE.get(ggml_type)
    if dtype is None:
        raise ValueError(f"ggml type {ggml_type} cannot be transformed (only f32, f16 and bf16)")
    array: np.ndarray[Any, Any] = np.frombuffer(data, dtype=dtype)
    return array.reshape(shape)


# -- the registry tables name transforms by ---------------------------------------------------------

@dataclass(frozen=True)
class Transform:
    """A named transform: ``apply(array, *args)``, and what it makes of a shape and a dtype
    (numpy order), known before any data is read."""

    apply: Callable[..., np.ndarray[Any, Any]]
    shape: Callable[..., tuple[int, ...]]
    dtype: Callable[..., np.dtype[Any]] | None = None  # None: the dtype is kept
    doc: str = ""
    # whether these arguments change no value of an array of this dtype: ``identity(dtype, *args)``
    # (then the step is not applied; its shape still counts)
    identity: Callable[..., bool] | None = None
    # applies to any block of rows (the first numpy axis) on its own, so that a large tensor is
    # transformed a block at a time (scale, cast) rather than whole (transpose, rope_permute)
    rowwise: bool = False
    # a transform that keeps a range of whole rows (the first numpy axis): ``rows(shape, *args)``
    # is that range, or None; then only those rows are read
    rows: Callable[..., tuple[int, int] | None] | None = None
    # selects and compares whole rows and never looks inside one: it applies to a quantized
    # tensor too, given its rows of blocks as bytes (an array of shape (rows, bytes per row))
    whole_rows: bool = False


def _transpose_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) != 2:
        raise ValueError(f"transpose takes a matrix, not a tensor of shape {list(shape)}")
    return shape[1], shape[0]


def _rope_shape(shape: tuple[int, ...], n_head: Any) -> tuple[int, ...]:
    if not isinstance(n_head, int) or n_head <= 0 or not shape or shape[0] % (2 * n_head):
        raise ValueError(f"{shape[0] if shape else 0} rows cannot be split into {n_head} heads of two halves")
    return shape


def _scale_shape(shape: tuple[int, ...], factor: Any) -> tuple[int, ...]:
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not np.isfinite(factor):
        raise ValueError(f"scale takes a finite number, not {factor!r}")
    return shape


def squeeze(array: Any) -> np.ndarray[Any, Any]:
    squeezed: np.ndarray[Any, Any] = np.squeeze(np.asarray(array))
    return squeezed


def _squeeze_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(n for n in shape if n != 1)


CAST_TYPES: dict[str, np.dtype[Any]] = {"f32": np.dtype(np.float32), "f16": np.dtype(np.float16), "bf16": BF16_BITS}


def cast(array: Any, to: str) -> np.ndarray[Any, Any]:
    if to == "bf16":
        return to_bf16_bits(np.asarray(array, dtype=np.float32))
    converted: np.ndarray[Any, Any] = np.asarray(array).astype(CAST_TYPES[to])
    return converted


def to_bf16_bits(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """f32 -> bf16 bit patterns as torch 2.x converts them on the CPU: rounded to nearest even,
    every NaN as 0xFFFF.

    Not gguf-py's BF16 quantizer: it widens to u64 (twice the memory of this) and keeps NaN
    payloads, where torch, whose conversion the Hugging Face side expects, writes 0xFFFF."""
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    # No overflow in u32: the largest non-NaN pattern (0xFF800000, -inf) plus 0x8000 still fits.
    # Computed in place in one temporary: a block of rows costs one more block, not four.
    rounded = bits >> 16
    rounded &= 1
    rounded += 0x7FFF
    rounded += bits
    rounded >>= 16
    out = rounded.astype(np.uint16)
    del rounded
    nan = np.isnan(array)
    if nan.any():
        out[nan] = 0xFFFF
    return out


def _cast_dtype(dtype: np.dtype[Any], to: Any) -> np.dtype[Any]:
    if to not in CAST_TYPES:
        raise ValueError(f"cast takes one of {', '.join(CAST_TYPES)}, not {to!r}")
    if dtype == BF16_BITS:
        raise ValueError("cast('bf16') is the last transform of an entry")
    return CAST_TYPES[to]


def split(array: Any, axis: int, sizes: list[int], part: int) -> np.ndarray[Any, Any]:
    """Part ``part`` of ``array`` cut along ``axis`` into pieces of ``sizes``."""
    begin = sum(sizes[:part])
    return np.ascontiguousarray(np.take(np.asarray(array), range(begin, begin + sizes[part]), axis=axis))


def _split_shape(shape: tuple[int, ...], axis: Any, sizes: Any, part: Any) -> tuple[int, ...]:
    if not isinstance(axis, int) or not 0 <= axis < len(shape):
        raise ValueError(f"split: axis {axis!r} is not one of the {len(shape)} axes")
    if not isinstance(sizes, list | tuple) or not all(isinstance(n, int) and n > 0 for n in sizes) \
            or sum(sizes) != shape[axis]:
        raise ValueError(f"{shape[axis]} rows cannot be split into parts of {list(sizes)}" if axis == 0 else
                         f"axis {axis} ({shape[axis]}) cannot be split into parts of {sizes!r}")
    if not isinstance(part, int) or not 0 <= part < len(sizes):
        raise ValueError(f"split: part {part!r} is not one of the {len(sizes)} parts")
    return (*shape[:axis], sizes[part], *shape[axis + 1:])


def concat(arrays: list[Any], axis: int) -> np.ndarray[Any, Any]:
    return np.concatenate([np.asarray(a) for a in arrays], axis=axis)


def concat_shape(shapes: list[tuple[int, ...]], axis: Any) -> tuple[int, ...]:
    """The shape of tensors of ``shapes`` joined along ``axis``: the same but for that axis."""
    first = shapes[0]
    if not isinstance(axis, int) or isinstance(axis, bool) or not 0 <= axis < len(first):
        raise ValueError(f"concat: axis {axis!r} is not one of the {len(first)} axes")
    if any(len(s) != len(first) or s[:axis] + s[axis + 1:] != first[:axis] + first[axis + 1:] for s in shapes):
        raise ValueError(f"shapes {[list(s) for s in shapes]} differ in more than axis {axis}")
    return (*first[:axis], sum(s[axis] for s in shapes), *first[axis + 1:])


def _split_rows(shape: tuple[int, ...], axis: int, sizes: list[int], part: int) -> tuple[int, int] | None:
    """Split along the first axis keeps a range of whole rows: that range is read, nothing else."""
    begin = sum(sizes[:part])
    return (begin, begin + sizes[part]) if axis == 0 else None


def detile_kv(rows: Any, n_head: int) -> np.ndarray[Any, Any]:
    """The fused q, k, v rows of a multi-query model whose converter copied its one K and one V head
    into ``n_head`` heads (ggml's starcoder example: "Duplicate K,V heads to use MHA instead of
    MQA"), with one copy of each: q, then one head of k, then one of v. A ValueError when the
    copies differ: then they are not copies, and the tensor is not what this undoes (a table
    tells the two apart first with the test ``kv_copies``)."""
    rows = np.asarray(rows)
    n_embd, head = _tiled(rows.shape, n_head)
    for name, part in (("K", 1), ("V", 2)):
        if not _copies(rows[part * n_embd:(part + 1) * n_embd], n_head, head):
            raise ValueError(f"the {n_head} heads of {name} are not copies of one head, so the tensor is not the "
                             "converter's tiling of one K/V head")
    q, k, v = rows[:n_embd], rows[n_embd:2 * n_embd], rows[2 * n_embd:]
    return np.ascontiguousarray(np.concatenate([q, k[:head], v[:head]]))


def kv_copies(rows: Any, n_head: int) -> bool:
    """Whether the K rows and the V rows of fused q, k, v rows are each ``n_head`` copies of one
    head: a multi-query model tiled by its converter, not a multi-head one."""
    rows = np.asarray(rows)
    n_embd, head = _tiled(rows.shape, n_head)
    return all(_copies(rows[part * n_embd:(part + 1) * n_embd], n_head, head) for part in (1, 2))


def _copies(part: Any, n_head: int, head: int) -> bool:
    heads = part.reshape(n_head, head, *part.shape[1:])
    return bool((heads == heads[:1]).all())


def _tiled(shape: tuple[int, ...], n_head: Any) -> tuple[int, int]:
    """(n_embd, head size) of fused q, k, v rows of ``shape`` tiled into ``n_head`` heads."""
    if not isinstance(n_head, int) or n_head <= 0 or not shape or shape[0] % 3 or (shape[0] // 3) % n_head:
        raise ValueError(f"{shape[0] if shape else 0} rows are not q, k and v of {n_head!r} heads each")
    return shape[0] // 3, shape[0] // 3 // n_head


def regroup_qkv(rows: Any, n_head: int, n_head_kv: int | None = None) -> np.ndarray[Any, Any]:
    """Fused q, k, v rows stored group by group, each K/V head after the q heads that share it
    (GPT-NeoX, ``n_head_kv`` = ``n_head``: head 0's q, k and v, then head 1's...; Falcon: n_head /
    n_head_kv q heads, one k, one v per group) as llama.cpp's graph reads them: all q heads, then
    all k, then all v."""
    rows = np.asarray(rows)
    n_kv, head = _groups(rows.shape, n_head, n_head_kv)
    grouped = rows.reshape(n_kv, n_head // n_kv + 2, head, *rows.shape[1:])
    rest = rows.shape[1:]
    parts = [grouped[:, :-2].reshape(n_head * head, *rest), grouped[:, -2].reshape(n_kv * head, *rest),
             grouped[:, -1].reshape(n_kv * head, *rest)]
    return np.ascontiguousarray(np.concatenate(parts))


def _groups(shape: tuple[int, ...], n_head: Any, n_head_kv: Any) -> tuple[int, int]:
    """(K/V heads, head size) of fused q, k, v rows of ``shape`` with ``n_head`` q heads."""
    n_kv = n_head if n_head_kv is None else n_head_kv
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in (n_head, n_kv)) \
            or n_head % n_kv or not shape or shape[0] % (n_head + 2 * n_kv):
        raise ValueError(f"{shape[0] if shape else 0} rows are not q, k and v of {n_head!r} heads and {n_kv!r} "
                         "K/V heads")
    return n_kv, shape[0] // (n_head + 2 * n_kv)


def _regroup_shape(shape: tuple[int, ...], n_head: Any, n_head_kv: Any = None) -> tuple[int, ...]:
    _groups(shape, n_head, n_head_kv)  # (the rows must be q, k and v of those heads)
    return shape


def _detile_shape(shape: tuple[int, ...], n_head: Any) -> tuple[int, ...]:
    n_embd, head = _tiled(shape, n_head)
    return (n_embd + 2 * head, *shape[1:])


TRANSFORMS: dict[str, Transform] = {
    "transpose": Transform(transpose, _transpose_shape, doc="swap the two axes of a matrix"),
    "rope_permute": Transform(rope_permute, _rope_shape,
                              doc="reorder the rows of n_head heads for rope, as llama.cpp's converter does"),
    "scale": Transform(scale, _scale_shape, doc="multiply by a number, in float32",
                       identity=lambda dtype, factor: bool(factor == 1), rowwise=True),
    "cast": Transform(cast, lambda s, to: s, _cast_dtype, doc="convert to f32 or f16",
                      identity=lambda dtype, to: CAST_TYPES.get(to) == dtype, rowwise=True),
    "split": Transform(split, _split_shape, doc="part `part` of the tensor cut along `axis` into pieces of "
                                                "`sizes` (a fused qkv projection into q, k and v)",
                       rows=_split_rows),
    # joins the tensors a `tensor: [A, B, ...]` entry names; only as its first transform
    "concat": Transform(concat, lambda shape, axis=0: shape, doc="join the tensors an entry names along `axis`"),
    # the bytes stay as they are: only the shape the output records changes
    "squeeze": Transform(squeeze, _squeeze_shape, doc="drop the dimensions of size 1, as torch's squeeze()",
                         identity=lambda dtype: True, rowwise=True),
    "regroup_qkv": Transform(regroup_qkv, _regroup_shape,
                             doc="fused q, k, v rows stored group by group (GPT-NeoX, Falcon) as all q, all k, all v",
                             whole_rows=True),
    "detile_kv": Transform(detile_kv, _detile_shape, doc="keep one copy of a K and a V head its converter copied into "
                                                         "n_head heads, after checking they are copies",
                           whole_rows=True),
}


@dataclass(frozen=True)
class Test:
    """A named test of a tensor's data, ``holds(array, *args)``, that a table's `tensor_tests` run
    before anything is written (whether a transform applies, which keys follow)."""

    holds: Callable[..., bool]
    doc: str = ""
    whole_rows: bool = False  # as Transform.whole_rows: a quantized tensor is given as its rows of blocks


TESTS: dict[str, Test] = {
    "kv_copies": Test(kv_copies, doc="whether the K and V heads of fused q, k, v rows are copies of one head",
                      whole_rows=True),
}
