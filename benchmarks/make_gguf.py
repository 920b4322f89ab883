"""Write GGUF files shaped like the headers of today's downloads, and the hostile many-small-items files.

    python benchmarks/make_gguf.py llama3 llama3-like.gguf
    python benchmarks/make_gguf.py qwen qwen-like.gguf
    python benchmarks/make_gguf.py small-kvs kvs.gguf        # ~10 MB of one-byte metadata pairs
    python benchmarks/make_gguf.py small-infos infos.gguf    # ~10 MB of tensor infos
    python benchmarks/make_gguf.py small-array array.gguf    # one ~10 MB u8 array
    python benchmarks/make_gguf.py nested-arrays aoa.gguf    # an array of 820,000 empty arrays (9.8 MB)
    python benchmarks/make_gguf.py unique-kvs kvs.gguf       # 450,000 pairs with unique keys (9 MB)
    python benchmarks/make_gguf.py llama3-3gb-filled big.gguf  # 16 layers, ~3 GB of data on disk

The model headers hold what the real ones hold: the hyperparameters, a byte-level BPE vocabulary
(Llama-3: 128,256 tokens, 280,147 merges, 291 tensors; Qwen-2.5: 151,936 tokens, 151,387 merges,
255 tensors), token types, a chat template, and the tensor infos of Q4_K/Q6_K/F32 tensors of the
real shapes. The tensor data is a hole (a sparse file of the full size), so a reader that checks
offsets against the file size sees a complete file while the disk holds only the header.

Written with ``struct`` from the GGUF specification (version 3, alignment 32), not by ggfmt.
"""

from __future__ import annotations

import argparse
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?", U64: "Q", I64: "q",
          F64: "d"}
# ggml types: (id, block size, bytes per block)
GGML_F32, GGML_Q4_K, GGML_Q6_K = (0, 1, 4), (12, 256, 144), (14, 256, 210)

CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant"
    "<|end_header_id|>\n\n' }}{% endif %}"
)


def gstr(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def value_bytes(vtype: int, value: Any) -> bytes:
    if vtype == STR:
        return gstr(value)
    if vtype == ARR:
        item_type, items = value
        if item_type == STR:
            return struct.pack("<IQ", STR, len(items)) + b"".join(gstr(s) for s in items)
        return struct.pack(f"<IQ{len(items)}{SCALAR[item_type]}", item_type, len(items), *items)
    return struct.pack("<" + SCALAR[vtype], value)


def kv(key: str, vtype: int, value: Any) -> bytes:
    return gstr(key) + struct.pack("<I", vtype) + value_bytes(vtype, value)


@dataclass(frozen=True)
class Model:
    arch: str
    name: str
    layers: int
    embd: int
    ff: int
    heads: int
    kv_heads: int
    tokens: int
    merges: int
    pre: str
    rope_base: float
    bias: bool  # Qwen's q/k/v biases


LLAMA3 = Model("llama", "Llama-3-8B-like", 32, 4096, 14336, 32, 8, 128_256, 280_147, "llama-bpe", 500000.0, False)
QWEN = Model("qwen2", "Qwen2.5-7B-like", 28, 3584, 18944, 28, 4, 151_936, 151_387, "qwen2", 1000000.0, False)


def token(i: int) -> str:
    """A byte-level BPE token: printable, often with the GPT-2 space marker (non-ASCII, as in real ones)."""
    stems = ("the", "ing", "ation", "er", "on", "al", "_", "0", "é", "中")
    return ("Ġ" if i % 3 == 0 else "") + stems[i % len(stems)] + format(i, "x")


def merge(i: int) -> str:
    return f"{token(i * 7 % 5000)} {token(i)}"


def tensors(m: Model) -> list[tuple[str, list[int], tuple[int, int, int]]]:
    kv_dim = m.embd // m.heads * m.kv_heads
    out = [("token_embd.weight", [m.embd, m.tokens], GGML_Q4_K)]
    for b in range(m.layers):
        out += [
            (f"blk.{b}.attn_norm.weight", [m.embd], GGML_F32),
            (f"blk.{b}.attn_q.weight", [m.embd, m.embd], GGML_Q4_K),
            (f"blk.{b}.attn_k.weight", [m.embd, kv_dim], GGML_Q4_K),
            (f"blk.{b}.attn_v.weight", [m.embd, kv_dim], GGML_Q6_K),
            (f"blk.{b}.attn_output.weight", [m.embd, m.embd], GGML_Q4_K),
            (f"blk.{b}.ffn_norm.weight", [m.embd], GGML_F32),
            (f"blk.{b}.ffn_gate.weight", [m.embd, m.ff], GGML_Q4_K),
            (f"blk.{b}.ffn_up.weight", [m.embd, m.ff], GGML_Q4_K),
            (f"blk.{b}.ffn_down.weight", [m.ff, m.embd], GGML_Q6_K),
        ]
    return [*out, ("output_norm.weight", [m.embd], GGML_F32), ("output.weight", [m.embd, m.tokens], GGML_Q6_K)]


def nbytes(ne: list[int], ggml: tuple[int, int, int]) -> int:
    count = 1
    for n in ne:
        count *= n
    return count // ggml[1] * ggml[2]


def write_gguf(path: Path, kvs: list[bytes], infos: Iterable[tuple[bytes, list[int], int, int]], n_infos: int,
               data_size: int, alignment: int = 32) -> None:
    with path.open("wb") as out:
        out.write(b"GGUF" + struct.pack("<IQQ", 3, n_infos, len(kvs)))
        for item in kvs:
            out.write(item)
        for name, ne, ggml_type, offset in infos:
            out.write(gstr(name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, ggml_type, offset))
        out.write(bytes(-out.tell() % alignment))
        out.truncate(out.tell() + data_size)  # the data: a hole


def model_gguf(path: Path, m: Model, filled: bool = False) -> None:
    vocab = [token(i) for i in range(m.tokens)]
    types = [3 if i >= m.tokens - 256 else 1 for i in range(m.tokens)]  # control tokens at the end
    kvs = [
        kv("general.architecture", STR, m.arch),
        kv("general.type", STR, "model"),
        kv("general.name", STR, m.name),
        kv("general.file_type", U32, 15),
        kv("general.quantization_version", U32, 2),
        kv(f"{m.arch}.block_count", U32, m.layers),
        kv(f"{m.arch}.context_length", U32, 131072),
        kv(f"{m.arch}.embedding_length", U32, m.embd),
        kv(f"{m.arch}.feed_forward_length", U32, m.ff),
        kv(f"{m.arch}.attention.head_count", U32, m.heads),
        kv(f"{m.arch}.attention.head_count_kv", U32, m.kv_heads),
        kv(f"{m.arch}.rope.freq_base", F32, m.rope_base),
        kv(f"{m.arch}.attention.layer_norm_rms_epsilon", F32, 1e-5),
        kv(f"{m.arch}.vocab_size", U32, m.tokens),
        kv(f"{m.arch}.rope.dimension_count", U32, m.embd // m.heads),
        kv("tokenizer.ggml.model", STR, "gpt2"),
        kv("tokenizer.ggml.pre", STR, m.pre),
        kv("tokenizer.ggml.tokens", ARR, (STR, vocab)),
        kv("tokenizer.ggml.token_type", ARR, (I32, types)),
        kv("tokenizer.ggml.merges", ARR, (STR, [merge(i) for i in range(m.merges)])),
        kv("tokenizer.ggml.bos_token_id", U32, m.tokens - 256),
        kv("tokenizer.ggml.eos_token_id", U32, m.tokens - 255),
        kv("tokenizer.ggml.add_bos_token", BOOL, True),
        kv("tokenizer.chat_template", STR, CHAT_TEMPLATE),
    ]
    infos, offset = [], 0
    for name, ne, ggml in tensors(m):
        infos.append((name.encode(), ne, ggml[0], offset))
        offset += -(-nbytes(ne, ggml) // 32) * 32
    write_gguf(path, kvs, infos, len(infos), offset)
    if filled:  # the data written out (a hole copies for nothing): pseudo-random bytes, 64 MiB at a time
        import random

        block = random.Random(0).randbytes(1 << 26)
        with path.open("r+b") as out:
            out.seek(path.stat().st_size - offset)
            left = offset
            while left:
                left -= out.write(block[:min(left, len(block))])


# Llama-3-like with 16 layers: about 3 GB of tensor data
LLAMA3_3GB = Model("llama", "Llama-3-like-3GB", 16, 4096, 14336, 32, 8, 128_256, 280_147, "llama-bpe", 500000.0, False)

TARGET = 10_000_000  # bytes of the many-small-items files


def small_kvs(path: Path) -> None:
    """~770,000 pairs, each an empty key and a u8: 13 bytes an item."""
    item = kv("", U8, 0)
    write_gguf(path, [item] * ((TARGET - 64) // len(item)), [], 0, 0)


def small_infos(path: Path) -> None:
    """~260,000 tensor infos (unique six-character names) of one-element I8 tensors, 38 bytes an item."""
    n = (TARGET - 64) // 38
    write_gguf(path, [], ((b"%06x" % i, [1], 24, i * 32) for i in range(n)), n, n * 32)


def small_array(path: Path) -> None:
    """One metadata pair whose value is a u8 array of ~10 MB."""
    write_gguf(path, [gstr("a") + struct.pack("<IIQ", ARR, U8, TARGET - 64) + bytes(TARGET - 64)], [], 0, 0)


def nested_arrays(path: Path) -> None:
    """One pair whose value is an array of 820,000 empty u8 arrays: 12 bytes an item, 9.8 MB."""
    n = 820_000
    write_gguf(path, [kv("general.architecture", STR, "llama"),
                      gstr("x") + struct.pack("<IIQ", ARR, ARR, n) + struct.pack("<IQ", U8, 0) * n], [], 0, 0)


def unique_kvs(path: Path) -> None:
    """450,000 pairs of unique seven-character keys and a u8: 20 bytes an item, 9 MB."""
    write_gguf(path, [kv("general.architecture", STR, "llama")] + [kv(f"k{i:06d}", U8, 1) for i in range(450_000)],
               [], 0, 0)


MAKERS: dict[str, Callable[[Path], None]] = {
    "llama3": lambda p: model_gguf(p, LLAMA3), "qwen": lambda p: model_gguf(p, QWEN),
    "llama3-3gb-filled": lambda p: model_gguf(p, LLAMA3_3GB, filled=True),
    "small-kvs": small_kvs, "small-infos": small_infos, "small-array": small_array,
    "nested-arrays": nested_arrays, "unique-kvs": unique_kvs,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=sorted(MAKERS))
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    MAKERS[args.kind](args.out)


if __name__ == "__main__":
    main()
