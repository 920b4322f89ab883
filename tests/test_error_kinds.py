"""Errors carry facts as well as their one line: a truncation the bytes it needed and those left, a
failed check what was expected and what was read. The line users read is the one it was."""

from __future__ import annotations

import struct
import textwrap
from pathlib import Path

import pytest

import ggfmt
from ggfmt.errors import FormatError, Truncated, ValidationFailed

SCHEMA = """
meta: {id: kinds}
seq:
  - {id: magic, contents: KIND}
  - {id: n, type: u32, valid: {min: 1, max: 4}}
  - {id: mode, type: u8, valid: {any-of: [1, 2]}}
  - {id: name, type: str, size-prefix: u32, encoding: utf-8}
  - {id: values, type: u16, repeat: n}
"""


def parse(tmp_path: Path, data: bytes) -> ggfmt.Document:
    schema = tmp_path / "kinds.yaml"
    schema.write_text(textwrap.dedent(SCHEMA))
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    return ggfmt.parse(path, str(schema))


def good(n: int = 2, mode: int = 1, name: bytes = b"ab") -> bytes:
    return b"KIND" + struct.pack("<IB", n, mode) + struct.pack("<I", len(name)) + name + b"\1\0" * n


def test_a_good_file_parses(tmp_path: Path) -> None:
    assert parse(tmp_path, good()).fields["values"] == [1, 1]


@pytest.mark.parametrize("data, path, offset, needed, available, line", [
    (good()[:-1], "values", 15, 4, 3, "field values at byte 15: 2 x 2 bytes expected, only 3 left in the file"),
    (good()[:10], "name", 9, 4, 1, "field name at byte 9: unexpected end of file: a 4-byte size expected, 1 left"),
    (good()[:12], "name", 9, 4, 3, "field name at byte 9: unexpected end of file: a 4-byte size expected, 3 left"),
    (good()[:14], "name", 9, 6, 5, "field name at byte 9: a size of 2 bytes, only 1 left in the file"),
    (good()[:6], "n", 4, 4, 2, "field n at byte 4: unexpected end of file: 4 bytes expected, 2 left"),
])
def test_a_truncation_says_what_it_needed_and_what_was_left(tmp_path: Path, data: bytes, path: str, offset: int,
                                                           needed: int, available: int, line: str) -> None:
    with pytest.raises(Truncated) as caught:
        parse(tmp_path, data)
    error = caught.value
    assert (error.path, error.offset, error.needed, error.available) == (path, offset, needed, available)
    assert str(error) == f"{tmp_path / 'data.bin'}: {line}"
    assert isinstance(error, FormatError) and not isinstance(error, ValidationFailed)


@pytest.mark.parametrize("data, path, expected, actual, line", [
    (b"KINX" + good()[4:], "magic", b"KIND", b"KINX", "field magic at byte 0: expected b'KIND', got b'KINX'"),
    (good(n=0), "n", 1, 0, "field n at byte 4: expected at least 1, got 0"),
    (good(n=9), "n", 4, 9, "field n at byte 4: expected at most 4, got 9"),
    (good(mode=3), "mode", [1, 2], 3, "field mode at byte 8: expected one of [1, 2], got 3"),
])
def test_a_failed_check_says_what_was_expected_and_what_was_read(tmp_path: Path, data: bytes, path: str,
                                                                 expected: object, actual: object, line: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse(tmp_path, data)
    error = caught.value
    assert (error.path, error.expected, error.actual) == (path, expected, actual)
    assert str(error) == f"{tmp_path / 'data.bin'}: {line}"
    assert not isinstance(error, Truncated)


def test_other_mismatches_stay_plain_format_errors(tmp_path: Path) -> None:
    with pytest.raises(FormatError) as caught:
        parse(tmp_path, good(name=b"\xff\xfe"))
    assert type(caught.value) is FormatError
    assert "field name at byte 13: not valid utf-8" in str(caught.value)


def test_the_kinds_are_part_of_the_library() -> None:
    assert ggfmt.Truncated is Truncated and ggfmt.ValidationFailed is ValidationFailed
    assert issubclass(ggfmt.Truncated, ggfmt.FormatError) and issubclass(ggfmt.ValidationFailed, ggfmt.FormatError)
