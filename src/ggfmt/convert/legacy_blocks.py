"""Quantized blocks of 2023 model files in today's layouts (``ggml_types.LEGACY_TYPES``).

ggml changed its block layouts twice in May 2023: llama.cpp PR 1405 (GGJT v2) stored the 4-bit
weights of a block as j and j+16 in byte j, where they had been 2j and 2j+1; PR 1508 (GGJT v3)
stored the q4_0, q4_1 and q8_0 scales as f16 instead of f32. A tensor in an older layout is
rewritten block by block into today's type of the same kind: the weights reordered, the scales
rounded to f16 (the only change of value, at most half an f16 step of each scale). q4_2, whose
16-weight blocks no type of today has, is dequantized, to f16 (or f32 when asked).

The layouts are those of ggml.c at llama.cpp b608b55 (era 1) and 6986c78 (era 2); the tests
check every converted tensor against what those builds' own dequantization gave.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np

from .. import ggml_types
from ..errors import FormatError
from ..io.tensors import BlocksSource, FileSlice
from ..schema.compiler import FLOAT_MAX

PIECE_BYTES = 2 << 20  # input bytes converted at a time (memory: a few times this)

F32_SCALES = "<f4"
# each legacy layout as a numpy record: the scale (and minimum) fields and how the weights are stored
_LAYOUTS: dict[str, tuple[list[tuple[str, Any]], str, str]] = {
    # name: (fields, where the weights are: "pairs" = 4-bit weights 2j and 2j+1 in byte j,
    #        "halves" = j and j+16 as today, "bytes" = one int8 each; what the rewrite changes)
    "q4_0_v1": ([("d", F32_SCALES), ("qs", ("u1", 16))], "pairs", "weights reordered, scales f32 -> f16"),
    "q4_1_v1": ([("d", F32_SCALES), ("m", F32_SCALES), ("qs", ("u1", 16))], "pairs",
                "weights reordered, scales and minimums f32 -> f16"),
    "q4_2": ([("d", "<f2"), ("qs", ("u1", 8))], "pairs", "dequantized: no type of today has its 16-weight blocks"),
    "q5_0_v1": ([("d", "<f2"), ("qh", "<u4"), ("qs", ("u1", 16))], "pairs", "weights reordered"),
    "q5_1_v1": ([("d", "<f2"), ("m", "<f2"), ("qh", "<u4"), ("qs", ("u1", 16))], "pairs", "weights reordered"),
    "q8_0_v1": ([("d", F32_SCALES), ("qs", ("i1", 32))], "bytes", "scales f32 -> f16"),
    "q4_0_v2": ([("d", F32_SCALES), ("qs", ("u1", 16))], "halves", "scales f32 -> f16"),
    "q4_1_v2": ([("d", F32_SCALES), ("m", F32_SCALES), ("qs", ("u1", 16))], "halves",
                "scales and minimums f32 -> f16"),
    "q8_0_v2": ([("d", F32_SCALES), ("qs", ("i1", 32))], "bytes", "scales f32 -> f16"),
}


_LOW = np.uint64(0x0F0F0F0F0F0F0F0F)  # the low nibble of each of 8 bytes


def _unpaired(qs: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """16 bytes of 4-bit weights stored as 2j, 2j+1 in byte j, restored to today's j, j+16.

    Today's byte j holds weights j and j + 16 (low, high nibble), which the old layout kept in
    bytes j // 2 and 8 + j // 2, in their low nibbles for an even j, high ones for an odd j: so
    the two halves, taken as two 64-bit words, give today's even and odd bytes in a few word
    operations, which are then interleaved."""
    n = qs.shape[0]
    words = np.ascontiguousarray(qs).view("<u8")  # (n, 2): the first and second 8 bytes
    first, second = words[:, 0], words[:, 1]
    even = (first & _LOW) | ((second & _LOW) << np.uint64(4))
    odd = ((first >> np.uint64(4)) & _LOW) | (second & ~_LOW)
    out = np.empty((n, 8, 2), dtype=np.uint8)  # bytes even[0], odd[0], even[1], odd[1], ...
    out[:, :, 0] = even.view(np.uint8).reshape(n, 8)
    out[:, :, 1] = odd.view(np.uint8).reshape(n, 8)
    interleaved: np.ndarray[Any, Any] = out.reshape(n, 16)
    return interleaved


class BadBlock(ValueError):
    """A block whose scale today's layout cannot hold: ``index`` is the block's number in the piece."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


def convert_blocks(name: str, data: bytes, to_float: str) -> np.ndarray[Any, Any]:
    """Whole blocks of layout ``name`` in today's layout: bytes of today's type, or for q4_2 the
    values as ``to_float`` (f16 or f32). A scale that is not finite, or that f16 cannot hold,
    raises BadBlock: the file is damaged, and a rewrite would turn it into inf or NaN weights."""
    fields, order, _ = _LAYOUTS[name]
    blocks = np.frombuffer(data, dtype=np.dtype(fields))
    if name == "q4_2":
        _check_finite(name, blocks["d"], "scale")
        qs = blocks["qs"]
        weights = np.empty((len(blocks), 16), dtype=np.float32)
        weights[:, 0::2] = qs & 0x0F
        weights[:, 1::2] = qs >> 4
        values = (weights - 8) * blocks["d"].astype(np.float32)[:, None]
        if to_float == "f16":  # a weight is up to 8 x its f16 scale: beyond f16 for the largest scales
            peak = np.abs(values).max(axis=1)
            _check_finite(name, np.where(peak <= FLOAT_MAX["f16"], peak, np.inf), "largest weight", peak)
        return values.astype(np.float16 if to_float == "f16" else np.float32).reshape(-1)
    out_fields = [(field, "<f2" if kind == F32_SCALES else kind) for field, kind in fields]
    out = np.empty(len(blocks), dtype=np.dtype(out_fields))
    for field, kind in fields:
        if field == "qs":
            out["qs"] = _unpaired(blocks["qs"]) if order == "pairs" else blocks["qs"]
        elif kind == F32_SCALES:
            with np.errstate(over="ignore", invalid="ignore"):
                scales = blocks[field].astype(np.float16)
            _check_finite(name, scales, "scale" if field == "d" else "minimum", blocks[field])
            out[field] = scales
        else:
            out[field] = blocks[field]
    return out


def _check_finite(name: str, values: np.ndarray[Any, Any], what: str,
                  original: np.ndarray[Any, Any] | None = None) -> None:
    """Raise BadBlock at the first block whose ``values`` are not finite (``original``: what the
    file holds there, when ``values`` are its f16 rounding)."""
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values)
    if bad.any():
        index = int(np.argmax(bad))
        shown = float((original if original is not None else values)[index])
        raise BadBlock(index, f"a {name} block's {what} of {shown:g} cannot be written in today's layout, "
                              f"which holds it as an f16 (magnitude up to {FLOAT_MAX['f16']:g}); the file is damaged "
                              "here")


def _blocks(source: FileSlice, name: str, block_bytes: int, to_float: str, tensor: str,
            file: str) -> Iterator[np.ndarray[Any, Any]]:
    step = max(1, PIECE_BYTES // block_bytes) * block_bytes
    for start in range(0, source.nbytes, step):
        piece = FileSlice(source.path, source.offset + start, min(step, source.nbytes - start)).read()
        try:
            yield convert_blocks(name, piece, to_float)
        except BadBlock as e:
            offset = source.offset + start + e.index * block_bytes
            raise FormatError(f"{tensor} (block {start // block_bytes + e.index})", offset, str(e), file) from None


def relayout(tensors: Sequence[Any], outtype: str | None, file: str = "") -> tuple[list[Any], list[str]]:
    """``tensors`` (OutputTensor) with every tensor in a 2023 block layout in today's, and what the
    summary should say of them. q4_2, which is dequantized, becomes f16 unless another --outtype
    will convert it again: then f32, so that its values are rounded once, to the type asked for."""
    out, done = [], Counter[tuple[str, str]]()
    to_float = "f16" if outtype in (None, "f16") else "f32"
    for tensor in tensors:
        legacy = ggml_types.LEGACY_TYPES.get(tensor.ggml_type)
        if legacy is None:
            out.append(tensor)
            continue
        name, _, block_bytes, today = legacy
        if not isinstance(tensor.source, FileSlice):
            raise TypeError(f"{tensor.name}: a {name} tensor is converted from its file, not from a transform")
        target = to_float if today == "f16" else today
        new_type = ggml_types.type_id(target)
        nbytes = ggml_types.nbytes(new_type, tensor.ne)
        out.append(replace(tensor, ggml_type=new_type,
                           source=BlocksSource(partial(_blocks, tensor.source, name, block_bytes, to_float,
                                                       tensor.name, file), nbytes)))
        done[name, target] += 1
    notes = [f"{count} tensors in the 2023 {name} block layout written as {target} ({_LAYOUTS[name][2]})"
             for (name, target), count in done.items()]
    return out, notes

