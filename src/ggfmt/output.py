"""Writing output files safely: all or nothing, and never over an existing file unless asked.

The output is written to a temporary file in the target's directory, flushed to disk and
renamed over the target at the end.  If anything goes wrong (an error, Ctrl-C, SIGTERM) the
temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import UsageError


def check_target(target: Path, *, force: bool, inputs: Sequence[Path] = ()) -> None:
    """Refuse an output that would replace a file without --force, or an input."""
    if target.is_dir():
        raise UsageError(f"{target}: is a directory; name an output file")
    if not target.parent.is_dir():
        raise UsageError(f"{target}: its directory {target.parent} does not exist")
    if target.exists():
        for source in inputs:
            if source.exists() and os.path.samefile(source, target):
                raise UsageError(f"{target}: is also the input; choose another output file")
        if not force:
            raise UsageError(f"{target}: already exists; pass --force to replace it")


@contextlib.contextmanager
def atomic_output(target: Path, *, force: bool, inputs: Sequence[Path] = ()) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``target`` in one rename."""
    check_target(target, force=force, inputs=inputs)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        with temporary.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, target)
        _fsync_directory(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be opened
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
