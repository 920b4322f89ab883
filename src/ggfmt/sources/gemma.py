"""Google's native Gemma checkpoints (the gemma_pytorch release) -> a Hugging Face model.

A checkpoint is a torch pickle ``{"model_state_dict": {...}}``: each layer's q, k and v
projections fused into one ``qkv_proj``, the embedding as ``embedder.weight``, rope's table as
``freqs_cis``, everything else already under its Hugging Face name.  The names, the split, the
expected shapes and the configs of the released sizes come from the ``gemma-hf`` mapping table.

A zip checkpoint of plain tensors is read without torch, each tensor by offset (see
``ggfmt.sources.torchzip``); any other pickle only with ``torch.load(weights_only=True)``.  No
model is instantiated: every output tensor is a slice of one input tensor, read and converted
to the output dtype a block of rows at a time when it is written.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..emit.hf import SAFETENSORS_DTYPES, SafetensorsTensor
from ..errors import FormatError, SchemaError, UsageError
from ..mapping import load_mapping
from ..schema.expr import Expression, ExpressionError
from ..text import escape
from .weights import WeightsFile, check_tensor, load_pickle, pickled_weights, read_json, row_blocks

NAME_TABLE = "gemma-hf"
DTYPES = tuple(SAFETENSORS_DTYPES)  # what --dtype accepts: float32, float16, bfloat16


@dataclass
class GemmaConversion:
    tensors: list[SafetensorsTensor]  # in the checkpoint's order
    config: dict[str, Any]  # config.json
    layers: int

    @property
    def payload_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def gemma_to_hf(checkpoint: Path, *, size: str | None, config_file: Path | None, dtype: str) -> GemmaConversion:
    """Everything to write for ``checkpoint``; its shapes are checked against the config first."""
    rules = load_mapping(NAME_TABLE).rules
    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype}: expected one of {', '.join(DTYPES)}")
    config, config_source = read_config(rules, size, config_file)
    state = read_checkpoint(checkpoint, str(rules["state_dict"]))
    check_shapes(state, config, rules, str(checkpoint), config_source)
    drop = set(rules["drop"])
    weights = pickled_weights(checkpoint, {k: v for k, v in state.items() if k not in drop})
    return GemmaConversion(plan_tensors(weights, config, rules, dtype, str(checkpoint)),
                           hf_config(config, rules, dtype), int(config["num_hidden_layers"]))


# -- the config ---------------------------------------------------------------------------------

def read_config(rules: Mapping[str, Any], size: str | None, config_file: Path | None) -> tuple[dict[str, Any], str]:
    """The model's config (from a --size preset or a --config file) and how to name it in messages."""
    if (size is None) == (config_file is None):
        raise UsageError("give the model's dimensions with exactly one of --size and --config")
    if size is not None:
        presets = rules["presets"]
        if size not in presets:
            raise UsageError(f"--size {size}: expected one of {', '.join(presets)} (or --config CONFIG.json)")
        config = copy.deepcopy(dict(presets[size]))  # the table is cached: never change its values
        source = f"--size {size}"
        where = NAME_TABLE
    else:
        assert config_file is not None
        if not config_file.is_file():
            raise UsageError(f"{config_file}: no such file")
        config = read_json(config_file)
        source = where = str(config_file)
        model_type = config.get("model_type")
        if model_type not in (None, rules["config"]["model_type"]):
            raise FormatError("model_type", None, f"{model_type!r}: only Gemma models (model_type "
                                                  f"{rules['config']['model_type']!r}) are converted", where)
        for field in rules["dimensions"]:
            config.setdefault(field, copy.deepcopy(rules["defaults"][field]))
    check_dimensions(config, rules, where)
    return config, source


def check_dimensions(config: Mapping[str, Any], rules: Mapping[str, Any], where: str) -> None:
    for field in rules["dimensions"]:
        value = config[field]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise FormatError(field, None, f"expected a positive integer, got {value!r}", where)
    if config["num_attention_heads"] % config["num_key_value_heads"]:
        # every key-value head serves the same number of query heads
        raise FormatError("num_key_value_heads", None, f"{config['num_key_value_heads']} does not divide "
                                                       f"num_attention_heads {config['num_attention_heads']}", where)


def hf_config(config: Mapping[str, Any], rules: Mapping[str, Any], dtype: str) -> dict[str, Any]:
    """config.json: the model's config with the fields the converted weights imply."""
    out = copy.deepcopy(dict(config))
    out.update(copy.deepcopy(rules["config"]))
    for field in rules["dtype_fields"]:
        out[field] = dtype
    return out


# -- the checkpoint -----------------------------------------------------------------------------

def read_checkpoint(path: Path, key: str) -> dict[str, Any]:
    """The state dict of a native checkpoint: its tensors as references to read by offset (or
    torch tensors, memory-mapped, for a pickle only torch reads)."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    checkpoint = load_pickle(path, "a Gemma checkpoint (a PyTorch pickle)")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get(key), dict):
        raise FormatError(key, None, f"missing: a native Gemma checkpoint is a dict {{{key!r}: {{...}}}}", str(path))
    state: dict[str, Any] = checkpoint[key]
    for name, tensor in state.items():
        if not isinstance(name, str):
            raise FormatError(key, None, f"has the key {escape(repr(name))[:80]} ({type(name).__name__}); "
                                         "the keys of a state dict are tensor names (str)", str(path))
        if not hasattr(tensor, "shape"):
            raise FormatError(f"{key}.{name}", None, f"is a {type(tensor).__name__}, not a tensor", str(path))
    return state


# -- shapes -------------------------------------------------------------------------------------

def check_shapes(state: Mapping[str, Any], config: Mapping[str, Any], rules: Mapping[str, Any],
                 file: str, config_source: str) -> None:
    """Every tensor the table lists is there with the shape the config implies; no layer is extra."""
    shapes = rules["shapes"]
    n_layer = int(config["num_hidden_layers"])
    for name, spec in shapes["model"].items():
        _check_shape(state, str(name), spec, config, file, config_source, "")
    for bid in range(n_layer):
        for template, spec in shapes["layer"].items():
            _check_shape(state, str(template).format(bid=bid), spec, config, file, config_source,
                         f" (the config, {config_source}, has num_hidden_layers {n_layer})")
    layer = _template_regex(str(shapes["layer_prefix"]), prefix_only=True)
    for name in state:
        match = layer.match(name)
        # a layer number of thousands of digits is out of range too, without parsing it
        if match and (len(match["bid"]) > 9 or int(match["bid"]) >= n_layer):
            raise FormatError(name, None, f"belongs to layer {match['bid'][:12]}, but the config "
                                          f"({config_source}) has num_hidden_layers {n_layer}", file)
    drop = set(rules["drop"])
    for name, tensor in state.items():
        if name not in drop:
            check_tensor(name, tensor, Path(file))


def expected_shape(spec: Any, config: Mapping[str, Any]) -> tuple[int, ...]:
    """A shape from the table (a list of expressions of config fields) for this config."""
    try:
        expression = Expression(spec)

        def lookup(field: str) -> Any:
            if field not in config:
                raise ExpressionError(f"the config has no {field!r}")
            return config[field]

        return tuple(int(n) for n in expression(lookup))
    except ExpressionError as e:
        raise SchemaError(NAME_TABLE, f"shape {spec!r}: {e}") from None


def _check_shape(state: Mapping[str, Any], name: str, spec: Any, config: Mapping[str, Any], file: str,
                 config_source: str, why_expected: str) -> None:
    expected = expected_shape(spec, config)
    if name not in state:
        raise FormatError(name, None, f"missing{why_expected}", file)
    shape = tuple(state[name].shape)
    if shape != expected:
        fields = ", ".join(str(s) for s in (spec if isinstance(spec, list) else [spec]))
        raise FormatError(name, None, f"shape {list(shape)} does not match the config ({config_source}): "
                                      f"expected {list(expected)} ({fields})", file)


def _template_regex(template: str, *, prefix_only: bool = False) -> re.Pattern[str]:
    """``model.layers.{bid}.x`` -> a regex whose group ``bid`` is the layer index."""
    source = re.escape(template).replace(r"\{bid\}", r"(?P<bid>\d+)")
    return re.compile(source if prefix_only else source + "$")


# -- the output tensors -------------------------------------------------------------------------

def split_rows(n_rows: int, sizes: list[int]) -> list[tuple[int, int]]:
    """The row ranges [begin, end) of consecutive parts of ``sizes`` rows; they must add up to ``n_rows``."""
    if sum(sizes) != n_rows:
        raise ValueError(f"{n_rows} rows cannot be split into parts of {sizes} rows")
    return list(itertools.pairwise(itertools.accumulate(sizes, initial=0)))


def split_sizes(parts: list[Mapping[str, Any]], config: Mapping[str, Any]) -> list[int]:
    """Rows of each part of a fused projection: its head count (a config field) * head_dim."""
    return [int(config[str(part["heads"])]) * int(config["head_dim"]) for part in parts]


def to_output(array: np.ndarray[Any, Any], dtype: str) -> np.ndarray[Any, Any]:
    """Rows read as f32 or f16, in the output dtype (bf16 as its raw 16-bit patterns)."""
    if dtype == "bfloat16":
        return to_bf16_bits(np.asarray(array, dtype=np.float32))
    return np.asarray(array, dtype=np.float32 if dtype == "float32" else np.float16)


def to_bf16_bits(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """f32 -> bf16 bit patterns as torch 2.x converts them on the CPU: rounded to nearest even,
    every NaN as 0xFFFF.

    Not gguf-py's BF16 quantizer: it widens to u64 (twice the memory of this) and keeps NaN
    payloads, where torch, whose conversion the Hugging Face side expects, writes 0xFFFF."""
    bits = array.view(np.uint32)
    # No overflow in u32: the largest non-NaN pattern (0xFF800000, -inf) plus 0x8000 still fits.
    out = ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16).astype(np.uint16)
    nan = np.isnan(array)
    if nan.any():
        out[nan] = 0xFFFF
    return out


def plan_tensors(weights: WeightsFile, config: Mapping[str, Any], rules: Mapping[str, Any], dtype: str,
                 file: str) -> list[SafetensorsTensor]:
    """The output tensors in the checkpoint's order: split, renamed or unchanged; dropped ones left out."""
    rename: Mapping[str, str] = rules["rename"]
    splits = [(_template_regex(str(s["from"])), s["into"]) for s in rules["split"]]
    out: list[SafetensorsTensor] = []
    names: set[str] = set()
    for key in weights.keys:
        outputs = _split(weights, key, splits, config, dtype)
        if outputs is None:
            outputs = [_output(rename.get(key, key), weights, key, None, dtype)]
        for output in outputs:
            if output.name in names:
                raise FormatError(key, None, f"becomes {output.name}, which another tensor of the checkpoint "
                                             "already became", file)
            names.add(output.name)
        out.extend(outputs)
    return out


def _split(weights: WeightsFile, key: str, splits: list[tuple[re.Pattern[str], Any]], config: Mapping[str, Any],
           dtype: str) -> list[SafetensorsTensor] | None:
    """The parts of a fused tensor, or None when ``key`` is not one."""
    for regex, parts in splits:
        match = regex.match(key)
        if match:
            ranges = split_rows(weights.info(key).shape[0], split_sizes(parts, config))
            return [_output(str(part["name"]).format(bid=match["bid"]), weights, key, rows, dtype)
                    for part, rows in zip(parts, ranges, strict=True)]
    return None


def _output(name: str, weights: WeightsFile, key: str, rows: tuple[int, int] | None,
            dtype: str) -> SafetensorsTensor:
    shape = weights.info(key).shape
    begin, end = rows if rows is not None else (0, shape[0])
    shape = (end - begin, *shape[1:])

    def blocks() -> Iterator[np.ndarray[Any, Any]]:
        # Read (and converted) only now, when the writer gets to it, a block of rows at a time.
        for block in row_blocks(weights, key, (begin, end)):
            yield to_output(block, dtype)

    return SafetensorsTensor(name, SAFETENSORS_DTYPES[dtype], shape, blocks)
