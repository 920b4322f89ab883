"""Vocabularies as today's tokenizers want them, for the tables that convert 2023 files: GPT-2's
byte-level text of raw token bytes, and the BPE merges rebuilt from a vocabulary's rank order.

The 2023 files of the ggml examples kept each token's raw bytes and no merges; a GGUF of the
``gpt2`` tokenizer model needs both the byte-level text (each byte as one printable character,
GPT-2's ``bytes_to_unicode``) and the merges. Merges follow from the vocabulary when its order is
the merge order (GPT-2's vocab.json is): replaying BPE over each token with the tokens ranked
before it must end in exactly two parts, which are its merge. A rule read off the token alone
(the longest known prefix, say) is wrong for 3,989 of GPT-2's 50,000 merges; the replay is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any


@cache
def _byte_chars() -> tuple[str, ...]:
    """GPT-2's character for each byte value: printable bytes stand for themselves, the others are
    shifted past U+00FF (a space is 'Ġ', a newline 'Ċ')."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + shifted)
            shifted += 1
    return tuple(chars[b] for b in range(256))


def byte_level(text: Any) -> str:
    """The byte-level text of a token's raw bytes: ``b' the'`` -> ``'Ġthe'``."""
    if not isinstance(text, bytes | bytearray):
        raise TypeError("byte_level(text) takes a token's bytes")
    chars = _byte_chars()
    return "".join(chars[b] for b in text)


def byte_level_from_chars(text: Any) -> str:
    """The byte-level text of a token written one character per byte, UTF-8 encoded (ggml's mpt
    converter wrote ``chr(byte)`` for each byte of the token): those characters are its bytes. A
    token with a character past U+00FF (an added token kept as it was) is its own text."""
    chars = decode(text)
    if any(ord(c) > 0xFF for c in chars):
        return chars
    return byte_level(chars.encode("latin-1"))


def decode(text: Any) -> str:
    """A token's bytes as UTF-8 text (sentencepiece pieces, added tokens)."""
    if not isinstance(text, bytes | bytearray):
        raise TypeError("decode(text) takes bytes")
    try:
        return bytes(text).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{bytes(text)[:40]!r} is not UTF-8 ({e.reason} at byte {e.start})") from None


def bpe_merges(tokens: Any, types: Any) -> list[str]:
    """The merges (``'Ġ t'``) that give ``tokens`` (byte-level text, by id) in their rank order.

    Tokens of one character are the alphabet; tokens whose type (``types``, GGUF's token types) is
    not 1 (normal) are not made by merges. Every other token must come out of BPE, replayed over
    its characters with the tokens ranked before it, as exactly two parts; a token that does not
    is a ValueError naming it, since the vocabulary's order is then not its merge order."""
    if not isinstance(tokens, Sequence) or not isinstance(types, Sequence) or len(tokens) != len(types):
        raise TypeError("bpe_merges(tokens, types) takes two lists of one length")
    rank = {token: i for i, token in enumerate(tokens) if isinstance(token, str)}
    merges = []
    for i, token in enumerate(tokens):
        if types[i] != 1 or not isinstance(token, str) or len(token) < 2:
            continue
        parts = _replay(token, rank, i)
        if len(parts) != 2 or any(rank.get(part, i) >= i for part in parts):
            raise ValueError(f"token {i} {token!r} is not two tokens ranked before it (BPE over it ends in "
                             f"{len(parts)} parts): the vocabulary's order is not its merge order")
        merges.append(f"{parts[0]} {parts[1]}")
    return merges


def _replay(token: str, rank: dict[str, int], below: int) -> list[str]:
    """BPE over ``token``'s characters: merge the adjacent pair whose joined text ranks first,
    among the tokens ranked before ``below``, until none is."""
    parts = list(token)
    while len(parts) > 2:
        best, at = below, -1
        for j in range(len(parts) - 1):
            joined = rank.get(parts[j] + parts[j + 1], below)
            if joined < best:
                best, at = joined, j
        if at < 0:
            break
        parts[at:at + 2] = [parts[at] + parts[at + 1]]
    return parts


def index_of(items: Any, wanted: Any) -> int | None:
    """The index of the first item of ``items`` equal to ``wanted`` (a token id), else None."""
    if not isinstance(items, Sequence):
        raise TypeError("index_of(items, value) takes a list")
    for i, item in enumerate(items):
        if item == wanted:
            return i
    return None
