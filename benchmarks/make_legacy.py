"""A LLaMA-7B-shaped 2023 model file for `make bench`: GGJT (version 1 or 3) with q4_0 matrices.

    python benchmarks/make_legacy.py OUT.bin --version 1 --layers 4

The real vocabulary size (32,000 tokens with scores) and the real matrix shapes (n_embd 4096,
n_ff 11008), as many layers as asked; the blocks are a repeating pattern with finite scales.
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
    args = parser.parse_args()
    v = args.version
    with open(args.out, "wb") as f:
        f.write(b"tjgg" + struct.pack("<I", v) + struct.pack("<7I", N_VOCAB, N_EMBD, 256, N_HEAD, args.layers, 128, 2))
        for i in range(N_VOCAB):
            text = b"<unk>" if i == 0 else b"<s>" if i == 1 else b"</s>" if i == 2 else b" tok%d" % i
            f.write(struct.pack("<I", len(text)) + text + struct.pack("<f", -float(i)))

        def tensor(name: str, ne: tuple[int, ...], quantized: bool) -> None:
            raw = name.encode()
            f.write(struct.pack(f"<3I{len(ne)}I", len(ne), len(raw), 2 if quantized else 0, *ne) + raw)
            f.write(bytes(-f.tell() % 32))
            n = int(np.prod(ne))
            f.write(blocks(n // 32, v) if quantized else np.ones(n, dtype="<f4").tobytes())

        tensor("tok_embeddings.weight", (N_EMBD, N_VOCAB), True)
        tensor("norm.weight", (N_EMBD,), False)
        tensor("output.weight", (N_EMBD, N_VOCAB), True)
        for b in range(args.layers):
            tensor(f"layers.{b}.attention_norm.weight", (N_EMBD,), False)
            for w in ("wq", "wk", "wv", "wo"):
                tensor(f"layers.{b}.attention.{w}.weight", (N_EMBD, N_EMBD), True)
            tensor(f"layers.{b}.ffn_norm.weight", (N_EMBD,), False)
            tensor(f"layers.{b}.feed_forward.w1.weight", (N_EMBD, N_FF), True)
            tensor(f"layers.{b}.feed_forward.w2.weight", (N_FF, N_EMBD), True)
            tensor(f"layers.{b}.feed_forward.w3.weight", (N_EMBD, N_FF), True)


if __name__ == "__main__":
    main()
