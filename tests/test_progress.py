"""The progress bar: on a terminal, for a large payload, on stderr; never otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from make_checkpoint import make_checkpoint  # a checkpoint written through the ggcp schema


@pytest.fixture(scope="module")
def large_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Just above the 64 MiB at which the bar appears.
    return make_checkpoint(tmp_path_factory.mktemp("large") / "ckpt.bin", n_layer=1, n_embd=512, n_vocab=4096)


def convert_on_a_terminal(source: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    """Run `fmt to-gguf` with stderr on a pseudo-terminal; return its status, stdout and terminal output."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "ggfmt", "to-gguf", str(source), "-o", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal is gone: the child closed it
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    stdout = proc.stdout.read().decode() if proc.stdout else ""
    return proc.wait(timeout=120), stdout, b"".join(chunks).decode(errors="replace")


def test_bar_on_a_terminal(large_checkpoint: Path, tmp_path: Path) -> None:
    assert large_checkpoint.stat().st_size > 64 << 20
    code, stdout, terminal = convert_on_a_terminal(large_checkpoint, tmp_path / "a.gguf")
    assert code == 0
    assert "copying tensors" in terminal and "100%" in terminal
    assert "copying tensors" not in stdout and "a.gguf" in stdout


def test_quiet_means_no_bar(large_checkpoint: Path, tmp_path: Path) -> None:
    code, stdout, terminal = convert_on_a_terminal(large_checkpoint, tmp_path / "b.gguf", "--quiet")
    assert code == 0 and terminal.strip() == "" and stdout == ""


def test_no_bar_when_stderr_is_not_a_terminal(large_checkpoint: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "ggfmt", "to-gguf", str(large_checkpoint), "-o",
                           str(tmp_path / "c.gguf")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == ""
