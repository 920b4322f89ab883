"""`--outtype` converts every tensor type it accepts by that type's real layout (q8_0 and the 2023
block layouts dequantized, never reinterpreted), and a value the new type cannot hold is an error
naming the tensor, never a silent inf. References: q8_0 dequantized by hand from its layout
(layouts.md: an f16 scale, then 32 int8 weights), and the 2023 ggml's own dequantization
(fixtures/legacy/dequant/)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from conftest import FIXTURES, Fmt, assert_clean_failure
from test_legacy_convert import DEQUANT_TOLERANCE, gguf_name

LEGACY = FIXTURES / "legacy"


def q8_0_by_hand(data: bytes, n: int) -> np.ndarray[Any, Any]:
    """q8_0 blocks of 34 bytes (f16 d, 32 x int8 q) as their values d * q."""
    blocks = np.frombuffer(data, dtype=np.dtype([("d", "<f2"), ("q", "i1", 32)]), count=n // 32)
    values: np.ndarray[Any, Any] = (blocks["d"].astype(np.float32)[:, None] * blocks["q"].astype(np.float32))
    return values.reshape(-1)


def write_gguf(path: Path, tensors: dict[str, tuple[np.ndarray[Any, Any], Any]]) -> None:
    writer = gguf.GGUFWriter(path, "llama")
    for name, (data, raw) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def tensor_values(path: Path, name: str) -> tuple[str, np.ndarray[Any, Any]]:
    tensor = next(t for t in gguf.GGUFReader(path).tensors if t.name == name)
    if tensor.tensor_type == gguf.GGMLQuantizationType.BF16:
        raw = np.asarray(tensor.data).view("<u2").astype(np.uint32) << 16
        return "BF16", raw.view(np.float32).reshape(-1)
    return tensor.tensor_type.name, np.asarray(tensor.data, dtype=np.float32).reshape(-1)


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16"])
def test_q8_0_tensors_are_dequantized_not_reinterpreted(outtype: str, tmp_path: Path, fmt: Fmt) -> None:
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((64, 64)).astype(np.float32)
    quantized = gguf.quants.quantize(weights, gguf.GGMLQuantizationType.Q8_0)
    source = tmp_path / "q8.gguf"
    # the q8_0 tensor first and last: a misread runs into the next tensor, or off the file
    write_gguf(source, {"blk.0.attn_q.weight": (quantized, gguf.GGMLQuantizationType.Q8_0),
                        "blk.0.attn_k.weight": (weights, None),
                        "blk.0.attn_v.weight": (quantized, gguf.GGMLQuantizationType.Q8_0)})
    expected = q8_0_by_hand(quantized.tobytes(), weights.size)
    out = tmp_path / "out.gguf"
    result = fmt("to-gguf", source, "--outtype", outtype, "-o", out)
    assert result.code == 0 and result.err == "", result.err
    for name in ("blk.0.attn_q.weight", "blk.0.attn_v.weight"):
        kind, values = tensor_values(out, name)
        assert kind == outtype.upper()
        if outtype == "f32":
            assert np.array_equal(values, expected)
        else:
            rounded = expected.astype(np.float16) if outtype == "f16" else expected
            assert np.abs(values - rounded).max() <= (0 if outtype == "f16" else 2 ** -8 * np.abs(expected).max())


@pytest.mark.parametrize(("stem", "outtype"), [("ggjt-v1-q8_0", "f16"), ("ggjt-v1-q8_0", "f32"),
                                               ("ggjt-v2-q8_0", "f32"), ("ggjt-v1-q4_2", "q8_0"),
                                               ("ggjt-v3-q8_0", "f16")])
def test_2023_blocks_convert_to_any_outtype(stem: str, outtype: str, tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "out.gguf"
    result = fmt("to-gguf", LEGACY / f"{stem}.bin", "--outtype", outtype, "-o", out)
    assert result.code == 0 and result.err == "", result.err
    kind = stem.split("-")[2]
    # the v1 values hold for v2 and v3 q8_0 (fixtures/legacy/README.md) up to the f16 rounding of scales
    reference = np.load(LEGACY / "dequant" / f"ggjt-v1-{kind}.dequant.npz")
    step = {"f32": DEQUANT_TOLERANCE, "f16": 2e-3, "q8_0": 1e-2}[outtype]  # plus the new type's rounding
    for name in reference.files:
        if reference[name].ndim == 1:
            continue
        tensor = next(t for t in gguf.GGUFReader(out).tensors if t.name == gguf_name(name))
        assert tensor.tensor_type.name == outtype.upper()
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(reference[name].shape)
        assert np.abs(values - reference[name]).max() <= step, name


@pytest.mark.parametrize(("outtype", "value", "words"), [
    ("f16", 1e5, "beyond f16's range"), ("q8_0", 1e10, "beyond q8_0's range"),
    ("bf16", 3.4028234e38, "beyond bf16's range"), ("q8_0", float("nan"), "not a number q8_0 can hold"),
    ("f16", 65520.0, "beyond f16's range")])
def test_a_value_the_outtype_cannot_hold_is_an_error_naming_the_tensor(outtype: str, value: float, words: str,
                                                                       tmp_path: Path, fmt: Fmt) -> None:
    weights = np.ones((4, 64), dtype=np.float32)
    weights[2, 5] = value
    source = tmp_path / "big.gguf"
    write_gguf(source, {"blk.0.attn_k.weight": (np.ones((4, 64), dtype=np.float32), None),
                        "blk.0.attn_q.weight": (weights, None)})
    line = assert_clean_failure(fmt("to-gguf", source, "--outtype", outtype, "-o", tmp_path / "out.gguf"))
    assert f"big.gguf: tensor blk.0.attn_q.weight: --outtype {outtype}: the value" in line
    assert "at row 2, column 5" in line and words in line
    assert not (tmp_path / "out.gguf").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["big.gguf"]


def test_f16_keeps_the_largest_value_it_can_hold(tmp_path: Path, fmt: Fmt) -> None:
    weights = np.full((2, 32), 65504.0, dtype=np.float32)
    source = tmp_path / "edge.gguf"
    write_gguf(source, {"blk.0.attn_q.weight": (weights, None)})
    out = tmp_path / "out.gguf"
    assert fmt("to-gguf", source, "--outtype", "f16", "-o", out).code == 0
    assert np.array_equal(tensor_values(out, "blk.0.attn_q.weight")[1], weights.reshape(-1))


def first_tensor_offset(path: Path) -> int:
    """Where the first tensor's data starts in a GGJT file (layouts.md: magic, version, 7 hparams,
    the vocabulary as (length, bytes, f32 score), then each tensor's n_dims, name length, type, ne,
    name, padding to 32 bytes)."""
    data = path.read_bytes()
    n_vocab = struct.unpack_from("<I", data, 8)[0]
    at = 8 + 7 * 4
    for _ in range(n_vocab):
        (length,) = struct.unpack_from("<I", data, at)
        at += 4 + length + 4
    n_dims, name_length, _ = struct.unpack_from("<3I", data, at)
    at += 12 + 4 * n_dims + name_length
    return (at + 31) // 32 * 32


@pytest.mark.parametrize(("stem", "scale_format", "value"), [
    ("ggjt-v1-q4_0", "<f", 70000.0), ("ggjt-v1-q4_0", "<f", float("nan")), ("ggjt-v2-q4_0", "<f", 1e10),
    ("ggjt-v1-q8_0", "<f", float("inf")), ("ggjt-v1-q4_1", "<f", 70000.0), ("ggjt-v1-q4_2", "<e", float("inf")),
    ("ggjt-v1-q4_2", "<e", float("nan"))])
def test_a_2023_scale_today_cannot_hold_is_an_error_at_its_block(stem: str, scale_format: str, value: float,
                                                                  tmp_path: Path, fmt: Fmt) -> None:
    data = bytearray((LEGACY / f"{stem}.bin").read_bytes())
    offset = first_tensor_offset(LEGACY / f"{stem}.bin")
    struct.pack_into(scale_format, data, offset, value)
    damaged = tmp_path / "in.bin"
    damaged.write_bytes(bytes(data))
    out = tmp_path / "out.gguf"
    line = assert_clean_failure(fmt("to-gguf", damaged, "-o", out))
    assert f"in.bin: field token_embd.weight (block 0) at byte {offset}: a " in line
    assert "cannot be written in today's layout" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.bin"]


def test_a_type_without_a_dequantization_is_refused_before_writing(tmp_path: Path, fmt: Fmt,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    quantized = gguf.quants.quantize(rng.standard_normal((4, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    source = tmp_path / "q.gguf"
    write_gguf(source, {"blk.0.attn_q.weight": (quantized, gguf.GGMLQuantizationType.Q8_0)})

    def no_dequantization(data: Any, qtype: Any) -> Any:
        raise NotImplementedError(f"Dequantization for {qtype.name} is not yet implemented")

    monkeypatch.setattr(gguf.quants, "dequantize", no_dequantization)
    line = assert_clean_failure(fmt("to-gguf", source, "--outtype", "f16", "-o", tmp_path / "out.gguf"))
    assert "tensor blk.0.attn_q.weight: --outtype f16: its type q8_0 cannot be converted" in line
