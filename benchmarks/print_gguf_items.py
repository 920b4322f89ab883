"""The floor `make bench` shows beside `fmt parse` of the many-small-items GGUFs: a plain Python
reader and printer of a GGUF (version 2 or 3) header, a line per metadata pair and per tensor
info, written from the GGUF specification with ``struct`` and nothing else: no checks beyond
what struct does, no escaping, no views, no validation. What ggfmt does on top of this is the
cost of checking and explaining; this is what Python itself costs.

    python benchmarks/print_gguf_items.py MODEL.gguf
"""

from __future__ import annotations

import struct
import sys

SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
NAMES = {0: "u8", 1: "i8", 2: "u16", 3: "i16", 4: "u32", 5: "i32", 6: "f32", 7: "bool", 8: "str", 9: "arr",
         10: "u64", 11: "i64", 12: "f64"}
PACKERS = {code: struct.Struct("<" + fmt) for code, fmt in SCALARS.items()}
U64 = struct.Struct("<Q").unpack_from
U32 = struct.Struct("<I").unpack_from


def value(data: bytes, pos: int, vtype: int) -> tuple[object, int]:
    packer = PACKERS.get(vtype)
    if packer is not None:
        return packer.unpack_from(data, pos)[0], pos + packer.size
    if vtype == 8:
        (n,) = U64(data, pos)
        return data[pos + 8:pos + 8 + n].decode(), pos + 8 + n
    (item_type,) = U32(data, pos)
    (count,) = U64(data, pos + 4)
    pos += 12
    scalar = SCALARS.get(item_type)
    if scalar is not None:  # an array of numbers in one call
        return list(struct.unpack_from(f"<{count}{scalar}", data, pos)), pos + count * PACKERS[item_type].size
    items = []
    for _ in range(count):
        item, pos = value(data, pos, item_type)
        items.append(item)
    return items, pos


def main() -> None:
    with open(sys.argv[1], "rb") as f:
        data = f.read()
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    pos = 24
    out = []
    for _ in range(n_kv):
        (n,) = U64(data, pos)
        key = data[pos + 8:pos + 8 + n].decode()
        (vtype,) = U32(data, pos + 8 + n)
        item, pos = value(data, pos + 12 + n, vtype)
        shown = f"[{len(item)} items]" if isinstance(item, list) else item
        out.append(f"  {NAMES[vtype]}  {key} = {shown}\n")
    for _ in range(n_tensors):
        (n,) = U64(data, pos)
        name = data[pos + 8:pos + 8 + n].decode()
        pos += 8 + n
        (n_dims,) = U32(data, pos)
        ne = struct.unpack_from(f"<{n_dims}Q", data, pos + 4)
        ggml_type, offset = struct.unpack_from("<IQ", data, pos + 4 + 8 * n_dims)
        pos += 4 + 8 * n_dims + 12
        out.append(f"  {name}  {ggml_type}  {' x '.join(map(str, ne))}  {offset:,}\n")
    sys.stdout.write("".join(out))


if __name__ == "__main__":
    main()
