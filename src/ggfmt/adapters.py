"""LoRA adapter conversions: PEFT -> ggla, PEFT -> GGUF adapter, ggla -> GGUF adapter.

Each conversion is a plan of output tensors whose bytes come from the input (copied when
unchanged) or from one small transform (transpose, rope permutation, rescale) applied to one
tensor at a time. The facts they follow live in mapping tables: ``hf-llama`` (module names,
architectures, which rows are rope-permuted), ``lora-gguf`` (the adapter keys) and
``ggla-gguf`` (what changed between 2023 and current llama.cpp).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import transforms
from .errors import FormatError
from .inputs import note_input
from .mapping import load_mapping
from .plan import GGUFPlan, MetadataValue, OutputTensor, resolve_metadata
from .sources.hf_config import BaseModel
from .sources.peft import PeftAdapter, check_convertible
from .tensors import ArraySource

LORA_KEYS = "lora-gguf"


def _ggml_type(dtype: np.dtype[Any]) -> int:
    return transforms.GGML_TYPE_OF_DTYPE[np.dtype(dtype)]


# -- PEFT -> ggla ------------------------------------------------------------------------------

def peft_to_ggla_fields(adapter: PeftAdapter, outtype: str | None = None) -> dict[str, Any]:
    """The values from which the ggla schema builds the file convert-lora-to-ggml.py wrote.

    Layer by layer in decoder order (q k v o gate up down), A then B; lora_A transposed and
    kept in f16 or f32 (other dtypes widened to f32); lora_B always f32. ``outtype`` (f32 or
    f16) puts both factors in that type instead.
    """
    check_convertible(adapter, "ggla")
    chosen = {"f32": np.dtype(np.float32), "f16": np.dtype(np.float16), None: None}[outtype]
    records = []
    for module in adapter.modules:
        info_a, info_b = adapter.info(module.key_a), adapter.info(module.key_b)
        a_shape = tuple(reversed(info_a.shape))  # transposed
        records.append(_ggla_record(module.gguf_name + ".loraA", a_shape, chosen or info_a.dtype,
                                    lambda key=module.key_a: transforms.transpose(adapter.load(key))))
        f32 = chosen or np.dtype(np.float32)
        records.append(_ggla_record(module.gguf_name + ".loraB", info_b.shape, f32,
                                    lambda key=module.key_b: np.asarray(adapter.load(key), dtype=np.float32)))
    return {"version": 1, "r": int(adapter.config["r"]), "lora_alpha": int(adapter.config["lora_alpha"]),
            "tensors": records}


def _ggla_record(name: str, shape: tuple[int, ...], dtype: np.dtype[Any], produce: Any) -> dict[str, Any]:
    return {"ftype": _ggml_type(dtype), "ne": list(reversed(shape)), "name": name,
            "data": ArraySource.of(lambda: np.asarray(produce(), dtype=dtype), shape, dtype)}


# -- PEFT -> GGUF ------------------------------------------------------------------------------

def peft_to_gguf(adapter: PeftAdapter, base: BaseModel) -> GGUFPlan:
    """A current llama.cpp GGUF adapter: lora_a is the PEFT A, lora_b the PEFT B, with the rows
    of q and k's B permuted for rope as the base weights are. Tensors in the order of the
    PEFT keys, as llama.cpp's own converter writes them."""
    check_convertible(adapter, "gguf", base)
    heads = {"n_head": base.n_head, "n_head_kv": base.n_head_kv}
    entries: list[tuple[str, OutputTensor]] = []
    for module in adapter.modules:
        info_a, info_b = adapter.info(module.key_a), adapter.info(module.key_b)
        a_dtype, b_dtype = info_a.dtype, info_b.dtype
        def load_a(key: str = module.key_a, dt: np.dtype[Any] = a_dtype) -> Any:
            return np.asarray(adapter.load(key), dtype=dt)

        entries.append((module.key_a, OutputTensor(
            module.gguf_name + ".lora_a", tuple(reversed(info_a.shape)), _ggml_type(a_dtype),
            ArraySource.of(load_a, info_a.shape, a_dtype))))
        n_head = heads[module.rope_heads] if base.rope_permute and module.rope_heads else None

        def load_b(key: str = module.key_b, dt: np.dtype[Any] = b_dtype, n: int | None = n_head) -> Any:
            rows = np.asarray(adapter.load(key), dtype=dt)
            return transforms.rope_permute(rows, n) if n is not None else rows

        entries.append((module.key_b, OutputTensor(
            module.gguf_name + ".lora_b", tuple(reversed(info_b.shape)), _ggml_type(b_dtype),
            ArraySource.of(load_b, info_b.shape, b_dtype))))
    metadata = resolve_metadata(load_mapping(LORA_KEYS), [{"lora_alpha": adapter.config["lora_alpha"]}],
                                base.architecture, str(adapter.config_path))
    # After the adapter's type, what llama.cpp's converter says of the model (name, base models, tags).
    metadata[2:2] = model_card_metadata(adapter.directory)
    return GGUFPlan(base.architecture, metadata, [tensor for _, tensor in sorted(entries, key=lambda e: e[0])])


def model_card_metadata(directory: Path) -> list[MetadataValue]:
    """general.name, general.base_model.* and general.tags as current llama.cpp's converter writes
    them: through gguf-py's own Metadata heuristics, from the folder's name and its README.md model
    card (PEFT writes one with the base model and the tags)."""
    import gguf

    readme = directory / "README.md"
    if readme.is_file():
        note_input(readme)
    try:
        card = gguf.Metadata.load(None, directory, None, 0)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:  # a model card gguf-py cannot read
        raise FormatError("", None, f"its model card cannot be read: {' '.join(str(e).split())[:200]}",
                          str(readme)) from None
    keys = gguf.Keys.General
    out: list[MetadataValue] = []

    def add(key: str, value_type: str, value: Any) -> None:
        if value is not None and value != [] and value != "":
            out.append(MetadataValue(key, value_type, value))

    add(keys.NAME, "string", card.name)
    for key, value in ((keys.AUTHOR, card.author), (keys.VERSION, card.version),
                       (keys.ORGANIZATION, card.organization), (keys.FINETUNE, card.finetune),
                       (keys.BASENAME, card.basename), (keys.DESCRIPTION, card.description),
                       (keys.SIZE_LABEL, card.size_label), (keys.LICENSE, card.license)):
        add(key, "string", str(value) if value is not None else None)
    bases = card.base_models if isinstance(card.base_models, list) else []
    if bases:
        add(keys.BASE_MODEL_COUNT, "u32", len(bases))
        for i, model in enumerate(bases):
            for field, key in (("name", keys.BASE_MODEL_NAME), ("organization", keys.BASE_MODEL_ORGANIZATION),
                               ("version", keys.BASE_MODEL_VERSION), ("repo_url", keys.BASE_MODEL_REPO_URL)):
                if isinstance(model, dict) and model.get(field) is not None:
                    add(key.format(id=i), "string", str(model[field]))
    if isinstance(card.tags, list):
        add(keys.TAGS, "string[]", [str(t) for t in card.tags])
    if isinstance(card.languages, list):
        add(keys.LANGUAGES, "string[]", [str(t) for t in card.languages])
    return out
