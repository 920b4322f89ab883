"""Write a ggcp checkpoint of about a given size through ggfmt's own ggcp schema (its build path).

    python benchmarks/make_checkpoint.py big.bin --size-mb 600
    python benchmarks/make_checkpoint.py like7b.bin --layers 32 --embd 64 --vocab 320

The payloads are streamed in fixed-size chunks (a repeated block of random f32 values), so
writing a checkpoint larger than memory uses little memory. The optimizer context is
version 1 with Adam state (m, v and past-loss values).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ggfmt.engine import build

BLOCK = np.random.default_rng(0).standard_normal(1 << 18, dtype=np.float32) * np.float32(0.02)  # 1 MiB


@dataclass(frozen=True)
class Filler:
    """``nbytes`` of f32 noise, written in 1 MiB pieces (a payload for ``ggfmt.engine.build``)."""

    nbytes: int

    def write_to(self, stream: Any) -> None:
        block = BLOCK.tobytes()
        left = self.nbytes
        while left:
            piece = block[: min(len(block), left)]
            stream.write(piece)
            left -= len(piece)


def n_ff(n_embd: int, n_mult: int) -> int:
    return ((2 * (4 * n_embd) // 3 + n_mult - 1) // n_mult) * n_mult


def tensor(name: str, *ne: int) -> dict[str, Any]:
    count = 1
    for n in ne:
        count *= n
    return {"ggml_type": 0, "ne": list(ne), "name": name, "data": Filler(4 * count)}


def checkpoint_fields(n_vocab: int, n_embd: int, n_mult: int, n_head: int, n_layer: int,
                      past: int = 3) -> dict[str, Any]:
    ff = n_ff(n_embd, n_mult)
    layers = []
    for i in range(n_layer):
        p = f"layers.{i}."
        layers.append({
            "attention_norm": tensor(p + "attention_norm.weight", n_embd),
            "wq": tensor(p + "attention.wq.weight", n_embd, n_embd),
            "wk": tensor(p + "attention.wk.weight", n_embd, n_embd),
            "wv": tensor(p + "attention.wv.weight", n_embd, n_embd),
            "wo": tensor(p + "attention.wo.weight", n_embd, n_embd),
            "ffn_norm": tensor(p + "ffn_norm.weight", n_embd),
            "w1": tensor(p + "feed_forward.w1.weight", n_embd, ff),
            "w2": tensor(p + "feed_forward.w2.weight", ff, n_embd),
            "w3": tensor(p + "feed_forward.w3.weight", n_embd, ff),
        })
    nx = 2 * n_vocab * n_embd + n_embd + n_layer * (2 * n_embd + 4 * n_embd * n_embd + 3 * n_embd * ff)
    return {
        "version": 0, "train_its": 100, "train_samples": 800, "train_tokens": 800 * 64,
        "model": {"n_vocab": n_vocab, "n_embd": n_embd, "n_mult": n_mult, "n_head": n_head,
                  "n_layer": n_layer, "n_rot": n_embd // n_head},
        "tok_embeddings": tensor("tok_embeddings.weight", n_embd, n_vocab),
        "norm": tensor("norm.weight", n_embd),
        "output": tensor("output.weight", n_embd, n_vocab),
        "layers": layers,
        "opt": {"version": 1, "ctx": {
            "past": past, "lbfgs_m": 6, "nx": nx, "iter": 100, "just_initialized": 0, "type": "adam",
            "state": {"m": tensor("", nx), "v": tensor("", nx), "pf": tensor("", past),
                      "fx_best": 2.5, "fx_prev": 2.75, "n_no_improvement": 0},
        }},
    }


def layers_for(size_mb: float, n_vocab: int, n_embd: int, n_mult: int) -> int:
    """Layers that bring a checkpoint (model + Adam m and v: three copies of nx) near size_mb."""
    per_layer = 2 * n_embd + 4 * n_embd * n_embd + 3 * n_embd * n_ff(n_embd, n_mult)
    fixed = 2 * n_vocab * n_embd + n_embd
    return max(1, round((size_mb * 1e6 / 12 - fixed) / per_layer))


def make_checkpoint(path: Path, *, size_mb: float | None = None, n_layer: int | None = None,
                    n_embd: int | None = None, n_vocab: int = 4096, n_mult: int = 256, n_head: int = 8) -> Path:
    if n_embd is None:  # small checkpoints need a narrower model to have more than one layer
        n_embd = 1024 if (size_mb or 0) >= 500 else 512
    if n_layer is None:
        n_layer = layers_for(size_mb or 100, n_vocab, n_embd, n_mult)
    build(path, "ggcp", checkpoint_fields(n_vocab, n_embd, n_mult, n_head, n_layer))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("--size-mb", type=float, default=100, help="approximate size (sets the layer count)")
    parser.add_argument("--layers", type=int, help="layer count (instead of --size-mb)")
    parser.add_argument("--embd", type=int, help="embedding length (default: 1024 from 500 MB, else 512)")
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--mult", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    args = parser.parse_args()
    start = time.perf_counter()
    make_checkpoint(args.output, size_mb=args.size_mb, n_layer=args.layers, n_embd=args.embd, n_vocab=args.vocab,
                    n_mult=args.mult, n_head=args.heads)
    size = args.output.stat().st_size
    print(f"{args.output}: {size / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
