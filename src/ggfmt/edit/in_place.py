"""``fmt edit --in-place``: a GGUF's header rewritten where it is, journaled and locked.

Only when the new header fits before the data section as it is (in the old header's room and
padding). The old and new headers are first saved to a journal beside the file
(``IN.ggfmt-journal``, synced), then the new one is written and synced, then the journal removed:
a run stopped between the two leaves the journal, and the next ``--in-place`` edit of the file puts
the old header back before anything else, when the journal is provably this file's. An edit holds
an advisory lock on the file (:class:`Locked`), so that no two edits write it at once.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from pathlib import Path

from ..document import Document
from ..errors import UsageError

JOURNAL = ".ggfmt-journal"


def journal_path(path: Path) -> Path:
    return path.with_name(path.name + JOURNAL)


# A journal: this magic, then (device, inode, size) of the file it belongs to, the header's length,
# and the old and new headers. Recovery acts only on a journal that is provably the record of an
# edit of this very file: same file, same size, and every byte of the file's header either the old
# header's or the new one's (a write stopped part way). Anything else is a stranger's, never applied.
JOURNAL_MAGIC = b"GGFMTJL1"
_JOURNAL_HEAD = struct.Struct("<8sQQQQ")


class Locked:
    """An edit's hold on its input: an advisory lock on the file itself (``flock``), exclusive for
    ``--in-place``, shared for a read (``-o``, ``--dry-run``), so that no two edits write one file
    and no copy is taken of a header being rewritten. Released when the command ends."""

    def __init__(self, path: Path, exclusive: bool) -> None:
        from ..io.inputs import open_input

        self.fd = open_input(path)
        try:
            fcntl.flock(self.fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise UsageError(f"{path}: another fmt edit of this file is in progress; try again when it "
                             "has finished") from None

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Locked:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StrangeJournal(UsageError):
    """A file where the journal of an edit of this file would be, which is not one."""


def _journal_of(path: Path, fd: int) -> bytes | None:
    """The old header the journal beside ``path`` saved, when it is the record of an interrupted
    edit of this file (open as ``fd``); None when there is none.
    A journal that is not provably this file's is refused, never applied."""
    journal = journal_path(path)
    try:
        jfd = os.open(journal, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StrangeJournal(f"{journal}: cannot be read ({e.strerror}); it is not a journal fmt edit wrote") from None
    stranger = f"{journal}: not the journal of an interrupted edit of {path.name}"
    try:
        info, target = os.fstat(jfd), os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StrangeJournal(f"{stranger} (not a regular file); remove it to edit the file")
        # an edit writes 2 headers, each at most the file: a larger journal is no journal of it
        if info.st_size > _JOURNAL_HEAD.size + 2 * target.st_size:
            raise StrangeJournal(f"{stranger} (larger than two headers of it could be); remove it to edit the file")
        saved = os.pread(jfd, info.st_size, 0)
    finally:
        os.close(jfd)
    if len(saved) < _JOURNAL_HEAD.size or not saved.startswith(JOURNAL_MAGIC):
        raise StrangeJournal(f"{stranger} (it does not start as one); remove it to edit the file")
    _, device, inode, size, length = _JOURNAL_HEAD.unpack_from(saved)
    old = saved[_JOURNAL_HEAD.size:_JOURNAL_HEAD.size + length]
    new = saved[_JOURNAL_HEAD.size + length:]
    if (device, inode) != (target.st_dev, target.st_ino) or size != target.st_size:
        raise StrangeJournal(f"{stranger} (it was written for another file, or this one has changed since); "
                             "remove it to edit the file")
    if len(old) != length or len(new) != length:
        return None  # the journal itself was cut short: it was being written, the file not yet touched
    now = os.pread(fd, length, 0)
    if len(now) != length or not _between(now, old, new):
        raise StrangeJournal(f"{stranger} (the file's header is neither the one it saved nor the edited one); "
                             "remove it to edit the file")
    return old


def _between(now: bytes, old: bytes, new: bytes) -> bool:
    """Whether every byte of ``now`` is the old header's or the new one's at its place."""
    import numpy as np

    a, b, c = (np.frombuffer(x, dtype=np.uint8) for x in (now, old, new))
    return bool(((a == b) | (a == c)).all())


def interrupted_edit(path: Path, fd: int) -> bool:
    """Whether an interrupted ``--in-place`` edit of this file left its journal (a file that is not
    one does not concern a command that only reads)."""
    try:
        return _journal_of(path, fd) is not None
    except StrangeJournal:
        return False


def recover(path: Path, fd: int) -> bool:
    """Put back the header an interrupted ``--in-place`` edit of this file saved (the file held
    with an exclusive :class:`Locked`); True when there was one."""
    old = _journal_of(path, fd)
    journal = journal_path(path)
    if old is None:
        if journal.exists():  # a journal cut short while it was written: the file was never touched
            journal.unlink()
        return False
    _write_synced(path, old)
    journal.unlink()
    return True


def _write_synced(path: Path, header: bytes) -> None:
    """``header`` over the start of ``path``, on disk when this returns."""
    fd = os.open(path, os.O_WRONLY)
    try:
        _write_all(fd, header)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """``data`` at the start of ``fd``, every byte: a write that stops short (a disk filling up)
    must not let the edit go on with a journal that cannot put the header back."""
    view, at = memoryview(data), 0
    while at < len(view):
        written = os.pwrite(fd, view[at:], at)
        if written == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # nothing more could be written
        at += written


def check_fits(doc: Document, header: bytes) -> None:
    """Refuse an in-place edit whose header does not take exactly the room of the old one."""
    old_start = int(doc.fields["data_start"])
    if len(header) != old_start:
        missing = len(header) - old_start
        raise UsageError(f"{doc.source}: the edited header needs {missing:,} bytes more room than the "
                         f"{old_start:,} before the tensor data" if missing > 0 else
                         f"{doc.source}: the edited header ends {-missing:,} bytes earlier, which would move "
                         "the tensor data; write a new file with -o")


def write_in_place(doc: Document, header: bytes) -> None:
    """Write ``header`` over the file's own, journaled (see the module doc)."""
    check_fits(doc, header)
    old_start = int(doc.fields["data_start"])
    journal = journal_path(doc.source)
    with open(doc.source, "rb") as f:
        old = os.pread(f.fileno(), old_start, 0)
        info = os.fstat(f.fileno())
    head = _JOURNAL_HEAD.pack(JOURNAL_MAGIC, info.st_dev, info.st_ino, info.st_size, len(old))
    try:
        fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:  # appeared since the lock was taken: not ours
        raise UsageError(f"{journal}: appeared while the file was edited; remove it and edit again") from None
    except OSError as e:
        raise UsageError(f"{journal}: cannot be created ({e.strerror}); --in-place keeps the old header there "
                         "while it writes: make its folder writable, or write a new file with -o") from None
    try:
        _write_all(fd, head + old + header)
        os.fsync(fd)
    finally:
        os.close(fd)
    directory = os.open(journal.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    _write_synced(doc.source, header)
    journal.unlink()
