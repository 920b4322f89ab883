"""The files a command has read, so that no output can ever replace one of them.

An input is more than the path on the command line: a PEFT or CLIP directory holds several
files, ``--base`` names a config, ``--llava-projector`` a pickle. Every reader records the
file it opens here (:func:`note_input`); :mod:`ggfmt.io.output` refuses an output that is any of
them, even with ``--force``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

_read: dict[str, Path] = {}


def note_input(path: str | os.PathLike[str]) -> None:
    """Record that ``path`` is read by the command under way."""
    where = Path(path)
    _read.setdefault(os.path.abspath(where), where)


def inputs_read() -> list[Path]:
    return list(_read.values())


def forget_inputs() -> None:
    """Start a new command (fmt called more than once from the same process)."""
    _read.clear()


def open_input(path: str | os.PathLike[str]) -> int:
    """``path`` opened for reading (a file descriptor), once it is known to be a regular file.

    It is opened without blocking, so that a FIFO with no writer, a terminal or a device is
    refused at once instead of being waited on or read for ever, and it is checked after the
    open (on the descriptor), so that what is checked is what is read."""
    from ..errors import UsageError

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a file") from None
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot be read: {e.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UsageError(f"{path}: is {describe_kind(mode)}, not a file ggfmt reads")
    os.set_blocking(fd, True)
    note_input(path)
    return fd


def describe_kind(mode: int) -> str:
    """What a file that is not a regular file is, in words (``a FIFO``)."""
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def open_binary(path: str | os.PathLike[str]) -> BinaryIO:
    """:func:`open_input` as a binary file object."""
    return os.fdopen(open_input(path), "rb")
