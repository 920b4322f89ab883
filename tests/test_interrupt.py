"""SIGINT or SIGTERM in the middle of a conversion leaves neither the output nor a temporary file."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from make_checkpoint import make_checkpoint  # a checkpoint written through the ggcp schema


@pytest.fixture(scope="module")
def large_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("large") / "ckpt.bin", size_mb=500)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_conversion_leaves_nothing(sig: signal.Signals, large_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    proc = subprocess.Popen([sys.executable, "-m", "ggfmt", "to-gguf", str(large_checkpoint), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.gguf.*.tmp")):  # the temporary output exists: the copy is under way
        assert proc.poll() is None, "the conversion ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.001)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    assert stderr.strip() in ("fmt: interrupted; no output was written", "fmt: terminated; no output was written")
    assert list(tmp_path.iterdir()) == []
