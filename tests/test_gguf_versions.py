"""GGUF versions 1, 2 and 3 read alike, checked against gguf-py's reader; long arrays read in bulk.

gguf-py writes and reads versions 2 and 3 (the same layout for little-endian files); version 1
(August 2023: counts, lengths and dimensions as u32) it no longer reads, so the version-1 file here
is written from that specification by this test, and compared with gguf-py's reading of the same
content written as version 3.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from conftest import Fmt, assert_clean_failure
from test_gguf_input import plain, type_label

VT = gguf.GGUFValueType
TENSORS = {"tok.weight": np.arange(64, dtype=np.float32).reshape(8, 8), "norm.weight": np.ones(8, dtype=np.float32)}
VALUES: list[tuple[str, Any, VT, VT | None]] = [
    ("general.name", "tiny \u00e9", VT.STRING, None),
    ("tiny.count", 7, VT.UINT32, None),
    ("tiny.signed", -3, VT.INT32, None),
    ("tiny.eps", 1e-5, VT.FLOAT32, None),
    ("tiny.flag", True, VT.BOOL, None),
    ("tiny.byte", 250, VT.UINT8, None),
    ("tokenizer.ggml.tokens", [f"t{i}\u0120" for i in range(300)], VT.ARRAY, VT.STRING),
    ("tokenizer.ggml.scores", [i / 8 for i in range(300)], VT.ARRAY, VT.FLOAT32),
    ("tokenizer.ggml.token_type", [i % 6 for i in range(300)], VT.ARRAY, VT.INT32),
    ("tiny.small", [1, 2, 3], VT.ARRAY, VT.UINT16),
]
V1_CODES = {VT.UINT8: "B", VT.INT8: "b", VT.UINT16: "H", VT.INT16: "h", VT.UINT32: "I", VT.INT32: "i",
            VT.FLOAT32: "f", VT.BOOL: "?"}


def write_v3(path: Path) -> None:
    writer = gguf.GGUFWriter(path, "tiny")
    for key, value, vtype, sub in VALUES:
        writer.add_key_value(key, value, vtype, sub_type=sub)
    for name, data in TENSORS.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def v1_str(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<I", len(data)) + data


def v1_value(vtype: VT, value: Any, sub: VT | None) -> bytes:
    if vtype == VT.STRING:
        return v1_str(value)
    if vtype == VT.ARRAY:
        assert sub is not None
        body = b"".join(v1_str(v) for v in value) if sub == VT.STRING else \
            struct.pack(f"<{len(value)}{V1_CODES[sub]}", *value)
        return struct.pack("<II", sub, len(value)) + body
    return struct.pack("<" + V1_CODES[vtype], value)


def write_v1(path: Path) -> None:
    """Version 1 as llama.cpp's reader of September 2023 reads it: u32 counts, u32 string and array
    lengths, u32 dimensions; u64 tensor offsets from the data section, aligned to 32."""
    kvs = [("general.architecture", "tiny", VT.STRING, None), *VALUES]
    out = bytearray(b"GGUF" + struct.pack("<III", 1, len(TENSORS), len(kvs)))
    for key, value, vtype, sub in kvs:
        out += v1_str(key) + struct.pack("<I", vtype) + v1_value(vtype, value, sub)
    offset, blobs = 0, []
    for name, data in TENSORS.items():
        ne = list(reversed(data.shape))
        out += v1_str(name) + struct.pack(f"<I{len(ne)}IIQ", len(ne), *ne, 0, offset)
        blobs.append(data.tobytes() + bytes(-data.nbytes % 32))
        offset += len(blobs[-1])
    out += bytes(-len(out) % 32)
    path.write_bytes(bytes(out) + b"".join(blobs))


def parsed(fmt: Fmt, path: Path) -> dict[str, Any]:
    result = fmt("parse", path, "--json")
    assert result.code == 0, result.err
    doc: dict[str, Any] = json.loads(result.out)
    return doc


@pytest.mark.parametrize("version", [1, 2, 3])
def test_every_version_reads_as_gguf_py_reads_its_content(tmp_path: Path, fmt: Fmt, version: int) -> None:
    v3 = tmp_path / "v3.gguf"
    write_v3(v3)
    path = tmp_path / f"v{version}.gguf"
    if version == 1:
        write_v1(path)
    else:  # versions 2 and 3 differ only in the version word for a little-endian file
        data = bytearray(v3.read_bytes())
        data[4:8] = struct.pack("<I", version)
        path.write_bytes(bytes(data))
    reader = gguf.GGUFReader(v3 if version == 1 else path)
    doc = parsed(fmt, path)
    assert doc["fields"]["version"] == version
    metadata = doc["fields"]["metadata"]
    fields = {f.name: f for f in reader.fields.values() if not f.name.startswith("GGUF.")}
    assert list(metadata) == list(fields)
    for key, field in fields.items():
        expected = field.contents()
        if isinstance(expected, float) or (isinstance(expected, list) and isinstance(expected[0], float)):
            assert plain(metadata[key]) == pytest.approx(expected), key
        else:
            assert plain(metadata[key]) == expected, key
        assert metadata[key]["type"] == type_label(field), key
    data = path.read_bytes()
    for ours, theirs in zip(doc["tensors"], reader.tensors, strict=True):
        assert (ours["name"], ours["ne"], ours["ggml_type"]) == \
            (theirs.name, [int(n) for n in theirs.shape], int(theirs.tensor_type))
        assert data[ours["offset"]:ours["offset"] + ours["nbytes"]] == theirs.data.tobytes()
    text = fmt("parse", path).out
    assert f"version       {version}" in text and "[300 × str]  tokenizer.ggml.tokens = 't0Ġ', 't1Ġ', … 't299Ġ'" in text  # noqa: RUF001


def test_version_1_keeps_its_32_bit_lengths_in_the_raw_view(tmp_path: Path, fmt: Fmt) -> None:
    path = tmp_path / "v1.gguf"
    write_v1(path)
    doc = json.loads(fmt("parse", path, "--json", "--raw").out)
    assert doc["fields"]["tensor_count"] == 2 and doc["fields"]["metadata"][0]["key"] == "general.architecture"
    assert doc["fields"]["metadata"][0]["value_type"] == 8


def test_a_claim_of_millions_of_items_fails_before_any_is_read(tmp_path: Path, fmt: Fmt) -> None:
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"a"
    cases = ((12, 5_000_000, "5000000 elements expected, only 4096 bytes left"), (12, 1000, "1000 x 8 bytes expected"),
             (8, 1000, "1000 strings need at least 8000 bytes"))
    for item_type, claim, item in cases:
        path = tmp_path / f"claim{item_type}-{claim}.gguf"
        path.write_bytes(header + struct.pack("<IIQ", 9, item_type, claim) + bytes(4096))
        line = assert_clean_failure(fmt("parse", path))
        assert item in line and "metadata[0].value.items" in line


def test_text_that_is_not_utf8_in_a_bulk_string_array_is_reported_with_its_offset(tmp_path: Path, fmt: Fmt) -> None:
    items = [b"ok"] * 99 + [b"\xff\xfe"]
    body = b"".join(struct.pack("<Q", len(t)) + t for t in items)
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"a" + struct.pack("<IIQ", 9, 8, 100)
    path = tmp_path / "bad.gguf"
    path.write_bytes(header + body + bytes(-(len(header) + len(body)) % 32))
    for extra in ((), ("--json",)):
        result = fmt("parse", path, *extra)
        line = assert_clean_failure(result)
        assert "metadata[0].value.items[99]" in line and f"byte {len(header) + len(body) - 2}" in line
        assert result.out == ""
