from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# parsed YAML kept between runs (ggfmt.schema.yaml_cache): in a directory of this test session,
# not the user's, for the tests and every fmt process they start
os.environ.setdefault("GGFMT_CACHE", tempfile.mkdtemp(prefix="ggfmt-test-cache-"))

from ggfmt.cli import main

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
SYNTH = FIXTURES / "synth"
GENUINE = FIXTURES / "genuine"


@dataclass
class Result:
    code: int
    out: str
    err: str


Fmt = Callable[..., Result]


@pytest.fixture
def fmt(capsys: pytest.CaptureFixture[str]) -> Fmt:
    """Run the fmt command line in-process."""

    def run(*args: str | os.PathLike[str]) -> Result:
        try:
            code = main([os.fspath(a) for a in args])
        except SystemExit as e:  # argparse's own usage errors
            code = int(e.code or 0)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def run_fmt(*args: str | os.PathLike[str], env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Result:
    """Run the fmt command line as a separate process, as a user would (in ``cwd``, if given)."""
    proc = subprocess.run([sys.executable, "-m", "ggfmt", *map(os.fspath, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)
    return Result(proc.returncode, proc.stdout, proc.stderr)


Keys = list[tuple[str, list[str], Any]]
Tensors = list[tuple[str, str, list[int], bytes]]


def gguf_content(path: Path, skip_key: Callable[[str], bool] = lambda key: False) -> tuple[Keys, Tensors]:
    """A GGUF file's keys (name, value types, value) and tensors (name, type, ne, bytes), in file
    order, as gguf-py reads them; the GGUF.* header fields and keys `skip_key` names are left out."""
    import gguf

    reader = gguf.GGUFReader(path)
    keys = [(f.name, [gguf.GGUFValueType(t).name for t in f.types], f.contents()) for f in reader.fields.values()
            if not f.name.startswith("GGUF.") and not skip_key(f.name)]
    tensors = [(t.name, t.tensor_type.name, [int(n) for n in t.shape], t.data.tobytes()) for t in reader.tensors]
    return keys, tensors


def assert_clean_failure(result: Result, directory: Path | None = None) -> str:
    """Exit 2, exactly one line on stderr, no traceback, nothing left in ``directory``."""
    assert result.code == 2, result
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    assert lines[0].startswith("fmt: error: ")
    if directory is not None:
        assert [p.name for p in directory.iterdir()] == [], "the failure left files behind"
    return lines[0]
