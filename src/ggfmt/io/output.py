"""Writing outputs safely: all or nothing, never over an existing file unless asked, never over an input.

An output is written to a temporary file beside it, ``OUT.ggfmt-partial-XXXXXXXX``, flushed to
disk and only then given its name:

* without ``--force`` it is *linked* into place, which fails if a file of that name appeared
  meanwhile (another conversion, a download), so nothing is ever replaced unasked;
* with ``--force`` it is renamed over the old file in one step.

The output is a regular file or absent: a device node, a FIFO or a directory at the output
path is refused even with ``--force``. No file that the conversion reads (recorded by
:mod:`ggfmt.io.inputs`) may be the output. The temporary file's mode follows the umask (0644
under umask 022), as any new file's would.

While it is written, the temporary file is locked (``flock``). A run killed outright (SIGKILL,
a power cut) leaves it behind, unlocked: the next run writing the same output removes it and
says so. The steps that give the output its name run with stop signals blocked, so that a
Ctrl-C or SIGTERM lands either before them (nothing written) or after them (the output
complete, which :func:`committed_outputs` then tells).

An output directory (``fmt to-hf``) is made the same way: written as
``OUT.ggfmt-partial-XXXXXXXX/`` next to it, then renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import signal
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..errors import UsageError
from .inputs import describe_kind, inputs_read
from .signals import stop_signals_blocked
from .text import escape

PARTIAL = ".ggfmt-partial-"  # OUT.ggfmt-partial-XXXXXXXX: an output being written
ASIDE = ".ggfmt-old-"  # OUT.ggfmt-old-XXXXXXXX/: a replaced output directory on its way out
_committed: list[Path] = []

Notify = Callable[[str], None]


def _notify_stderr(message: str) -> None:
    print(f"fmt: {escape(message)}", file=sys.stderr)


def committed_outputs() -> list[Path]:
    """The outputs given their final name since :func:`forget_committed` (for the message a late
    signal gets: the output is complete although the command was stopped)."""
    return list(_committed)


def forget_committed() -> None:
    _committed.clear()
    _deferred.clear()


# -- checks ------------------------------------------------------------------------------------

def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_target(target: Path, *, force: bool, inputs: Sequence[Path] = ()) -> None:
    """Refuse an output that is not a regular file, that would replace a file without --force,
    or that is a file the conversion reads (``inputs`` and every file read so far)."""
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        info = None
    except NotADirectoryError:
        raise UsageError(f"{target}: a part of the path is not a directory") from None
    if info is not None and not stat.S_ISREG(info.st_mode) and not stat.S_ISLNK(info.st_mode):
        if stat.S_ISDIR(info.st_mode):
            raise UsageError(f"{target}: is a directory; name an output file, or end the name with / to write "
                             "the default file name into it")
        raise UsageError(f"{target}: is {describe_kind(info.st_mode)}; ggfmt writes regular files only, "
                         "even with --force")
    if not target.parent.is_dir():
        raise UsageError(f"{target}: its directory {target.parent} does not exist")
    if info is None:
        return
    for source in [*inputs, *inputs_read()]:
        if _same_file(source, target):
            raise UsageError(f"{target}: is also an input ({source}); choose another output file")
    if not force:
        what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "a file"
        raise UsageError(f"{target}: already exists ({what}); pass --force to replace it")


# -- partial outputs ---------------------------------------------------------------------------

def _locked(fd: int) -> bool:
    """True when another process holds the lock of ``fd``'s file (a conversion under way)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        # Any other failure is a file system without locks: nothing tells a stale file from a live one.
        return e.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    return False


def remove_stale_partials(target: Path, notify: Notify = _notify_stderr) -> None:
    """Remove what a killed run writing ``target`` left behind (unlocked partial outputs)."""
    try:
        candidates = [p for p in target.parent.iterdir() if p.name.startswith(_partial_prefix(target))]
        asides = [p for p in target.parent.iterdir() if p.name.startswith(target.name + ASIDE)]
    except OSError:
        return
    for path in asides:  # an output directory replaced by a run killed while deleting it
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            notify(f"removed {path}, a replaced output an interrupted run was deleting")
    for path in candidates:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            if _locked(fd):
                continue
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            notify(f"removed {path}, a partial output left by an interrupted run")
        except OSError:
            continue
        finally:
            os.close(fd)


def _partial_prefix(target: Path) -> str:
    """``OUT.ggfmt-partial-``; for a name too long to take the suffix (file names have at most 255
    bytes), a hidden name made from a hash of it, so that no legitimate output name is refused."""
    name = target.name
    if len(os.fsencode(name + PARTIAL)) + 8 <= 255:
        return name + PARTIAL
    import hashlib

    return "." + hashlib.sha256(os.fsencode(name)).hexdigest()[:16] + PARTIAL


def _partial_name(target: Path) -> Path:
    return target.parent / f"{_partial_prefix(target)}{secrets.token_hex(4)}"


# -- files -------------------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_output(target: Path, *, force: bool, inputs: Sequence[Path] = (),
                  notify: Notify = _notify_stderr) -> Iterator[Path]:
    """Yield a temporary path to write; on success it takes ``target``'s name (see the module doc).

    The data reaches the disk before the output gets its name, so that a crash never leaves a
    truncated file under it."""
    check_target(target, force=force, inputs=inputs)
    remove_stale_partials(target, notify)
    temporary = _partial_name(target)
    fd, committed = -1, False
    try:  # the file is made inside: a signal right after its creation still removes it
        try:
            fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)  # mode from the umask
        except OSError as e:  # said of the output the user named, not of a name they never saw
            e.filename = str(target)
            raise
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield temporary
        _named(os.fsync, target, fd)
        # what is there now is checked again, not only what was there before
        committed = _give_name(target, target.parent, lambda: check_target(target, force=force, inputs=inputs),
                               lambda: _commit(temporary, target, force))
    finally:
        created = fd >= 0
        if created:
            os.close(fd)
        if not committed:
            # (when the open failed, or a signal came before its result was kept, the file may not
            # exist, or its folder refuse changes: the error to report is the open's)
            with contextlib.suppress(FileNotFoundError) if created else contextlib.suppress(OSError):
                temporary.unlink()


_naming: list[bool] = [False]  # an output is being given its name: stop signals wait
_deferred: list[int] = []  # the stop signals that arrived meanwhile


def defer_stop(signum: int) -> bool:
    """Called by the stop-signal handler: True (and the signal kept for later) while an output
    is being given its name, which must happen whole or not at all."""
    if _naming[0]:
        _deferred.append(signum)
        return True
    return False


def _give_name(target: Path, parent: Path, check: Callable[[], None], name_it: Callable[[], None]) -> bool:
    """Check the target once more and give the output its name, with stop signals held back until
    it is done and recorded (a signal then finds the output complete, see committed_outputs).

    Held back twice: blocked for this thread, and deferred by the Python handler, which runs in
    this thread whichever thread the kernel delivered the signal to (ggfmt's own threads block stop
    signals, but a program that calls ggfmt may have threads that do not)."""
    with stop_signals_blocked():  # the output takes its name whole, or not at all
        _naming[0] = True
        try:
            check()
            name_it()
            _committed.append(target)
            _fsync_directory(parent)
        finally:
            _naming[0] = False
    if _deferred:
        signal.raise_signal(_deferred.pop(0))  # answered now, the output complete and recorded
    return True


def _named(call: Callable[[int], None], target: Path, fd: int) -> None:
    """``call(fd)``, whose error names the output (an fsync's ENOSPC has no file name of its own)."""
    try:
        call(fd)
    except OSError as e:
        if e.filename is None:
            e.filename = str(target)
        raise


def _commit(temporary: Path, target: Path, force: bool) -> None:
    if force:
        os.replace(temporary, target)
        return
    try:
        os.link(temporary, target)  # fails if the name was taken meanwhile: never replaces
    except FileExistsError:
        raise UsageError(f"{target}: appeared while converting; pass --force to replace it") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
        # A file system without hard links: the name is checked again just before the rename.
        if os.path.lexists(target):
            raise UsageError(f"{target}: appeared while converting; pass --force to replace it") from None
        os.rename(temporary, target)
        return
    os.unlink(temporary)


# -- directories -------------------------------------------------------------------------------

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
        for source in [*inputs, *inputs_read()]:
            if Path(os.path.realpath(source)).is_relative_to(real):
                raise UsageError(f"{target}: holds the input {source}; choose another output directory")
        if not force and any(target.iterdir()):
            raise UsageError(f"{target}: already exists and is not empty; pass --force to replace it")


@contextlib.contextmanager
def atomic_directory(target: Path, *, force: bool, inputs: Sequence[Path] = (),
                     notify: Notify = _notify_stderr) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success it takes the place of ``target``.

    The temporary directory is made next to ``target`` (same file system, so the final step is a
    rename). With ``force`` an existing ``target`` is first moved aside, then the new directory
    renamed in, then the old one deleted, all with stop signals blocked; if the rename fails the
    old one is put back.
    """
    check_directory_target(target, force=force, inputs=inputs)
    where = _absolute(target)
    remove_stale_partials(where, notify)
    temporary = _partial_name(where)
    fd, committed = -1, False
    try:  # made inside: a signal right after its creation still removes it
        temporary.mkdir()  # os.mkdir honours the umask (tempfile.mkdtemp's 0700 would become the output's)
        fd = os.open(temporary, os.O_RDONLY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield temporary
        _fsync_tree(temporary)
        committed = _give_name(target, where.parent,
                               lambda: check_directory_target(target, force=force, inputs=inputs),
                               lambda: _swap_in(temporary, where))
    finally:
        if fd >= 0:
            os.close(fd)
        if not committed:
            shutil.rmtree(temporary, ignore_errors=True)


def _absolute(path: Path) -> Path:
    # Normalised, so that "out/.." or "." have a real name and parent; symbolic links are kept.
    return Path(os.path.abspath(path))


def _make_directory(parent: Path, prefix: str) -> Path:
    # Not tempfile.mkdtemp: its mode 0700 would become the output's; os.mkdir honours the umask.
    while True:
        path = parent / f"{prefix}{secrets.token_hex(4)}"
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
    aside = _make_directory(target.parent, f"{target.name}{ASIDE}")
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
