"""Property-based fuzzing of the engine and the converters (hypothesis).

Whatever the bytes, a parse either returns a document or raises one of ggfmt's own errors
(which the command line prints as one line, exit 2); a conversion ends in status 0 or 2,
never in a crash. The examples are derandomized and bounded so that CI stays reproducible
and quick; `make fuzz` runs the atheris harness for long runs.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ggfmt
from conftest import GENUINE, SYNTH, Fmt
from ggfmt.errors import GgfmtError

SCHEMAS = ["ggcp", "ggcl", "ggla"]
SEEDS = [GENUINE / "ggcp-v0-adam.bin", SYNTH / "ggcl-adam-past2.bin", GENUINE / "ggla-finetune.bin"]
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def parse_or_refuse(path: Path, schema: str | None) -> None:
    # A located, one-line refusal (GgfmtError) is the expected end for most random input.
    with contextlib.suppress(GgfmtError):
        ggfmt.parse(path, schema)


@pytest.mark.parametrize("schema", SCHEMAS)
@SETTINGS
@given(data=st.binary(max_size=512))
def test_random_bytes(schema: str, data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "random.bin"
    magic = {"ggcp": b"pcgg", "ggcl": b"lcgg", "ggla": b"algg"}[schema]
    for candidate in (data, magic + data):  # with the right magic, the engine gets past the first field
        path.write_bytes(candidate)
        parse_or_refuse(path, schema)


@st.composite
def mutated(draw: st.DrawFn, seed: Path) -> bytes:
    data = bytearray(seed.read_bytes())
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "word", "cut", "insert"]))
        # Mostly in the headers: the first kilobyte and the optimizer context at the end.
        at = draw(st.one_of(st.integers(0, min(1023, len(data) - 1)), st.integers(0, len(data) - 1)))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "word":
            data[at:at + 4] = draw(st.sampled_from([b"\0\0\0\0", b"\xff\xff\xff\xff", b"\xf0\xff\xff\x7f"]))
        elif kind == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        if not data:
            break
    return bytes(data)


@pytest.mark.parametrize("seed", SEEDS, ids=[s.stem for s in SEEDS])
@SETTINGS
@given(data=st.data())
def test_mutated_files_convert_or_are_refused(seed: Path, data: st.DataObject, tmp_path: Path, fmt: Fmt) -> None:
    path = tmp_path / seed.name
    path.write_bytes(data.draw(mutated(seed)))
    out = tmp_path / "out.gguf"
    out.unlink(missing_ok=True)  # tmp_path is shared by all the examples of a test
    result = fmt("to-gguf", path, "-o", out, "--force", "--quiet")
    assert result.code in (0, 2), result.err
    assert "Traceback" not in result.err
    if result.code == 2:
        assert len(result.err.splitlines()) == 1 and not out.exists()
