"""A model's own tokenizer as a conversion's vocabulary (``--vocab-from HF_DIR``): the tokens by id,
their types, the BPE merges or the sentencepiece scores, and the special tokens' ids, from
tokenizer.json, from vocab.json and merges.txt (with added_tokens.json) as older models have them,
or from a sentencepiece model (spiece.model, tokenizer.model).

For the 2023 files whose vocabulary is lossy (ggml's gpt-neox and dolly-v2 converters wrote each
token's decoded text) this is the vocabulary the model had; for the others, the tokenizer the
model was released with, in place of what the file kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import FormatError, UsageError
from ..io.inputs import note_input, open_binary

# GGUF token types (gguf.TokenType), which sentencepiece's piece types are numbered like
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPECIAL_ROLES = ("bos", "eos", "unk", "pad")  # the special ids a GGUF tokenizer names
SENTENCEPIECE_FILES = ("tokenizer.model", "spiece.model")
MAX_TOKEN_ID = 16_777_215


def read_tokenizer(path: Path) -> dict[str, Any]:
    """The tokenizer at ``path`` (a directory, a tokenizer.json or a sentencepiece model) as
    ``{"model": "gpt2" | "llama", "tokens": [text, or None for an id it lacks], "types": [GGUF
    token type or None], "scores": [float] or None, "merges": ["a b", ...] or None, "special":
    [ids], "bos"/"eos"/"unk"/"pad": id or None}``."""
    from .weights import read_json

    folder = path if path.is_dir() else path.parent
    if path.is_dir():
        found = [path / "tokenizer.json", *(path / name for name in SENTENCEPIECE_FILES)]
        path = next((p for p in found if p.is_file()), path)
    if path.is_file() and path.suffix == ".model":
        return _from_sentencepiece(path)
    if path.is_file():
        tokenizer = _from_tokenizer_json(read_json(path), path)
    elif path.is_dir() and (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        added = read_json(path / "added_tokens.json") if (path / "added_tokens.json").is_file() else {}
        tokenizer = _from_vocab_and_merges(read_json(path / "vocab.json"), path / "merges.txt", added, path)
    else:
        raise UsageError(f"{path}: neither a tokenizer.json nor a directory with tokenizer.json, vocab.json and "
                         f"merges.txt, or {' or '.join(SENTENCEPIECE_FILES)}")
    special = _special_ids(folder, tokenizer["tokens"])
    for i in special.values():  # BOS, EOS... are control tokens, added or not (as transformers loads them)
        if i is not None and i not in tokenizer["special"]:
            tokenizer["types"][i] = CONTROL
            tokenizer["special"].append(i)
    return {**tokenizer, **special}


def _from_tokenizer_json(data: Any, path: Path) -> dict[str, Any]:
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise FormatError("model", None, "expected a BPE model with its vocab (a byte-level BPE tokenizer)", str(path))
    merges = [m if isinstance(m, str) else " ".join(map(str, m)) for m in model.get("merges") or []]
    added = [t for t in data.get("added_tokens") or [] if isinstance(t, dict)]
    vocab = {str(k): v for k, v in model["vocab"].items()}
    vocab.update({str(t.get("content")): t.get("id") for t in added})
    special = [t["id"] for t in added if t.get("special") and isinstance(t.get("id"), int)]
    return _bpe(_by_id(vocab, path, "model.vocab"), merges, special)


def _from_vocab_and_merges(vocab: Any, merges_file: Path, added: Any, path: Path) -> dict[str, Any]:
    if not isinstance(vocab, dict) or not isinstance(added, dict):
        raise FormatError("", None, "vocab.json and added_tokens.json map tokens to ids", str(path))
    vocab = {**{str(k): v for k, v in vocab.items()}, **{str(k): v for k, v in added.items()}}
    note_input(merges_file)
    try:
        with open_binary(merges_file) as f:
            lines = f.read().decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise FormatError("", e.start, "not UTF-8 text", str(merges_file)) from None
    merges = [line for line in lines if line and not line.startswith("#version")]
    return _bpe(_by_id(vocab, path, "vocab.json"), merges, sorted(added.values()))


def _bpe(tokens: list[str | None], merges: list[str], special: list[int]) -> dict[str, Any]:
    """A byte-level BPE tokenizer: its added special tokens are control tokens, the others normal."""
    types: list[int | None] = [None if t is None else NORMAL for t in tokens]
    for i in special:
        types[i] = CONTROL
    return {"model": "gpt2", "tokens": tokens, "types": types, "scores": None, "merges": merges, "special": special}


def _by_id(vocab: dict[str, Any], path: Path, field: str) -> list[str | None]:
    ids = list(vocab.values())
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= MAX_TOKEN_ID for i in ids):
        raise FormatError(field, None, f"expected token ids from 0 to {MAX_TOKEN_ID}", str(path))
    tokens: list[str | None] = [None] * (max(ids) + 1 if ids else 0)
    for token, i in vocab.items():
        tokens[i] = token
    return tokens


def _special_ids(folder: Path, tokens: list[str | None]) -> dict[str, int | None]:
    """BOS, EOS, UNK and padding ids as llama.cpp's converter finds them: the tokens
    tokenizer_config.json names, else config.json's ``*_token_id``."""
    from .weights import read_json

    config = read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
    model = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    index = {t: i for i, t in enumerate(tokens) if t is not None}
    out: dict[str, int | None] = {}
    for role in SPECIAL_ROLES:
        named = config.get(f"{role}_token")
        text = named.get("content") if isinstance(named, dict) else named
        given = model.get(f"{role}_token_id")
        if isinstance(text, str) and text in index:
            out[role] = index[text]
        elif isinstance(given, int) and not isinstance(given, bool) and 0 <= given < len(tokens):
            out[role] = given
        else:
            out[role] = None
    return out


# -- sentencepiece models: a protobuf ModelProto, read by field number (sentencepiece_model.proto)

PIECES, TRAINER_SPEC = 1, 2  # ModelProto: repeated SentencePiece pieces; TrainerSpec trainer_spec
PIECE_TEXT, PIECE_SCORE, PIECE_TYPE = 1, 2, 3  # SentencePiece: piece, score, type
# TrainerSpec's special ids and their defaults (-1: none)
SPECIAL_FIELDS = {"unk": (40, 0), "bos": (41, 1), "eos": (42, 2), "pad": (43, -1)}


def _from_sentencepiece(path: Path) -> dict[str, Any]:
    import struct

    note_input(path)
    with open_binary(path) as f:
        data = f.read()
    tokens: list[str | None] = []
    types: list[int | None] = []
    scores: list[float] = []
    spec: dict[int, Any] = {}
    for number, value, at in _protobuf_fields(data, 0, len(data), path, "ModelProto"):
        if number == PIECES and isinstance(value, tuple):
            piece = {n: v for n, v, _ in _protobuf_fields(data, value[0], value[1], path, f"pieces[{len(tokens)}]")}
            text = piece.get(PIECE_TEXT)
            if not isinstance(text, tuple):
                raise FormatError(f"pieces[{len(tokens)}]", at, "expected a piece's text", str(path))
            try:
                tokens.append(data[text[0]:text[1]].decode("utf-8"))
            except UnicodeDecodeError:
                raise FormatError(f"pieces[{len(tokens)}]", text[0], "a piece that is not UTF-8 text",
                                  str(path)) from None
            score = piece.get(PIECE_SCORE, 0.0)
            scores.append(struct.unpack("<f", data[score[0]:score[1]])[0] if isinstance(score, tuple) else 0.0)
            kind = piece.get(PIECE_TYPE, NORMAL)
            types.append(kind if isinstance(kind, int) and NORMAL <= kind <= BYTE else NORMAL)
        elif number == TRAINER_SPEC and isinstance(value, tuple):
            spec = {n: v for n, v, _ in _protobuf_fields(data, value[0], value[1], path, "trainer_spec")}
    if not tokens:
        raise FormatError("pieces", 0, "expected a sentencepiece model (tokenizer.model) with its pieces", str(path))
    special = {}
    for role, (number, default) in SPECIAL_FIELDS.items():
        raw = spec.get(number, default)
        given = raw - (1 << 64) if isinstance(raw, int) and raw >= 1 << 63 else raw  # int32 -1 as a varint
        special[role] = given if isinstance(given, int) and 0 <= given < len(tokens) else None
    return {"model": "llama", "tokens": tokens, "types": types, "scores": scores, "merges": None,
            "special": [i for i, t in enumerate(types) if t in (CONTROL, UNKNOWN)], **special}


def _protobuf_fields(data: bytes, start: int, end: int, path: Path,
                     message: str) -> Iterator[tuple[int, int | tuple[int, int], int]]:
    """(field number, value, offset) of each field of the message in ``data[start:end]``: a varint's
    integer, a length-delimited field's (start, end), a fixed32's or fixed64's (start, end)."""
    at = start
    while at < end:
        offset = at
        key, at = _varint(data, at, end, path, message)
        number, wire = key >> 3, key & 7
        value: int | tuple[int, int]
        if wire == 0:
            value, at = _varint(data, at, end, path, message)
        elif wire == 2:
            size, at = _varint(data, at, end, path, message)
            value, at = (at, at + size), at + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, at = (at, at + size), at + size
        else:
            raise FormatError(message, offset, f"protobuf field {number} has wire type {wire}, which a sentencepiece "
                                          "model does not use", str(path))
        if at > end:
            raise FormatError(message, offset, f"protobuf field {number} runs past the end of its message", str(path))
        yield number, value, offset


def _varint(data: bytes, at: int, end: int, path: Path, message: str) -> tuple[int, int]:
    value = shift = 0
    start = at
    while at < end and shift < 64:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return value, at
        shift += 7
    raise FormatError(message, start, "a protobuf varint that does not end", str(path))
