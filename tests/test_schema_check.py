"""`fmt schema check`: one line per problem with file:line:column, exit 2; every shipped schema and
table is clean; a broken schema in the search path does not stop other parses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import GENUINE, ROOT, Fmt, assert_clean_failure

GOOD = """meta: {id: toy, title: a toy layout}
doc: A toy.
seq:
  - {id: magic, contents: TOY1, doc: The bytes TOY1.}
  - {id: n, type: u32, doc: How many records.}
  - {id: recs, type: rec, repeat: n, doc: The records.}
types:
  rec:
    doc: One record.
    seq:
      - {id: a, type: u16, doc: A number.}
      - {id: b, type: u16, doc: Another number.}
"""


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    schemas, tables = tmp_path / "schemas", tmp_path / "mappings"
    schemas.mkdir()
    tables.mkdir()
    monkeypatch.setenv("GGFMT_SCHEMA_PATH", str(schemas))
    monkeypatch.setenv("GGFMT_MAPPING_PATH", str(tables))
    return schemas, tables


def lines(result: object) -> list[str]:
    return result.out.splitlines()  # type: ignore[attr-defined, no-any-return]


def test_every_shipped_schema_and_table_is_clean(fmt: Fmt) -> None:
    files = [p for folder in ("schemas", "mappings", "bundles") for p in sorted((ROOT / folder).glob("*.yaml"))]
    result = fmt("schema", "check", *files)
    assert result.code == 0, result.out
    assert result.out == "" and f"{len(files)} files checked: no problems" in result.err


def test_a_clean_schema(folders: tuple[Path, Path], fmt: Fmt) -> None:
    toy = folders[0] / "toy.yaml"
    toy.write_text(GOOD)
    assert fmt("schema", "check", toy).code == 0


@pytest.mark.parametrize("change, expected", [
    (("{id: n, type: u32, doc: How many records.}", "{id: n, type: u32, dok: How many records.}"),
     ":5:5: type toy, seq[1] (n): unknown keys ['dok']"),
    (("{id: a, type: u16, doc: A number.}", "{id: a, type: u24, doc: A number.}"),
     ":11:9: type rec, seq[0] (a): unknown type 'u24'"),
    (("{id: recs, type: rec, repeat: n,", "{id: recs, type: rec, repeat: count,"),
     ":6:27: 'count' in 'count' is defined by no field, instance or parameter"),
    (("{id: b, type: u16, doc: Another number.}", "{id: b, type: u16}"),
     ":12:9: field b has no doc"),
    (("meta: {id: toy,", "meta: {id: toys,"),
     ":1:8: meta.id 'toys' is not the file's name 'toy'"),
    (("types:\n", "types:\n  spare:\n    doc: Nothing uses it.\n    seq: []\n"),
     ":8:3: type spare is used by no field"),
])
def test_each_problem_is_one_line_with_its_position(change: tuple[str, str], expected: str,
                                                    folders: tuple[Path, Path], fmt: Fmt) -> None:
    toy = folders[0] / "toy.yaml"
    assert change[0] in GOOD
    toy.write_text(GOOD.replace(*change))
    result = fmt("schema", "check", toy)
    assert result.code == 2
    assert len(lines(result)) == 1, result.out
    assert lines(result)[0].startswith(f"{toy}{expected}"), result.out


def test_a_table_naming_a_field_the_schema_lacks(folders: tuple[Path, Path], fmt: Fmt) -> None:
    schemas, tables = folders
    (schemas / "toy.yaml").write_text(GOOD)
    table = tables / "toy-gguf.yaml"
    table.write_text("doc: A toy table.\nsource: toy\ntarget: gguf\narchitecture: llama\n"
                     "tensors:\n  - {from: weights, name: w}\n")
    result = fmt("schema", "check", schemas / "toy.yaml")
    assert result.code == 2
    assert lines(result) == [f"{table}:6:6: from: weights: toy has no field 'weights'"]


def test_parse_reports_the_first_mismatch_with_its_offset(folders: tuple[Path, Path], fmt: Fmt,
                                                        tmp_path: Path) -> None:
    toy = folders[0] / "toy.yaml"
    toy.write_text(GOOD)
    sample = tmp_path / "sample.bin"
    sample.write_bytes(b"TOY1" + (3).to_bytes(4, "little") + bytes(8))  # 3 records of 4 bytes: 8 bytes only
    result = fmt("schema", "check", toy, "--parse", sample)
    assert result.code == 2
    [line] = lines(result)
    assert line.startswith(f"{sample}:1:1: field recs[2].a at byte 16: unexpected end of file")


def test_parse_reports_an_input_tensor_no_entry_selects(fmt: Fmt, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    tables = tmp_path / "mappings"
    tables.mkdir()
    monkeypatch.setenv("GGFMT_MAPPING_PATH", str(tables))
    (tables / "ggla-only-q.yaml").write_text(
        "doc: Only q.\nsource: ggla\ntarget: gguf\narchitecture: llama\n"
        "tensors:\n  - {match: \"blk.{bid}.attn_q.weight.loraA\", name: \"blk.{bid}.attn_q.weight.lora_a\"}\n")
    result = fmt("schema", "check", ROOT / "schemas" / "ggla.yaml", "--parse", GENUINE / "ggla-finetune.bin")
    assert result.code == 2
    assert "is selected by no entry of ggla-only-q" in result.out


def test_a_broken_schema_in_the_search_path_does_not_stop_other_parses(folders: tuple[Path, Path],
                                                                       fmt: Fmt) -> None:
    broken = folders[0] / "broken.yaml"
    broken.write_text("meta: {id: broken\nseq: [\n")
    result = fmt("parse", GENUINE / "ggcp-v0-adam.bin", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)
    assert result.err.count("fmt: warning: skipped schema") == 1 and str(broken) in result.err
    assert fmt("schema", "list").code == 0
    line = assert_clean_failure(fmt("schema", "show", broken))
    assert "broken.yaml" in line
    checked = fmt("schema", "check", broken)
    assert checked.code == 2 and lines(checked)[0].startswith(f"{broken}:2:")


def test_a_failed_valid_on_records_is_one_short_line(folders: tuple[Path, Path], fmt: Fmt, tmp_path: Path) -> None:
    toy = folders[0] / "toy.yaml"
    toy.write_text(GOOD.replace("{id: recs, type: rec, repeat: n, doc: The records.}",
                                "{id: recs, type: rec, repeat: n, doc: The records., valid: {expr: \"len(_) > 100\"}}"))
    sample = tmp_path / "s.bin"
    sample.write_bytes(b"TOY1" + (40).to_bytes(4, "little") + bytes(160))
    line = assert_clean_failure(fmt("parse", sample))
    assert "field recs at byte 8: expected len(recs) > 100, got [{a=0, b=0}" in line and len(line) < 300


def test_a_failed_rule_names_the_field_and_shows_the_values_it_reads(folders: tuple[Path, Path], fmt: Fmt,
                                                                      tmp_path: Path) -> None:
    # a rule over the field (`_`) and an earlier one: the user reads both names and the earlier's value
    (folders[0] / "toy.yaml").write_text(GOOD.replace(
        "{id: b, type: u16, doc: Another number.}",
        "{id: b, type: u16, doc: Another number., valid: {expr: \"_ % a == 0 and _ > 0\"}}"))
    sample = tmp_path / "s.bin"
    sample.write_bytes(b"TOY1" + (1).to_bytes(4, "little") + (4).to_bytes(2, "little") + (6).to_bytes(2, "little"))
    line = assert_clean_failure(fmt("parse", sample))
    assert line.endswith("field recs[0].b at byte 10: expected b % a == 0 and b > 0 (a = 4), got 6"), line


def test_a_bundle_is_checked_as_a_bundle(tmp_path: Path, fmt: Fmt) -> None:
    bundle = tmp_path / "mine.yaml"
    good = (ROOT / "bundles" / "mlx-lora.yaml").read_text(encoding="utf-8")
    bundle.write_text(good, encoding="utf-8")
    assert fmt("schema", "check", bundle).code == 0
    bundle.write_text(good + "colour: red\n", encoding="utf-8")
    result = fmt("schema", "check", bundle)
    assert result.code == 2 and len(lines(result)) == 1
    assert ":1: unknown key colour (allowed: base, checks, doc" in lines(result)[0]
    bundle.write_text(good.replace("checks:\n", "checks:\n  - {file: other.json, field: x, expr: 'True', "
                                                 "message: m}\n", 1), encoding="utf-8")
    result = fmt("schema", "check", bundle)
    assert result.code == 2 and len(lines(result)) == 1
    assert "checks[0]: other.json is not a file the declaration reads" in lines(result)[0]


BUNDLE = """id: mine
recognise: {files: [adapter_config.json]}
fields:
  config: {json: adapter_config.json}
tensors: {safetensors: adapters.safetensors}
checks:
  - {file: adapter_config.json, field: r, expr: "config.r > 0", message: "expected a positive rank"}
output: ggml-adapter-model.gguf
"""


@pytest.mark.parametrize("change, expected", [
    (("output: ggml", "outptu: ggml"), ":8:1: unknown key outptu (allowed: base, checks, doc, fields, id, output, "),
    (("{json: adapter_config.json}", "{json: adapter_config.json, model_card: .}"),
     ":4:3: fields.config: json and model_card together: only one of them"),
    (("{json: adapter_config.json}", "{jsn: adapter_config.json}"),
     ":4:3: fields.config: needs one of json, model_card"),
    (("{safetensors: adapters.safetensors}", "{safetensors: adapters.safetensors, under: x}"),
     ":5:1: tensors: under: not allowed here"),
    ((', message: "expected a positive rank"', ""), ":7:5: checks[0]: 'message' is a required property"),
    (("recognise: {files: [adapter_config.json]}", "recognise: {keys: {a.json: [b]}}"),
     ":2:1: recognise: needs one of files, pickle"),
    (("field: r, expr:", "field: r, expr: 'config.r >', x:"), ":7:5: checks[0]: unknown key x (allowed: expr, field, "),
    (('"config.r > 0"', '"config.r >"'), ":1:1: expression 'config.r >' is not valid: invalid syntax"),
    (("file: adapter_config.json, field: r", "file: config.json, field: r"),
     ":7:6: checks[0]: config.json is not a file the declaration reads (its fields read adapter_config.json)"),
])
def test_each_problem_of_a_bundle_is_one_line_with_its_position(change: tuple[str, str], expected: str,
                                                               tmp_path: Path, fmt: Fmt) -> None:
    bundle = tmp_path / "mine.yaml"
    bundle.write_text(BUNDLE, encoding="utf-8")
    assert fmt("schema", "check", bundle).code == 0
    assert change[0] in BUNDLE
    bundle.write_text(BUNDLE.replace(*change), encoding="utf-8")
    result = fmt("schema", "check", bundle)
    found = lines(result)
    assert result.code == 2 and len(found) == 1 + ("jsn" in change[1]), result.out
    assert found[0].startswith(f"{bundle}{expected}"), result.out


def test_the_bundle_loader_takes_its_keys_from_the_language() -> None:
    from ggfmt.schema.language import definition
    from ggfmt.sources.bundles import BUNDLE_KEYS, FIELD_READERS, READERS, WEIGHTS

    defs = definition()["$defs"]
    assert set(defs["bundle"]["properties"]) == BUNDLE_KEYS
    assert set(READERS) == {"json", "model_card"} == {a["required"][0] for a in defs["bundle_field"]["oneOf"]}
    assert set(FIELD_READERS) == set(READERS)
    assert set(WEIGHTS) == {"safetensors", "pickle"} == {a["required"][0] for a in defs["bundle_weights"]["oneOf"]}
