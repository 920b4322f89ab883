"""Hugging Face CLIP (+ LLaVA projector) -> GGUF for llama.cpp's clip / llava code.

Reads config.json, vocab.json, preprocessor_config.json and the weights (model.safetensors or
pytorch_model.bin) directly: no model is instantiated, transformers is not needed. Names and
keys come from the ``clip-gguf`` mapping table; the dtype policy and the layer drop are the
small functions below.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FormatError, UsageError
from .mapping import load_mapping
from .plan import GGUFPlan, OutputTensor, resolve_metadata
from .sources.weights import WeightsFile, read_json, read_weights, row_blocks
from .tensors import BlocksSource
from .transforms import GGML_TYPE_OF_DTYPE

TABLE = "clip-gguf"
F16, F32 = np.dtype(np.float16), np.dtype(np.float32)


@dataclass(frozen=True)
class ClipOptions:
    text_only: bool = False
    vision_only: bool = False
    llava_projector: Path | None = None
    use_f32: bool = False
    image_mean: Sequence[float] | None = None
    image_std: Sequence[float] | None = None


def is_clip_directory(path: Path) -> bool:
    if not (path / "config.json").is_file():
        return False
    config = read_json(path / "config.json")
    return config.get("model_type") == "clip" or "CLIPModel" in (config.get("architectures") or [])


def default_output(directory: Path, options: ClipOptions) -> Path:
    """The upstream converter's name: [text-|vision-|mmproj-]model-f16|f32.gguf in the model directory."""
    middle = "text-" if options.text_only else "vision-" if options.vision_only else \
        "mmproj-" if options.llava_projector else ""
    return directory / f"{middle}model-{'f32' if options.use_f32 else 'f16'}.gguf"


def tensor_dtype(name: str, ndim: int, use_f32: bool) -> np.dtype[Any]:
    """The upstream converter's policy: 4-D tensors (the patch convolution) always f16, as ggml's convolution
    needs; with f16 output, 2-D `.weight` tensors f16 and the rest f32; with --use-f32, f32."""
    if ndim == 4:
        return F16
    if not use_f32 and name.endswith(".weight") and ndim == 2:
        return F16
    return F32


def projector_dtype(ndim: int) -> np.dtype[Any]:
    """Projector tensors: 2-D in f16, the rest in f32, whatever --use-f32 says (as upstream)."""
    return F16 if ndim == 2 else F32


def clip_to_gguf(directory: Path, options: ClipOptions) -> GGUFPlan:
    if options.text_only and options.vision_only:
        raise UsageError("--text-only and --vision-only exclude each other")
    if options.text_only and options.llava_projector:
        raise UsageError("--llava-projector makes an image encoder: it excludes --text-only")
    has_text = not options.vision_only and options.llava_projector is None
    has_vision = not options.text_only
    has_llava = options.llava_projector is not None

    config = read_json(directory / "config.json")
    text, vision = config.get("text_config"), config.get("vision_config")
    if not isinstance(text, dict) or not isinstance(vision, dict):
        raise FormatError("text_config", None, "a CLIP config has text_config and vision_config objects",
                          str(directory / "config.json"))
    weights = _weights(directory)
    table = load_mapping(TABLE)
    rules = table.rules
    config_path = str(directory / "config.json")
    # Each layer has tensors in the weights file: a count larger than the file's keys is refused
    # before any list of expected names is built from it.
    vision_layers = _layer_count(vision, "vision_config", len(weights.info_keys), config_path)
    text_layers = _layer_count(text, "text_config", len(weights.info_keys), config_path)
    for config_part, part_name in ((text, "text_config"), (vision, "vision_config")):
        for key in ("hidden_size", "num_attention_heads"):
            value = config_part.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 1 << 24:
                raise FormatError(f"{part_name}.{key}", None, f"expected a positive integer, got {value!r}",
                                  config_path)
    fields = {
        "config": config, "text": text, "vision": vision,
        "has_text": has_text, "has_vision": has_vision, "has_llava": has_llava,
        "ftype": 0 if options.use_f32 else 1,
        "name": config.get("_name_or_path") or directory.resolve().name,
        "description": "text-only CLIP model" if options.text_only else
        "vision-only CLIP model" if options.vision_only else
        "image encoder for LLaVA" if has_llava else "two-tower CLIP model",
        "tokens": list(read_json(directory / "vocab.json")) if has_text else [],
        "image_mean": _image_stat(directory, "image_mean", options.image_mean) if has_vision else [],
        "image_std": _image_stat(directory, "image_std", options.image_std) if has_vision else [],
        "vision_blocks": vision_layers - 1 if has_llava else vision_layers,
    }
    metadata = resolve_metadata(table, [fields], str(table.architecture), str(directory))

    tensors: list[OutputTensor] = []
    if options.llava_projector is not None:
        tensors += _projector_tensors(options.llava_projector, rules["llava"]["projector"])
    names = _names(rules, {"text": text_layers, "vision": vision_layers}, has_llava)
    dropped = set(rules["llava"]["drop"]) if has_llava else set()
    towers = {"text": has_text, "vision": has_vision}
    for hf_name, gguf_name, tower in names:
        if hf_name not in weights.info_keys:
            raise FormatError(hf_name, None, "is missing from the weights (the config says it should be there)",
                              str(weights.file.path))
        if towers[tower] and hf_name not in dropped:
            tensors.append(_converted(weights.file, hf_name, gguf_name, options.use_f32))
    _check_all_known(weights, {n for n, _, _ in names} | set(rules["skip"]), has_llava, vision_layers)
    return GGUFPlan(str(table.architecture), metadata, tensors)


def _layer_count(tower: dict[str, Any], name: str, n_keys: int, config_path: str) -> int:
    value = tower.get("num_hidden_layers")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise FormatError(f"{name}.num_hidden_layers", None, f"expected a positive integer, got {value!r}",
                          config_path)
    if value > n_keys:
        raise FormatError(f"{name}.num_hidden_layers", None, f"{value} layers, but the weights hold only "
                                                             f"{n_keys} tensors", config_path)
    return value


@dataclass
class _Weights:
    file: WeightsFile
    info_keys: set[str]


def _weights(directory: Path) -> _Weights:
    for name, what in (("model.safetensors", ""), ("pytorch_model.bin", "a pickled model (pytorch_model.bin)")):
        if (directory / name).is_file():
            weights = read_weights(directory / name, what)
            return _Weights(weights, set(weights.keys))
    raise UsageError(f"{directory}: neither model.safetensors nor pytorch_model.bin is there")


def _image_stat(directory: Path, key: str, given: Sequence[float] | None) -> list[float]:
    if given is not None:
        return [float(v) for v in given]
    path = directory / "preprocessor_config.json"
    if not path.is_file():
        raise UsageError(f"{directory}: no preprocessor_config.json to take {key} from; "
                         f"give --{key.replace('_', '-')} R G B")
    values = read_json(path).get(key)
    if not isinstance(values, list) or len(values) != 3 or not all(isinstance(v, int | float) for v in values):
        raise FormatError(key, None, f"expected three numbers, got {values!r}", str(path))
    return [float(v) for v in values]


def _names(rules: dict[str, Any], layers: dict[str, int], has_llava: bool) -> list[tuple[str, str, str]]:
    """(Hugging Face name, GGUF name, tower) of every converted tensor, in the model's order.
    With a LLaVA projector the last vision layer is left out (LLaVA uses the one before)."""
    names = []
    for tower in rules["towers"]:
        kind, hf, gg = str(tower["tower"]), str(tower["hf"]), str(tower["gguf"])
        names += [(f"{hf}.{a}", f"{gg}.{b}", kind) for a, b in tower["before"]]
        count = layers[kind] - 1 if has_llava and kind == "vision" else layers[kind]
        for bid in range(count):
            names += [(f"{hf}.encoder.layers.{bid}.{a}", f"{gg}.blk.{bid}.{b}", kind) for a, b in rules["layer"]]
        names += [(f"{hf}.{a}", f"{gg}.{b}", kind) for a, b in tower["after"]]
    names += [(str(p["hf"]), str(p["hf"]), str(p["tower"])) for p in rules["projections"]]
    return names


def _check_all_known(weights: _Weights, known: set[str], has_llava: bool, vision_layers: int) -> None:
    dropped_layer = f"vision_model.encoder.layers.{vision_layers - 1}."
    for key in weights.file.keys:
        if key not in known and not (has_llava and key.startswith(dropped_layer)):
            raise FormatError(key, None, "is not a CLIP weight ggfmt knows how to name", str(weights.file.path))


def _converted(weights: WeightsFile, hf_name: str, gguf_name: str, use_f32: bool) -> OutputTensor:
    info = weights.info(hf_name)
    shape = tuple(n for n in info.shape if n != 1)  # upstream squeezes every tensor
    dtype = tensor_dtype(gguf_name, len(shape), use_f32)
    return _output(gguf_name, shape, dtype, weights, hf_name)


def _projector_tensors(path: Path, rename: dict[str, str]) -> list[OutputTensor]:
    if not path.is_file():
        raise UsageError(f"{path}: no such LLaVA projector file")
    weights = read_weights(path, "a LLaVA projector (a PyTorch pickle)")
    out = []
    for key in weights.keys:
        if not key.startswith(str(rename["hf"])):
            raise FormatError(key, None, f"a LLaVA projector holds {rename['hf']}* tensors", str(path))
        shape = tuple(n for n in weights.info(key).shape if n != 1)
        name = str(rename["gguf"]) + key.removeprefix(str(rename["hf"]))
        out.append(_output(name, shape, projector_dtype(len(shape)), weights, key))
    return out


def _output(name: str, shape: tuple[int, ...], dtype: np.dtype[Any], weights: WeightsFile, key: str) -> OutputTensor:
    """``key`` of ``weights`` as ``name`` in ``dtype``; ``shape`` is the stored one without its
    dimensions of 1, which leaves the bytes in the same order, so rows are converted block by block."""

    def blocks() -> Iterator[np.ndarray[Any, Any]]:
        for block in row_blocks(weights, key):
            yield np.asarray(block, dtype=dtype)

    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return OutputTensor(name, tuple(reversed(shape)), GGML_TYPE_OF_DTYPE[dtype], BlocksSource(blocks, nbytes))
