"""Outputs: never replace a file without --force, never the input, default name next to the input."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import GENUINE, SYNTH, Fmt, assert_clean_failure

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


def test_a_long_output_name_the_file_system_takes_is_taken(tmp_path: Path, fmt: Fmt) -> None:
    # 250 bytes: within 255, but not with a visible temporary suffix
    out = tmp_path / ("b" * 245 + ".gguf")
    result = fmt("to-gguf", SOURCE, "-o", out)
    assert result.code == 0, result.err
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_errors_name_the_output_not_its_temporary_file(tmp_path: Path, fmt: Fmt) -> None:
    missing = tmp_path / "gone"
    missing.mkdir()
    missing.chmod(0o500)  # no entries can be made (root is told so by the next line's check)
    out = missing / "x.gguf"
    try:
        result = fmt("to-gguf", SOURCE, "-o", out)
    finally:
        missing.chmod(0o700)
    if result.code == 0:  # root may write anywhere: then the name in an error is checked on /proc
        out = Path("/proc/x.gguf")
        result = fmt("to-gguf", SOURCE, "-o", out)
    line = assert_clean_failure(result)
    assert line.startswith(f"fmt: error: {out}: ") and "partial" not in line, line


def test_an_input_that_shrinks_while_it_is_read_is_named(tmp_path: Path, fmt: Fmt,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from ggfmt import engine

    source = tmp_path / "in.gguf"
    shutil.copy(GENUINE / "tiny-llama-f32.gguf", source)
    real_parse = engine.parse

    def parse_then_shrink(*args: Any, **kwargs: Any) -> Any:
        doc = real_parse(*args, **kwargs)
        if Path(args[0]) == source:
            with open(source, "r+b") as f:
                f.truncate(source.stat().st_size // 2)  # as a download restarting over it
        return doc

    monkeypatch.setattr(engine, "parse", parse_then_shrink)
    for command in (["edit", source, "--set", "general.file_type=1", "-o", tmp_path / "out.gguf"],
                    ["to-gguf", source, "--outtype", "f16", "-o", tmp_path / "out.gguf"]):
        shutil.copy(GENUINE / "tiny-llama-f32.gguf", source)
        line = assert_clean_failure(fmt(*command))
        assert f"{source}: the file ended at byte" in line and "it shrank while it was read" in line, line
        assert not (tmp_path / "out.gguf").exists()
