"""PyTorch's zip checkpoints (``torch.save`` since torch 1.6) read without torch.

Such a file is a zip archive of uncompressed records: ``NAME/data.pkl``, a pickle of the saved
object in which every tensor is a call of ``torch._utils._rebuild_tensor_v2`` on a storage, and
``NAME/data/KEY``, the bytes of each storage. Unpickling here allows the few globals a state
dict needs and turns each tensor into a :class:`TensorRef`: its dtype, shape and strides, and
the absolute byte range of its data in the file. The data is then read by offset, a block of
rows at a time, so memory does not grow with the file, and torch (whose import alone takes
about 200 MB) is not needed.

A global outside torch (``os.system``, ``builtins.eval``: code a pickle would run) is refused
at once (:class:`RefusedGlobal`). Anything else this reader does not know (another torch name, a
tensor subclass, big-endian data) makes :func:`read_torch_zip` return None, and the caller falls
back to ``torch.load(weights_only=True)``, which reads what torch can read safely and refuses
the rest.
"""

from __future__ import annotations

import io
import math
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# torch's legacy storage classes, as a pickle names them, and the dtype each holds (torch's name)
STORAGE_DTYPES = {
    "FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "DoubleStorage": "float64", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128",
}
# bytes per element of each (bf16 has no numpy type of its own)
ITEM_SIZES = {name: 2 if name == "bfloat16" else np.dtype(name).itemsize for name in STORAGE_DTYPES.values()}
# torch's rebuild functions for tensors ggfmt does not read: what to call them in a message
UNREAD_TENSORS = {
    "_rebuild_sparse_tensor": "a sparse_coo tensor; only dense tensors are read",
    "_rebuild_sparse_csr": "a sparse tensor; only dense tensors are read",
    "_rebuild_meta_tensor_no_storage": "a meta tensor: it has a shape but no data",
    "_rebuild_qtensor": "a quantized tensor; only float tensors are read",
}
LOCAL_HEADER = struct.Struct("<4s22xHH")  # a zip local file header: signature ... name and extra lengths


class _Fallback(Exception):
    """The pickle needs more than this reader knows: torch.load is asked instead."""


class RefusedGlobal(Exception):
    """The pickle asks for a global outside torch: code, not a state dict."""


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: str
    numel: int


@dataclass(frozen=True)
class TensorRef:
    """A pickled tensor, not read: where its bytes are and how they are laid out."""

    dtype: str  # torch's name: float32, float16, bfloat16, ...
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    storage_offset: int  # in elements
    storage_numel: int  # elements the pickle says its storage holds
    record: str  # the zip record of its storage
    record_begin: int  # absolute offset of that record's data in the file
    record_size: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def contiguous(self) -> bool:
        """Rows one after the other (C order); a dimension of one may have any stride."""
        step = 1
        for n, stride in zip(reversed(self.shape), reversed(self.stride), strict=True):
            if n > 1 and stride != step:
                return False
            step *= n
        return True

    @property
    def nbytes(self) -> int:
        return self.numel * ITEM_SIZES[self.dtype]

    @property
    def begin(self) -> int:
        """Absolute offset of the tensor's first byte."""
        return self.record_begin + self.storage_offset * ITEM_SIZES[self.dtype]


@dataclass(frozen=True)
class UnreadTensor:
    """A tensor of a kind ggfmt does not read (sparse, meta, quantized): refused where it is used."""

    why: str


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, storages: dict[str, tuple[int, int]]) -> None:
        super().__init__(io.BytesIO(data))
        self.storages = storages  # record key -> (absolute data offset, size)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return self._rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, requires_grad, hooks: data
        if module == "torch._utils" and name in UNREAD_TENSORS:
            why = UNREAD_TENSORS[name]
            return lambda *args, **kwargs: UnreadTensor(why)
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        if module == "torch" and name in ("Size", "device", "strided", "sparse_coo", "sparse_csr", "meta",
                                          "per_tensor_affine", "float32", "qint8", "quint8"):
            return lambda *args: None  # arguments of the kinds of tensor refused above
        if module == "torch" or module.startswith("torch."):
            raise _Fallback(f"{module}.{name}")  # torch's own reader may know it (and refuse it safely)
        raise RefusedGlobal(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], str)
                and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise _Fallback("a storage of another form")
        if pid[2] not in self.storages:
            raise pickle.UnpicklingError(f"the storage {pid[2]!r} has no data record")
        return _Storage(pid[2], pid[1], pid[4])

    def _rebuild_tensor(self, storage: Any, storage_offset: Any, size: Any, stride: Any, *rest: Any) -> Any:
        if not isinstance(storage, _Storage):
            raise _Fallback("a tensor without a storage")
        if not (isinstance(storage_offset, int) and isinstance(size, tuple) and isinstance(stride, tuple)
                and len(size) == len(stride) and all(isinstance(n, int) and n >= 0 for n in (*size, *stride))):
            raise pickle.UnpicklingError("a tensor with a malformed shape or stride")
        begin, record_size = self.storages[storage.key]
        return TensorRef(storage.dtype, size, stride, storage_offset, storage.numel, storage.key, begin, record_size)


def read_torch_zip(path: Path, archive: zipfile.ZipFile) -> Any:
    """The object ``path`` holds, its tensors as :class:`TensorRef`; None when torch must read it.

    Raises ``pickle.UnpicklingError`` (or ``EOFError``, ``ValueError``) for a malformed pickle."""
    records = {info.filename: info for info in archive.infolist()}
    pickles = [name for name in records if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        return None
    prefix = pickles[0].removesuffix("data.pkl")
    order = records.get(prefix + "byteorder")
    if order is not None and archive.read(order).strip() != b"little":
        return None  # a big-endian file: torch swaps its bytes
    storages = {}
    with path.open("rb") as f:
        for name, info in records.items():
            if name.startswith(prefix + "data/") and info.compress_type == zipfile.ZIP_STORED:
                f.seek(info.header_offset)
                signature, name_length, extra_length = LOCAL_HEADER.unpack(f.read(LOCAL_HEADER.size))
                if signature != b"PK\x03\x04":
                    raise ValueError(f"the zip record {name} has no local header")
                begin = info.header_offset + LOCAL_HEADER.size + name_length + extra_length
                storages[name.removeprefix(prefix + "data/")] = (begin, info.file_size)
    try:
        return _Unpickler(archive.read(pickles[0]), storages).load()
    except _Fallback:
        return None
