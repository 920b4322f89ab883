"""The 2023 model files of the ggml examples, of ggllm.cpp and of whisper.cpp: every one parses
without --schema, recognised by its content, to what an independent reader found in it
(fixtures/ggml-family/layouts.json: header words, tokens, tensor names, types, shapes, offsets)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import ggfmt
from conftest import FIXTURES, ROOT, Fmt, assert_clean_failure
from ggfmt.ggml_types import type_name

FAMILY = FIXTURES / "ggml-family"
FILES = FAMILY / "ggml"
LAYOUTS: dict[str, Any] = json.loads((FAMILY / "layouts.json").read_text())
# the schema that reads each family's files
SCHEMAS = {"gpt2": "gpt2", "gpt2-realvocab": "gpt2", "gptj": "gptj", "gptneox": "gptneox", "dolly": "gptneox",
           "mpt": "mpt", "replit": "replit", "starcoder": "starcoder", "falcon": "falcon", "whisper": "whisper"}
SPECIAL = {"falcon-ggmf": "falcon-ggmf", "falcon-ggcc": "falcon-ggcc"}
# layouts.json's names of header words that are fields of another name here
RENAMED = {"vocab_count_word": "n_tokens"}


def schema_of(stem: str) -> str:
    for prefix, schema in SPECIAL.items():
        if stem.startswith(prefix):
            return schema
    return SCHEMAS[stem.rsplit("-", 1)[0]]


def described() -> list[str]:
    return [name for name in LAYOUTS if (FILES / f"{name}.bin").is_file()]


def test_every_file_here_is_one_the_tests_read() -> None:
    stems = sorted(p.stem for p in FILES.glob("*.bin"))
    assert len(stems) == 38
    assert all(schema_of(stem) for stem in stems)
    assert len(described()) == 21  # (layouts.json also describes variants whose files are not kept)


@pytest.mark.parametrize("name", described())
def test_a_file_parses_to_what_an_independent_reader_found(name: str) -> None:
    truth = LAYOUTS[name]
    doc = ggfmt.parse(FILES / f"{name}.bin")
    assert doc.schema.id == schema_of(name)
    fields = doc.fields
    for key, value in truth["hparams"].items():
        if key == "mel_filters":
            assert [fields["n_mel"], fields["n_fft"]] == value and len(fields["mel_filters"]) == value[0] * value[1]
        else:
            assert fields[RENAMED.get(key, key)] == pytest.approx(value), key
    assert len(fields["vocab"]) == truth["n_tokens"]
    texts = [token.text for token in fields["vocab"][:len(truth["first_tokens"])]]
    assert texts == [token.encode() for token in truth["first_tokens"]]
    assert (len(fields["merges"]) if "merges" in fields else 0) == truth["n_merges"]
    if truth["qnt_version"] is not None:
        assert fields["qnt_version"] == truth["qnt_version"]
    got = [{"name": t.name, "type": type_name(t.ggml_type), "ne": list(t.ne), "data_offset": t.offset,
            "nbytes": t.nbytes} for t in doc.tensors]
    assert got == truth["tensors"]


@pytest.mark.parametrize("path", sorted(FILES.glob("*.bin")), ids=lambda p: p.stem)
def test_every_file_is_recognised_and_has_the_tensors_of_its_family(path: Path) -> None:
    doc = ggfmt.parse(path)
    assert doc.schema.id == schema_of(path.stem)
    sibling = next((n for n in described() if n.rsplit("-", 1)[0] == path.stem.rsplit("-", 1)[0]), None)
    if sibling is not None:  # f16 and q8_0 files: the tensors of the same model
        assert [t.name for t in doc.tensors] == [t["name"] for t in LAYOUTS[sibling]["tensors"]]
    assert doc.tensors[-1].offset + doc.tensors[-1].nbytes == doc.size


def test_dolly_is_named_among_gpt_neox_files() -> None:
    assert ggfmt.parse(FILES / "dolly-f32.bin").fields["family"] == "dolly"
    assert ggfmt.parse(FILES / "gptneox-f32.bin").fields["family"] == "gptneox"


def test_a_truncated_file_is_one_line_naming_the_field_and_offset(tmp_path: Path, fmt: Fmt) -> None:
    data = (FILES / "gpt2-f32.bin").read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[:200_000])
    line = assert_clean_failure(fmt("parse", cut))
    assert "cut.bin: field tensors[" in line and "(read as gpt2, the nearest fit; also tried:" in line


def own_copy_of_gpt2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's folder on GGFMT_SCHEMA_PATH with mine.yaml: the gpt2 schema without its recognise rule."""
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    own = (ROOT / "schemas" / "gpt2.yaml").read_text()
    own = own.replace("id: gpt2", "id: mine").split("recognise:")[0] + "seq:" + own.split("\nseq:")[1]
    (schemas / "mine.yaml").write_text(own)
    monkeypatch.setenv("GGFMT_SCHEMA_PATH", str(schemas))
    return schemas


def test_two_layouts_that_fit_are_a_tie_said_in_one_line(tmp_path: Path, fmt: Fmt,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # a user's schema with the same magic and no rule of its own fits GPT-2 files too
    own_copy_of_gpt2(tmp_path, monkeypatch)
    line = assert_clean_failure(fmt("parse", FILES / "gpt2-f32.bin"))
    assert "fits 2 layouts: mine (GPT-2 model file (ggml examples, 2023)), gpt2 (" in line
    assert line.endswith("choose one with --schema NAME")
    assert fmt("parse", FILES / "gpt2-f32.bin", "--schema", "gpt2").code == 0
    # and the 2023 llama files keep their own layout
    assert ggfmt.parse(FIXTURES / "legacy" / "ggml-f32.bin").schema.id == "ggml"


def test_parse_names_the_program_and_what_makes_the_file_current(fmt: Fmt) -> None:
    out = fmt("parse", FILES / "whisper-f16.bin", "--no-tensors").out.splitlines()
    assert out[0].endswith("whisper-f16.bin: whisper - Whisper model file (whisper.cpp)")
    assert out[2].startswith("  written by whisper.cpp's models/convert-pt-to-ggml.py")
    assert out[3] == ("  current: whisper.cpp reads this format today: the file is current as it is, there is "
                      "nothing to convert")


@pytest.mark.parametrize(("stem", "said"), [
    ("gptj-q4_0", "no GGUF conversion for a GPT-J model file (ggml examples, 2023): no current llama.cpp runs GPT-J"),
    ("whisper-f32", "no GGUF conversion for a Whisper model file (whisper.cpp): whisper.cpp reads this format today"),
])
def test_gptj_and_whisper_are_refused_in_one_line_saying_why(stem: str, said: str, tmp_path: Path, fmt: Fmt) -> None:
    line = assert_clean_failure(fmt("to-gguf", FILES / f"{stem}.bin", "-o", tmp_path / "x.gguf"))
    assert said in line
    assert not (tmp_path / "x.gguf").exists()


def test_schemas_sharing_a_magic_are_shown_and_a_rule_is_asked_for(tmp_path: Path, fmt: Fmt,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    listed = {line.split()[0]: line for line in fmt("schema", "list").out.splitlines()}
    assert listed["gpt2"].endswith("(magic shared with 8 others; told apart by its recognise rule)")
    assert "shared" not in listed["ggjt"]
    schemas = own_copy_of_gpt2(tmp_path, monkeypatch)
    result = fmt("schema", "check", schemas / "mine.yaml")
    assert result.code == 2
    assert re.search(r"mine\.yaml:\d+:5: its magic is also that of falcon, ggml, gpt2, gptj, gptneox, mpt, replit, "
                     r"starcoder, whisper: give it a `recognise:` rule", result.out), result.out
    assert fmt("schema", "list").out.count("no recognise rule: a tie where both fit") == 1


def test_what_parse_says_makes_a_file_current_is_true() -> None:
    # a layout that names `fmt to-gguf` has a table converting it; one with no table says why
    from ggfmt.convert.mapping import table_for
    from ggfmt.schema import available_schemas, load_schema, magic_of, read_yaml

    for name, path in available_schemas().items():
        if magic_of(read_yaml(path)) is None:
            continue  # a shared part
        schema = load_schema(name)
        table = table_for(schema.id, "gguf")
        if "fmt to-gguf" in schema.current:
            assert table is not None, name
        if table is None:
            assert schema.current, f"{name}: no conversion, and no word on what makes its files current"
