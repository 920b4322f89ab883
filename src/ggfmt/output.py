"""Writing output files safely: all or nothing, and never over an existing file unless asked.

The output is written to a temporary file in the target's directory, flushed to disk and
renamed over the target at the end.  If anything goes wrong (an error, Ctrl-C, SIGTERM) the
temporary file is removed and the target is left as it was.  An output directory is made the
same way: written as a temporary directory next to it, then renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
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
    """Yield a temporary path to write; on success it replaces ``target`` in one rename.

    The data reaches the disk before the rename, so that a crash never leaves a truncated file
    under the target's name."""
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


def check_directory_target(target: Path, *, force: bool, inputs: Sequence[Path] = ()) -> None:
    """Refuse an output directory that would replace a non-empty one without --force, or hold an input."""
    where = _absolute(target)
    if not where.name:
        raise UsageError(f"{target}: name a directory to create")
    if target.is_symlink():
        raise UsageError(f"{target}: is a symbolic link; name the directory itself")
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target}: is a file; name an output directory")
    if not where.parent.is_dir():
        raise UsageError(f"{target}: its directory {where.parent} does not exist")
    if target.is_dir():
        # Replacing the directory deletes what it holds, the inputs too.
        real = Path(os.path.realpath(target))
        for source in inputs:
            if Path(os.path.realpath(source)).is_relative_to(real):
                raise UsageError(f"{target}: holds the input {source}; choose another output directory")
        if not force and any(target.iterdir()):
            raise UsageError(f"{target}: already exists and is not empty; pass --force to replace it")


@contextlib.contextmanager
def atomic_directory(target: Path, *, force: bool, inputs: Sequence[Path] = ()) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success it takes the place of ``target``.

    The temporary directory is made next to ``target`` (same file system, so the final step is a
    rename).  With ``force`` an existing ``target`` is first moved aside, then the new directory
    renamed in, then the old one deleted; if the rename fails the old one is put back.
    """
    check_directory_target(target, force=force, inputs=inputs)
    where = _absolute(target)
    temporary = _make_directory(where.parent, f".{where.name}.", ".tmp")
    try:
        yield temporary
        _fsync_tree(temporary)
        check_directory_target(target, force=force, inputs=inputs)  # it may have changed meanwhile
        _swap_in(temporary, where)
        _fsync_directory(where.parent)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _absolute(path: Path) -> Path:
    # Normalised, so that "out/.." or "." have a real name and parent; symbolic links are kept.
    return Path(os.path.abspath(path))


def _make_directory(parent: Path, prefix: str, suffix: str) -> Path:
    # Not tempfile.mkdtemp: its mode 0700 would become the output's; os.mkdir honours the umask.
    while True:
        path = parent / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _swap_in(temporary: Path, target: Path) -> None:
    if not target.exists():
        os.rename(temporary, target)
        return
    if not any(target.iterdir()):
        target.rmdir()  # an empty directory holds nothing to keep (and a rename over one is not portable)
        os.rename(temporary, target)
        return
    # Moved aside into a directory of its own: no other name is ever taken over, even by a race.
    aside = _make_directory(target.parent, f".{target.name}.", ".old")
    old = aside / target.name
    os.rename(target, old)
    try:
        os.rename(temporary, target)
    except BaseException:
        os.rename(old, target)
        aside.rmdir()
        raise
    # The new output is in place; what is left of the old one if deletion fails is not worth failing for.
    shutil.rmtree(aside, ignore_errors=True)


def _fsync_tree(directory: Path) -> None:
    for root, _dirs, files in os.walk(directory):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_directory(Path(root))


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be opened
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
