"""Hugging Face PEFT LoRA adapters: ``adapter_config.json`` plus ``adapter_model.safetensors``
or ``adapter_model.bin`` (see :mod:`ggfmt.sources.weights`).

Tensor names are resolved through the ``hf-llama`` mapping table; tensors are read lazily,
one at a time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, UsageError
from ..mapping import gguf_tensor_name, load_mapping
from ..schema.expr import Expression
from .hf_config import BaseModel
from .weights import TensorInfo, read_json, read_weights

CONFIG = "adapter_config.json"
SAFETENSORS = "adapter_model.safetensors"
PICKLE = "adapter_model.bin"
NAME_TABLE = "hf-llama"


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
    width_in: str | None = None  # the module's input and output widths: expressions of the base config
    width_out: str | None = None


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
    config = read_json(config_path)
    if (directory / SAFETENSORS).is_file():
        weights = read_weights(directory / SAFETENSORS)
    elif (directory / PICKLE).is_file():
        weights = read_weights(directory / PICKLE, "a pickled adapter")
    else:
        raise UsageError(f"{directory}: neither {SAFETENSORS} nor {PICKLE} is there")
    return PeftAdapter(directory, config, weights.path, _modules(weights.keys, weights.path), weights.info,
                       weights.load)


def _modules(keys: list[str], weights: Path) -> list[LoraModule]:
    rules = load_mapping(NAME_TABLE).rules
    prefix = str(rules["prefix"])
    skip = set(rules.get("skip") or [])
    patterns = []
    for order, module in enumerate(rules["modules"]):
        # ASCII digits only, and no leading zero: one module has one spelling (Python's \d takes any script's)
        source = re.escape(str(module["hf"])).replace(r"\{bid\}", r"(?P<bid>0|[1-9][0-9]{0,8})")
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
                if match["ab"] in entry:
                    raise FormatError(key, None, f"is a second lora_{match['ab']} of the module that "
                                                 f"{entry[match['ab']]!r} is already", str(weights))
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
            width_in=str(entry["module"]["in"]) if "in" in entry["module"] else None,
            width_out=str(entry["module"]["out"]) if "out" in entry["module"] else None,
        ))
    if not modules:
        raise FormatError("", None, "holds no LoRA factors", str(weights))
    return modules


# -- what each target can express ------------------------------------------------------------

def check_convertible(adapter: PeftAdapter, target: str, base: BaseModel | None = None) -> None:
    """Refuse, with the config field named, what the target format cannot express, and factors
    whose shapes do not fit each other, the config or (given) the base model."""
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
    r = config.get("r")
    if isinstance(r, bool) or not isinstance(r, int) or not 0 < r <= I32_MAX:
        raise refuse("r", f"expected a positive integer (at most {I32_MAX}), got {r!r}")
    alpha = config.get("lora_alpha")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float):
        raise refuse("lora_alpha", f"expected a number, got {alpha!r}")
    # compared before math.isfinite, which cannot take an int of thousands of digits
    if abs(alpha) > F32_MAX or not math.isfinite(alpha):
        shown = f"an integer of {alpha.bit_length()} bits" if isinstance(alpha, int) else repr(alpha)
        raise refuse("lora_alpha", f"expected a finite number that fits in f32, got {shown}")
    if target == "ggla":
        if abs(alpha) > I32_MAX:
            raise refuse("lora_alpha", f"{alpha} does not fit in the ggla header's i32")
        if int(alpha) != alpha:
            raise refuse("lora_alpha", f"{alpha} is not an integer, which the ggla format requires "
                                       "(`fmt to-gguf` writes a GGUF adapter, which can hold it)")
        if config.get("rank_pattern"):
            raise refuse("rank_pattern", "per-module ranks change the meaning in ggla, whose every delta is "
                                         "scaled by the header r (`fmt to-gguf` can hold them)")
    check_factors(adapter, base)


I32_MAX = 2**31 - 1
F32_MAX = 3.4028234663852886e38


def check_factors(adapter: PeftAdapter, base: BaseModel | None) -> None:
    """Every module's A is (r, in) and its B (out, r), with the same r: the config's, unless
    rank_pattern gives ranks of its own; with ``base``, in and out are the module's widths in the
    base model and its layer is one the base model has."""
    r = adapter.config["r"]
    per_module_ranks = bool(adapter.config.get("rank_pattern"))
    file = str(adapter.weights)
    for module in adapter.modules:
        a, b = adapter.info(module.key_a).shape, adapter.info(module.key_b).shape
        if len(a) != 2 or len(b) != 2:
            raise FormatError(module.key_a if len(a) != 2 else module.key_b, None,
                              f"LoRA factors are matrices; lora_A has shape {list(a)}, lora_B {list(b)}", file)
        if a[0] != b[1] or 0 in a or 0 in b:
            raise FormatError(module.key_b, None, f"lora_A {list(a)} and lora_B {list(b)} do not share a "
                                                  "non-zero rank", file)
        if a[0] != r and not per_module_ranks:
            raise FormatError(module.key_a, None, f"rank {a[0]} differs from the config's r {r} "
                                                  "(and the config has no rank_pattern)", file)
        if base is None:
            continue
        if module.bid >= base.dims["n_layer"]:
            raise FormatError(module.key_a, None, f"is in layer {module.bid}, but the base model "
                                                  f"({base.config_path}) has {base.dims['n_layer']} layers", file)
        for what, expr, got in (("input", module.width_in, a[1]), ("output", module.width_out, b[0])):
            if expr is None:
                continue
            want = Expression(expr)(lambda name: base.dims[name])
            if got != want:
                raise FormatError(module.key_a if what == "input" else module.key_b, None,
                                  f"{what} width {got} does not match the base model's {want} ({expr}, "
                                  f"from {base.config_path})", file)
