"""A LLaMA-7B-shaped 2023 model file for `make bench`: GGJT (version 1 or 3) with q4_0 matrices.

    python benchmarks/make_legacy.py OUT.bin --version 1 --layers 4
    python benchmarks/make_legacy.py OUT.bin --version 3 --layers 1 --embd 32 --vocab 250880 --f32  # header-heavy

The real vocabulary size (32,000 tokens with scores) and the real matrix shapes (n_embd 4096,
n_ff 11008), as many layers as asked (or a small n_embd and a large vocabulary: a file whose
header is the work); the blocks are a repeating pattern with finite scales.
Written with ``struct`` and numpy from the layout in fixtures/legacy/README.md, not by ggfmt.
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import numpy as np

N_VOCAB, N_EMBD, N_FF, N_HEAD = 32000, 4096, 11008, 32
BLOCK_BYTES = {1: 20, 3: 18}  # q4_0: f32 scale + 16 bytes (v1), f16 scale + 16 bytes (v3)


def blocks(n: int, version: int) -> bytes:
    one = np.zeros(BLOCK_BYTES[version], dtype=np.uint8)
    scale = np.array([0.01], dtype="<f4" if version == 1 else "<f2").view(np.uint8)
    one[:len(scale)] = scale
    one[len(scale):] = np.arange(16, dtype=np.uint8) * 17
    return np.tile(one, n).tobytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--version", type=int, choices=(1, 3), default=1)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=N_VOCAB, help="tokens (BLOOM's 250,880, say)")
    parser.add_argument("--embd", type=int, default=N_EMBD, help="n_embd (n_ff is 11008/4096 of it, rounded to 32)")
    parser.add_argument("--f32", action="store_true", help="every tensor f32 (file type 0), no q4_0")
    args = parser.parse_args()
    v = args.version
    n_vocab, n_embd = args.vocab, args.embd
    n_ff = max(32, round(n_embd * N_FF / N_EMBD / 32) * 32)
    with open(args.out, "wb") as f:
        ftype = 0 if args.f32 else 2  # all f32, or mostly q4_0
        hparams = (n_vocab, n_embd, 256, N_HEAD, args.layers, 128, ftype)
        f.write(b"tjgg" + struct.pack("<I", v) + struct.pack("<7I", *hparams))
        for i in range(n_vocab):
            text = b"<unk>" if i == 0 else b"<s>" if i == 1 else b"</s>" if i == 2 else b" tok%d" % i
            f.write(struct.pack("<I", len(text)) + text + struct.pack("<f", -float(i)))

        def tensor(name: str, ne: tuple[int, ...], quantized: bool) -> None:
            quantized = quantized and not args.f32
            raw = name.encode()
            f.write(struct.pack(f"<3I{len(ne)}I", len(ne), len(raw), 2 if quantized else 0, *ne) + raw)
            f.write(bytes(-f.tell() % 32))
            n = int(np.prod(ne))
            f.write(blocks(n // 32, v) if quantized else np.ones(n, dtype="<f4").tobytes())

        tensor("tok_embeddings.weight", (n_embd, n_vocab), True)
        tensor("norm.weight", (n_embd,), False)
        tensor("output.weight", (n_embd, n_vocab), True)
        for b in range(args.layers):
            tensor(f"layers.{b}.attention_norm.weight", (n_embd,), False)
            for w in ("wq", "wk", "wv", "wo"):
                tensor(f"layers.{b}.attention.{w}.weight", (n_embd, n_embd), True)
            tensor(f"layers.{b}.ffn_norm.weight", (n_embd,), False)
            tensor(f"layers.{b}.feed_forward.w1.weight", (n_embd, n_ff), True)
            tensor(f"layers.{b}.feed_forward.w2.weight", (n_ff, n_embd), True)
            tensor(f"layers.{b}.feed_forward.w3.weight", (n_embd, n_ff), True)


if __name__ == "__main__":
    main()
