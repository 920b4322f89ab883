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


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
@pytest.mark.parametrize("command", [["parse"], ["to-gguf"], ["diff", "SELF"], ["edit", "--set", "a=1", "-o", "o"],
                                     ["parse", "--schema", "ggcp"]])
def test_an_input_that_is_not_a_regular_file_is_refused_at_once(kind: str, command: list[str],
                                                                tmp_path: Path) -> None:
    import os

    from conftest import run_fmt

    path = {"fifo": tmp_path / "fifo", "device": Path("/dev/zero"), "directory": tmp_path / "dir"}[kind]
    if kind == "fifo":
        os.mkfifo(path)  # no writer: an open that waited would wait for ever (run_fmt's timeout fails it)
    elif kind == "directory":
        path.mkdir()
    words = [command[0], str(path), *[str(path) if w == "SELF" else w for w in command[1:]]]
    result = run_fmt(*words)
    assert result.code == 2 and len(result.err.splitlines()) == 1, result
    expected = {"fifo": "is a FIFO", "device": "is a character device", "directory": "is a directory"}[kind]
    assert expected in result.err or (kind == "directory" and "a directory, and not one" in result.err), result.err


def test_help_names_every_command_and_input_kind(fmt: Fmt) -> None:
    text = fmt("--help").out
    for command in ("parse", "to-gguf", "to-ggla", "to-hf", "diff", "edit", "schema"):
        assert f"\n    {command} " in text, command
    for kind in ("ggcp", "ggcl", "ggla", "ggjt", "GGUF", "PEFT", "mlx-lm", "CLIP", "Gemma"):
        assert kind in text, kind


def test_set_up_installs_pytorch_from_its_cpu_index_and_says_each_step() -> None:
    from conftest import ROOT

    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile[makefile.index("$(TESTSTAMP): $(STAMP)"):]
    torch_step, extra_step = recipe.index("--index-url $(TORCH_INDEX)"), recipe.index("-e '.[test]'")
    assert torch_step < extra_step  # the CPU build is in place before the test extra asks for torch
    assert "TORCH_INDEX   ?= https://download.pytorch.org/whl/cpu" in makefile
    assert "could not be reached" in recipe  # and a fallback when it cannot be reached
    assert recipe.count("$(call STEP,") >= 4 and "$(DONE)" in recipe
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for need in ("C/C++ compiler", "CMake", "npm", "disk", "7 minutes", "TORCH_INDEX"):
        assert need in readme, need
