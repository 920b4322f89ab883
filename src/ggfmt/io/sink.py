"""Where a large output's bytes go: straight to the disk where the file system allows it.

An output file is durable before ggfmt renames it into place (see :mod:`ggfmt.io.output`), so its
bytes must reach the disk before the command ends, and how they get there decides the speed.
Written through the page cache, a gigabyte of dirty pages is flushed by the kernel in small
pieces and the fsync waits for all of them (on a virtual disk, two to five times slower than
the disk itself). :class:`DirectSink` writes with ``O_DIRECT`` instead: large aligned writes
from a few staging buffers, by a background thread, while the calling thread reads the next
piece of input, so reading and writing overlap and nothing piles up in the page cache (which
also leaves the user's cached files alone while a checkpoint larger than memory is converted).

Where ``O_DIRECT`` is refused (tmpfs, some network and FUSE file systems, macOS), or when
``GGFMT_DIRECT_IO=0`` is set, :class:`CachedSink` writes through the page cache, copying
input ranges inside the kernel (``os.copy_file_range``, then ``os.sendfile``, then a buffer)
and asking for early writeback as it goes.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import InputShrank
from .signals import stop_signals_blocked

Progress = Callable[[int], None]

COPY_CHUNK = 8 << 20  # bytes per copy system call or buffered read when copying through the page cache


class Sink:
    """An output file being appended to: bytes, and ranges of input files copied in."""

    def write(self, data: Any) -> None:
        """Append a bytes-like object."""
        raise NotImplementedError

    def copy_from(self, src_fd: int, offset: int, nbytes: int, progress: Progress | None = None) -> None:
        """Append ``nbytes`` of ``src_fd`` from ``offset``, calling ``progress`` as pieces arrive."""
        raise NotImplementedError

    def tell(self) -> int:
        """The output's size so far."""
        raise NotImplementedError

    def close(self) -> None:
        """Finish the file: everything written, its size exact (not yet fsynced)."""
        raise NotImplementedError

    def abort(self) -> None:
        """Stop after an error; the file is left for the caller to remove."""
        raise NotImplementedError


@contextlib.contextmanager
def open_sink(path: Path) -> Iterator[Sink]:
    """Append to ``path`` (which may already hold a header): direct I/O if possible, else cached."""
    sink = _open(path)
    try:
        yield sink
    except BaseException:
        sink.abort()
        raise
    sink.close()


def _open(path: Path) -> Sink:
    flag = getattr(os, "O_DIRECT", 0)
    if flag and os.environ.get("GGFMT_DIRECT_IO", "1") != "0":
        try:
            fd = os.open(path, os.O_RDWR | flag)
        except OSError as e:
            if e.errno != errno.EINVAL:  # EINVAL: this file system does not do direct I/O
                raise
        else:
            try:
                return DirectSink(fd)
            except BaseException:
                os.close(fd)
                raise
    fd = os.open(path, os.O_WRONLY)  # not O_APPEND: copy_file_range refuses such a destination
    os.lseek(fd, 0, os.SEEK_END)
    return CachedSink(fd)


class DirectSink(Sink):
    """Writes through ``O_DIRECT`` from page-aligned staging buffers, by a background thread.

    Direct I/O wants file offsets, lengths and memory aligned to the device's logical block
    (512 or 4096 bytes): every write but the last is a whole staging buffer (a multiple of
    :attr:`BLOCK`) at a multiple of it, from ``mmap`` memory (page-aligned). The last buffer is
    padded with zeros to a whole block and the file truncated to its real size afterwards.
    Whatever the file held before (a header) is kept: writing starts at the block holding its
    end, whose head is read back into the first buffer. If the device refuses a write anyway,
    ``O_DIRECT`` is switched off and the same writes go through the page cache.
    """

    BLOCK = 4096
    BUFFER_BYTES = 4 << 20  # 4 x 4 MiB measured as fast as larger buffers on a 1 GB copy, at less memory
    BUFFERS = 4

    def __init__(self, fd: int) -> None:
        self._fd = fd
        existing = os.fstat(fd).st_size
        # SimpleQueue, not Queue: Queue's put and get take a lock in Python code, and a stop signal's
        # exception raised between two of its instructions can leave that lock held, so that the
        # cleanup's abort() waits for it for ever. SimpleQueue's put and get are one C call each.
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        for _ in range(self.BUFFERS):
            self._free.put(mmap.mmap(-1, self.BUFFER_BYTES))
        self._full: queue.SimpleQueue[tuple[mmap.mmap, int, int] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._buffer = self._free.get()
        self._start = existing - existing % self.BLOCK  # file offset of the current buffer
        self._fill = existing - self._start
        if self._fill:  # read as direct I/O must be: a whole block, into aligned memory (it stops at the end)
            with memoryview(self._buffer) as view:
                got = os.preadv(fd, [view[: self.BLOCK]], self._start)
            if got != self._fill:
                raise OSError(f"the output's first {existing} bytes could not be read back")
        self._thread = threading.Thread(target=self._drain, name="ggfmt-writer", daemon=True)
        with stop_signals_blocked():  # the writer never takes a stop signal: the main thread answers it at once
            self._thread.start()

    def write(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        while view:
            n = min(len(view), self.BUFFER_BYTES - self._fill)
            self._buffer[self._fill: self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == self.BUFFER_BYTES:
                self._hand_over()

    def copy_from(self, src_fd: int, offset: int, nbytes: int, progress: Progress | None = None) -> None:
        done = 0
        while done < nbytes:
            room = memoryview(self._buffer)[self._fill: self._fill + min(nbytes - done, self.BUFFER_BYTES - self._fill)]
            n = os.preadv(src_fd, [room], offset + done)
            room.release()
            if n <= 0:
                raise InputShrank(offset + done, nbytes - done)
            self._fill += n
            done += n
            if progress is not None:
                progress(n)
            if self._fill == self.BUFFER_BYTES:
                self._hand_over()

    def tell(self) -> int:
        return self._start + self._fill

    def close(self) -> None:
        size = self.tell()
        padded = -self._fill % self.BLOCK
        try:
            if self._fill:
                self._buffer[self._fill: self._fill + padded] = bytes(padded)
                self._fill += padded
                self._hand_over()
        finally:
            self._finish(raise_error=False)
        try:
            self._raise_writer_error()
            if padded:
                os.ftruncate(self._fd, size)
        finally:
            os.close(self._fd)

    def abort(self) -> None:
        # With an error set, the writer thread skips whatever is still queued.
        self._error = self._error or InterruptedError("aborted")
        self._finish(raise_error=False)
        os.close(self._fd)

    def _hand_over(self) -> None:
        self._raise_writer_error()
        self._full.put((self._buffer, self._start, self._fill))
        self._start += self._fill
        self._fill = 0
        self._buffer = self._free.get()  # waits while every buffer is queued: the disk sets the pace

    def _finish(self, raise_error: bool = True) -> None:
        self._full.put(None)
        self._thread.join()
        if raise_error:
            self._raise_writer_error()

    def _raise_writer_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _drain(self) -> None:
        while (item := self._full.get()) is not None:
            buffer, offset, length = item
            try:
                if self._error is None:
                    self._write_all(memoryview(buffer)[:length], offset)
            except BaseException as e:  # handed to the reading thread at its next step
                self._error = e
            finally:
                self._free.put(buffer)

    def _write_all(self, view: memoryview, offset: int) -> None:
        while view:
            try:
                n = os.pwrite(self._fd, view, offset)
            except OSError as e:
                if e.errno != errno.EINVAL or not self._drop_direct():
                    raise
                continue
            view = view[n:]
            offset += n

    def _drop_direct(self) -> bool:
        import fcntl

        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        if not flags & os.O_DIRECT:
            return False
        fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
        return True


class CachedSink(Sink):
    """Appends through the page cache; input ranges are copied inside the kernel."""

    WRITEBACK_STEP = 64 << 20  # bytes between requests for early writeback

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._size = os.fstat(fd).st_size
        # Fastest first; a method the platform lacks, or that fails between these two files
        # (e.g. across some file systems), gives way to the next.
        candidates: list[tuple[str, Callable[[int, int, int], int]]] = [
            ("copy_file_range", self._copy_file_range), ("sendfile", self._sendfile), ("pread", self._buffered)]
        self._methods = [method for name, method in candidates if hasattr(os, name)]
        self._written_back = 0

    def write(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
            self._size += n
        self._write_back()

    def copy_from(self, src_fd: int, offset: int, nbytes: int, progress: Progress | None = None) -> None:
        done = 0
        while done < nbytes:
            count = min(COPY_CHUNK, nbytes - done)
            try:
                n = self._methods[0](src_fd, offset + done, count)
            except OSError:
                if len(self._methods) == 1:
                    raise
                del self._methods[0]
                continue
            if n <= 0:
                raise InputShrank(offset + done, nbytes - done)
            done += n
            self._size += n
            if progress is not None:
                progress(n)
            self._write_back()

    def tell(self) -> int:
        return self._size

    def close(self) -> None:
        os.close(self._fd)

    def abort(self) -> None:
        os.close(self._fd)

    def _write_back(self) -> None:
        # Without this, gigabytes of dirty pages pile up and the fsync (or the kernel's throttling,
        # mid-copy) waits for all of them at once. POSIX_FADV_DONTNEED on Linux starts writeback
        # of the range without waiting for it.
        if hasattr(os, "posix_fadvise") and self._size - self._written_back >= self.WRITEBACK_STEP:
            os.posix_fadvise(self._fd, self._written_back, self._size - self._written_back, os.POSIX_FADV_DONTNEED)
            self._written_back = self._size

    def _copy_file_range(self, src_fd: int, src_offset: int, count: int) -> int:
        return os.copy_file_range(src_fd, self._fd, count, src_offset)

    def _sendfile(self, src_fd: int, src_offset: int, count: int) -> int:
        return os.sendfile(self._fd, src_fd, src_offset, count)

    def _buffered(self, src_fd: int, src_offset: int, count: int) -> int:
        data = os.pread(src_fd, count, src_offset)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        return len(data)
