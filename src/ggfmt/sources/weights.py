"""Tensor files: safetensors (read by offset with numpy alone) and PyTorch pickles (torch's zip
checkpoints read the same way, see :mod:`ggfmt.sources.torchzip`; any other pickle only with
``torch.load(..., weights_only=True)``, and torch is imported on that path alone).

A safetensors file is its own index: a JSON header gives every tensor's dtype, shape and byte
range. These readers give references (:mod:`ggfmt.sources.bundles` makes them a Document); the bytes are
read when a conversion writes them, a block of rows at a time, so memory never grows with the file.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FormatError, UsageError
from ..io.environment import TORCH_INSTALL
from ..io.inputs import note_input, open_binary
from ..weight_dtypes import BY_SAFETENSORS, BY_TORCH, WeightDtype
from .torchzip import RefusedGlobal, TensorRef, UnreadTensor, read_torch_zip

# A safetensors header larger than this is refused (the safetensors library's own limit).
MAX_SAFETENSORS_HEADER = 100 << 20
# A JSON config or vocabulary larger than this is not one (the largest tokenizer files are a few MB).
MAX_JSON_BYTES = 64 << 20


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; a broken file is a one-line error with the position."""
    note_input(path)
    try:
        with open_binary(path) as f:
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
        with open_binary(path) as f:
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
        with open_binary(path) as f:
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


def state_dict(path: Path, what: str, under: str | None = None) -> dict[str, Any]:
    """A pickled state dict (the file's dict, or the dict under its key ``under``) whose keys are
    names; its tensors are not checked here."""
    from ..io.text import escape

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


# Of the input, the rows of a tensor transformed at a time (convert/plan.py): memory stays flat, calls stay few.
ROW_BLOCK_BYTES = 2 << 20
