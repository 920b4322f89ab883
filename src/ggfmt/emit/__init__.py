"""Writers of ggfmt's output formats, a module each, with the same verb in every module:
``write(plan, target, out_path, progress) -> Summary``. ``target`` is ``gguf``, ``hf`` (a Hugging
Face directory: ``out_path`` is the directory) or the id of the schema that builds the file (such
as ``ggla``); :func:`writer` finds the module by target in :data:`WRITERS`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from ..io.text import counted

if TYPE_CHECKING:
    from ..convert.plan import Plan
    from ..io.sink import Progress


@dataclass(frozen=True)
class Summary:
    """What a writer wrote, as a command's last line says it: each count with its noun, then what
    else the output is (a Hugging Face directory's dtype)."""

    counts: tuple[tuple[int, str], ...]
    details: tuple[str, ...] = ()

    def __str__(self) -> str:
        return ", ".join([*(counted(n, noun) for n, noun in self.counts), *self.details])


Writer = Callable[["Plan", str, Path, "Progress | None"], Summary]


# target -> the module that writes it; any other target is the id of a schema that builds the file
WRITERS = {"gguf": ".gguf", "hf": ".hf"}
SCHEMA_WRITER = ".schema"


def writer(target: str) -> Writer:
    """The writer of an output of ``target``."""
    module = import_module(WRITERS.get(target, SCHEMA_WRITER), __name__)
    write: Writer = module.write
    return write
