"""`fmt schema list` and `fmt schema show`: every schema with its origin and conversions; the generated
reference of each shipped layout, kept in docs/schemas/ (regenerate with `make schema-docs`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT, Fmt, assert_clean_failure

SCHEMAS = sorted(p.stem for p in (ROOT / "schemas").glob("*.yaml"))


def test_every_shipped_schema_id_is_its_file_name(fmt: Fmt) -> None:
    result = fmt("schema", "list", "--json")
    assert result.code == 0, result.err
    rows = json.loads(result.out)
    assert sorted(r["id"] for r in rows) == SCHEMAS
    assert all(Path(r["file"]).stem == r["id"] and r["origin"] == "built-in" for r in rows)
    by_id = {r["id"]: r for r in rows}
    assert by_id["ggjt"]["magic"] == "tjgg"
    assert by_id["ggjt"]["conversions"] == [{"table": "legacy-llama-gguf", "target": "gguf"}]
    assert by_id["tensor"]["magic"] is None


def test_list_names_where_a_schema_comes_from(tmp_path: Path, fmt: Fmt, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mine.yaml").write_text("meta: {id: mine, title: My layout}\n"
                                        "seq:\n  - {id: magic, contents: MINE, doc: The bytes MINE.}\n")
    monkeypatch.setenv("GGFMT_SCHEMA_PATH", str(tmp_path))
    result = fmt("schemas")  # the older name
    assert result.code == 0, result.err
    line = next(line for line in result.out.splitlines() if line.startswith("mine"))
    assert "magic 'MINE'" in line and "My layout" in line and f"[{tmp_path}]" in line


@pytest.mark.parametrize("name", SCHEMAS)
def test_docs_schemas_are_what_show_generates(name: str, fmt: Fmt) -> None:
    result = fmt("schema", "show", name)
    assert result.code == 0, result.err
    page = ROOT / "docs" / "schemas" / f"{name}.md"
    assert page.is_file(), f"{page} is missing: run `make schema-docs`"
    assert page.read_text(encoding="utf-8") == result.out, f"{page} is stale: run `make schema-docs`"


def test_docs_schemas_hold_no_page_of_a_schema_that_is_gone() -> None:
    assert sorted(p.stem for p in (ROOT / "docs" / "schemas").glob("*.md")) == SCHEMAS


def test_show_gives_static_offsets_sizes_and_what_the_tables_make(fmt: Fmt) -> None:
    result = fmt("schema", "show", "ggla", "--json")
    assert result.code == 0, result.err
    desc = json.loads(result.out)
    fields = {f["id"]: f for f in desc["fields"]}
    assert (fields["r"]["offset"], fields["r"]["size"], fields["r"]["type"]) == (8, 4, "i32")
    assert fields["tensors"]["conditions"] == "repeat: eos"
    [table] = desc["conversions"]
    assert table["table"] == "ggla-gguf"
    assert {"key": "adapter.lora.alpha", "value": "f32 lora_alpha", "when": ""} in table["keys"]
    assert {"input": "match {base:any}.loraA", "output": "{base}.lora_a", "transforms": "transpose",
            "when": ""} in table["tensors"]


def test_show_of_an_unknown_schema_is_one_line(fmt: Fmt) -> None:
    line = assert_clean_failure(fmt("schema", "show", "no-such-layout"))
    assert "no-such-layout" in line and "no schema of that name" in line


def test_the_published_language_definition_is_the_one_ggfmt_uses() -> None:
    shipped = ROOT / "src" / "ggfmt" / "schema" / "language.json"
    assert (ROOT / "docs" / "ggfmt-schema.json").read_bytes() == shipped.read_bytes()
    assert json.loads((ROOT / "docs" / "ggfmt-table.json").read_text())["$ref"] == "ggfmt-schema.json#/$defs/table"


def test_show_prints_a_schemas_text_and_nothing_that_drives_a_terminal_or_a_page(tmp_path: Path, fmt: Fmt) -> None:
    schema = tmp_path / "esc.yaml"
    schema.write_text('meta: {id: esc, title: "T\\e]0;owned\\a\\e[31mRED"}\n'
                      'doc: "<script>alert(1)</script>\\n# injected heading\\n\\e[2J"\n'
                      'seq:\n  - {id: magic, contents: TOYS, doc: "a <b>bold</b> \\e[1mclaim"}\n', encoding="utf-8")
    result = fmt("schema", "show", schema)
    assert result.code == 0, result.err
    assert "\x1b" not in result.out and "\x07" not in result.out
    assert "<script>" not in result.out and "<b>" not in result.out
    assert "\\x1b]0;owned\\x07\\x1b[31mRED" in result.out  # shown, escaped
    assert "&lt;script>alert(1)&lt;/script>" in result.out
    assert "\n\\# injected heading\n" in result.out


def test_the_bundle_reference_is_written_from_the_language() -> None:
    from ggfmt.workbench.reference import markdown

    published = (ROOT / "docs" / "bundle-language.md").read_text(encoding="utf-8")
    assert published == markdown("bundle", "The bundle language: reference"), "stale: run make schema-docs"
    for key in ("recognise", "fields", "tensors", "checks", "output", "base", "pickle", "under", "model_card"):
        assert f"| `{key}` |" in published
    assert json.loads((ROOT / "docs" / "ggfmt-bundle.json").read_text())["$ref"] == "ggfmt-schema.json#/$defs/bundle"
