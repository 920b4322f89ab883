"""A stop signal in the middle of a conversion leaves neither the output nor a temporary file.

The conversion is held in the middle on purpose (its payload copy waits for ever), so the signal
always lands while it runs: the test cannot race a conversion that finishes first.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SYNTH

SOURCE = SYNTH / "ggcp-v1-adam-past3.bin"
# fmt, with every payload copy stalled: the temporary output exists, the conversion never ends by itself
STALLED = """
import time
import ggfmt.tensors
ggfmt.tensors.FileSlice.write_to = lambda *args, **kwargs: time.sleep(3600)
from ggfmt.cli import run
run()
"""
MESSAGES = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hung up",
            signal.SIGQUIT: "quit"}


def start_stalled(out: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", STALLED, "to-gguf", str(SOURCE), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(out.parent.glob(f"{out.name}.ggfmt-partial-*")):  # the output is being written
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    return proc


@pytest.mark.parametrize("sig", list(MESSAGES), ids=[s.name for s in MESSAGES])
def test_stopped_conversion_leaves_nothing(sig: signal.Signals, tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    proc = start_stalled(out)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    assert stderr.strip() == f"fmt: {MESSAGES[sig]}; no output was written"
    assert list(tmp_path.iterdir()) == []


def test_second_signal_during_cleanup_still_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    proc = start_stalled(out)
    for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGINT):
        proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT
    assert stderr.strip() == "fmt: interrupted; no output was written"
    assert list(tmp_path.iterdir()) == []


def test_partial_output_of_a_killed_run_is_removed_by_the_next(tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    proc = start_stalled(out)
    proc.kill()  # SIGKILL: nothing can clean up
    proc.communicate(timeout=60)
    [partial] = tmp_path.glob("out.gguf.ggfmt-partial-*")
    result = subprocess.run([sys.executable, "-m", "ggfmt", "to-gguf", str(SOURCE), "-o", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"removed {partial}, a partial output left by an interrupted run" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["out.gguf"]


def test_partial_output_of_a_running_conversion_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    proc = start_stalled(out)
    try:
        [partial] = tmp_path.glob("out.gguf.ggfmt-partial-*")
        result = subprocess.run([sys.executable, "-m", "ggfmt", "to-gguf", str(SOURCE), "-o", str(out)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "removed" not in result.stderr
        assert partial.exists()  # locked by the conversion under way
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert [p.name for p in tmp_path.iterdir()] == ["out.gguf"]


# to-hf --force over an existing directory, with a SIGTERM sent while the new directory takes the
# old one's place. The signal goes to the process from another thread while the main thread has
# it blocked, so the kernel delivers it to that thread (as it may to a writer thread).
SWAP_SIGNALLED = """
import os, signal, threading
import ggfmt.output
swap = ggfmt.output._swap_in
def signalled_swap(temporary, target):
    sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGTERM))
    sender.start()
    sender.join()
    for _ in range(1000):
        pass  # bytecodes at which Python would run a pending handler
    swap(temporary, target)
ggfmt.output._swap_in = signalled_swap
from ggfmt.cli import run
run()
"""


def test_signal_while_replacing_a_directory_reports_what_happened(tmp_path: Path) -> None:
    from conftest import FIXTURES

    gemma = FIXTURES / "gemma"
    out = tmp_path / "hf"
    out.mkdir()
    (out / "old.txt").write_text("the previous output")
    proc = subprocess.run([sys.executable, "-c", SWAP_SIGNALLED, "to-hf", str(gemma / "gemma-mqa.ckpt"), "--config",
                           str(gemma / "gemma-mqa-config.json"), "-o", str(out), "--force", "-q"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert proc.stderr.strip() == f"fmt: terminated; {out} had already been written in full"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # the old directory is gone, nothing left aside
