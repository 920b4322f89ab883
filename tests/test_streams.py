"""The fmt program with a closed, full or broken stdout or stderr: the command ends cleanly with the
right status, no traceback, and an output already written in full is said to be."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import GENUINE

MODEL = GENUINE / "tiny-llama-f32.gguf"
CHECKPOINT = GENUINE / "ggcp-v0-adam.bin"


def fmt(*args: str | Path, stdout: str = "pipe", stderr: str = "pipe") -> tuple[int, str]:
    """Run fmt with stdout and stderr each a pipe, /dev/full or closed; (status, what stderr got)."""
    def target(kind: str, fd: int) -> Any:
        if kind == "full":
            return open("/dev/full", "w")  # closed below, after the run
        return subprocess.PIPE if kind == "pipe" else None

    closed = [fd for fd, kind in ((1, stdout), (2, stderr)) if kind == "closed"]
    out, err = target(stdout, 1), target(stderr, 2)
    proc = subprocess.run([sys.executable, "-m", "ggfmt", *map(str, args)], stdout=out, stderr=err, text=True,
                          preexec_fn=(lambda: [os.close(fd) for fd in closed]) if closed else None, timeout=120)
    for stream in (out, err):
        if hasattr(stream, "close"):
            stream.close()
    return proc.returncode, proc.stderr or ""


@pytest.mark.parametrize("stdout", ["full", "closed"])
def test_a_report_that_cannot_be_written_is_an_error(stdout: str) -> None:
    status, err = fmt("parse", MODEL, stdout=stdout)
    assert status == 2 and len(err.splitlines()) == 1 and err.startswith("fmt: error: standard output: "), err


@pytest.mark.parametrize("stdout", ["full", "closed"])
def test_a_summary_that_cannot_be_written_leaves_the_output_written(stdout: str, tmp_path: Path) -> None:
    out = tmp_path / "o.gguf"
    status, err = fmt("to-gguf", CHECKPOINT, "-o", out, stdout=stdout)
    assert status == 0 and out.is_file(), err
    assert err.startswith("fmt: warning: standard output: ") and f"{out} had already been written in full" in err


@pytest.mark.parametrize("stderr", ["full", "closed"])
def test_an_error_that_cannot_be_said_keeps_its_status(stderr: str, tmp_path: Path) -> None:
    assert fmt("parse", tmp_path / "missing.bin", stderr=stderr)[0] == 2
    out = tmp_path / "o.gguf"
    assert fmt("to-gguf", CHECKPOINT, "-o", out, stdout="full", stderr=stderr)[0] == 0 and out.is_file()


def many_keys(path: Path, value: int) -> Path:
    """A GGUF whose report is far larger than a pipe's buffer (so the writer meets the closed pipe)."""
    import gguf

    writer = gguf.GGUFWriter(path, "llama")
    for i in range(20000):
        writer.add_uint32(f"my.key{i}", value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return path


def test_a_reader_that_goes_away_is_no_error_and_diff_keeps_its_status(tmp_path: Path) -> None:
    a, b = many_keys(tmp_path / "a.gguf", 1), many_keys(tmp_path / "b.gguf", 2)
    for args, expected in ((["parse", a], 0), (["diff", a, b], 1)):
        proc = subprocess.Popen([sys.executable, "-m", "ggfmt", *map(str, args)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()  # as `| head -1` does
        err = proc.stderr.read()
        proc.stderr.close()
        assert proc.wait(timeout=120) == expected and err == "", (args, err)
