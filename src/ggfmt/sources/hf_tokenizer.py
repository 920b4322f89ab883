"""A Hugging Face tokenizer as a conversion's vocabulary (``--vocab-from HF_DIR``): the tokens by
id, the BPE merges and the special tokens' ids, from tokenizer.json, or from vocab.json and
merges.txt (with added_tokens.json) as older models have them.

For the 2023 files whose vocabulary is lossy (ggml's gpt-neox and dolly-v2 converters wrote each
token's decoded text) this is the vocabulary the model had.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import FormatError, UsageError


def read_tokenizer(path: Path) -> dict[str, Any]:
    """``{"tokens": [text or None, by id], "merges": ["a b", ...], "special": [ids]}`` of the
    tokenizer at ``path`` (a directory, or a tokenizer.json)."""
    from .weights import read_json

    if path.is_dir() and (path / "tokenizer.json").is_file():
        path = path / "tokenizer.json"
    if path.is_file():
        return _from_tokenizer_json(read_json(path), path)
    if path.is_dir() and (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        added = read_json(path / "added_tokens.json") if (path / "added_tokens.json").is_file() else {}
        return _from_vocab_and_merges(read_json(path / "vocab.json"), path / "merges.txt", added, path)
    raise UsageError(f"{path}: neither a tokenizer.json nor a directory with tokenizer.json, or vocab.json and "
                     "merges.txt")


def _from_tokenizer_json(data: Any, path: Path) -> dict[str, Any]:
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise FormatError("model", None, "expected a BPE model with its vocab (a byte-level BPE tokenizer)", str(path))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    added = [t for t in data.get("added_tokens") or [] if isinstance(t, dict)]
    vocab = {str(k): v for k, v in model["vocab"].items()}
    vocab.update({str(t.get("content")): t.get("id") for t in added})
    special = [t["id"] for t in added if t.get("special") and isinstance(t.get("id"), int)]
    return {"tokens": _by_id(vocab, path, "model.vocab"), "merges": merges, "special": special}


def _from_vocab_and_merges(vocab: Any, merges_file: Path, added: Any, path: Path) -> dict[str, Any]:
    if not isinstance(vocab, dict) or not isinstance(added, dict):
        raise FormatError("", None, "vocab.json and added_tokens.json map tokens to ids", str(path))
    vocab = {**{str(k): v for k, v in vocab.items()}, **{str(k): v for k, v in added.items()}}
    lines = merges_file.read_text(encoding="utf-8").splitlines()
    merges = [line for line in lines if line and not line.startswith("#version")]
    return {"tokens": _by_id(vocab, path, "vocab.json"), "merges": merges, "special": sorted(added.values())}


def _by_id(vocab: dict[str, Any], path: Path, field: str) -> list[str | None]:
    ids = list(vocab.values())
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 16_777_216 for i in ids):
        raise FormatError(field, None, "expected token ids from 0 to 16777215", str(path))
    tokens: list[str | None] = [None] * (max(ids) + 1 if ids else 0)
    for token, i in vocab.items():
        tokens[i] = token
    return tokens
