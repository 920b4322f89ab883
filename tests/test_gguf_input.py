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


def plain(value: Any) -> Any:
    """A parsed GGUF value as gguf-py's contents() gives it."""
    if isinstance(value, dict) and "text" in value:
        return value["text"]
    if isinstance(value, dict) and "items" in value:
        return [plain(v) for v in value["items"]]
    return value


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_parse_agrees_with_gguf_py(path: Path, fmt: Fmt) -> None:
    result = fmt("parse", path, "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["schema"] == "gguf"
    reader = gguf.GGUFReader(path)
    expected = {f.name: f.contents() for f in reader.fields.values() if not f.name.startswith("GGUF.")}
    ours = {kv["key"]["text"]: plain(kv["value"]) for kv in doc["fields"]["metadata"]}
    assert ours.keys() == expected.keys()
    for key, value in expected.items():
        if key in ("general.alignment",):
            continue
        if isinstance(value, bool):
            assert ours[key] == int(value), key
        elif isinstance(value, float) or (isinstance(value, list) and value and isinstance(value[0], float)):
            assert ours[key] == pytest.approx(value), key
        else:
            assert ours[key] == value, key
    assert [(t["name"], t["offset"], t["nbytes"], t["ne"]) for t in doc["tensors"]] == \
        [(t.name, int(t.data_offset), int(t.n_bytes), [int(n) for n in t.shape]) for t in reader.tensors]
    assert [t["ggml_type"] for t in doc["tensors"]] == [int(t.tensor_type) for t in reader.tensors]


def test_gguf_is_read_not_converted(tmp_path: Path, fmt: Fmt) -> None:
    line = assert_clean_failure(fmt("to-gguf", GENUINE / "tiny-llama-f32.gguf", "-o", tmp_path / "x.gguf"))
    assert "no GGUF conversion for gguf files" in line
