"""Failures of the machine rather than of ggfmt or of its input, told as what to do about them.

A full disk, a read-only file system or a missing optional package is not a bug: it gets the
one-line error and exit status 2, with the step that fixes it.
"""

from __future__ import annotations

import errno

# The version pyproject's `torch` extra pins; from PyTorch's CPU wheel index, since the default
# index serves a build that pulls several GB of CUDA libraries.
TORCH_VERSION = "2.13.0"
TORCH_INSTALL = f"pip install torch=={TORCH_VERSION} --index-url https://download.pytorch.org/whl/cpu (the CPU build)"

# Packages only some inputs need, and how to get them.
OPTIONAL_PACKAGES = {
    "torch": TORCH_INSTALL,
    "transformers": "pip install transformers sentencepiece protobuf",
    "sentencepiece": "pip install sentencepiece",
    "google": "pip install protobuf",
}

_ADVICE = {
    errno.EACCES: "permission denied; choose another output with -o, or change the permissions",
    errno.EPERM: "operation not permitted; choose another output with -o",
    errno.ENOSPC: "no space left on the device; free some space or write elsewhere with -o",
    errno.EDQUOT: "disk quota exceeded; free some space or write elsewhere with -o",
    errno.EROFS: "read-only file system; write elsewhere with -o",
    errno.EFBIG: "file too large for this file system or for the file-size limit (ulimit -f); "
                 "write elsewhere with -o or raise the limit",
    errno.EMFILE: "too many open files (ulimit -n)",
    errno.ENFILE: "too many open files on this system",
    errno.EIO: "input/output error from the device",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EISDIR: "is a directory",
    errno.ENAMETOOLONG: "file name too long",
    errno.ELOOP: "too many levels of symbolic links",
    errno.EXDEV: "the output and its temporary file are on different file systems",
}


def environment_error(error: OSError) -> bool:
    """True when ``error`` is a fact about the machine (disk, permissions, limits)."""
    return error.errno in _ADVICE


def describe_os_error(error: OSError) -> str:
    """``PATH: what happened; what to do``, in one line."""
    what = _ADVICE.get(error.errno or 0) or error.strerror or str(error)
    where = error.filename if error.filename is not None else None
    return f"{where}: {what}" if where is not None else what
