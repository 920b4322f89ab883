"""Tensor payloads: where an output tensor's bytes come from, and moving them.

A payload source is a :class:`FileSlice` (a range of an input file, copied as it is) or an
:class:`ArraySource` (a numpy array computed when it is written, one tensor at a time). Both
append themselves to a :class:`~ggfmt.io.sink.Sink`, which decides how bytes reach the disk.
Memory use never grows with the size of the whole file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputShrank
from .sink import COPY_CHUNK, Progress, Sink


@dataclass(frozen=True)
class FileSlice:
    """``nbytes`` of a file from ``offset``: a payload to build with, streamed, never loaded."""

    path: Path
    offset: int
    nbytes: int

    def read(self) -> bytes:
        """The bytes themselves (for transforms, one tensor at a time)."""
        with open(self.path, "rb") as src:
            data = os.pread(src.fileno(), self.nbytes, self.offset)
        if len(data) != self.nbytes:
            raise InputShrank(self.offset + len(data), self.nbytes - len(data), str(self.path))
        return data

    def write_to(self, out: Sink | Any, progress: Progress | None = None) -> None:
        """Append the bytes to a :class:`~ggfmt.io.sink.Sink` (copied by the kernel or by direct I/O) or
        to any binary file object (read and written in pieces)."""
        with open(self.path, "rb") as src:
            if isinstance(out, Sink):
                try:
                    out.copy_from(src.fileno(), self.offset, self.nbytes, progress)
                except InputShrank as e:
                    e.file = str(self.path)
                    raise
                return
            src.seek(self.offset)
            left = self.nbytes
            while left:
                chunk = src.read(min(COPY_CHUNK, left))
                if not chunk:
                    raise InputShrank(self.offset + self.nbytes - left, left, str(self.path))
                out.write(chunk)
                left -= len(chunk)
                if progress is not None:
                    progress(len(chunk))


@dataclass(frozen=True)
class ArraySource:
    """A payload computed when it is written: ``produce()`` returns the array (C order)."""

    produce: Callable[[], Any]
    nbytes: int

    @classmethod
    def of(cls, produce: Callable[[], Any], shape: tuple[int, ...], dtype: Any) -> ArraySource:
        """A source of an array whose shape (numpy order) and dtype are known before it is computed."""
        import numpy as np

        return cls(produce, int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)

    def write_to(self, out: Sink | Any, progress: Progress | None = None) -> None:
        import numpy as np

        array = np.ascontiguousarray(self.produce())
        if array.nbytes != self.nbytes:
            raise ValueError(f"a transform produced {array.nbytes} bytes where {self.nbytes} were expected")
        if array.nbytes:  # (a view with a zero in its shape cannot be cast)
            out.write(array.data.cast("B"))  # C-contiguous: written without a copy
        if progress is not None:
            progress(self.nbytes)


@dataclass(frozen=True)
class BlocksSource:
    """A payload computed block by block when it is written (rows of a large tensor, say), so that
    no more than one block is in memory: ``blocks()`` yields arrays whose bytes follow each other."""

    blocks: Callable[[], Iterable[Any]]
    nbytes: int

    def write_to(self, out: Sink | Any, progress: Progress | None = None) -> None:
        import numpy as np

        written = 0
        for block in self.blocks():
            array = np.ascontiguousarray(block)
            written += array.nbytes
            if written > self.nbytes:
                break
            if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and sys.byteorder == "big"):
                array = array.byteswap()  # every format ggfmt writes is little-endian
            if array.nbytes:
                out.write(array.data.cast("B"))
            if progress is not None:
                progress(array.nbytes)
        if written != self.nbytes:
            raise ValueError(f"a transform produced {written} bytes where {self.nbytes} were expected")


@dataclass(frozen=True)
class LoadedSource:
    """A tensor only torch could read (a legacy pickle's): ``load()`` gives its array as stored
    (bf16 as its 16-bit patterns), loaded when it is written, one tensor at a time."""

    load: Callable[[], Any]
    nbytes: int

    def read(self) -> bytes:
        import numpy as np

        data: bytes = np.ascontiguousarray(self.load()).tobytes()
        if len(data) != self.nbytes:
            raise ValueError(f"a loaded tensor has {len(data)} bytes where {self.nbytes} were expected")
        return data

    def write_to(self, out: Sink | Any, progress: Progress | None = None) -> None:
        ArraySource(self.load, self.nbytes).write_to(out, progress)


PayloadSource = FileSlice | ArraySource | BlocksSource | LoadedSource
