"""LoRA adapter conversions: PEFT -> ggla, PEFT -> GGUF adapter, ggla -> GGUF adapter.

Each conversion is a plan of output tensors whose bytes come from the input (copied when
unchanged) or from one small transform (transpose, rope permutation, rescale) applied to one
tensor at a time. The facts they follow live in mapping tables: ``hf-llama`` (module names,
architectures, which rows are rope-permuted), ``lora-gguf`` (the adapter keys) and
``ggla-gguf`` (what changed between 2023 and current llama.cpp).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import transforms
from .document import Document
from .emit.gguf import MAX_TENSOR_NAME, GGUFPlan, MetadataValue, OutputTensor, resolve_metadata
from .errors import FormatError, SchemaError, UsageError
from .inputs import note_input
from .mapping import MappingTable, gguf_tensor_name, load_mapping
from .sources.hf_config import BaseModel
from .sources.peft import PeftAdapter, check_convertible
from .tensors import ArraySource, FileSlice, PayloadSource

LORA_KEYS = "lora-gguf"
GGLA_RULES = "ggla-gguf"


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


# -- ggla -> GGUF ------------------------------------------------------------------------------

@dataclass(frozen=True)
class GglaConversion:
    plan: GGUFPlan
    warnings: list[str]


def _matcher(symbols: list[str]) -> re.Pattern[str]:
    names = [re.escape(gguf_tensor_name(s, GGLA_RULES)).replace(r"\{bid\}", r"\d+") for s in symbols]
    return re.compile(r"(?:" + "|".join(names) + r")\.weight")


def ggla_to_gguf(doc: Document, architecture: str, table: MappingTable | None = None) -> GglaConversion:
    """A GGUF adapter that means in current llama.cpp what the ggla meant in 2023's
    (``table``: the ``ggla-gguf`` rules unless another table is given)."""
    table = table if table is not None else load_mapping(GGLA_RULES)
    rules = table.rules
    for needed in ("suffixes", "flipped", "one_dimensional"):
        if not isinstance(rules.get(needed), dict | list):
            raise SchemaError(table.name, f"`rules` needs `{needed}` (see mappings/ggla-gguf.yaml)")
    suffixes: dict[str, str] = dict(rules["suffixes"])
    flipped = _matcher(list(rules["flipped"]))
    one_dimensional = _matcher(list(rules["one_dimensional"]))
    header_r = int(doc.fields["r"])
    source = str(doc.source)

    pairs: dict[str, dict[str, Any]] = {}
    for ref in doc.tensors:
        base, _, suffix = ref.name.rpartition(".")
        if suffix not in suffixes:
            raise FormatError(f"{ref.path}.name", None, f"{ref.name!r} does not end in "
                                                        f"{' or '.join('.' + s for s in suffixes)}", source)
        if suffix in pairs.setdefault(base, {}):
            raise FormatError(f"{ref.path}.name", None, f"{ref.name!r} appears twice", source)
        pairs[base][suffix] = ref
    _check_ggla_names(pairs, architecture, source)
    for pair in pairs.values():
        for ref in pair.values():
            if 0 in ref.ne:
                raise FormatError(ref.path, ref.offset, f"{ref.name} has a zero dimension (ne {list(ref.ne)}): "
                                                        "a factor without elements", source)
    ranks = [ref.ne[0] for pair in pairs.values() for ref in pair.values() if len(ref.ne) == 2]
    if ranks and header_r > max(ranks):
        raise FormatError("r", doc.offset_of("r"), f"{header_r} is larger than every tensor's rank (at most "
                                                   f"{max(ranks)}): 2023's llama.cpp scaled each factor by "
                                                   "alpha / r, which would make this adapter a no-op", source)
    tensors: list[OutputTensor] = []
    norms = []
    for base, pair in pairs.items():
        missing = [s for s in suffixes if s not in pair]
        if missing:
            present = next(iter(pair.values()))
            raise FormatError(f"{present.path}.name", present.offset, f"{present.name} has no {base}.{missing[0]} "
                                                                      "to pair with", source)
        a, b = pair["loraA"], pair["loraB"]
        if len(a.ne) != 2 or len(b.ne) != 2 or a.ne[0] != b.ne[0]:
            raise FormatError(b.path, b.offset, f"{base}: loraA ne {list(a.ne)} and loraB ne {list(b.ne)} do not "
                                                "share a rank ne[0]", source)
        rank = a.ne[0]
        factor = rank / header_r  # 2023 scaled by alpha / header r, current llama.cpp by alpha / own rank
        if one_dimensional.fullmatch(base):
            norms.append(base)
        lora_a: PayloadSource
        if flipped.fullmatch(base):
            # Current llama.cpp reads token_embd's A and B the other way round: swap, no transpose.
            lora_a, lora_b = _slice(doc, b), _rescaled(doc, a, factor)
            a_ne, b_ne, a_type, b_type = b.ne, a.ne, b.ggml_type, a.ggml_type
        else:
            lora_a = ArraySource(_transposed(doc, a), a.nbytes)
            lora_b = _rescaled(doc, b, factor)
            a_ne, b_ne, a_type, b_type = (a.ne[1], a.ne[0]), b.ne, a.ggml_type, b.ggml_type
        tensors.append(OutputTensor(f"{base}.{suffixes['loraA']}", tuple(a_ne), a_type, lora_a))
        tensors.append(OutputTensor(f"{base}.{suffixes['loraB']}", tuple(b_ne), b_type, lora_b))
    if not tensors:
        raise FormatError("tensors", doc.offset_of("tensors"), "the adapter holds no tensors", source)
    metadata = resolve_metadata(table, [{"lora_alpha": doc.fields["lora_alpha"]}], architecture, source)
    warnings = []
    if norms:
        warnings.append(f"{len(norms)} adapters of 1-D tensors kept ({', '.join(norms[:3])}"
                        f"{', ...' if len(norms) > 3 else ''}): current llama.cpp applies them when merging "
                        "(llama-export-lora) but not at inference")
    return GglaConversion(GGUFPlan(architecture, metadata, tensors), warnings)


def _transposed(doc: Document, ref: Any) -> Callable[[], np.ndarray[Any, Any]]:
    return lambda: transforms.transpose(_array(doc, ref))


def _slice(doc: Document, ref: Any) -> FileSlice:
    return FileSlice(doc.source, ref.offset, ref.nbytes)


def _array(doc: Document, ref: Any) -> np.ndarray[Any, Any]:
    return transforms.from_bytes(_slice(doc, ref).read(), ref.ggml_type, ref.ne)


def _rescaled(doc: Document, ref: Any, factor: float) -> PayloadSource:
    if factor == 1:
        return _slice(doc, ref)
    return ArraySource(lambda: transforms.scale(_array(doc, ref), factor), ref.nbytes)


def _check_ggla_names(pairs: dict[str, dict[str, Any]], architecture: str, source: str) -> None:
    """Every adapted tensor is one of the architecture's (gguf-py's names), as current llama.cpp
    requires of an adapter; its name fits ggml's 63 bytes."""
    import gguf

    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == architecture)
    known = re.compile("(?:" + "|".join(re.escape(gguf.TENSOR_NAMES[t]).replace(r"\{bid\}", "(?:0|[1-9][0-9]{0,5})")
                                for t in gguf.MODEL_TENSORS[arch]) + r")\.weight")
    for base, pair in pairs.items():
        ref = next(iter(pair.values()))
        if len(ref.name.encode()) > MAX_TENSOR_NAME:
            raise FormatError(f"{ref.path}.name", ref.offset, f"{ref.name[:40]!r}... is longer than the 63 bytes "
                                                              "a ggml tensor name can have", source)
        if not known.fullmatch(base):
            raise FormatError(f"{ref.path}.name", ref.offset, f"{base!r} is not a tensor of a {architecture} "
                                                              "model (gguf-py's names), so no model can take "
                                                              "this adapter (choose another with --arch)", source)


def check_architecture(name: str) -> str:
    import gguf

    if name not in {str(n) for n in gguf.MODEL_ARCH_NAMES.values()}:
        raise UsageError(f"--arch {name}: not an architecture gguf-py knows (for example llama)")
    return name
