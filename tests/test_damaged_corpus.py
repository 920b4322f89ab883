"""A corpus of damaged files, generated here for each binary layout ggfmt reads.

For every 4-byte header word (located by the independent reader from layouts.md, or for GGUF
by gguf-py's reader): the file cut just before it, and the word replaced by 0, 0x7FFFFFF0 and
0xFFFFFFFF; and the file cut inside every payload. Each case must end either in a conversion
that gguf-py reads back (a parse, for GGUF inputs), or in exit status 2 with one line naming
the file, the field and the byte offset; no traceback, no output or temporary file left
behind, and no allocation driven by a size the file claims (peak RSS and address space bounded).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import gguf
import pytest

from conftest import FIXTURES, GENUINE, SYNTH
from legacy_reader import gguf_header_words, header_words, payload_middles

LAYOUTS = {
    "ggcp v0 (genuine)": GENUINE / "ggcp-v0-adam.bin",
    "ggcp v1": SYNTH / "ggcp-v1-adam-past3.bin",
    "ggcl v1": SYNTH / "ggcl-lbfgs-past4.bin",
    "ggla (genuine)": GENUINE / "ggla-finetune.bin",
    "gguf v2 (genuine)": GENUINE / "tiny-llama-f32.gguf",
    "gguf v3": FIXTURES / "peft" / "lora.ref.gguf",
}


def is_gguf(source: Path) -> bool:
    return source.suffix == ".gguf"


def words_of(source: Path) -> list[int]:
    return gguf_header_words(source) if is_gguf(source) else header_words(source)


def middles_of(source: Path) -> list[int]:
    if is_gguf(source):
        return [int(t.data_offset) + int(t.n_bytes) // 2 for t in gguf.GGUFReader(source).tensors]
    return payload_middles(source)
REPLACEMENTS = (0, 0x7FFFFFF0, 0xFFFFFFFF)
MEMORY_LIMIT = 64 << 20  # growth of the peak RSS over the whole corpus of one layout


def cases(source: Path) -> Iterator[tuple[str, bytes]]:
    """One damaged copy at a time (all of them at once would weigh hundreds of MiB)."""
    data = source.read_bytes()
    for offset in words_of(source):
        yield f"cut at {offset}", data[:offset]
        for value in REPLACEMENTS:
            damaged = bytearray(data)
            struct.pack_into("<I", damaged, offset, value)
            yield f"word at {offset} = {value:#x}", bytes(damaged)
    for offset in middles_of(source):
        yield f"cut inside a payload at {offset}", data[:offset]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_damaged_corpus(layout: str, tmp_path: Path) -> None:
    """The corpus of one layout runs in a child process of its own, each case through fmt's own
    ``main``, so that the child's peak RSS measures what the cases took (a pytest process's
    high-water mark is whatever earlier tests reached) and its address space can be capped."""
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); " \
           f"import test_damaged_corpus as t; t.run_corpus({layout!r}, {str(tmp_path)!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    outcomes, problems, growth = Counter(report["outcomes"]), report["problems"], report["rss_growth"]
    assert problems == [], "\n".join(problems[:20])
    source = LAYOUTS[layout]
    assert sum(outcomes.values()) == len(words_of(source)) * 4 + len(middles_of(source)) > 100
    assert outcomes["refused"] > outcomes["converted"] + outcomes["parsed"]
    assert growth < MEMORY_LIMIT, f"peak RSS grew by {growth / 2**20:.1f} MiB over the corpus"
    print(f"{layout}: {dict(outcomes)}, peak RSS growth {growth / 2**20:.1f} MiB")


def run_corpus(layout: str, directory: str) -> None:
    """Every case of ``layout``'s corpus, in this process; prints a JSON report as its last line."""
    from ggfmt.cli import main

    source = LAYOUTS[layout]
    damaged_file = Path(directory) / source.name
    out_dir = Path(directory) / "out"
    out_dir.mkdir()
    out = out_dir / "x.gguf"

    def fmt(*args: str | Path) -> tuple[int, str]:
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
        return code, err.getvalue()

    def attempt() -> tuple[int, str]:
        if is_gguf(source):  # ggfmt reads GGUF, it does not convert it
            return fmt("parse", damaged_file, "--json")
        return fmt("to-gguf", damaged_file, "-o", out, "--force", "--quiet")

    damaged_file.write_bytes(source.read_bytes())  # the intact file first: imports and caches warm up
    attempt()
    out.unlink(missing_ok=True)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # A size the file claims must not even be reserved: 1 GiB more address space than now, at most.
    with open("/proc/self/statm") as statm:
        mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (mapped + (1 << 30), resource.RLIM_INFINITY))

    outcomes: Counter[str] = Counter()
    problems = []
    for label, data in cases(source):
        damaged_file.write_bytes(data)
        code, err = attempt()
        left = sorted(p.name for p in out_dir.iterdir())
        if code == 0 and is_gguf(source):
            outcomes["parsed"] += 1
            continue
        if code == 0:
            reader = gguf.GGUFReader(out)  # the conversion must be a GGUF that reads back
            if not reader.tensors or left != ["x.gguf"]:
                problems.append(f"{label}: converted, but {len(reader.tensors)} tensors, files {left}")
            out.unlink()
            outcomes["converted"] += 1
            continue
        lines = err.splitlines()
        located = "match no schema" in err or (" byte " in err and "field" in err)
        if code != 2 or len(lines) != 1 or "Traceback" in err or not located or left:
            problems.append(f"{label}: exit {code}, files {left}, stderr {err!r}")
        outcomes["refused"] += 1
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
    print(json.dumps({"outcomes": outcomes, "problems": problems, "rss_growth": growth}))
