"""Outputs: never replace a file without --force, never the input, default name next to the input."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import SYNTH, Fmt, assert_clean_failure

SOURCE = SYNTH / "ggcp-v1-adam-past3.bin"


def test_existing_output_is_kept_without_force(tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "x.gguf"
    out.write_bytes(b"precious")
    line = assert_clean_failure(fmt("to-gguf", SOURCE, "-o", out))
    assert "--force" in line
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.gguf"]


def test_force_replaces(tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "x.gguf"
    out.write_bytes(b"old")
    result = fmt("to-gguf", SOURCE, "-o", out, "--force")
    assert result.code == 0
    assert out.read_bytes()[:4] == b"GGUF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.gguf"]


def test_input_is_never_the_output(tmp_path: Path, fmt: Fmt) -> None:
    source = tmp_path / "ckpt.bin"
    shutil.copy(SOURCE, source)
    line = assert_clean_failure(fmt("to-gguf", source, "-o", source, "--force"))
    assert "is also an input" in line
    assert source.read_bytes() == SOURCE.read_bytes()


def test_default_output_name(tmp_path: Path, fmt: Fmt) -> None:
    source = tmp_path / "ckpt.bin"
    shutil.copy(SOURCE, source)
    result = fmt("to-gguf", source)
    assert result.code == 0
    assert (tmp_path / "ckpt.gguf").read_bytes()[:4] == b"GGUF"
    assert str(tmp_path / "ckpt.gguf") in result.out


def test_failed_conversion_leaves_existing_output(tmp_path: Path, fmt: Fmt) -> None:
    source = tmp_path / "ckpt.bin"
    source.write_bytes(SOURCE.read_bytes()[:-1])
    out = tmp_path / "x.gguf"
    out.write_bytes(b"precious")
    assert_clean_failure(fmt("to-gguf", source, "-o", out, "--force"))
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.bin", "x.gguf"]
