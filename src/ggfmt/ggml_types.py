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
from typing import Any


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


# The block layouts of 2023 model files that ggml has since changed (llama.cpp PR 1405, "remove bit
# shuffling", made GGJT v2; PR 1508, f16 scales, made v3), which gguf-py does not know. Their ids
# are ggfmt's own: 1000 x era + the file's type word, era 1 for unversioned ggml, ggmf and GGJT v1
# files (ggml.c of b608b55), era 2 for GGJT v2 (6986c78). Each entry: name, elements per block,
# bytes per block, and today's type that holds the same values (ggfmt.convert.legacy_blocks converts).
LEGACY_TYPES: dict[int, tuple[str, int, int, str]] = {
    1002: ("q4_0_v1", 32, 20, "q4_0"),  # f32 d; byte j holds weights 2j (low nibble) and 2j+1
    1003: ("q4_1_v1", 32, 24, "q4_1"),  # f32 d, f32 m; nibbles as q4_0_v1
    1004: ("q4_2", 16, 10, "f16"),      # f16 d; nibbles as q4_0_v1 (no type today has 16-weight blocks)
    1006: ("q5_0_v1", 32, 22, "q5_0"),  # f16 d, u32 fifth bits; nibbles as q4_0_v1
    1007: ("q5_1_v1", 32, 24, "q5_1"),  # f16 d, f16 m, u32 fifth bits; nibbles as q4_0_v1
    1008: ("q8_0_v1", 32, 36, "q8_0"),  # f32 d
    2002: ("q4_0_v2", 32, 20, "q4_0"),  # f32 d; byte j holds weights j and j+16, as today
    2003: ("q4_1_v2", 32, 24, "q4_1"),  # f32 d, f32 m
    2008: ("q8_0_v2", 32, 36, "q8_0"),  # f32 d
}


def is_legacy(type_id: int) -> bool:
    return type_id in LEGACY_TYPES


def legacy_type(era: int, word: int) -> int:
    """The type of a tensor whose type word is ``word`` in a file of ``era`` (1: ggml, ggmf, GGJT v1;
    2: GGJT v2; 3: GGJT v3): its legacy id where the layout has changed since, else ``word``."""
    legacy = 1000 * era + word
    return legacy if legacy in LEGACY_TYPES else word


@cache
def _table() -> dict[int, tuple[str, int, int]]:
    """type id -> (name as llama.cpp prints it, elements per block, bytes per block)."""
    constants = _constants()
    table = {int(t): (t.name.lower(), block, size) for t, (block, size) in constants.GGML_QUANT_SIZES.items()}
    table.update({k: (name, block, size) for k, (name, block, size, _) in LEGACY_TYPES.items()})
    return table


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


def gguf_name_of(hf_name: str, arch: str) -> str | None:
    """The GGUF name gguf-py's own map of Hugging Face names gives the module or tensor ``hf_name``
    of an ``arch`` model (``model.layers.7.self_attn.q_proj`` is ``blk.7.attn_q``; a trailing
    ``.weight`` or ``.bias`` is kept), or None when it has none. The map is built for one block and
    the block number put back, so that its cost does not grow with a number a file gives."""
    suffix = next((s for s in (".weight", ".bias") if hf_name.endswith(s)), "")
    stem = hf_name[:len(hf_name) - len(suffix)]
    names = _name_map(arch)
    found = names.get_name(stem)
    if found is not None:
        return str(found) + suffix
    # the block number: one of the dotted numbers, as Python writes it (layers.01 is not layers.1)
    for number in re.finditer(r"(?<=\.)(?:0|[1-9][0-9]*)(?=\.)", stem):
        found = names.get_name(stem[:number.start()] + "0" + stem[number.end():])
        if found is not None and str(found).startswith("blk.0."):
            return f"blk.{int(number.group())}." + str(found)[len("blk.0."):] + suffix
    return None


@cache
def _name_map(arch: str) -> Any:
    import gguf

    found = [a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch]
    if not found:
        raise ValueError(f"{arch!r} is not an architecture gguf-py knows (for example llama)")
    return gguf.get_tensor_name_map(found[0], 1)
