"""Output sinks: direct I/O and the page-cache fallback write exactly the bytes they are given.

The expected files are put together in memory by plain concatenation, independently of the
sinks. Staging buffers are made small so that every case crosses many buffer and block
boundaries.
"""

from __future__ import annotations

import errno
import os
import random
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from conftest import SYNTH, Fmt, gguf_content
from ggfmt.io import sink as sink_module
from ggfmt.io.sink import CachedSink, DirectSink, open_sink

KINDS = {"direct": DirectSink, "cached": CachedSink}


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("GGFMT_DIRECT_IO", "1" if request.param == "direct" else "0")
    monkeypatch.setattr(DirectSink, "BUFFER_BYTES", 3 * DirectSink.BLOCK)  # 12 KiB
    monkeypatch.setattr(sink_module, "COPY_CHUNK", 5000)
    return str(request.param)


@pytest.mark.parametrize("header_bytes", [0, 1, 4095, 4096, 4097, 13_000])
def test_appends_exactly(kind: str, header_bytes: int, tmp_path: Path) -> None:
    rng = random.Random(header_bytes)
    source = tmp_path / "source.bin"
    source_bytes = rng.randbytes(200_000)
    source.write_bytes(source_bytes)
    out = tmp_path / "out.bin"
    expected = rng.randbytes(header_bytes)
    out.write_bytes(expected)
    progress: list[int] = []
    with open(source, "rb") as src, open_sink(out) as sink:
        assert type(sink) is KINDS[kind]
        assert sink.tell() == header_bytes
        for _ in range(60):
            if rng.random() < 0.5:
                data = rng.randbytes(rng.choice([0, 1, 31, 4096, 5000, 20_000]))
                sink.write(data)
                expected += data
            else:
                offset = rng.randrange(len(source_bytes))
                nbytes = rng.randrange(len(source_bytes) - offset + 1)
                before = sum(progress)
                sink.copy_from(src.fileno(), offset, nbytes, progress.append)
                assert sum(progress) - before == nbytes
                expected += source_bytes[offset: offset + nbytes]
            assert sink.tell() == len(expected)
    assert out.read_bytes() == expected


def test_conversion_through_small_buffers_matches_reference(kind: str, tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "out.gguf"
    result = fmt("to-gguf", SYNTH / "ggcl-adam-past2.bin", "-o", out)
    assert result.code == 0, result.err
    assert gguf_content(out) == gguf_content(SYNTH / "ggcl-adam-past2.ref.gguf")


def test_a_write_error_reaches_the_caller(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(*args: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full_disk)
    monkeypatch.setattr(os, "write", full_disk)
    out = tmp_path / "out.bin"
    out.write_bytes(b"")
    with pytest.raises(OSError, match="No space left"), open_sink(out) as sink:
        for _ in range(10):
            sink.write(bytes(DirectSink.BUFFER_BYTES))


def test_direct_io_refused_when_opening_falls_back_to_the_page_cache(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def no_direct(path: Any, flags: int, *args: Any) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")  # what tmpfs answers
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_direct)
    out = tmp_path / "out.bin"
    out.write_bytes(b"head")
    with open_sink(out) as sink:
        assert type(sink) is CachedSink
        sink.write(b"tail")
    assert out.read_bytes() == b"headtail"


def test_direct_write_refused_by_the_device_is_redone_through_the_page_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl

    real_pwrite = os.pwrite
    refused = []

    def picky(fd: int, data: Any, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")  # a device whose blocks are larger than 4096
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", picky)
    monkeypatch.setenv("GGFMT_DIRECT_IO", "1")
    out = tmp_path / "out.bin"
    expected = random.Random(1).randbytes(3 * DirectSink.BUFFER_BYTES + 123)
    out.write_bytes(b"")
    with open_sink(out) as sink:
        assert type(sink) is DirectSink
        sink.write(expected)
    assert refused == [0]
    assert out.read_bytes() == expected


def test_aborting_leaves_no_thread_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    monkeypatch.setenv("GGFMT_DIRECT_IO", "1")
    out = tmp_path / "out.bin"
    out.write_bytes(b"")
    with pytest.raises(KeyboardInterrupt), open_sink(out) as sink:
        assert type(sink) is DirectSink
        sink.write(bytes(5 * DirectSink.BUFFER_BYTES))
        raise KeyboardInterrupt
    assert not [t for t in threading.enumerate() if t.name == "ggfmt-writer"]


@pytest.mark.parametrize("refused", [["copy_file_range"], ["copy_file_range", "sendfile"]])
def test_page_cache_copy_steps_down_when_the_kernel_refuses(refused: list[str], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def refuse(name: str) -> Any:
        def call(*args: Any) -> int:
            calls.append(name)
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return call

    for name in refused:
        monkeypatch.setattr(os, name, refuse(name))
    monkeypatch.setenv("GGFMT_DIRECT_IO", "0")
    source = tmp_path / "source.bin"
    source_bytes = random.Random(2).randbytes(50_000)
    source.write_bytes(source_bytes)
    out = tmp_path / "out.bin"
    out.write_bytes(b"head")
    with open(source, "rb") as src, open_sink(out) as sink:
        sink.copy_from(src.fileno(), 10, 40_000)
        sink.copy_from(src.fileno(), 0, 5)
    assert out.read_bytes() == b"head" + source_bytes[10:40_010] + source_bytes[:5]
    assert calls == refused  # each refused once, then not asked again


class _Stop(BaseException):
    """Stands for a stop signal's exception, which Python raises between any two instructions."""


def test_a_stop_between_any_two_instructions_of_a_write_leaves_abort_able_to_finish(tmp_path: Path) -> None:
    # A Ctrl-C raised while the writer's queues were half way through a put or get left their lock
    # held: the cleanup's abort() then waited for it for ever. Raise at each instruction in turn.
    data = bytes(DirectSink.BUFFER_BYTES + 100)
    n = 0
    while True:
        n += 1
        fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        sink = DirectSink(fd)
        seen = 0

        def tracer(frame: FrameType, event: str, arg: object, stop_at: int = n) -> object:
            nonlocal seen
            frame.f_trace_opcodes = True
            if event == "opcode":
                seen += 1
                if seen == stop_at:
                    raise _Stop
            return tracer

        sys.settrace(tracer)
        try:
            sink.write(data)  # fills a buffer and hands it to the writer thread
        except _Stop:
            pass
        finally:
            sys.settrace(None)
        aborting = threading.Thread(target=sink.abort, daemon=True)
        aborting.start()
        aborting.join(10)
        assert not aborting.is_alive(), f"abort() waits for ever after a stop at instruction {n}"
        if seen < n:  # the write ran to its end without reaching instruction n: every one was tried
            break
    assert n > 20
