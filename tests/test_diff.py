"""`fmt diff A B`: exit 0 when equal, 1 when different (naming what differs), as diff(1)."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np

from conftest import GENUINE, Fmt
from test_gguf_versions import write_v1, write_v3

V0 = GENUINE / "ggcp-v0-adam.bin"
MODEL = GENUINE / "tiny-llama-f32.gguf"


def test_a_file_equals_itself(fmt: Fmt) -> None:
    for path in (MODEL, V0):
        result = fmt("diff", path, path)
        assert result.code == 0, result.err
        assert "equal" in result.out.splitlines()[-1]


def test_one_changed_tensor_byte_is_found_and_named(tmp_path: Path, fmt: Fmt) -> None:
    reader = gguf.GGUFReader(MODEL)
    target = reader.tensors[5]
    changed = tmp_path / "changed.gguf"
    data = bytearray(MODEL.read_bytes())
    data[int(target.data_offset) + 7] ^= 0x01
    changed.write_bytes(bytes(data))
    result = fmt("diff", MODEL, changed)
    assert result.code == 1, result.err
    lines = [line for line in result.out.splitlines() if line.startswith("  ~")]
    assert len(lines) == 1 and lines[0].startswith(f"  ~ {target.name}: content differs")
    doc = json.loads(fmt("diff", MODEL, changed, "--json", "--values").out)
    assert not doc["equal"] and doc["keys"] == []
    [entry] = doc["tensors"]
    assert entry["name"] == target.name and entry["change"] == "content" and entry["sha256"][0] != entry["sha256"][1]
    a = target.data.astype(np.float64).ravel()
    b = np.frombuffer(bytes(data[int(target.data_offset):int(target.data_offset) + int(target.n_bytes)]),
                      dtype=np.float32).astype(np.float64)
    assert entry["max_abs"] == float(np.max(np.abs(a - b)))


def _gguf(path: Path, name: str, tokens: list[str], tensor: np.ndarray) -> Path:
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(name)
    writer.add_token_list(tokens)
    writer.add_tensor("t.weight", tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_changed_keys_and_arrays_are_named_with_the_first_difference(tmp_path: Path, fmt: Fmt) -> None:
    tokens = [f"tok{i}" for i in range(500)]
    tensor = np.arange(32, dtype=np.float32)
    a = _gguf(tmp_path / "a.gguf", "one", tokens, tensor)
    b = _gguf(tmp_path / "b.gguf", "two", [*tokens[:321], "other", *tokens[322:]], tensor)
    result = fmt("diff", a, b)
    assert result.code == 1
    assert "  ~ general.name: str 'one' -> str 'two'" in result.out
    line = next(line for line in result.out.splitlines() if "tokenizer.ggml.tokens" in line)
    assert "first difference at [321]: 'tok321' -> 'other'" in line and len(line) < 300
    doc = json.loads(fmt("diff", a, b, "--json").out)
    tokens_entry = next(k for k in doc["keys"] if k["key"] == "tokenizer.ggml.tokens")
    assert tokens_entry == {"key": "tokenizer.ggml.tokens", "change": "changed", "first_difference": 321,
                            "a": {"type": "str[]", "length": 500}, "b": {"type": "str[]", "length": 500}}


def test_added_removed_and_retyped_tensors(tmp_path: Path, fmt: Fmt) -> None:
    a = _gguf(tmp_path / "a.gguf", "m", ["x"], np.arange(32, dtype=np.float32))
    writer = gguf.GGUFWriter(tmp_path / "b.gguf", "llama")
    writer.add_name("m")
    writer.add_token_list(["x"])
    writer.add_tensor("t.weight", np.arange(32, dtype=np.float16))
    writer.add_tensor("u.weight", np.zeros(4, dtype=np.float32))
    for step in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file,
                 writer.close):
        step()
    result = fmt("diff", a, tmp_path / "b.gguf", "--values")
    assert result.code == 1
    assert "  ~ t.weight: f32 32 -> f16 32; max abs difference 0, max relative difference 0" in result.out
    assert "  + u.weight: f32 4" in result.out


def test_versions_1_and_3_of_one_content_are_equal(tmp_path: Path, fmt: Fmt) -> None:
    v1, v3 = tmp_path / "v1.gguf", tmp_path / "v3.gguf"
    write_v1(v1)
    write_v3(v3)
    result = fmt("diff", v1, v3)
    assert result.code == 0, result.out + result.err
    assert "(gguf, version 1)" in result.out and "(gguf, version 3)" in result.out


def test_a_checkpoint_differs_from_its_copy_in_one_field(tmp_path: Path, fmt: Fmt) -> None:
    """A 2023 checkpoint's fields compare by path: train_its at byte 8 (layouts.md) changed from its value."""
    import struct

    copy = tmp_path / "copy.bin"
    data = bytearray(V0.read_bytes())
    (its,) = struct.unpack_from("<I", data, 8)
    struct.pack_into("<I", data, 8, its + 1)
    copy.write_bytes(bytes(data))
    result = fmt("diff", V0, copy)
    assert result.code == 1
    assert [line for line in result.out.splitlines() if line.startswith("  ")] == \
        [f"  ~ train_its: {its} -> {its + 1}"]


def test_brief_says_only_whether_they_differ(tmp_path: Path, fmt: Fmt) -> None:
    model = GENUINE / "tiny-llama-f32.gguf"
    edited = tmp_path / "e.gguf"
    assert fmt("edit", model, "--set", "general.file_type=1", "-o", edited).code == 0
    result = fmt("diff", "-q", model, edited)
    assert (result.code, result.out) == (1, f"{model} and {edited} differ\n")
    result = fmt("diff", "--brief", model, model)
    assert (result.code, result.out) == (0, "")


def test_nan_and_inf_are_values_that_differ(tmp_path: Path, fmt: Fmt) -> None:
    def write(path: Path, values: list[float]) -> None:
        writer = gguf.GGUFWriter(path, "llama")
        writer.add_tensor("t", np.array([values], dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    for left, right, expected in (([1.0, 2.0, float("nan")], [1.0, 2.0, 3.0], float("inf")),
                                  ([float("inf"), 2.0], [-float("inf"), 2.0], float("inf")),
                                  ([float("nan"), 2.0], [float("nan"), 2.5], 0.5)):
        write(a, left)
        write(b, right)
        result = fmt("diff", a, b, "--values", "--json")
        assert result.code == 1
        (change,) = json.loads(result.out)["tensors"]
        shown = change["max_abs"] if isinstance(change["max_abs"], float) else float(change["max_abs"])
        assert shown == expected, change
