"""A stop signal in the middle of a conversion leaves neither the output nor a temporary file.

The conversion is held in the middle on purpose (its payload copy says so on its stdout, then
waits for ever), so the signal always lands while it runs: no test races a conversion that
finishes first, and none waits on a clock to know where the child is. Every child is killed at
the end of its test whatever happened, so that none is left running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import SYNTH

SOURCE = SYNTH / "ggcp-v1-adam-past3.bin"
# What a child script ends with: fmt's payload copy replaced by its ``stall``, then fmt's program.
# A stall waits for ever in short sleeps, not one long one: a signal that lands after Python last
# looked for signals but before a sleep began is only seen when that sleep ends (Python runs its
# handlers between instructions, and only a signal that arrives during a sleep cuts it short).
RUN_STALLED = """
    while True:
        time.sleep(0.05)
import ggfmt.io.tensors
ggfmt.io.tensors.FileSlice.write_to = stall
from ggfmt._entry import run
run()
"""
# fmt, with every payload copy stalled: the temporary output exists, the conversion never ends by itself
STALLED = """
import os, time
def stall(*args, **kwargs):
    os.write(1, b"stalled\\n")  # the temporary output exists: the test may signal now""" + RUN_STALLED
WATCHDOG = 300  # seconds after which a child that never got where it should is killed (a bug, not a race)
MESSAGES = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hung up",
            signal.SIGQUIT: "quit"}


def _as_from_a_terminal() -> None:
    """Stop signals as a program started from an interactive shell has them. A shell's background
    job (which this test run may be) starts its programs with SIGINT and SIGQUIT ignored, and fmt
    rightly leaves a signal ignored at its start ignored."""
    for sig in MESSAGES:
        signal.signal(sig, signal.SIG_DFL)


@contextlib.contextmanager
def child(args: list[str]) -> Iterator[subprocess.Popen[str]]:
    """A child process that is gone when the block ends, whatever happened in it."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_as_from_a_terminal)
    watchdog = threading.Timer(WATCHDOG, proc.kill)
    watchdog.start()
    try:
        yield proc
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@contextlib.contextmanager
def stalled(out: Path) -> Iterator[subprocess.Popen[str]]:
    """fmt to-gguf SOURCE -o OUT, held once its temporary output exists."""
    with child([sys.executable, "-c", STALLED, "to-gguf", str(SOURCE), "-o", str(out)]) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "stalled\n", proc.stderr.read() if proc.stderr else ""
        yield proc


def assert_stopped_cleanly(proc: subprocess.Popen[str], stderr: str, sig: signal.Signals, folder: Path) -> None:
    """The child answered ``sig`` (its status, its one line) and left nothing in ``folder``."""
    assert proc.returncode == 128 + sig, stderr
    assert stderr.strip() == f"fmt: {MESSAGES[sig]}; no output was written"
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("sig", list(MESSAGES), ids=[s.name for s in MESSAGES])
def test_stopped_conversion_leaves_nothing(sig: signal.Signals, tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    with stalled(out) as proc:
        proc.send_signal(sig)
        _, stderr = proc.communicate()
    assert_stopped_cleanly(proc, stderr, sig, tmp_path)


def test_second_signal_during_cleanup_still_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    with stalled(out) as proc:
        for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGINT):
            proc.send_signal(sig)
        _, stderr = proc.communicate()
    assert_stopped_cleanly(proc, stderr, signal.SIGINT, tmp_path)


# fmt to-gguf with its payload copy replaced: SIGINT is sent while the main thread holds it back,
# so the kernel may give it to any other thread that takes it (the writer thread, which must not:
# Python would only mark it as due there, and the main thread, sleeping, would never learn of it).
# Whether it is still pending for the main thread is printed, then the main thread takes it.
NOT_TAKEN_ELSEWHERE = """
import os, signal, threading, time
import ggfmt.io.sink as sink
sink._open = lambda path: sink.DirectSink(os.open(path, os.O_RDWR))  # a writer thread on any file system
def stall(*args, **kwargs):
    writers = [t.name for t in threading.enumerate() if t.name == "ggfmt-writer"]
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.5)  # time enough for a thread that takes SIGINT to take it
    os.write(1, f"{writers} {signal.SIGINT in signal.sigpending()}\\n".encode())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})""" + RUN_STALLED


def test_a_stop_signal_is_left_to_the_main_thread(tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    with child([sys.executable, "-c", NOT_TAKEN_ELSEWHERE, "to-gguf", str(SOURCE), "-o", str(out)]) as proc:
        stdout, stderr = proc.communicate()
    assert stdout == "['ggfmt-writer'] True\n", stderr  # still pending: the writer thread did not take it
    assert_stopped_cleanly(proc, stderr, signal.SIGINT, tmp_path)


# fmt to-gguf, interrupted, with a SIGTERM that lands as the SIGINT's handler begins to set the
# handlers aside, while the SIGTERM's own handler is still in place: it runs nested in the first.
NESTED = """
import os, signal, time
import ggfmt.cli as cli
ignore = cli._ignore_stop_signals
def terminated_meanwhile():
    cli._ignore_stop_signals = ignore
    os.kill(os.getpid(), signal.SIGTERM)
    ignore()
def stall(*args, **kwargs):
    cli._ignore_stop_signals = terminated_meanwhile
    os.kill(os.getpid(), signal.SIGINT)""" + RUN_STALLED


def test_a_second_signal_within_the_first_ones_handler_does_not_change_the_answer(tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    with child([sys.executable, "-c", NESTED, "to-gguf", str(SOURCE), "-o", str(out)]) as proc:
        _, stderr = proc.communicate()
    assert_stopped_cleanly(proc, stderr, signal.SIGINT, tmp_path)


def test_partial_output_of_a_killed_run_is_removed_by_the_next(tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    with stalled(out) as proc:
        proc.kill()  # SIGKILL: nothing can clean up
    [partial] = tmp_path.glob("out.gguf.ggfmt-partial-*")
    result = subprocess.run([sys.executable, "-m", "ggfmt", "to-gguf", str(SOURCE), "-o", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"removed {partial}, a partial output left by an interrupted run" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["out.gguf"]


def test_partial_output_of_a_running_conversion_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    with stalled(out) as proc:
        [partial] = tmp_path.glob("out.gguf.ggfmt-partial-*")
        result = subprocess.run([sys.executable, "-m", "ggfmt", "to-gguf", str(SOURCE), "-o", str(out)],
                                capture_output=True, text=True, timeout=WATCHDOG)
        assert result.returncode == 0, result.stderr
        assert "removed" not in result.stderr
        assert partial.exists()  # locked by the conversion under way
        proc.send_signal(signal.SIGTERM)
        proc.communicate()
    assert [p.name for p in tmp_path.iterdir()] == ["out.gguf"]


# to-hf --force over an existing directory, with a SIGTERM sent while the new directory takes the
# old one's place. The signal goes to the process from another thread while the main thread has
# it blocked, so the kernel delivers it to that thread (as it may to any thread of a program that
# calls ggfmt, ggfmt's own threads aside).
SWAP_SIGNALLED = """
import os, signal, threading
import ggfmt.io.output
swap = ggfmt.io.output._swap_in
def signalled_swap(temporary, target):
    sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGTERM))
    sender.start()
    sender.join()
    for _ in range(1000):
        pass  # bytecodes at which Python would run a pending handler
    swap(temporary, target)
ggfmt.io.output._swap_in = signalled_swap
from ggfmt._entry import run
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
                          capture_output=True, text=True, timeout=WATCHDOG)
    assert proc.returncode == 128 + signal.SIGTERM
    assert proc.stderr.strip() == f"fmt: terminated; {out} had already been written in full"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # the old directory is gone, nothing left aside


# A stop signal before the command line has even been imported: from the program's first line on.
EARLY = """
import os, signal, sys
import ggfmt._entry
os.kill(os.getpid(), getattr(signal, sys.argv[1]))
import ggfmt.cli  # not reached: the signal was answered at the line before
os.write(1, b"went on")
"""


@pytest.mark.parametrize("sig", list(MESSAGES), ids=[s.name for s in MESSAGES])
def test_a_signal_at_start_up_is_one_line_and_its_status(sig: signal.Signals) -> None:
    with child([sys.executable, "-c", EARLY, sig.name]) as proc:
        out, err = proc.communicate()
    assert (proc.returncode, out, err) == (128 + sig, "", f"fmt: {MESSAGES[sig]}; no output was written\n")


# fmt parse SOURCE, with a Ctrl-C that arrives just as the stop handler for it is installed, while
# the handlers of the other stop signals are not yet
MID_INSTALL = """
import os, signal, sys
import ggfmt.cli as cli
install = signal.signal
def install_then_interrupt(number, handler):
    previous = install(number, handler)
    if handler is cli._stop and number == signal.SIGINT:
        os.kill(os.getpid(), signal.SIGINT)
    return previous
signal.signal = install_then_interrupt
sys.argv = ["fmt", "parse", sys.argv[1]]
from ggfmt._entry import run
run()
"""


def test_a_signal_while_the_handlers_are_installed_is_one_line_and_its_status() -> None:
    with child([sys.executable, "-c", MID_INSTALL, str(SOURCE)]) as proc:
        out, err = proc.communicate()
    assert (proc.returncode, out, err) == (128 + signal.SIGINT, "", "fmt: interrupted; no output was written\n")


def test_a_signal_while_the_output_module_is_half_imported_is_a_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    from ggfmt import cli

    half = types.ModuleType("ggfmt.io.output")  # as Python holds a module while its import runs
    monkeypatch.setitem(sys.modules, "ggfmt.io.output", half)
    monkeypatch.setattr(cli, "_ignore_stop_signals", lambda: None)
    with pytest.raises(cli.Stopped):
        cli._stop(signal.SIGINT, None)


def test_the_environment_cannot_turn_a_conversion_into_an_interruption(tmp_path: Path) -> None:
    import resource

    def tight() -> None:  # an address space that leaves no room for a thread per core
        resource.setrlimit(resource.RLIMIT_AS, (150_000_000, 150_000_000))

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    result = subprocess.run([sys.executable, "-m", "ggfmt", "to-gguf", str(SOURCE), "-o", str(tmp_path / "o.gguf")],
                            capture_output=True, text=True, preexec_fn=tight, env=env, timeout=WATCHDOG)
    assert "interrupted" not in result.stderr and "OpenBLAS" not in result.stderr, result.stderr
    assert result.returncode == 0 or (result.returncode == 2 and len(result.stderr.splitlines()) == 1), result


def test_an_encoding_that_cannot_show_a_character_escapes_it() -> None:
    from conftest import GENUINE

    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    result = subprocess.run([sys.executable, "-m", "ggfmt", "parse", str(GENUINE / "tiny-llama-f32.gguf"),
                             "--no-tensors"], capture_output=True, text=True, env=env, timeout=WATCHDOG)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "[275 \\xd7 str]  tokenizer.ggml.tokens" in result.stdout
