"""Tensor files: safetensors (read by offset with numpy alone) and PyTorch pickles (torch's zip
checkpoints read the same way, see :mod:`ggfmt.sources.torchzip`; any other pickle only with
``torch.load(..., weights_only=True)``, and torch is imported on that path alone).

A safetensors file is its own index: a JSON header gives every tensor's dtype, shape and byte
range, so each tensor (or a block of its rows) is read with one ``pread`` when it is needed and
memory never grows with the file. bf16 is widened to f32 with numpy (the bf16 bits are the high
half of an f32's).

A pickle's sizes are checked before any tensor is touched: compressed zip records (which torch
never writes, and which could inflate a small file into gigabytes) and tensors that claim more
elements than their storage holds (a stride-0 view of one element) are refused, and so are
sparse, quantized, meta and 0-D tensors.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..environment import TORCH_INSTALL
from ..errors import FormatError, UsageError
from ..inputs import note_input
from ..weight_dtypes import BY_SAFETENSORS, BY_TORCH, WeightDtype
from .torchzip import RefusedGlobal, TensorRef, UnreadTensor, read_torch_zip

# A safetensors header larger than this is refused (the safetensors library's own limit).
MAX_SAFETENSORS_HEADER = 100 << 20
# A JSON config or vocabulary larger than this is not one (the largest tokenizer files are a few MB).
MAX_JSON_BYTES = 64 << 20


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]  # numpy order
    dtype: np.dtype[Any]  # the dtype the tensor is read as


@dataclass
class WeightsFile:
    path: Path
    keys: list[str]  # in the file's order
    info: Callable[[str], TensorInfo]
    load: Callable[[str], np.ndarray[Any, Any]]
    # Rows [start, stop) of a tensor (along its first axis): large tensors converted block by block.
    load_rows: Callable[[str, int, int], np.ndarray[Any, Any]]


def read_weights(path: Path, what: str = "a PyTorch pickle") -> WeightsFile:
    """``path`` is a .safetensors file, or else a pickle (``what`` names it in messages)."""
    note_input(path)
    if path.suffix == ".safetensors":
        return _safetensors(path)
    return _pickle(path, what)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; a broken file is a one-line error with the position."""
    note_input(path)
    try:
        with path.open("rb") as f:
            text = f.read(MAX_JSON_BYTES + 1)
        if len(text) > MAX_JSON_BYTES:
            raise FormatError("", None, f"larger than {MAX_JSON_BYTES} bytes; not a config file", str(path))
        value = json.loads(text.decode("utf-8"))
    except OSError as e:
        raise UsageError(f"{path}: cannot be read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise FormatError("", e.start, "not UTF-8 text", str(path)) from None
    except json.JSONDecodeError as e:
        raise FormatError("", e.pos, f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})",
                          str(path)) from None
    except RecursionError:
        raise FormatError("", None, "not a config ggfmt reads: nested too deeply", str(path)) from None
    except ValueError:  # Python refuses to parse an integer of more than 4300 digits
        raise FormatError("", None, "not a config ggfmt reads: it holds an integer of more than 4300 digits",
                          str(path)) from None
    if not isinstance(value, dict):
        raise FormatError("", 0, "expected a JSON object", str(path))
    return value


# -- safetensors ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Entry:
    dtype: WeightDtype
    shape: tuple[int, ...]
    begin: int  # absolute offsets in the file
    end: int


def safetensors_index(path: Path) -> dict[str, _Entry]:
    """Every tensor of a safetensors file, with its absolute byte range, checked against the file."""
    note_input(path)
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise FormatError("header size", 0, f"8 bytes expected, the file has {len(head)}", str(path))
            (length,) = struct.unpack("<Q", head)
            if length > min(size - 8, MAX_SAFETENSORS_HEADER):
                raise FormatError("header size", 0, f"a {length}-byte header claimed, only {size - 8} bytes follow",
                                  str(path))
            text = f.read(length)
    except OSError as e:
        raise UsageError(f"{path}: cannot be read: {e.strerror}") from None
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise FormatError("header", 8, f"not a safetensors JSON header: {' '.join(str(e).split())}",
                          str(path)) from None
    if not isinstance(header, dict):
        raise FormatError("header", 8, "not a safetensors JSON header: expected an object", str(path))
    data_start, data_size = 8 + length, size - 8 - length
    index: dict[str, _Entry] = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        index[key] = _entry(key, entry, data_start, data_size, str(path))
    return index


def _entry(key: str, entry: Any, data_start: int, data_size: int, file: str) -> _Entry:
    def bad(why: str) -> FormatError:
        return FormatError(f"header.{key}", 8, why, file)

    if not isinstance(entry, dict):
        raise bad("expected an object with dtype, shape and data_offsets")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in BY_SAFETENSORS:
        raise bad(f"dtype {dtype!r} is not a weight's ({', '.join(BY_SAFETENSORS)})")
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                              for n in shape):
        raise bad(f"shape {shape!r}: expected a list of non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) for n in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_size):
        raise bad(f"data_offsets {offsets!r}: expected [begin, end] within the {data_size} bytes of data")
    weight_dtype = BY_SAFETENSORS[dtype]
    nbytes = math.prod(shape) * weight_dtype.itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise bad(f"shape {shape} in {dtype} is {nbytes} bytes, data_offsets {offsets} hold {offsets[1] - offsets[0]}")
    return _Entry(weight_dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1])


def _safetensors(path: Path) -> WeightsFile:
    index = safetensors_index(path)

    def info(key: str) -> TensorInfo:
        entry = index[key]
        return TensorInfo(entry.shape, entry.dtype.read_as)

    def load_rows(key: str, start: int, stop: int) -> np.ndarray[Any, Any]:
        entry = index[key]
        return _read_rows(path, key, entry.dtype.stored, entry.shape, entry.begin, start, stop)

    def load(key: str) -> np.ndarray[Any, Any]:
        entry = index[key]
        return load_rows(key, 0, entry.shape[0] if entry.shape else 1)

    return WeightsFile(path, list(index), info, load, load_rows)


# -- PyTorch pickles -----------------------------------------------------------------------------

def check_zip_records(path: Path) -> None:
    """Refuse a torch zip whose records are compressed or larger than the file (a zip bomb)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return  # the legacy format: read whole by torch, so bounded by the file's own size
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise FormatError("", None, f"not a readable PyTorch file: {' '.join(str(e).split())}", str(path)) from None
    total = 0
    for record in records:
        if record.compress_type != zipfile.ZIP_STORED:
            raise FormatError(record.filename, record.header_offset, "is a compressed record, which torch.save "
                              "never writes (it could hold far more than the file)", str(path))
        total += record.file_size
    if total > size:
        raise FormatError("", None, f"its records claim {total} bytes, more than the file's {size}", str(path))


def check_torch_magic(path: Path) -> None:
    """Refuse a file that cannot be a torch.save output by its first bytes: a zip archive
    (``PK\\x03\\x04``, torch >= 1.6) or a pickle (protocol byte ``0x80``, the legacy format)."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as e:
        raise UsageError(f"{path}: cannot be read: {e.strerror}") from None
    if not head:
        raise FormatError("", 0, "is empty; not a PyTorch file", str(path))
    if head != b"PK\x03\x04" and head[0] != 0x80:
        raise FormatError("", 0, f"not a PyTorch file: torch.save writes a zip archive (b'PK\\x03\\x04') or a "
                                 f"pickle (b'\\x80'), this starts with {head!r}", str(path))


def load_pickle(path: Path, what: str) -> Any:
    """What a torch.save file holds. A zip checkpoint of plain tensors is read without torch, its
    tensors as :class:`~ggfmt.sources.torchzip.TensorRef` (read later by offset); anything else
    through ``torch.load(weights_only=True)``."""
    import pickle
    import zipfile

    note_input(path)
    check_torch_magic(path)
    check_zip_records(path)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                found = read_torch_zip(path, archive)
        except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError,
                struct.error, zipfile.BadZipFile, RecursionError, MemoryError) as e:
            detail = " ".join(str(e).split())[:200] or type(e).__name__
            raise FormatError("", None, f"not a PyTorch file torch.save wrote ({detail})", str(path)) from None
        except OSError as e:
            raise UsageError(f"{path}: cannot be read: {e.strerror or e}") from None
        except RefusedGlobal as e:
            raise FormatError("", None, f"refused: this pickle holds more than tensors and would run code if "
                                        f"loaded unsafely (GLOBAL {e}); ggfmt reads only tensors and dicts of "
                                        "them, as torch.load(weights_only=True) does", str(path)) from None
        if found is not None:
            return found
    return torch_load(path, what)


def torch_load(path: Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)``, memory-mapped when the file allows; torch is
    imported here and nowhere else. A pickle that asks for more than tensors is refused."""
    note_input(path)
    check_torch_magic(path)
    try:
        import torch
    except ImportError:
        raise UsageError(f"{path}: {what} needs torch to be read ({TORCH_INSTALL}); "
                         "a safetensors file does not") from None
    import pickle
    import warnings

    check_zip_records(path)
    try:
        with warnings.catch_warnings():  # torch's remarks on odd pickles would break the one-line report
            warnings.simplefilter("ignore")
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
                return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # Keep only what the pickle asked for (torch's message goes on to suggest unsafe loading).
        import re

        found = re.search(r"GLOBAL [\w.]+", str(e))  # a global the pickle asks for: code it would run
        if found is None:  # malformed, or a text file: not a pickle torch.save wrote, and no attempt to run code
            detail = " ".join(str(e).split("\n\n")[-2 if "\n\n" in str(e) else 0].split())[:200]
            raise FormatError("", None, f"not a PyTorch file torch.save wrote ({detail or 'unreadable'})",
                              str(path)) from None
        raise FormatError("", None, "refused: this pickle holds more than tensors and would run code if "
                                    f"loaded unsafely ({found.group(0)}); ggfmt reads pickles only "
                                    "with torch.load(weights_only=True)", str(path)) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, IndexError,
            MemoryError, RecursionError) as e:
        detail = " ".join(str(e).split())[:200] or type(e).__name__
        raise FormatError("", None, f"not a readable PyTorch file: {detail}", str(path)) from None




def check_tensor(name: str, tensor: Any, file: Path, what: str = "") -> None:
    """Refuse a tensor ggfmt cannot read as plain strided data of the size it claims."""
    def bad(why: str) -> FormatError:
        return FormatError(name, None, f"{what}{why}", str(file))

    if isinstance(tensor, UnreadTensor):
        raise bad(f"is {tensor.why}")
    if isinstance(tensor, TensorRef):
        _check_ref(tensor, bad)
        return
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise bad(f"is a {type(tensor).__name__}, not a tensor")
    if tensor.layout != torch.strided:
        raise bad(f"is a {str(tensor.layout).removeprefix('torch.')} tensor; only dense tensors are read")
    if tensor.is_quantized:
        raise bad("is a quantized tensor; only float tensors are read")
    if tensor.device.type == "meta":
        raise bad("is a meta tensor: it has a shape but no data")
    if tensor.dim() == 0:
        raise bad("is a 0-D tensor (a scalar), not a weight")
    dtype = str(tensor.dtype).removeprefix("torch.")
    if dtype not in BY_TORCH:
        raise bad(f"dtype {dtype} is not a weight's ({', '.join(BY_TORCH)})")
    needed = tensor.numel() * tensor.element_size()
    held = tensor.untyped_storage().nbytes() - tensor.storage_offset() * tensor.element_size()
    if needed > held or not tensor.is_contiguous():
        raise bad(f"claims {needed} bytes but its storage holds {held}: a view (expand, stride) ggfmt does not "
                  "materialise")


def _check_ref(ref: TensorRef, bad: Callable[[str], FormatError]) -> None:
    if not ref.shape:
        raise bad("is a 0-D tensor (a scalar), not a weight")
    if ref.dtype not in BY_TORCH:
        raise bad(f"dtype {ref.dtype} is not a weight's ({', '.join(BY_TORCH)})")
    item = BY_TORCH[ref.dtype].itemsize
    needed = ref.numel * item
    held = max(0, min(ref.storage_numel * item, ref.record_size) - ref.storage_offset * item)
    if needed > held or not ref.contiguous:
        raise bad(f"claims {needed} bytes but its storage holds {held}: a view (expand, stride) ggfmt does not "
                  "materialise")


def _pickle(path: Path, what: str) -> WeightsFile:
    return pickled_weights(path, checked_state_dict(path, what))


def checked_state_dict(path: Path, what: str) -> dict[str, Any]:
    """A pickled state dict whose keys are names and whose tensors are all readable."""
    state = state_dict(path, what)
    for key, tensor in state.items():
        check_tensor(key, tensor, path)
    return state


def state_dict(path: Path, what: str, under: str | None = None) -> dict[str, Any]:
    """A pickled state dict (the file's dict, or the dict under its key ``under``) whose keys are
    names; its tensors are not checked here."""
    from ..text import escape

    state = load_pickle(path, what)
    if under is not None:
        if not isinstance(state, dict) or not isinstance(state.get(under), dict):
            raise FormatError(under, None, f"missing: expected a dict {{{under!r}: {{name: tensor, ...}}}}", str(path))
        state = state[under]
    if not isinstance(state, dict):
        raise FormatError("", None, "expected a dict of tensors (a state dict)", str(path))
    for key in state:
        if not isinstance(key, str):
            raise FormatError(under or "", None, f"has the key {escape(repr(key))[:80]} ({type(key).__name__}); "
                                                 "the keys of a state dict are tensor names (str)", str(path))
    return state


def pickled_weights(path: Path, state: dict[str, Any]) -> WeightsFile:
    """A checked state dict as a :class:`WeightsFile` (bf16 widened to f32, as for safetensors)."""
    if all(isinstance(t, TensorRef) for t in state.values()):
        return _referenced_weights(path, state)
    import torch

    def info(key: str) -> TensorInfo:
        tensor = state[key]
        dtype = np.float16 if tensor.dtype == torch.float16 else np.float32
        return TensorInfo(tuple(tensor.shape), np.dtype(dtype))

    def load_rows(key: str, start: int, stop: int) -> np.ndarray[Any, Any]:
        tensor = state[key].detach()[start:stop]
        if tensor.dtype not in (torch.float32, torch.float16):
            tensor = tensor.float()
        array: np.ndarray[Any, Any] = tensor.numpy().copy()  # a copy: the mapped pages are not kept alive
        return array

    def load(key: str) -> np.ndarray[Any, Any]:
        return load_rows(key, 0, state[key].shape[0])

    return WeightsFile(path, list(state), info, load, load_rows)




def _referenced_weights(path: Path, state: dict[str, TensorRef]) -> WeightsFile:
    """Tensors of a zip checkpoint read by offset, as a safetensors file's are."""

    def info(key: str) -> TensorInfo:
        ref = state[key]
        return TensorInfo(ref.shape, BY_TORCH[ref.dtype].read_as)

    def load_rows(key: str, start: int, stop: int) -> np.ndarray[Any, Any]:
        ref = state[key]
        stored = BY_TORCH[ref.dtype].stored
        return _read_rows(path, key, stored, ref.shape, ref.begin, start, stop)

    def load(key: str) -> np.ndarray[Any, Any]:
        return load_rows(key, 0, state[key].shape[0])

    return WeightsFile(path, list(state), info, load, load_rows)


def _read_rows(path: Path, key: str, stored: np.dtype[Any], shape: tuple[int, ...], begin: int, start: int,
               stop: int) -> np.ndarray[Any, Any]:
    """Rows [start, stop) of a C-ordered tensor whose data starts at byte ``begin`` of ``path``."""
    row = math.prod(shape[1:]) * stored.itemsize if shape else stored.itemsize
    offset = begin + start * row
    nbytes = (stop - start) * row
    with path.open("rb") as f:
        data = os.pread(f.fileno(), nbytes, offset)
    if len(data) != nbytes:
        raise FormatError(key, offset, f"{nbytes} bytes expected, the file ended early", str(path))
    array = np.frombuffer(data, dtype=stored)
    if stored.kind == "u":  # bf16: its bits are the high half of an f32's
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array.reshape((stop - start, *shape[1:]) if shape else ())


ROW_BLOCK_BYTES = 2 << 20  # a block of rows converted at a time: memory stays flat, calls stay few


def row_blocks(weights: WeightsFile, key: str, rows: tuple[int, int] | None = None) -> Iterator[np.ndarray[Any, Any]]:
    """A tensor (or its rows [begin, end)) as consecutive blocks of rows of at most about
    ROW_BLOCK_BYTES each, read as f32 or f16."""
    info = weights.info(key)
    if not info.shape:
        yield weights.load(key)
        return
    begin, end = rows if rows is not None else (0, info.shape[0])
    row = max(1, math.prod(info.shape[1:]) * info.dtype.itemsize)
    step = max(1, ROW_BLOCK_BYTES // row)
    for start in range(begin, end, step):
        yield weights.load_rows(key, start, min(start + step, end))
