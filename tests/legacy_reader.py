"""An independent reading of the legacy checkpoint layouts, for tests.

Written from ``layouts.md`` with ``struct`` alone, sharing no code with ggfmt, so that tests
can check ggfmt's parse and conversion against offsets and values found another way.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Record:
    name: bytes
    ne: tuple[int, ...]
    header_offset: int
    data_offset: int
    nbytes: int


@dataclass
class Reading:
    header: dict[str, int] = field(default_factory=dict)
    model_tensors: list[Record] = field(default_factory=list)
    opt: dict[str, object] = field(default_factory=dict)
    opt_offset: int = 0
    end: int = 0


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def record(self) -> Record:
        start = self.pos
        n_dims, name_len, _type = self.take("3I")
        ne = self.take(f"{n_dims}I")
        name = self.data[self.pos:self.pos + name_len]
        self.pos += name_len
        self.pos += -self.pos % 32
        nbytes = 4
        for n in ne:
            nbytes *= n
        nbytes = nbytes if n_dims else 0
        rec = Record(name, ne, start, self.pos, nbytes)
        self.pos += nbytes
        return rec


def read_checkpoint(path: Path) -> Reading:
    """ggcp or ggcl, with optimizer context version 0 (Adam) or 1 (type from the file's size)."""
    data = path.read_bytes()
    cur = _Cursor(data)
    out = Reading()
    magic = data[:4]
    cur.pos = 4
    out.header["version"], out.header["train_its"], out.header["train_samples"], out.header["train_tokens"] = \
        cur.take("4I")
    names = ("n_vocab", "n_embd", "n_mult", "n_head", "n_layer", "n_rot")
    out.header.update(zip(names, cur.take("6I"), strict=True))
    n_layer = out.header["n_layer"]
    if magic == b"pcgg":
        count = 3 + 9 * n_layer
    elif magic == b"lcgg":
        cur.take("12I")
        count = 2 * (3 + 9 * n_layer)
    else:
        raise ValueError(f"not a checkpoint: {magic!r}")
    out.model_tensors = [cur.record() for _ in range(count)]
    out.opt_offset = cur.pos
    (version,) = cur.take("I")
    out.opt["version"] = version
    if version == 0:
        params = data[cur.pos:cur.pos + 96]
        cur.pos += 96
        out.opt["type"] = struct.unpack_from("<i", params, 0)[0]
        out.opt["past"] = struct.unpack_from("<i", params, 8)[0]
        out.opt["lbfgs_m"] = struct.unpack_from("<i", params, 60)[0]
        out.opt["nx"], out.opt["iter"], out.opt["just_initialized"] = cur.take("qiI")
        if out.opt["type"] != 0:
            raise NotImplementedError("only Adam version-0 contexts are read here")
        tensors = {n: cur.record() for n in ("x", "g1", "g2", "m", "v", "mh", "vh", "pf")}
        out.opt["tensors"] = tensors
        out.opt["fx_best"], out.opt["fx_prev"], out.opt["n_no_improvement"] = cur.take("ffi")
    else:
        out.opt["past"], out.opt["lbfgs_m"], out.opt["nx"], out.opt["iter"], out.opt["just_initialized"] = \
            cur.take("iiQiI")
        state = cur.pos
        # Adam holds two nx vectors and the scalars; L-BFGS five nx vectors, two nx*m matrices.
        cur.record(), cur.record()
        cur.record()  # pf (or null)
        adam_end = cur.pos + 12
        cur.pos = state
        if adam_end == len(data):
            out.opt["type"] = 0
            out.opt["tensors"] = {n: cur.record() for n in ("m", "v", "pf")}
            out.opt["fx_best"], out.opt["fx_prev"], out.opt["n_no_improvement"] = cur.take("ffi")
        else:
            out.opt["type"] = 1
            names = ("x", "xp", "g", "gp", "d", "pf", "lmal", "lmys", "lms", "lmy")
            out.opt["tensors"] = {n: cur.record() for n in names}
            (out.opt["fx_best"], out.opt["step"], out.opt["j"], out.opt["k"], out.opt["end"],
             out.opt["n_no_improvement"]) = cur.take("ffiiii")
    out.end = cur.pos
    return out


@dataclass
class GglaRecord:
    name: str
    ne: tuple[int, ...]
    ftype: int
    data_offset: int
    nbytes: int


def read_ggla(path: Path) -> tuple[dict[str, int], list[GglaRecord]]:
    """A ggla adapter: header (r, lora_alpha) and its records (i32 words, f32/f16 data, 32-aligned)."""
    data = path.read_bytes()
    if data[:4] != b"algg":
        raise ValueError(f"not a ggla file: {data[:4]!r}")
    version, r, alpha = struct.unpack_from("<3i", data, 4)
    pos, records = 16, []
    while pos < len(data):
        n_dims, name_len, ftype = struct.unpack_from("<3i", data, pos)
        pos += 12
        ne = struct.unpack_from(f"<{n_dims}i", data, pos)
        pos += 4 * n_dims
        name = data[pos:pos + name_len].decode()
        pos += name_len
        pos += -pos % 32
        nbytes = (4 if ftype == 0 else 2)
        for n in ne:
            nbytes *= n
        records.append(GglaRecord(name, ne, ftype, pos, nbytes))
        pos += nbytes
    return {"version": version, "r": r, "lora_alpha": alpha}, records


def header_words(path: Path) -> list[int]:
    """Offsets of every 4-byte header word of a ggcp, ggcl or ggla file (not payloads, not names):
    the fixed header, each tensor record's n_dims, name_len, type and ne, and the optimizer
    context's scalars. Found from layouts.md alone."""
    data = path.read_bytes()
    if data[:4] == b"algg":
        words = [0, 4, 8, 12]
        for record_start in _ggla_record_starts(data):
            n_dims = struct.unpack_from("<i", data, record_start)[0]
            words += [record_start + 4 * i for i in range(3 + n_dims)]
        return words
    reading = read_checkpoint(path)
    fixed = 11 + (12 if data[:4] == b"lcgg" else 0)
    words = [4 * i for i in range(fixed)]
    records = list(reading.model_tensors) + list(reading.opt["tensors"].values())  # type: ignore[union-attr]
    for record in records:
        words += [record.header_offset + 4 * i for i in range(3 + len(record.ne))]
    opt = reading.opt_offset
    if reading.opt["version"] == 0:
        words += [opt + 4 * i for i in range(1 + 24 + 4)]  # version, ggml_opt_params, nx (i64), iter, flag
    else:
        words += [opt + 4 * i for i in range(1 + 2 + 2 + 2)]  # version, past, lbfgs_m, nx (u64), iter, flag
    tail = 12 if reading.opt["type"] == 0 else 24
    words += [reading.end - tail + 4 * i for i in range(tail // 4)]
    return sorted(set(words))


def payload_middles(path: Path) -> list[int]:
    """An offset inside each non-empty payload."""
    data = path.read_bytes()
    if data[:4] == b"algg":
        return [r.data_offset + r.nbytes // 2 for r in read_ggla(path)[1] if r.nbytes]
    reading = read_checkpoint(path)
    records = list(reading.model_tensors) + list(reading.opt["tensors"].values())  # type: ignore[union-attr]
    return [r.data_offset + r.nbytes // 2 for r in records if r.nbytes]


def _ggla_record_starts(data: bytes) -> list[int]:
    pos, starts = 16, []
    while pos < len(data):
        starts.append(pos)
        n_dims, name_len, ftype = struct.unpack_from("<3i", data, pos)
        pos += 12 + 4 * n_dims
        ne = struct.unpack_from(f"<{n_dims}i", data, pos - 4 * n_dims)
        pos += name_len
        pos += -pos % 32
        nbytes = 4 if ftype == 0 else 2
        for n in ne:
            nbytes *= n
        pos += nbytes
    return starts


def gguf_header_words(path: Path, items_per_array: int = 3) -> list[int]:
    """Offsets of the 4-byte words of a GGUF file's header, metadata and tensor infos (u64s as
    two words), found with gguf-py's own reader; of each array, the first few items only."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(path)
    entries = [*reader.fields.values(), *(t.field for t in reader.tensors)]
    words: list[int] = []
    for entry in entries:
        pos, integers = entry.offset, 0
        for part in entry.parts:
            if part.dtype.kind in "iu" and part.dtype.itemsize in (4, 8) and part.size == 1:
                integers += 1
                if integers <= 3 + 2 * items_per_array:
                    words += [pos + 4 * i for i in range(part.dtype.itemsize // 4)]
            pos += int(np.asarray(part).nbytes)
    return sorted(set(words))
