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



DERIVED = """\
doc: The toy conversion with a third layer and one more key.
include: toy-gguf
source: toy3
target: gguf
values:
  more: "layers + 1"
  layers: "3"
metadata:
  - {key: toy.more, type: u32, value: more}
  - {key: toy.layers, type: u32, value: "layers * 2"}
tensors:
  - {match: "w.{x}", name: "blk.{x}.w3"}
"""


def test_a_table_built_on_another_replaces_what_it_names_again_in_its_place(table: Path) -> None:
    from ggfmt.convert.mapping import MatchEntry, table_scope

    table.write_text(TABLE)
    (table.parent / "toy3-gguf.yaml").write_text(DERIVED)
    derived = load_mapping("toy3-gguf")
    assert [(e.key, e.value.source) for e in derived.metadata] == [("toy.layers", "layers * 2"),
                                                                     ("toy.more", "more")]
    assert [(v, e.source) for v, e in derived.values] == [("layers", "3"), ("more", "layers + 1")]
    (entry,) = derived.tensors
    assert isinstance(entry, MatchEntry) and entry.name_template == "blk.{x}.w3" and not entry.transforms
    # what it does not give is the other's: its option, its architecture, its outtypes
    assert list(derived.options) == ["scale"] and derived.architecture == "llama"
    assert derived.outtypes == ["f32", "f16"]
    # a value uses one that comes after it
    assert table_scope(derived, [{}])[-1]["more"] == 4


def test_an_included_tables_options_are_flags_of_the_command(table: Path, fmt: Fmt) -> None:
    table.write_text(TABLE.replace("target: gguf", "target: none"))
    (table.parent / "toy3-gguf.yaml").write_text(DERIVED)
    assert "--scale X" in fmt("to-gguf", "--help").out


def test_values_that_use_each_other_in_a_circle_are_one_line(table: Path) -> None:
    from ggfmt.convert.mapping import table_scope

    table.write_text(TABLE.replace('  layers: "2"', '  layers: "depth + 1"\n  depth: "layers - 1"\n  n: "n + 1"'))
    values = table_scope(load_mapping("toy-gguf"), [{"n": 1}])[-1]
    assert values["n"] == 2  # its own name inside it is the one outside
    with pytest.raises(SchemaError) as caught:
        values["depth"]
    assert str(caught.value) == ("toy-gguf: values.depth: the values use each other in a circle: "
                                 "depth -> layers -> depth")


@pytest.mark.parametrize(("include", "said"), [
    ("no-such-table", "toy3-gguf.yaml: include: no mapping table named 'no-such-table'"),
    ("toy3-gguf", "toy3-gguf.yaml: includes itself through toy3-gguf"),
    ("[toy-gguf, 3]", "toy3-gguf.yaml: include: names a table, or a list of tables, this one is built on"),
])
def test_a_broken_include_is_one_line(include: str, said: str, table: Path) -> None:
    table.write_text(TABLE)
    (table.parent / "toy3-gguf.yaml").write_text(DERIVED.replace("include: toy-gguf", f"include: {include}"))
    with pytest.raises(SchemaError) as caught:
        load_mapping("toy3-gguf")
    assert str(caught.value) == said


@pytest.mark.parametrize(("tests", "said"), [
    ('{kv: {match: "w.{x}", holds: "spin(2)"}}', "tensor_tests.kv, holds: 'spin' is not a test (there are kv_copies"),
    ('{kv: {match: "w.{x}"}}', "tensor_tests.kv: is `{match: PATTERN, holds: TEST(ARGS)}`"),
    ('{kv: {match: "w.{x}", holds: "kv_copies(2)", colour: red}}', "tensor_tests.kv: unknown keys ['colour']"),
])
def test_a_broken_tensor_test_is_one_line(tests: str, said: str, table: Path) -> None:
    table.write_text(TABLE + f"tensor_tests: {tests}\n")
    with pytest.raises(SchemaError) as caught:
        load_mapping("toy-gguf")
    assert str(caught.value).startswith(f"toy-gguf.yaml: {said}"), str(caught.value)
