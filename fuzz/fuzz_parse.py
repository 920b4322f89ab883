"""Coverage-guided fuzzing of ggfmt's engine and converters with atheris (`make fuzz`).

Each input is parsed against a schema chosen by its first byte, then converted to GGUF when it
parses. ggfmt's own errors are the expected refusals; any other exception is a finding, and
atheris stops with the input that caused it (saved as crash-*).

    .venv/bin/python fuzz/fuzz_parse.py fuzz/corpus -max_total_time=300
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import ggfmt
    from ggfmt.convert import to_gguf
    from ggfmt.emit.gguf import write_gguf
    from ggfmt.errors import GgfmtError

SCHEMAS = ["ggcp", "ggcl", "ggla"]
WORK = Path(tempfile.mkdtemp(prefix="ggfmt-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))


def one_input(data: bytes) -> None:
    if not data:
        return
    schema = SCHEMAS[data[0] % len(SCHEMAS)]
    path = WORK / "input.bin"
    path.write_bytes(data[1:])
    try:
        ggfmt.parse(path, schema)
        write_gguf(to_gguf(path, schema=schema).plan, WORK / "output.gguf")
    except GgfmtError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
