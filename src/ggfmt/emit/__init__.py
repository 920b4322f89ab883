"""Writers of ggfmt's output formats, a module each. A writer of a file has the same verb in every
module, ``write(plan, target, out_path, progress) -> Summary`` (``target``: ``gguf``, or the id
of the schema that builds the file, such as ``ggla``), and :func:`writer` finds it by target;
``hf`` (a Hugging Face directory: JSON files, weights, a tokenizer) is written by :mod:`.hf`."""

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
    """What a writer wrote, as a command's last line says it: each count with its noun."""

    counts: tuple[tuple[int, str], ...]

    def __str__(self) -> str:
        return ", ".join(counted(n, noun) for n, noun in self.counts)


Writer = Callable[["Plan", str, Path, "Progress | None"], Summary]


def writer(target: str) -> Writer:
    """The writer of a file of ``target``: a GGUF, or a file a schema builds (any other id)."""
    module = import_module(f"{__name__}.gguf" if target == "gguf" else f"{__name__}.schema")
    write: Writer = module.write
    return write
