"""Hugging Face model directories: ``model.safetensors`` written one tensor at a time, ``config.json``
and, on request, the tokenizer.

The safetensors package only saves a dict of tensors held in memory all at once, and a converted
model can be larger than memory, so ggfmt writes the file itself.  The format: a little-endian
u64 N, then N bytes of JSON mapping each tensor's name to its ``dtype``, ``shape`` and
``data_offsets`` (begin and end, relative to the end of the header) plus ``__metadata__``, padded
with spaces to a multiple of 8; then the tensors' bytes, little-endian, in the header's order.
"""

from __future__ import annotations

import importlib
import json
import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FormatError, UsageError
from ..io.sink import Progress, open_sink
from ..io.tensors import BlocksSource, PayloadSource
from ..weight_dtypes import BY_SAFETENSORS, WEIGHT_DTYPES

if TYPE_CHECKING:
    from ..convert.plan import OutputTensor, Plan
    from . import Summary

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
HEADER_ALIGNMENT = 8  # the safetensors reader requires the data to start at a multiple of 8
TOKENIZER_HINT = "pip install transformers sentencepiece protobuf"


@dataclass(frozen=True)
class SafetensorsTensor:
    """A tensor of the output: its header entry, and the function that computes its data when written.

    ``blocks`` yields arrays whose bytes, one after the other, are the tensor's (for BF16, the raw
    16-bit patterns): blocks of rows, so that a large tensor is never in memory whole.
    """

    name: str
    dtype: str  # "F32", "F16" or "BF16"
    shape: tuple[int, ...]
    blocks: Callable[[], Iterable[np.ndarray[Any, Any]]]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * BY_SAFETENSORS[self.dtype].itemsize

    @property
    def payload(self) -> PayloadSource:
        return BlocksSource(self.blocks, self.nbytes)


@dataclass(frozen=True)
class PlannedTensor:
    """A tensor of a conversion's plan as safetensors stores it (rows first, its dtype's name)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    payload: PayloadSource

    @property
    def nbytes(self) -> int:
        return self.payload.nbytes


def planned(tensor: OutputTensor) -> PlannedTensor:
    """An output tensor of a plan (ggml order and type) as a safetensors entry."""
    from ..ggml_types import type_name

    names = {d.ggml: d.safetensors for d in WEIGHT_DTYPES}
    kind = type_name(tensor.ggml_type)
    if kind not in names:
        raise ValueError(f"{tensor.name}: safetensors has no {kind} tensors")
    return PlannedTensor(tensor.name, names[kind], tuple(reversed(tensor.ne)), tensor.source)


def safetensors_header(tensors: Sequence[SafetensorsTensor | PlannedTensor], metadata: Mapping[str, str]) -> bytes:
    """The length prefix and JSON header for ``tensors`` stored back to back in this order."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for tensor in tensors:
        if tensor.name in header:
            raise ValueError(f"{tensor.name}: two tensors of the output have this name")
        header[tensor.name] = {"dtype": tensor.dtype, "shape": list(tensor.shape),
                               "data_offsets": [offset, offset + tensor.nbytes]}
        offset += tensor.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % HEADER_ALIGNMENT)
    return struct.pack("<Q", len(text)) + text


def write(plan: Plan, target: str, out_path: Path, progress: Progress | None) -> Summary:
    """The directory ``out_path`` (``target`` ``hf``): the table's JSON files (``plan.files``),
    then model.safetensors, a tensor at a time. The caller made the directory and renames it."""
    from . import Summary

    tensors = [planned(t) for t in plan.tensors]
    for name, value in plan.files.items():
        write_config(out_path / name, value)
    write_safetensors(out_path / WEIGHTS, tensors, progress)
    config = plan.files.get(CONFIG, {})
    config = config if isinstance(config, Mapping) else {}
    layers = config.get("num_hidden_layers")
    dtype = config.get("dtype")  # the table writes it (transformers reads it)
    counts = ((len(tensors), "tensor"), *(((layers, "layer"),) if isinstance(layers, int) else ()))
    return Summary(counts, (dtype,) if isinstance(dtype, str) else ())


def write_safetensors(path: Path, tensors: Sequence[SafetensorsTensor | PlannedTensor],
                      progress: Progress | None = None, metadata: Mapping[str, str] | None = None) -> int:
    """Write ``tensors`` to ``path``, computing and writing one at a time; returns the file's size."""
    # transformers refuses a safetensors file whose format is not one it knows
    header = safetensors_header(tensors, {"format": "pt"} if metadata is None else metadata)
    path.write_bytes(header)
    with open_sink(path) as out:
        for tensor in tensors:
            _write_tensor(out, tensor, progress)
        return out.tell()


def _write_tensor(out: Any, tensor: SafetensorsTensor | PlannedTensor, progress: Progress | None) -> None:
    try:
        tensor.payload.write_to(out, progress)
    except ValueError as e:
        # The header is already written: data of another size would corrupt every later offset.
        raise ValueError(f"{tensor.name} ({tensor.shape} {tensor.dtype}): {e}") from None


def write_config(path: Path, config: Mapping[str, Any]) -> None:
    """``config.json`` as transformers writes it (two-space indent, sorted keys)."""
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_tokenizer(model_file: Path, directory: Path, class_name: str) -> None:
    """Save the Hugging Face tokenizer (the transformers class ``class_name``, such as GemmaTokenizer)
    made from a SentencePiece ``tokenizer.model`` into ``directory``."""
    try:
        # transformers reads the model through sentencepiece's protobuf definitions
        sentencepiece: Any = importlib.import_module("sentencepiece")
        importlib.import_module("google.protobuf")
        tokenizer_class = getattr(importlib.import_module("transformers"), class_name)
    except AttributeError:
        raise UsageError(f"{model_file}: the installed transformers has no {class_name}") from None
    except ImportError as e:
        raise UsageError(f"{model_file}: --tokenizer needs transformers, sentencepiece and protobuf; "
                         f"{e.name or 'one of them'} is missing ({TOKENIZER_HINT})") from None
    try:
        sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    except (OSError, RuntimeError) as e:
        # Checked first: given a broken file, transformers logs a warning and tries other formats.
        raise FormatError("", None, f"not a SentencePiece model: {' '.join(str(e).split())}", str(model_file)) from None
    kwargs: dict[str, Any] = {"vocab_file": str(model_file)}
    convert = getattr(tokenizer_class, "convert_to_native_format", None)
    if convert is not None:
        # transformers 5: GemmaTokenizer(vocab_file=...) alone ignores the file and builds a 5-token
        # vocabulary; the vocabulary is read from the file by this step.
        kwargs = convert(**kwargs)
    tokenizer_class(**kwargs).save_pretrained(str(directory))
