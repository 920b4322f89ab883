"""Hugging Face PEFT LoRA adapters: ``adapter_config.json`` plus ``adapter_model.safetensors``
(read with the safetensors package, numpy only) or ``adapter_model.bin`` (a pickle, read only
with ``torch.load(..., weights_only=True)``; torch is imported on that path alone).

Tensor names are resolved through the ``hf-llama`` mapping table; tensors are read lazily,
one at a time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, UsageError
from ..mapping import gguf_tensor_name, load_mapping

CONFIG = "adapter_config.json"
SAFETENSORS = "adapter_model.safetensors"
PICKLE = "adapter_model.bin"
NAME_TABLE = "hf-llama"
TORCH_HINT = "pip install torch==2.13.0 (the CPU build)"


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]  # numpy order
    dtype: np.dtype[Any]


@dataclass(frozen=True)
class LoraModule:
    """One adapted module: where its two factors are and what ggml calls it."""

    gguf_name: str  # "blk.0.attn_q.weight"
    symbol: str  # gguf-py MODEL_TENSOR name, "ATTN_Q"
    key_a: str  # keys of lora_A / lora_B in the weights file
    key_b: str
    bid: int
    order: int  # position of the module kind in the name table (decoder-layer order)
    rope_heads: str | None  # which head count permutes its rows for rope ("n_head", "n_head_kv")


@dataclass
class PeftAdapter:
    directory: Path
    config: dict[str, Any]
    weights: Path
    modules: list[LoraModule]  # in decoder-layer order: layer by layer, q k v o gate up down
    info: Callable[[str], TensorInfo]
    load: Callable[[str], np.ndarray[Any, Any]]

    @property
    def config_path(self) -> Path:
        return self.directory / CONFIG


def read_peft(directory: Path) -> PeftAdapter:
    config_path = directory / CONFIG
    if not directory.is_dir():
        raise UsageError(f"{directory}: not a directory (a PEFT adapter is a directory with {CONFIG})")
    if not config_path.is_file():
        raise UsageError(f"{directory}: no {CONFIG}; not a PEFT adapter directory")
    config = _read_config(config_path)
    if (directory / SAFETENSORS).is_file():
        weights = directory / SAFETENSORS
        keys, info, load = _safetensors(weights)
    elif (directory / PICKLE).is_file():
        weights = directory / PICKLE
        keys, info, load = _pickle(weights)
    else:
        raise UsageError(f"{directory}: neither {SAFETENSORS} nor {PICKLE} is there")
    return PeftAdapter(directory, config, weights, _modules(keys, weights), info, load)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise FormatError("", e.start, "not UTF-8 text", str(path)) from None
    except json.JSONDecodeError as e:
        raise FormatError("", e.pos, f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})",
                          str(path)) from None
    if not isinstance(config, dict):
        raise FormatError("", 0, "expected a JSON object", str(path))
    return config


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


def _pickle(path: Path) -> tuple[list[str], Callable[[str], TensorInfo], Callable[[str], Any]]:
    try:
        import torch
    except ImportError:
        raise UsageError(f"{path}: a pickled adapter needs torch to be read ({TORCH_HINT}); "
                         f"an adapter saved as {SAFETENSORS} does not") from None
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # torch's remarks on odd pickles would break the one-line report
            warnings.simplefilter("ignore")
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
                state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # Keep only what the pickle asked for (torch's message goes on to suggest unsafe loading).
        detail = next((line.strip() for line in str(e).splitlines()
                       if line.strip().startswith(("Unsupported", "Trying to"))), "")
        raise FormatError("", None, "refused: this pickle holds more than tensors and would run code if "
                                    f"loaded unsafely{f' ({detail})' if detail else ''}; ggfmt reads pickles only "
                                    "with torch.load(weights_only=True)", str(path)) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise FormatError("", None, f"not a readable PyTorch file: {e}", str(path)) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FormatError("", None, "expected a dict of tensors (a PEFT state dict)", str(path))

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


def _modules(keys: list[str], weights: Path) -> list[LoraModule]:
    rules = load_mapping(NAME_TABLE).rules
    prefix = str(rules["prefix"])
    skip = set(rules.get("skip") or [])
    patterns = []
    for order, module in enumerate(rules["modules"]):
        source = re.escape(str(module["hf"])).replace(r"\{bid\}", r"(?P<bid>\d+)")
        patterns.append((re.compile(source + r"\.lora_(?P<ab>[AB])\.weight"), order, module))
    found: dict[tuple[int, int], dict[str, Any]] = {}
    for key in keys:
        name = key.replace(".default.weight", ".weight")
        if name in skip or name.removeprefix(prefix) in skip:
            continue
        for regex, order, module in patterns:
            match = regex.fullmatch(name.removeprefix(prefix))
            if match:
                bid = int(match["bid"])
                entry = found.setdefault((bid, order), {"module": module})
                entry[match["ab"]] = key
                break
        else:
            known = ", ".join(str(m["hf"]).rsplit(".", 1)[-1] for m in rules["modules"])
            raise FormatError(key, None, f"is not a LoRA factor of a module ggfmt knows ({known})", str(weights))
    modules = []
    for (bid, order), entry in sorted(found.items()):
        for factor in "AB":
            if factor not in entry:
                raise FormatError("", None, f"the lora_{factor} factor of layer {bid} "
                                            f"{entry['module']['hf'].format(bid=bid)} is missing", str(weights))
        symbol = str(entry["module"]["gguf"])
        modules.append(LoraModule(
            gguf_name=gguf_tensor_name(symbol, NAME_TABLE).format(bid=bid) + ".weight",
            symbol=symbol, key_a=entry["A"], key_b=entry["B"], bid=bid, order=order,
            rope_heads=entry["module"].get("rope_heads"),
        ))
    if not modules:
        raise FormatError("", None, "holds no LoRA factors", str(weights))
    return modules


# -- what each target can express ------------------------------------------------------------

def check_convertible(adapter: PeftAdapter, target: str) -> None:
    """Refuse, with the config field named, what the target format cannot express."""
    config = adapter.config

    def refuse(field: str, why: str) -> FormatError:
        return FormatError(field, None, why, str(adapter.config_path))

    if config.get("peft_type") != "LORA":
        raise refuse("peft_type", f"{config.get('peft_type')!r}: only LORA adapters can be converted")
    if config.get("fan_in_fan_out") is True:
        raise refuse("fan_in_fan_out", "true is not supported (factors stored transposed, as for GPT-2 Conv1D)")
    if config.get("bias") not in (None, "none"):
        raise refuse("bias", f"{config.get('bias')!r} is not supported: only bias 'none' (no trained biases)")
    if config.get("modules_to_save"):
        raise refuse("modules_to_save", "whole trained modules cannot be stored in a LoRA adapter file")
    for flag in ("use_dora", "use_rslora"):
        if config.get(flag):
            raise refuse(flag, "true is not supported: llama.cpp adapters hold plain LoRA with alpha / r scaling")
    if config.get("alpha_pattern"):
        raise refuse("alpha_pattern", "per-module alphas cannot be expressed (the file holds one alpha)")
    if not isinstance(config.get("r"), int) or config["r"] <= 0:
        raise refuse("r", f"expected a positive integer, got {config.get('r')!r}")
    alpha = config.get("lora_alpha")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool):
        raise refuse("lora_alpha", f"expected a number, got {alpha!r}")
    if target == "ggla":
        if int(alpha) != alpha:
            raise refuse("lora_alpha", f"{alpha} is not an integer, which the ggla format requires "
                                       "(`fmt to-gguf` writes a GGUF adapter, which can hold it)")
        if config.get("rank_pattern"):
            raise refuse("rank_pattern", "per-module ranks change the meaning in ggla, whose every delta is "
                                         "scaled by the header r (`fmt to-gguf` can hold them)")
