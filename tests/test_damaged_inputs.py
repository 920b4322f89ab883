"""Damaged inputs end with exit 2, one line naming file, field and byte offset, and no output."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from conftest import GENUINE, SYNTH, Fmt, assert_clean_failure, run_fmt
from legacy_reader import read_checkpoint

V0 = GENUINE / "ggcp-v0-adam.bin"
V1_ADAM = SYNTH / "ggcl-adam-past2.bin"


def damaged(tmp_path: Path, source: Path, data: bytes) -> Path:
    path = tmp_path / "in" / source.name
    path.parent.mkdir()
    path.write_bytes(data)
    return path


def convert_fails(tmp_path: Path, fmt: Fmt, path: Path) -> str:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = fmt("to-gguf", path, "-o", out_dir / "x.gguf")
    line = assert_clean_failure(result, out_dir)
    assert str(path) in line
    return line


def truncation_points() -> list[tuple[str, int]]:
    reading = read_checkpoint(V0)
    first, opt = reading.model_tensors[0], reading.opt
    m = opt["tensors"]["m"]  # type: ignore[index]
    return [
        ("empty file", 0), ("inside the magic", 2), ("after the magic", 4), ("inside the counters", 10),
        ("inside the hyperparameters", 30), ("inside a tensor header", first.header_offset + 6),
        ("inside a tensor name", first.header_offset + 20), ("inside the alignment padding", first.data_offset - 3),
        ("inside a payload", first.data_offset + 1000), ("at the optimizer version", reading.opt_offset),
        ("inside ggml_opt_params", reading.opt_offset + 50), ("inside the moments", m.data_offset + 7),
        ("one byte short", V0.stat().st_size - 1),
    ]


@pytest.mark.parametrize(("where", "size"), truncation_points(), ids=[w for w, _ in truncation_points()])
def test_truncated_genuine_checkpoint(where: str, size: int, tmp_path: Path, fmt: Fmt) -> None:
    path = damaged(tmp_path, V0, V0.read_bytes()[:size])
    line = convert_fails(tmp_path, fmt, path)
    if size < 4:  # not even the magic: no schema can be detected
        assert "match no schema" in line
    else:
        assert re.search(r"field \S+ at byte \d+", line), line


@pytest.mark.parametrize("cut", [4, 13, 500, 9000])
def test_truncated_v1_context_names_both_sizes(cut: int, tmp_path: Path, fmt: Fmt) -> None:
    reading = read_checkpoint(V1_ADAM)
    state = reading.opt_offset + 4 + 24  # version, then past, lbfgs_m, nx, iter, just_initialized
    full = V1_ADAM.stat().st_size
    remain = full - cut - state
    path = damaged(tmp_path, V1_ADAM, V1_ADAM.read_bytes()[:full - cut])
    line = convert_fails(tmp_path, fmt, path)
    assert f"field opt.ctx.type at byte {state}: no alternative fits" in line
    pf = reading.opt["tensors"]["pf"]  # type: ignore[index]
    if full - cut >= pf.header_offset + 8:  # the last header's name length is there to be read
        assert f"adam needs {full - state} bytes" in line
    else:  # a tensor header's name length is cut off: the size is known to be larger, not exactly
        assert f"adam needs more than {remain} bytes" in line
    assert f"lbfgs needs more than {remain} bytes" in line
    assert line.endswith(f"; {remain} bytes remain")


def patched(data: bytes, offset: int, value: int, fmt_: str = "<I") -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt_, buf, offset, value)
    return bytes(buf)


def cases() -> list[tuple[str, int, int, str]]:
    first = read_checkpoint(V0).model_tensors[0]
    h = first.header_offset
    return [
        ("wrong magic", 0, 0x12345678, "match no schema"),
        ("wrong version", 4, 1, "field version at byte 4: expected 0, got 1"),
        ("absurd n_dims", h, 0xFFFFFFFF, f"field tok_embeddings.n_dims at byte {h}: expected at most 4"),
        ("absurd name length", h + 4, 0x7FFFFFF0, f"field tok_embeddings.name at byte {h + 20}"),
        ("absurd dimension", h + 12, 0xFFFFFFF0, f"field tok_embeddings.ne at byte {h + 12}"),
        ("absurd layer count", 36, 0xFFFFFFFF, "field"),
        ("wrong tensor type", h + 8, 1, f"field tok_embeddings.ggml_type at byte {h + 8}: expected one of [0], got 1"),
        ("wrong optimizer version", read_checkpoint(V0).opt_offset, 7, "field opt.version"),
    ]


@pytest.mark.parametrize(("what", "offset", "value", "expected"), cases(), ids=[c[0] for c in cases()])
def test_corrupted_word(what: str, offset: int, value: int, expected: str, tmp_path: Path, fmt: Fmt) -> None:
    path = damaged(tmp_path, V0, patched(V0.read_bytes(), offset, value))
    line = convert_fails(tmp_path, fmt, path)
    assert expected in line


def test_absurd_dimension_product_is_refused_before_reading(tmp_path: Path, fmt: Fmt) -> None:
    # ne [0xFFFFFFF0] with n_dims patched to 1 would need 16 GiB: the size is checked against the file.
    first = read_checkpoint(V0).model_tensors[0]
    data = patched(patched(V0.read_bytes(), first.header_offset + 12, 0xFFFFFFF0), first.header_offset + 16, 1)
    line = convert_fails(tmp_path, fmt, damaged(tmp_path, V0, data))
    assert "field tok_embeddings" in line


def test_trailing_bytes_are_reported(tmp_path: Path, fmt: Fmt) -> None:
    size = V0.stat().st_size
    line = convert_fails(tmp_path, fmt, damaged(tmp_path, V0, V0.read_bytes() + b"\0" * 5))
    assert f"at byte {size}" in line and "5 more bytes" in line


def test_wrong_schema_named(fmt: Fmt) -> None:
    line = assert_clean_failure(fmt("parse", V0, "--schema", "ggcl"))
    assert "field magic at byte 0: expected b'lcgg', got b'pcgg'" in line


def test_missing_input(tmp_path: Path, fmt: Fmt) -> None:
    line = assert_clean_failure(fmt("parse", tmp_path / "nope.bin"))
    assert "nope.bin" in line


def test_real_process_prints_one_line(tmp_path: Path) -> None:
    path = damaged(tmp_path, V0, V0.read_bytes()[:1000])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = run_fmt("to-gguf", path, "-o", out_dir / "x.gguf")
    line = assert_clean_failure(result, out_dir)
    assert "field tok_embeddings.data at byte 96: payload of 35200 bytes expected, only 904 left" in line
