"""The files a command has read, so that no output can ever replace one of them.

An input is more than the path on the command line: a PEFT or CLIP directory holds several
files, ``--base`` names a config, ``--llava-projector`` a pickle. Every reader records the
file it opens here (:func:`note_input`); :mod:`ggfmt.output` refuses an output that is any of
them, even with ``--force``.
"""

from __future__ import annotations

import os
from pathlib import Path

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
