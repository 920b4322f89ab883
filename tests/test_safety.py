"""Code safety at the command line: hostile schemas are refused when loaded; internal errors are
short and say so; exit statuses are as documented."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import ggfmt.engine
from conftest import GENUINE, Fmt, assert_clean_failure

HOSTILE = {
    "python tag": "seq: [{id: a, type: u32, valid: !!python/object/apply:os.system ['touch PWNED']}]",
    "dunder attribute": "seq: [{id: a, type: u32, valid: {expr: \"_.__class__.__subclasses__()\"}}]",
    "call": "seq: [{id: a, type: bytes, size: \"open('PWNED', 'w') or 4\"}]",
    "import": "seq: [{id: a, type: bytes, size: \"__import__('os').system('touch PWNED')\"}]",
    "lambda": "seq: [{id: a, type: u32, repeat: \"(lambda: 1)()\"}]",
    "nested comprehension": "seq: [{id: a, type: u32, repeat: \"sum([1 for x in [1] for y in [1]])\"}]",
    "dunder name": "seq: [{id: a, type: u32, repeat: \"__builtins__\"}]",
}


@pytest.mark.parametrize("schema_text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_schema_refused_at_load_time(schema_text: str, tmp_path: Path, fmt: Fmt,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    schema = tmp_path / "hostile.yaml"
    schema.write_text(textwrap.dedent(schema_text))
    data = tmp_path / "data.bin"
    data.write_bytes(b"\0" * 16)
    line = assert_clean_failure(fmt("parse", data, "--schema", schema))
    assert "hostile.yaml" in line
    assert not (tmp_path / "PWNED").exists()


def test_internal_error_is_short_unless_debugging(fmt: Fmt, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something ggfmt did not expect")

    monkeypatch.setattr(ggfmt.engine, "parse", broken)
    result = fmt("parse", GENUINE / "ggcp-v0-adam.bin")
    assert result.code == 70  # never fmt diff's 1 ("the files differ")
    assert "internal error: RuntimeError: something ggfmt did not expect" in result.err
    assert "This is a bug in ggfmt" in result.err and "Traceback" not in result.err
    result = fmt("parse", GENUINE / "ggcp-v0-adam.bin", "--debug")
    assert result.code == 70 and "Traceback" in result.err


def test_exit_statuses_are_documented(fmt: Fmt) -> None:
    result = fmt("--help")
    assert result.code == 0
    for line in ("0  success", "2  bad input or usage", "70  internal error", "1  fmt diff: the files differ"):
        assert line in result.out
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "| 2 | bad input or usage" in readme and "| 70 | internal error" in readme


@pytest.mark.parametrize(("args", "usage"), [
    (["edit", "x.gguf", "--rename", "a=b", "-o", "y.gguf"], "fmt edit [options] IN.gguf"),
    (["parse", "x.gguf", "--no-tensor"], "fmt parse [options] FILE"),
    (["schema", "check", "x.yaml", "--bogus"], "fmt schema check [options] PATH"),
    (["--bogus"], "fmt COMMAND [options]"),
])
def test_an_unknown_or_abbreviated_option_gets_the_commands_usage(args: list[str], usage: str, fmt: Fmt) -> None:
    result = fmt(*args)
    assert result.code == 2 and len(result.err.splitlines()) == 1, result
    assert "unrecognized arguments" in result.err and f"(usage: {usage}" in result.err
