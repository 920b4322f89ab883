"""``fmt edit``: change a GGUF file's metadata or tensor names without rewriting its tensor data.

The edited header is built through the GGUF schema (``schemas/gguf.yaml``'s build path: the
unchanged keys are written back as the file held them, long arrays in one piece). The tensor
data keeps its offsets relative to the data section, so it is cloned as one range:

* to a new file (``-o``): the whole input is reflinked (``FICLONE``) when the new header ends on
  the same aligned offset and the file system shares extents, and the header is then written
  over the clone's; otherwise the header is written and the data appended by
  ``copy_file_range`` (the kernel copies, or shares extents where the file system can);
* in place (``--in-place``): only when the new header fits before the data section as it is
  (in the old header's room and padding). The old header is first saved to a journal beside the
  file (``IN.ggfmt-journal``, synced), then the new one written and synced, then the journal
  removed: a run stopped between the two leaves the journal, and the next ``fmt edit`` of the
  file puts the old header back before anything else, so the model is never left with half a
  header it cannot recover from.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import io
import json
import math
import os
import re
import stat
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import construct as cs

from .document import Document
from .errors import InputShrank, UsageError
from .schema.compiler import INT_RANGES

FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
JOURNAL = ".ggfmt-journal"
FLOAT_TYPES = {"f32", "f64"}
# what a header field may not be set to: it moves the tensor data
FIXED_KEYS = {"general.alignment": "it sets where the tensor data starts; rewrite the file to change it"}


@dataclass
class Edits:
    """What ``fmt edit`` was asked to change, in order of application: deletions, key renames (a key
    keeps its type, value and place), then values (``set`` as text, ``set_file`` from files, typed
    by ``set_type``, the key's present type or its standard type), then tensor renames."""

    set: dict[str, str] = field(default_factory=dict)
    set_file: dict[str, Path] = field(default_factory=dict)
    set_type: dict[str, str] = field(default_factory=dict)
    delete: list[str] = field(default_factory=list)
    rename_tensor: dict[str, str] = field(default_factory=dict)
    rename_key: dict[str, str] = field(default_factory=dict)


def utf8(text: str, what: str) -> str:
    """``text`` from the command line, refused when it is not UTF-8 (a shell under LANG=C passes
    other bytes through as surrogates): GGUF keys, values and tensor names are UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        shown = text.encode("utf-8", "surrogateescape")[: e.start + 1]
        raise UsageError(f"{what}: not UTF-8 text (byte {shown[-1:]!r} after {shown[:-1]!r}); GGUF keys, values "
                         "and tensor names are UTF-8") from None
    return text


def pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for text in values:
        utf8(text, flag)
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise UsageError(f"{flag} {text!r}: expected NAME=VALUE")
        if name in out:
            raise UsageError(f"{flag} {name}: given twice")
        out[name] = value
    return out


def _codes(doc: Document) -> dict[str, int]:
    names = doc.schema.enums.get("value_type", {})
    return {name: code for code, name in names.items()}


def typed_value(key: str, type_name: str, text: str, codes: dict[str, int]) -> tuple[int, Any]:
    """(value_type code, value as the schema builds it) of ``text`` read as ``type_name``:
    u8 ... f64, bool, str, or an array TYPE[] given as JSON (``[1, 2]``, ``["a", "b"]``)."""
    if type_name.endswith("[]"):
        item_type = type_name[:-2]
        try:
            items = json.loads(text)
        except RecursionError:
            raise UsageError(f"--set {key}: the JSON value is nested too deeply (a GGUF array holds values, "
                             "not arrays of arrays)") from None
        except ValueError:
            raise UsageError(f"--set {key}: an array is given as JSON ([1, 2, 3] or [\"a\", \"b\"]), not "
                             f"{text[:60]!r}") from None
        if not isinstance(items, list):
            raise UsageError(f"--set {key}: a {type_name} value is a JSON list")
        if item_type not in codes or item_type == "array":
            raise UsageError(f"--set-type {key}={type_name}: arrays of {item_type} are not set from text")
        item_code = codes[item_type]
        values = [_item(key, item_type, v) for v in items]
        return codes["array"], cs.Container(item_type=item_code, count=len(values), items=cs.ListContainer(values))
    if type_name not in codes or type_name == "array":
        known = ", ".join(n for n in codes if n != "array")
        raise UsageError(f"--set-type {key}={type_name}: not a GGUF type (one of {known}, or TYPE[] for an array)")
    return codes[type_name], _item(key, type_name, text)


def _item(key: str, type_name: str, value: Any) -> Any:
    """One value of ``type_name`` from text or from a JSON item, range-checked."""
    what = f"--set {key}"
    if type_name == "str":
        if not isinstance(value, str):
            raise UsageError(f"{what}: expected a string, got {value!r}")
        return value
    if type_name == "bool":
        words = {"true": True, "false": False, "1": True, "0": False}
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in words:
            return words[value.lower()]
        raise UsageError(f"{what}: a bool is true or false, not {value!r}")
    if type_name in INT_RANGES:
        number = _integer(value) if isinstance(value, str) else value
        if not isinstance(number, int) or isinstance(number, bool):
            raise UsageError(f"{what}: a {type_name} is an integer, not {value!r}")
        lo, hi = INT_RANGES[type_name]
        if not lo <= number <= hi:
            raise UsageError(f"{what}: {number} does not fit a {type_name} ({lo} to {hi})")
        return number
    if type_name in FLOAT_TYPES:
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise UsageError(f"{what}: a {type_name} is a number, not {_short(value)}") from None
        limit = 3.4028234663852886e38 if type_name == "f32" else sys.float_info.max
        written_infinite = isinstance(value, str) and value.strip().lstrip("+-").lower() in ("inf", "infinity")
        if not math.isnan(number) and abs(number) > limit and not written_infinite:
            raise UsageError(f"{what}: {_short(value)} does not fit an {type_name} (largest {limit:g}); "
                             "write inf for an infinity")
        return number
    raise UsageError(f"{what}: values of type {type_name} are not set from text")


# A metadata string is read into memory by every program that loads the model (llama.cpp reads the
# whole header at load): far above any chat template (kilobytes), far below what would hurt.
VALUE_FILE_LIMIT = 64 << 20


def read_value_file(key: str, path: Path) -> str:
    """The text of a regular file of at most VALUE_FILE_LIMIT bytes, exactly as it is (line ends kept)."""
    from .inputs import open_input

    what = f"--set-file {key}={path}"
    try:
        fd = open_input(path)
    except UsageError as e:
        raise UsageError(f"{what}: {str(e).removeprefix(f'{path}: ')}") from None
    try:
        size = os.fstat(fd).st_size
        if size > VALUE_FILE_LIMIT:
            raise UsageError(f"{what}: {size:,} bytes; a metadata string is at most {VALUE_FILE_LIMIT >> 20} MiB "
                             "(every program that loads the model holds its header in memory)")
        data = os.pread(fd, size + 1, 0)
    except OSError as e:
        raise UsageError(f"{what}: cannot be read: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) != size:
        raise UsageError(f"{what}: the file changed size while it was read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{what}: not UTF-8 text (byte {e.start}); GGUF strings are UTF-8") from None


STANDARD_KEYS = Path(__file__).parent / "tables" / "gguf-standard-keys.yaml"


@functools.cache
def _standard_keys() -> list[tuple[re.Pattern[str], str]]:
    import yaml

    table = yaml.safe_load(STANDARD_KEYS.read_text(encoding="utf-8"))
    holes = {re.escape("{arch}"): "[^.]+", re.escape("{n}"): "[0-9]+"}
    out = []
    for key, type_name in table.items():
        pattern = re.escape(key)
        for hole, matches in holes.items():
            pattern = pattern.replace(hole, matches)
        out.append((re.compile(pattern), str(type_name)))
    return out


def standard_type(key: str) -> str | None:
    """The type the GGUF specification gives ``key`` (tables/gguf-standard-keys.yaml), if it names one."""
    return next((type_name for pattern, type_name in _standard_keys() if pattern.fullmatch(key)), None)


_DECIMAL = re.compile(r"[+-]?[0-9]+")
_PREFIXED = re.compile(r"[+-]?0[xXoObB][0-9a-fA-F_]+")


def _integer(text: str) -> int | None:
    """An integer written in decimal (leading zeros allowed: ``010`` is ten) or with a 0x, 0o or 0b
    prefix; None for anything else, or for more digits than any GGUF integer has."""
    text = text.strip()
    if len(text) > 70:  # a u64 has 20 decimal digits, 66 characters in binary
        return None
    if _DECIMAL.fullmatch(text):
        return int(text, 10)
    if _PREFIXED.fullmatch(text):
        with contextlib.suppress(ValueError):
            return int(text, 0)
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _guess(key: str, text: str) -> str:
    """The type of a new key given without --set-type, from what the text reads as: bool, u32,
    i64 (u64 past it), f32 (f64 past its range), else str. Documented in ``fmt edit --help``."""
    if text.lower() in ("true", "false"):
        return "bool"
    if _DECIMAL.fullmatch(text.strip()):
        whole = _integer(text)
        for kind in ("u32", "i64", "u64"):
            lo, hi = INT_RANGES[kind]
            if whole is not None and lo <= whole <= hi:
                return kind
        raise UsageError(f"--set {key}: {_short(text)} does not fit any GGUF integer type; give --set-type "
                         f"{key}=str to keep it as text")
    try:
        number = float(text)
    except ValueError:
        return "str"
    return "f32" if math.isinf(number) or math.isnan(number) or abs(number) <= 3.4028234663852886e38 else "f64"


def apply(doc: Document, edits: Edits) -> tuple[Any, list[str]]:
    """The document's fields with the edits made, and one line per change made."""
    if doc.schema.id != "gguf":
        raise UsageError(f"{doc.source}: fmt edit changes GGUF files; this is a {doc.schema.id} file "
                         "(fmt to-gguf converts it)")
    fields = doc.fields
    codes = _codes(doc)
    names = doc.schema.enums.get("value_type", {})
    metadata: list[Any] = list(fields["metadata"])
    index = {str(kv["key"]): i for i, kv in enumerate(metadata)}
    done: list[str] = []
    for key in [*edits.delete, *edits.set, *edits.set_file, *edits.rename_key, *edits.rename_key.values()]:
        if key in FIXED_KEYS:
            raise UsageError(f"{key} cannot be edited: {FIXED_KEYS[key]}")
    for key in edits.set_type:
        if key not in edits.set and key not in edits.set_file:
            raise UsageError(f"--set-type {key}: give its value with --set {key}=VALUE or --set-file {key}=PATH")
    for key in edits.delete:
        if key not in index:
            raise UsageError(f"--delete {utf8(key, '--delete')}: {doc.source} has no such key")
        metadata[index[key]] = None
        done.append(f"deleted {key}")
    for old, new in edits.rename_key.items():
        _rename(metadata, index, old, utf8(new, "--rename-key"), "key", "--rename-key", doc)
        done.append(f"renamed key {old} -> {new}")
    texts = dict(edits.set)
    for key, path in edits.set_file.items():
        if key in texts:
            raise UsageError(f"{key}: given by both --set and --set-file")
        texts[key] = read_value_file(key, path)
    for key, text in texts.items():
        present = metadata[index[key]] if key in index and metadata[index[key]] is not None else None
        if key in edits.set_type:
            type_name = edits.set_type[key]
        elif present is not None:
            type_name = names.get(present["value_type"], "")
            if type_name == "array":
                type_name = names.get(present["value"]["item_type"], "") + "[]"
        else:
            type_name = standard_type(key) or ("str" if key in edits.set_file else _guess(key, text))
        code, value = typed_value(key, type_name, text, codes)
        record = cs.Container(key=key, value_type=code, value=value)
        if present is not None:
            metadata[index[key]] = record
            done.append(f"set {key} ({type_name})")
        else:
            index[key] = len(metadata)
            metadata.append(record)
            done.append(f"added {key} ({type_name})")
    infos = list(fields["infos"])
    by_name = {str(t["name"]): i for i, t in enumerate(infos)}
    for old, new in edits.rename_tensor.items():
        _rename(infos, by_name, old, new, "name", "--rename-tensor", doc)
        done.append(f"renamed tensor {old} -> {new}")
    edited = cs.Container(fields)
    edited["metadata"] = cs.ListContainer(kv for kv in metadata if kv is not None)
    edited["infos"] = cs.ListContainer(infos)
    return edited, done


def _rename(records: list[Any], by_name: dict[str, int], old: str, new: str, field_name: str, flag: str,
            doc: Document) -> None:
    """Give the record named ``old`` (at ``by_name[old]`` in ``records``; a deleted one is None) the
    name ``new`` in its ``field_name``, which no other record may have."""
    what = "key" if field_name == "key" else "tensor"
    if old not in by_name or records[by_name[old]] is None:
        raise UsageError(f"{flag} {old}={new}: {doc.source} has no {what} {old!r}")
    if not new:
        raise UsageError(f"{flag} {old}=: the new name is empty")
    if new in by_name and records[by_name[new]] is not None:
        raise UsageError(f"{flag} {old}={new}: a {what} {new!r} exists already")
    i = by_name.pop(old)
    records[i] = cs.Container(records[i])
    records[i][field_name] = new
    by_name[new] = i


def header_bytes(doc: Document, fields: Any) -> bytes:
    """The GGUF header (up to the aligned start of the data section) of ``fields``, built by the schema."""
    context = cs.Container(**doc.params)
    context._parsing = False
    context._building = True
    context._sizing = False
    context._params = context
    out = io.BytesIO()
    doc.schema.construct._build(fields, out, context, "")
    return out.getvalue()


def _clone(src: int, dst: int) -> bool:
    """Share all of ``src``'s extents with ``dst`` (a reflink); False where the file system cannot."""
    try:
        fcntl.ioctl(dst, FICLONE, src)
        return True
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.EBADF, errno.ENOSYS):
            return False
        raise


COPY_PIECE = 64 << 20  # bytes copied between two starts of write-back


def _copy_range(src: int, dst: int, offset: int, nbytes: int, at: int) -> None:
    """``nbytes`` of ``src`` from ``offset`` to ``dst`` at ``at``, copied inside the kernel if it can.

    The output is synced before it takes its name; starting the write-back of each piece as
    soon as it is copied lets the disk write while the next piece is copied, so that the final
    sync waits for the last piece only (measured on a 3 GB file: 0.9 s of sync down to 0.01 s)."""
    done = 0
    while done < nbytes:
        want = min(COPY_PIECE, nbytes - done)
        try:
            n = os.copy_file_range(src, dst, want, offset + done, at + done)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            n = _copy_by_reading(src, dst, offset + done, want, at + done)
        if n == 0:
            raise InputShrank(offset + done, nbytes - done)
        if hasattr(os, "posix_fadvise"):  # Linux: DONTNEED starts the write-back, without waiting for it
            os.posix_fadvise(dst, at + done, n, os.POSIX_FADV_DONTNEED)
        done += n


def _copy_by_reading(src: int, dst: int, offset: int, nbytes: int, at: int) -> int:
    piece = os.pread(src, min(nbytes, 1 << 24), offset)
    view = memoryview(piece)
    while view:
        written = os.pwrite(dst, view, at)
        view, at = view[written:], at + written
    return len(piece)


def write_copy(doc: Document, header: bytes, temporary: Path) -> str:
    """Write the edited file to ``temporary``: returns how the tensor data got there."""
    old_start = int(doc.fields["data_start"])
    data_bytes = doc.size - old_start
    with open(doc.source, "rb") as src, open(temporary, "r+b") as dst:
        if len(header) == old_start and _clone(src.fileno(), dst.fileno()):
            os.pwrite(dst.fileno(), header, 0)
            return "reflinked"
        os.pwrite(dst.fileno(), header, 0)
        try:
            _copy_range(src.fileno(), dst.fileno(), old_start, data_bytes, len(header))
        except InputShrank as e:
            e.file = str(doc.source)
            raise
        os.ftruncate(dst.fileno(), len(header) + data_bytes)
    return "copied (copy_file_range)"


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
        from .inputs import open_input

        self.path = path
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


def _journal_of(path: Path, fd: int) -> tuple[int, bytes, bytes] | None:
    """(header length, old header, new header) of the journal beside ``path`` when it is the
    record of an interrupted edit of this file (open as ``fd``); None when there is none.
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
    return length, old, new


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
    found = _journal_of(path, fd)
    journal = journal_path(path)
    if found is None:
        if journal.exists():  # a journal cut short while it was written: the file was never touched
            journal.unlink()
        return False
    _, old, _ = found
    _write_synced(path, old)
    journal.unlink()
    return True


def _write_synced(path: Path, header: bytes) -> None:
    """``header`` over the start of ``path``, on disk when this returns."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, header, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


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
        os.write(fd, head + old + header)
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
