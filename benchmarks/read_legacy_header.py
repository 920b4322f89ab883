"""The reference `make bench` holds ggfmt's parse of a 2023 model file against: a plain reader of
the same header (hyperparameters, the vocabulary with scores, every tensor's header), struct
and nothing else, written from fixtures/legacy/README.md.

    python benchmarks/read_legacy_header.py MODEL.bin
"""

from __future__ import annotations

import struct
import sys

BYTES = {0: (4, 1), 1: (2, 1), 2: (18, 32), 3: (20, 32), 8: (34, 32)}  # f32, f16, q4_0, q4_1, q8_0 (v3)


def main() -> None:
    with open(sys.argv[1], "rb") as f:
        data = f.read()
    magic, version, n_vocab = data[:4], *struct.unpack_from("<II", data, 4)
    assert magic == b"tjgg" and version == 3
    pos = 4 + 4 + 7 * 4
    tokens = []
    for _ in range(n_vocab):
        (n,) = struct.unpack_from("<I", data, pos)
        text = data[pos + 4:pos + 4 + n]
        (score,) = struct.unpack_from("<f", data, pos + 4 + n)
        tokens.append((text, score))
        pos += 8 + n
    tensors = []
    while pos < len(data):
        n_dims, name_len, ftype = struct.unpack_from("<3I", data, pos)
        ne = struct.unpack_from(f"<{n_dims}I", data, pos + 12)
        pos += 12 + 4 * n_dims
        name = data[pos:pos + name_len].decode()
        pos += name_len
        pos += -pos % 32
        size, block = BYTES[ftype]
        count = 1
        for n in ne:
            count *= n
        tensors.append((name, ne, ftype, pos))
        pos += count // block * size
    print(f"{len(tokens)} tokens, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
