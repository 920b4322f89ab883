"""Tensor files: safetensors (read with the safetensors package, numpy only) and PyTorch
pickles (read only with ``torch.load(..., weights_only=True)``; torch is imported on that path
alone). Tensors are read lazily, one at a time; bf16 is widened to f32 (numpy has no bf16).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, UsageError

TORCH_HINT = "pip install torch==2.13.0 (the CPU build)"


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]  # numpy order
    dtype: np.dtype[Any]


@dataclass
class WeightsFile:
    path: Path
    keys: list[str]  # in the file's order
    info: Callable[[str], TensorInfo]
    load: Callable[[str], np.ndarray[Any, Any]]


def read_weights(path: Path, what: str = "a PyTorch pickle") -> WeightsFile:
    """``path`` is a .safetensors file, or else a pickle (``what`` names it in messages)."""
    if path.suffix == ".safetensors":
        return WeightsFile(path, *_safetensors(path))
    return WeightsFile(path, *_pickle(path, what))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; a broken file is a one-line error with the position."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"{path}: cannot be read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise FormatError("", e.start, "not UTF-8 text", str(path)) from None
    except json.JSONDecodeError as e:
        raise FormatError("", e.pos, f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})",
                          str(path)) from None
    if not isinstance(value, dict):
        raise FormatError("", 0, "expected a JSON object", str(path))
    return value


def _safetensors(path: Path) -> tuple[list[str], Callable[[str], TensorInfo], Callable[[str], Any]]:
    from safetensors import SafetensorError, safe_open

    try:
        handle: Any = safe_open(str(path), framework="numpy")
        keys = list(handle.keys())
    except (SafetensorError, OSError, ValueError) as e:
        raise FormatError("", None, f"not a readable safetensors file: {e}", str(path)) from None

    # bf16 is widened to f32 when read (numpy has no bf16)
    dtypes: dict[str, np.dtype[Any]] = {
        "F32": np.dtype(np.float32), "F16": np.dtype(np.float16), "BF16": np.dtype(np.float32)}

    def info(key: str) -> TensorInfo:
        piece = handle.get_slice(key)
        name = piece.get_dtype()
        if name not in dtypes:
            raise FormatError(key, None, f"dtype {name} is not a LoRA factor's (f32, f16, bf16)", str(path))
        return TensorInfo(tuple(piece.get_shape()), dtypes[name])

    def load(key: str) -> Any:
        if handle.get_slice(key).get_dtype() == "BF16":
            return _bf16_to_f32(path, key)
        try:
            return handle.get_tensor(key)
        except (SafetensorError, ValueError) as e:
            raise FormatError(key, None, f"cannot be read: {e}", str(path)) from None

    return keys, info, load


def _bf16_to_f32(path: Path, key: str) -> Any:
    try:
        import torch  # noqa: F401 - only bf16 safetensors need it
        from safetensors import safe_open
    except ImportError:
        raise UsageError(f"{path}: {key} is bf16, which needs torch to be read ({TORCH_HINT})") from None
    with safe_open(str(path), framework="pt") as handle:
        return handle.get_tensor(key).float().numpy()


def torch_load(path: Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)``, memory-mapped when the file allows; torch is
    imported here and nowhere else. A pickle that asks for more than tensors is refused."""
    try:
        import torch
    except ImportError:
        raise UsageError(f"{path}: {what} needs torch to be read ({TORCH_HINT}); "
                         "a safetensors file does not") from None
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # torch's remarks on odd pickles would break the one-line report
            warnings.simplefilter("ignore")
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
                return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # Keep only what the pickle asked for (torch's message goes on to suggest unsafe loading).
        import re

        found = re.search(r"(Unsupported global: GLOBAL [\w.]+|Unsupported operand \d+|Trying to [^.\n]*)", str(e))
        detail = found.group(1) if found else ""
        if detail.startswith("Unsupported operand"):  # not a pickle torch.save wrote: garbage, not a threat
            raise FormatError("", None, f"not a PyTorch file ({detail})", str(path)) from None
        raise FormatError("", None, "refused: this pickle holds more than tensors and would run code if "
                                    f"loaded unsafely{f' ({detail})' if detail else ''}; ggfmt reads pickles only "
                                    "with torch.load(weights_only=True)", str(path)) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise FormatError("", None, f"not a readable PyTorch file: {' '.join(str(e).split())}", str(path)) from None


def _pickle(path: Path, what: str) -> tuple[list[str], Callable[[str], TensorInfo], Callable[[str], Any]]:
    import torch

    state = torch_load(path, what)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FormatError("", None, "expected a dict of tensors (a state dict)", str(path))

    def info(key: str) -> TensorInfo:
        tensor = state[key]
        dtype = {torch.float32: np.float32, torch.float16: np.float16}.get(tensor.dtype, np.float32)
        return TensorInfo(tuple(tensor.shape), np.dtype(dtype))

    def load(key: str) -> Any:
        tensor = state[key].detach()
        if tensor.dtype not in (torch.float32, torch.float16):
            tensor = tensor.float()
        return tensor.numpy()

    return list(state), info, load
