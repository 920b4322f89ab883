"""A corpus of damaged files, generated here for each binary layout ggfmt reads.

For every 4-byte header word (located by the independent reader from layouts.md, or for GGUF
by gguf-py's reader): the file cut just before it, and the word replaced by 0, 0x7FFFFFF0 and
0xFFFFFFFF; and the file cut inside every payload. Each case must end either in a conversion
that gguf-py reads back (a parse, for GGUF inputs), or in exit status 2 with one line naming
the file, the field and the byte offset; no traceback, no output or temporary file left
behind, and no allocation driven by a size the file claims.
"""

from __future__ import annotations

import struct
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import gguf
import pytest

from conftest import FIXTURES, GENUINE, SYNTH, Fmt
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
MEMORY_LIMIT = 64 << 20  # peak Python allocations over the whole corpus of one layout


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
def test_damaged_corpus(layout: str, tmp_path: Path, fmt: Fmt) -> None:
    source = LAYOUTS[layout]
    damaged_file = tmp_path / source.name
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "x.gguf"
    outcomes: Counter[str] = Counter()
    problems = []
    tracemalloc.start()
    try:
        for label, data in cases(source):
            damaged_file.write_bytes(data)
            if is_gguf(source):  # ggfmt reads GGUF, it does not convert it
                result = fmt("parse", damaged_file, "--json")
            else:
                result = fmt("to-gguf", damaged_file, "-o", out, "--force", "--quiet")
            left = sorted(p.name for p in out_dir.iterdir())
            if result.code == 0 and is_gguf(source):
                outcomes["parsed"] += 1
                continue
            if result.code == 0:
                reader = gguf.GGUFReader(out)  # the conversion must be a GGUF that reads back
                if not reader.tensors or left != ["x.gguf"]:
                    problems.append(f"{label}: converted, but {len(reader.tensors)} tensors, files {left}")
                out.unlink()
                outcomes["converted"] += 1
                continue
            lines = result.err.splitlines()
            located = "match no schema" in result.err or (" byte " in result.err and "field" in result.err)
            if result.code != 2 or len(lines) != 1 or "Traceback" in result.err or not located or left:
                problems.append(f"{label}: exit {result.code}, files {left}, stderr {result.err!r}")
            outcomes["refused"] += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert problems == [], "\n".join(problems[:20])
    assert sum(outcomes.values()) == len(words_of(source)) * 4 + len(middles_of(source)) > 100
    assert outcomes["refused"] > outcomes["converted"] + outcomes["parsed"]
    assert peak < MEMORY_LIMIT, f"peak {peak / 2**20:.1f} MiB"
    print(f"{layout}: {dict(outcomes)}, peak {peak / 2**20:.1f} MiB")
