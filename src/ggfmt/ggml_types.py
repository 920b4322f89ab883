"""The ggml tensor types: ids, names, block and byte sizes, from gguf-py's own table.

gguf-py's ``constants`` module (``GGMLQuantizationType``, ``GGML_QUANT_SIZES``) is the one
source; ggfmt keeps no copy. It is loaded on its own, from the installed gguf package, and
only when a type is first asked about: ``import gguf`` runs the package's ``__init__``, which
imports numpy and its readers and writers (150 ms on this machine, measured), where the
constants alone take 18 ms, and a parse of a layout without ggml types takes neither.

Schema expressions and tables reach these as ``ggml_type_name(t)``, ``ggml_block_size(t)``,
``ggml_type_size(t)`` and ``ggml_nbytes(t, ne)``.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import sys
from collections.abc import Sequence
from functools import cache
from types import ModuleType


@cache
def _constants() -> ModuleType:
    imported = sys.modules.get("gguf.constants")
    if imported is not None:  # a conversion that imported gguf already: its table, not a second copy
        return imported
    spec = importlib.util.find_spec("gguf")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("gguf-py is not installed", name="gguf")
    path = os.path.join(os.path.dirname(spec.origin), "constants.py")
    loaded = importlib.util.spec_from_file_location("ggfmt._gguf_constants", path)
    assert loaded is not None and loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module


@cache
def _table() -> dict[int, tuple[str, int, int]]:
    """type id -> (name as llama.cpp prints it, elements per block, bytes per block)."""
    constants = _constants()
    return {int(t): (t.name.lower(), block, size) for t, (block, size) in constants.GGML_QUANT_SIZES.items()}


def is_type(type_id: object) -> bool:
    return isinstance(type_id, int) and type_id in _table()


def type_name(type_id: int) -> str:
    """``q4_0`` for 2; an id gguf-py does not know is shown as its number."""
    entry = _table().get(type_id)
    return entry[0] if entry else str(type_id)


def type_id(name: str) -> int:
    for number, (known, _, _) in _table().items():
        if known == name.lower():
            return number
    raise KeyError(f"{name} is not a ggml type gguf-py knows")


def block_size(type_id: int) -> int:
    """Elements per block; 0 for an id gguf-py does not know."""
    entry = _table().get(type_id)
    return entry[1] if entry else 0


def type_size(type_id: int) -> int:
    """Bytes per block; 0 for an id gguf-py does not know."""
    entry = _table().get(type_id)
    return entry[2] if entry else 0


def nbytes(type_id: int, ne: Sequence[int]) -> int:
    """Bytes of a tensor of ``ne`` (ne[0] a whole number of blocks)."""
    entry = _table().get(type_id)
    if entry is None:
        raise ValueError(f"{type_id} is not a ggml type gguf-py knows")
    _, block, size = entry
    if ne and ne[0] % block:
        raise ValueError(f"ne[0] {ne[0]} is not a whole number of {entry[0]} blocks of {block}")
    return math.prod(ne) // block * size


def architectures() -> list[str]:
    """The architecture names gguf-py knows (``llama``, ``gemma``, ...)."""
    return [str(name) for name in _constants().MODEL_ARCH_NAMES.values()]


@cache
def _model_tensor_names(arch: str) -> re.Pattern[str]:
    constants = _constants()
    found = [a for a, n in constants.MODEL_ARCH_NAMES.items() if n == arch]
    if not found:
        raise ValueError(f"{arch!r} is not an architecture gguf-py knows (for example llama)")
    # a block number as GGUF writes it: no leading zero
    names = [re.escape(constants.TENSOR_NAMES[t]).replace(r"\{bid\}", "(?:0|[1-9][0-9]{0,5})")
             for t in constants.MODEL_TENSORS[found[0]]]
    return re.compile("(?:" + "|".join(names) + r")(?:\.weight|\.bias)?")


def is_model_tensor(name: str, arch: str) -> bool:
    """Whether ``name`` is one of the tensors of an ``arch`` model by gguf-py's names
    (``blk.3.attn_q.weight``; the ``.weight`` or ``.bias`` may be left off)."""
    return _model_tensor_names(arch).fullmatch(name) is not None
