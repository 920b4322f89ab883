"""A Hugging Face model's ``config.json``: just what adapter conversion needs (no weights).

Every value is checked before it is used: an adapter is only converted against a base model
whose dimensions make sense (positive integers, heads that split the width evenly).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FormatError, UsageError
from ..mapping import load_mapping
from .weights import read_json

NAME_TABLE = "hf-llama"
MAX_DIMENSION = 1 << 24  # larger than any model's width, head count or layer count


@dataclass(frozen=True)
class BaseModel:
    config_path: Path
    architecture: str  # gguf-py's name: "llama"
    rope_permute: bool
    n_head: int
    n_head_kv: int
    # what the name table's `in`/`out` expressions may use: hidden_size, intermediate_size,
    # n_head, n_head_kv, head_dim, n_layer
    dims: dict[str, int] = field(default_factory=dict)


def _positive(config: dict[str, Any], name: str, path: Path, default: Any = None) -> int:
    value = config.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_DIMENSION:
        raise FormatError(name, None, f"expected a positive integer (at most {MAX_DIMENSION}), got {value!r}",
                          str(path))
    return value


def read_base_config(directory: Path) -> BaseModel:
    import gguf

    path = directory / "config.json"
    if not path.is_file():
        raise UsageError(f"{directory}: no config.json; --base names the base model's directory")
    config = read_json(path)
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
        raise FormatError("architectures", None, f"expected a list of class names, got {architectures!r}", str(path))
    known = load_mapping(NAME_TABLE).rules["architectures"]
    hf_arch = next((a for a in architectures if a in known), None)
    if hf_arch is None:
        raise FormatError("architectures", None, f"{architectures!r}: ggfmt converts adapters of "
                                                 f"{', '.join(known)} models", str(path))
    entry = known[hf_arch]
    hidden = _positive(config, "hidden_size", path)
    n_head = _positive(config, "num_attention_heads", path)
    n_head_kv = _positive(config, "num_key_value_heads", path, n_head)
    if config.get("head_dim") is None and hidden % n_head:
        raise FormatError("num_attention_heads", None, f"{n_head} heads do not split hidden_size {hidden}",
                          str(path))
    head_dim = _positive(config, "head_dim", path, hidden // n_head)
    if n_head % n_head_kv:
        raise FormatError("num_key_value_heads", None, f"{n_head_kv} does not divide num_attention_heads {n_head}",
                          str(path))
    rope_permute = bool(entry.get("rope_permute", False))
    if rope_permute and head_dim % 2:
        raise FormatError("head_dim", None, f"{head_dim} is odd: rope needs heads of two halves", str(path))
    dims = {"hidden_size": hidden, "intermediate_size": _positive(config, "intermediate_size", path),
            "n_head": n_head, "n_head_kv": n_head_kv, "head_dim": head_dim,
            "n_layer": _positive(config, "num_hidden_layers", path)}
    return BaseModel(
        config_path=path,
        architecture=str(gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[str(entry["gguf"])]]),
        rope_permute=rope_permute,
        n_head=n_head,
        n_head_kv=n_head_kv,
        dims=dims,
    )
