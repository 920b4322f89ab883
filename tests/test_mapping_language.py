"""The table language refuses what it cannot mean, one line per mistake, with where it is: a line
of ``fmt schema check`` (FILE:LINE:COLUMN), or the table's name and the entry when a conversion
loads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Fmt, assert_clean_failure
from ggfmt.convert.mapping import load_mapping
from ggfmt.errors import SchemaError

TABLE = """\
doc: A toy conversion.
source: toy
target: gguf
architecture: llama
outtypes: [f32, f16]
options:
  scale: {type: float, default: 1.0, metavar: X, doc: "what every weight is multiplied by"}
values:
  layers: "2"
metadata:
  - {key: toy.layers, type: u32, value: layers}
tensors:
  - {match: "w.{x}", name: "blk.{x}.w", transforms: ["scale(scale)"]}
"""


@pytest.fixture
def table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "mappings"
    folder.mkdir()
    monkeypatch.setenv("GGFMT_MAPPING_PATH", str(folder))
    return folder / "toy-gguf.yaml"


def test_the_table_is_clean(table: Path, fmt: Fmt) -> None:
    table.write_text(TABLE)
    assert fmt("schema", "check", table).code == 0
    assert load_mapping("toy-gguf").options["scale"].metavar == "X"


@pytest.mark.parametrize(("change", "expected"), [
    (("doc: A toy", "colour: red\ndoc: A toy"), ":1:1: unknown key colour (allowed: "),
    (("outtypes: [f32, f16]", "outtypes: [f32, f64]"), ":5:17: outtypes[1]: 'f64' is not one of "),
    (("{type: float,", "{type: double,"), ":7:11: options.scale.type: 'double' is not one of "),
    (("metavar: X,", "metavar: X, colour: red,"), ":7:50: options.scale: unknown key colour (allowed: "),
    (("metavar: X,", "metavar: X, flags: [--size-of],"), ":7:3: options.scale: `flags` include --scale"),
    (("metavar: X,", "metavar: X, flags: [scale],"), ":7:"),
    (("value: layers}", "value: layers +}"), ":11:34: metadata[0], value: expression 'layers +' is not valid"),
    (("type: u32,", "type: u33,"), ":11:5: metadata[0]: `type` 'u33' is not one of bool, bool[], f32"),
    (('transforms: ["scale(scale)"]', 'transforms: ["rotate(scale)"]'),
     ":13:54: tensors[0], transforms[0]: 'rotate' is not a transform (there are cast, "),
    (("  - {key: toy.layers", "  - {include: no-such-table}\n  - {key: toy.layers"),
     ":11:5: metadata[0]: include: no mapping table named 'no-such-table'"),
])
def test_each_mistake_is_one_line_with_its_position(change: tuple[str, str], expected: str, table: Path,
                                                    fmt: Fmt) -> None:
    assert change[0] in TABLE
    table.write_text(TABLE.replace(*change))
    result = fmt("schema", "check", table)
    lines = result.out.strip().splitlines()
    assert result.code == 2 and len(lines) == 1, result.out
    assert lines[0].startswith(f"{table}{expected}"), lines[0]


@pytest.mark.parametrize(("change", "said"), [
    (("value: layers}", "value: layers +}"), "expression 'layers +' is not valid"),
    (("type: u32,", "type: u33,"), "u33"),
    (('transforms: ["scale(scale)"]', 'transforms: ["rotate(scale)"]'), "rotate"),
    (("  - {key: toy.layers", "  - {include: no-such-table}\n  - {key: toy.layers"), "no-such-table"),
])
def test_a_conversion_loading_a_broken_table_says_it_in_one_line(change: tuple[str, str], said: str,
                                                                  table: Path) -> None:
    table.write_text(TABLE.replace(*change))
    with pytest.raises(SchemaError) as caught:
        load_mapping("toy-gguf")
    line = str(caught.value)
    assert "\n" not in line and line.startswith("toy-gguf.yaml") and said in line


def test_a_table_whose_flag_is_the_commands_own_is_one_line(table: Path, fmt: Fmt, tmp_path: Path) -> None:
    table.write_text(TABLE.replace("metavar: X,", "metavar: X, flags: [--scale, --outtype],"))
    line = assert_clean_failure(fmt("to-gguf", tmp_path / "anything.bin"))
    assert line == ("fmt: error: toy-gguf: options.scale: --outtype is already an option of fmt to-gguf; "
                    "give it other `flags`")

