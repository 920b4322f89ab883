"""GGUF files parse through schemas/gguf.yaml, in agreement with gguf-py's own reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import pytest

from conftest import FIXTURES, GENUINE, Fmt, assert_clean_failure

FILES = [GENUINE / "tiny-llama-f32.gguf", GENUINE / "chk-train.gguf", FIXTURES / "peft" / "lora.ref.gguf",
         FIXTURES / "clip" / "ref" / "mmproj-model-f16.gguf", FIXTURES / "clip" / "ref" / "model-f16.gguf"]


# gguf-py's names of GGUF value types -> ggfmt's
TYPE_NAMES = {"UINT8": "u8", "INT8": "i8", "UINT16": "u16", "INT16": "i16", "UINT32": "u32", "INT32": "i32",
              "FLOAT32": "f32", "BOOL": "bool", "STRING": "str", "UINT64": "u64", "INT64": "i64", "FLOAT64": "f64"}


def plain(entry: Any) -> Any:
    """A GGUF value of `fmt parse --json` as gguf-py's contents() gives it."""
    value = entry["value"]
    return [plain(v) for v in value] if value and isinstance(value, list) and isinstance(value[0], dict) else value


def type_label(field: Any) -> str:
    """gguf-py's types of a field as ggfmt names them: u32, str[], u8[][]."""
    names = [t.name for t in field.types]
    return TYPE_NAMES[names[-1]] + "[]" * names.count("ARRAY") if names[-1] != "ARRAY" else "array"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_parse_agrees_with_gguf_py(path: Path, fmt: Fmt) -> None:
    result = fmt("parse", path, "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["schema"] == "gguf"
    reader = gguf.GGUFReader(path)
    expected = {f.name: f.contents() for f in reader.fields.values() if not f.name.startswith("GGUF.")}
    metadata = doc["fields"]["metadata"]
    ours = {key: plain(entry) for key, entry in metadata.items()}
    assert ours.keys() == expected.keys()
    assert {key: entry["type"] for key, entry in metadata.items()} == \
        {f.name: type_label(f) for f in reader.fields.values() if not f.name.startswith("GGUF.")}
    for key, value in expected.items():
        if key in ("general.alignment",):
            continue
        if isinstance(value, bool):
            assert ours[key] is value, key
        elif isinstance(value, float) or (isinstance(value, list) and value and isinstance(value[0], float)):
            assert ours[key] == pytest.approx(value), key
        else:
            assert ours[key] == value, key
    assert [(t["name"], t["offset"], t["nbytes"], t["ne"]) for t in doc["tensors"]] == \
        [(t.name, int(t.data_offset), int(t.n_bytes), [int(n) for n in t.shape]) for t in reader.tensors]
    assert [t["ggml_type"] for t in doc["tensors"]] == [int(t.tensor_type) for t in reader.tensors]


def test_arrays_of_every_type_read_in_bulk_agree_with_gguf_py(tmp_path: Path, fmt: Fmt) -> None:
    """Arrays of each primitive type (read in one call) and of strings (read in one pass), with
    values at the ends of each type's range, as gguf-py writes and reads them."""
    import numpy as np

    path = tmp_path / "arrays.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    types = gguf.GGUFValueType
    kinds = {"u8": (np.uint8, types.UINT8), "i8": (np.int8, types.INT8), "u16": (np.uint16, types.UINT16),
             "i16": (np.int16, types.INT16), "u32": (np.uint32, types.UINT32), "i32": (np.int32, types.INT32),
             "u64": (np.uint64, types.UINT64), "i64": (np.int64, types.INT64)}
    for name, (dtype, value_type) in kinds.items():
        info = np.iinfo(dtype)
        writer.add_key_value(f"a.{name}", [int(info.min), 0, 1, int(info.max)] * 50, types.ARRAY, sub_type=value_type)
    writer.add_array("a.f32", [0.5, -1.25, 3.4028234663852886e38] * 50)
    writer.add_key_value("a.f64", [0.1, -2.5e300] * 50, gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.FLOAT64)
    writer.add_array("a.str", ["", "tok", "\u00e9t\u00e9", "a" * 300] * 50)
    writer.add_array("a.bool", [True, False] * 50)
    writer.add_tensor("t", np.arange(32, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    result = fmt("parse", path, "--json")
    assert result.code == 0, result.err
    metadata = json.loads(result.out)["fields"]["metadata"]
    reader = gguf.GGUFReader(path)
    for field in reader.fields.values():
        if field.name.startswith("a."):
            assert plain(metadata[field.name]) == field.contents(), field.name
            assert metadata[field.name]["type"] == type_label(field)


def test_array_larger_than_the_file_is_refused_before_reading(tmp_path: Path, fmt: Fmt) -> None:
    import struct

    key = struct.pack("<Q", 1) + b"a"
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + key + struct.pack("<IIQ", 9, 12, 20)
    path = tmp_path / "claims.gguf"
    path.write_bytes(header + bytes(64))
    line = assert_clean_failure(fmt("parse", path))
    assert "20 x 8 bytes expected, only 64 left" in line  # 20 f64 items
