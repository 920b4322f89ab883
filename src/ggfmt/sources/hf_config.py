"""A Hugging Face model's ``config.json``: just what adapter conversion needs (no weights)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import FormatError, UsageError
from ..mapping import load_mapping
from .weights import read_json

NAME_TABLE = "hf-llama"


@dataclass(frozen=True)
class BaseModel:
    config_path: Path
    architecture: str  # gguf-py's name: "llama"
    rope_permute: bool
    n_head: int
    n_head_kv: int


def read_base_config(directory: Path) -> BaseModel:
    import gguf

    path = directory / "config.json"
    if not path.is_file():
        raise UsageError(f"{directory}: no config.json; --base names the base model's directory")
    config = read_json(path)
    architectures = config.get("architectures") or []
    known = load_mapping(NAME_TABLE).rules["architectures"]
    hf_arch = next((a for a in architectures if a in known), None)
    if hf_arch is None:
        raise FormatError("architectures", None, f"{architectures!r}: ggfmt converts adapters of "
                                                 f"{', '.join(known)} models", str(path))
    entry = known[hf_arch]
    n_head = config.get("num_attention_heads")
    n_head_kv = config.get("num_key_value_heads") or n_head
    for field, value in (("num_attention_heads", n_head), ("num_key_value_heads", n_head_kv)):
        if not isinstance(value, int) or value <= 0:
            raise FormatError(field, None, f"expected a positive integer, got {value!r}", str(path))
    return BaseModel(
        config_path=path,
        architecture=str(gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[str(entry["gguf"])]]),
        rope_permute=bool(entry.get("rope_permute", False)),
        n_head=int(str(n_head)),
        n_head_kv=int(str(n_head_kv)),
    )
