"""Tensor payloads: where an output tensor's bytes come from, and moving them.

A payload source is a :class:`FileSlice` (bytes copied from an input file by the kernel:
``os.copy_file_range``, then ``os.sendfile``, then a fixed-size buffer) or an
:class:`ArraySource` (a numpy array computed when it is written, one tensor at a time).
Memory use never grows with the size of the whole file.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK = 8 << 20  # bytes per system call (also the size of the fallback buffer)

Progress = Callable[[int], None]


def copy_range(src_fd: int, src_offset: int, dst_fd: int, nbytes: int, progress: Progress | None = None) -> None:
    """Append ``nbytes`` of ``src_fd`` starting at ``src_offset`` at ``dst_fd``'s current position."""
    done = 0
    method = _copy_file_range if hasattr(os, "copy_file_range") else _sendfile
    while done < nbytes:
        count = min(CHUNK, nbytes - done)
        try:
            n = method(src_fd, src_offset + done, dst_fd, count)
        except OSError:
            # Not supported between these two files (e.g. across some file systems): go down a step.
            if method is _copy_file_range:
                method = _sendfile
                continue
            if method is _sendfile:
                method = _buffered
                continue
            raise
        if n <= 0:
            raise OSError(f"the input ended {nbytes - done} bytes early while copying a payload")
        done += n
        if progress is not None:
            progress(n)


def _copy_file_range(src_fd: int, src_offset: int, dst_fd: int, count: int) -> int:
    return os.copy_file_range(src_fd, dst_fd, count, src_offset)


def _sendfile(src_fd: int, src_offset: int, dst_fd: int, count: int) -> int:
    return os.sendfile(dst_fd, src_fd, src_offset, count)


def _buffered(src_fd: int, src_offset: int, dst_fd: int, count: int) -> int:
    data = os.pread(src_fd, count, src_offset)
    view = memoryview(data)
    while view:
        written = os.write(dst_fd, view)
        view = view[written:]
    return len(data)


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
            raise OSError(f"{self.path} ended {self.nbytes - len(data)} bytes early")
        return data

    def write_to(self, stream: Any, progress: Progress | None = None) -> None:
        with open(self.path, "rb") as src:
            try:
                dst_fd = stream.fileno()
            except (AttributeError, io.UnsupportedOperation):
                dst_fd = None
            if dst_fd is None:
                src.seek(self.offset)
                left = self.nbytes
                while left:
                    chunk = src.read(min(CHUNK, left))
                    if not chunk:
                        raise OSError(f"{self.path} ended {left} bytes early")
                    stream.write(chunk)
                    left -= len(chunk)
                return
            stream.flush()
            copy_range(src.fileno(), self.offset, dst_fd, self.nbytes, progress)
            stream.seek(0, os.SEEK_END)  # resynchronise the buffered stream with the descriptor


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

    def write_to(self, stream: Any, progress: Progress | None = None) -> None:
        import numpy as np

        array = np.ascontiguousarray(self.produce())
        if array.nbytes != self.nbytes:
            raise ValueError(f"a transform produced {array.nbytes} bytes where {self.nbytes} were expected")
        stream.write(array.data.cast("B"))  # C-contiguous: written without a copy
        if progress is not None:
            progress(self.nbytes)


PayloadSource = FileSlice | ArraySource


class EarlyWriteback:
    """Asks the kernel to start writing an output's dirty pages to disk while the output grows.

    Without it, gigabytes of dirty pages pile up and the final fsync (or the kernel's own
    throttling, mid-copy) waits for all of them at once; with it the disk write overlaps the
    copy and the final fsync finds almost nothing left. POSIX_FADV_DONTNEED on Linux starts
    that writeback without waiting for it.
    """

    STEP = 64 << 20  # bytes between requests

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.requested = 0
        self.available = hasattr(os, "posix_fadvise")

    def __call__(self, _written: int = 0) -> None:
        if not self.available:
            return
        end = os.lseek(self.fd, 0, os.SEEK_CUR)
        if end - self.requested >= self.STEP:
            os.posix_fadvise(self.fd, self.requested, end - self.requested, os.POSIX_FADV_DONTNEED)
            self.requested = end
