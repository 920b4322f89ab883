"""The schema language: what it can say, what it refuses, and the engine features built on it."""

from __future__ import annotations

import filecmp
import re
import struct
import textwrap
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

import ggfmt
from conftest import GENUINE, SYNTH, Fmt, Result, assert_clean_failure
from ggfmt.engine import build, with_payloads_from
from ggfmt.errors import FormatError, SchemaError
from ggfmt.schema import load_schema
from ggfmt.schema.expr import Expression, ExpressionError
from legacy_reader import read_checkpoint


def write_schema(tmp_path: Path, text: str, name: str = "mine.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def search_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Empty folders for a test's own schemas and tables, searched before ggfmt's."""
    schemas, mappings = tmp_path / "schemas", tmp_path / "mappings"
    schemas.mkdir()
    mappings.mkdir()
    monkeypatch.setenv("GGFMT_SCHEMA_PATH", str(schemas))
    monkeypatch.setenv("GGFMT_MAPPING_PATH", str(mappings))
    return schemas, mappings


def test_expressions_compute_over_fields() -> None:
    fields = {"n_embd": 32, "n_mult": 16, "past": 3, "ne": [4, 5], "model": {"n": 2}}
    assert Expression("((2*(4*n_embd)//3 + n_mult - 1)//n_mult)*n_mult")(fields.__getitem__) == 96
    assert Expression("[past] if past > 0 else []")(fields.__getitem__) == [3]
    assert Expression("prod(ne) * 4 if len(ne) > 0 else 0")(fields.__getitem__) == 80
    assert Expression("model.n * 2")(fields.__getitem__) == 4
    assert Expression(["model.n", 7])(fields.__getitem__) == [2, 7]


def test_strings_are_sliced_joined_and_named_tensors_recognised() -> None:
    fields = {"name": "blk.3.attn_q.weight.loraA", "names": ["a", "b", "c", "d"], "n": 2}
    assert Expression("name[:-6]")(fields.__getitem__) == "blk.3.attn_q.weight"
    assert Expression("join(', ', names[:n]) + (', ...' if len(names) > n else '')")(fields.__getitem__) == "a, b, ..."
    assert Expression("names[::-1][0]")(fields.__getitem__) == "d"
    assert Expression("model_tensor(name[:-6], 'llama')")(fields.__getitem__) is True
    assert Expression("model_tensor('blk.03.attn_q.weight', 'llama')")(fields.__getitem__) is False
    assert Expression("model_tensor('v.blk.0.attn_q.weight', 'llama')")(fields.__getitem__) is False
    for failing in ("name['a':]", "n[1:]", "join(', ', [1, 2])", "join(',', [name] * 60000)",
                    "model_tensor('x', 'no-such-architecture')"):
        with pytest.raises(ExpressionError):
            Expression(failing)(fields.__getitem__)


def test_format_and_replace_are_bounded() -> None:
    fields = {"b": b"\xa4", "t": b"the cat", "s": "a b", "long": "x" * 40000}
    assert Expression("'<0x' + format(b[0], '02X') + '>'")(fields.__getitem__) == "<0xA4>"
    assert Expression("format(0.5, '.3f')")(fields.__getitem__) == "0.500"
    assert Expression("replace(t, ' ', '▁')")(fields.__getitem__) == "the▁cat".encode()
    assert Expression("replace(s, ' ', '_')")(fields.__getitem__) == "a_b"
    for failing in ("format(1, '1000000d')", "format(1, '{}')", "format([1], 'd')", "replace(long, 'x', 'yy')",
                    "replace(s, '', 'y')", "replace(1, 'a', 'b')"):
        with pytest.raises(ExpressionError):
            Expression(failing)(fields.__getitem__)


@pytest.mark.parametrize("hostile", [
    "__import__('os').system('touch pwned')", "open('/etc/passwd')", "(lambda: 1)()", "n.__class__",
    "_secret", "getattr(n, 'x')", "[x for x in n for y in n]", "n[0:2:x.__len__]", "2 ** 1000000", "f'{n}'",
])
def test_hostile_expressions_are_refused(hostile: str) -> None:
    with pytest.raises(ExpressionError):
        Expression(hostile)


def test_hostile_schema_is_refused_at_load_time(tmp_path: Path, fmt: Fmt) -> None:
    schema = write_schema(tmp_path, """
        meta: {id: evil}
        seq:
          - {id: a, type: u32}
          - {id: b, type: bytes, size: "__import__('os').system('touch pwned') or 4"}
    """)
    data = tmp_path / "data.bin"
    data.write_bytes(b"\0" * 8)
    line = assert_clean_failure(fmt("parse", data, "--schema", schema))
    assert "__import__" in line and "not allowed" in line
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_a_new_layout_is_a_yaml_file(tmp_path: Path, fmt: Fmt) -> None:
    schema = write_schema(tmp_path, """
        meta: {id: demo, imports: [tensor]}
        doc: A header, a count, then that many tensors.
        seq:
          - {id: magic, contents: DEMO}
          - {id: count, type: u32, valid: {min: 1, max: 8}}
          - {id: scale, type: f32}
          - {id: items, type: tensor, repeat: count}
        instances:
          double: {value: count * 2}
    """)
    data = bytearray(b"DEMO" + struct.pack("<If", 1, 0.5))
    data += struct.pack("<3I2I", 2, 1, 0, 2, 3) + b"w"
    data += b"\0" * (-len(data) % 32) + bytes(24)
    path = tmp_path / "demo.bin"
    path.write_bytes(bytes(data))
    doc = ggfmt.parse(path, str(schema))
    assert doc.fields["double"] == 2
    # 12 bytes of header, 20 of tensor header, 1 of name: the data starts at the next multiple of 32
    assert [(t.name, t.ne, t.offset, t.nbytes) for t in doc.tensors] == [("w", (2, 3), 64, 24)]
    result = fmt("parse", path, "--schema", schema, "--json")
    assert result.code == 0 and '"scale": 0.5' in result.out


def test_schema_mistakes_are_reported(tmp_path: Path) -> None:
    for text, message in [
        ("seq: [{id: a, type: u33}]", "unknown type 'u33'"),
        ("seq: [{id: a, type: u32, sise: 3}]", "unknown keys ['sise']"),
        ("seq: [{id: a, type: u32}, {id: a, type: u8}]", "defined twice"),
        ("seq: [{id: a, type: bytes}]", "needs a `size`"),
        ("seq: [{id: a, type: u32, valid: {eq: 1 +}}]", "not valid"),
    ]:
        with pytest.raises(SchemaError, match=re.escape(message)):
            load_schema(write_schema(tmp_path, text, f"s{abs(hash(text))}.yaml"))


def test_python_schema_module(tmp_path: Path) -> None:
    module = tmp_path / "pairs.py"
    module.write_text("import construct as cs\nschema = cs.Struct('a' / cs.Int16ul, 'b' / cs.Int16ul)\n")
    data = tmp_path / "pair.bin"
    data.write_bytes(struct.pack("<HH", 7, 9))
    doc = ggfmt.parse(data, str(module))
    assert (doc.fields["a"], doc.fields["b"]) == (7, 9)


def test_one_of_decides_exactly_and_can_be_forced(fmt: Fmt) -> None:
    for name, expected in [("ggcp-v1-adam-past3", "adam"), ("ggcp-v1-lbfgs", "lbfgs"),
                           ("ggcl-adam-past2", "adam"), ("ggcl-lbfgs-past4", "lbfgs")]:
        assert ggfmt.parse(SYNTH / f"{name}.bin").fields["opt"]["ctx"]["type"] == expected
        assert read_checkpoint(SYNTH / f"{name}.bin").opt["type"] == ["adam", "lbfgs"].index(expected)
    forced = ggfmt.parse(SYNTH / "ggcl-adam-past2.bin", params={"opt_type": "adam"})
    assert forced.fields["opt"]["ctx"]["type"] == "adam"
    with pytest.raises(FormatError):
        ggfmt.parse(SYNTH / "ggcl-adam-past2.bin", params={"opt_type": "lbfgs"})
    line = assert_clean_failure(fmt("parse", SYNTH / "ggcl-adam-past2.bin", "--opt-type", "lbfgs"))
    assert "opt.ctx.state" in line


def test_ff_parameter_overrides_the_formula(tmp_path: Path, fmt: Fmt) -> None:
    assert ggfmt.parse(SYNTH / "ggcl-adam-past2.bin", params={"ff": 48}).fields["model"]["n_ff"] == 48
    line = assert_clean_failure(fmt("parse", SYNTH / "ggcl-adam-past2.bin", "--ff", "64"))
    assert "layers[0].w1.b.ne" in line and "expected [3, 64], got [3, 48]" in line
    line = assert_clean_failure(fmt("parse", SYNTH / "ggcl-adam-past2.bin", "--set", "nonsense=1"))
    assert "no parameter nonsense" in line


@pytest.mark.parametrize("source", [GENUINE / "ggcp-v0-adam.bin", SYNTH / "ggcl-lbfgs-past4.bin",
                                    SYNTH / "ggcp-v1-adam-past3.bin"])
def test_build_writes_the_parsed_file_again(source: Path, tmp_path: Path) -> None:
    doc = ggfmt.parse(source)
    out = tmp_path / "rebuilt.bin"
    build(out, doc.schema, with_payloads_from(doc))
    assert filecmp.cmp(out, source, shallow=False)


ONE_OF_WITH_COUNTS = """
    meta: {id: counted}
    seq:
      - {id: body, choice: kind, one-of: {a: alt_a, b: alt_b}, by: size}
    types:
      pair: {seq: [{id: p, type: u8}, {id: q, type: u8}]}
      alt_a:
        seq: [{id: n, type: u32}, {id: v, type: ELEMENT, repeat: n}]
      alt_b:
        seq: [{id: x, type: u8, repeat: 8}]
"""


@pytest.mark.parametrize("element", ["u8", "pair"])
def test_size_probe_does_not_trust_counts_from_the_file(element: str, tmp_path: Path, fmt: Fmt) -> None:
    # Sizing alternative a reads n = 0xFFFFFFFF: the probe must give up at once, not allocate or loop.
    schema = write_schema(tmp_path, ONE_OF_WITH_COUNTS.replace("ELEMENT", element))
    data = tmp_path / "counted.bin"
    data.write_bytes(b"\xff\xff\xff\xff\0\0\0\0")
    result = fmt("parse", data, "--schema", schema, "--json")
    assert result.code == 0, result.err
    assert '"kind": "b"' in result.out


def test_repeat_to_end_over_empty_elements_is_refused(tmp_path: Path, fmt: Fmt) -> None:
    schema = write_schema(tmp_path, """
        meta: {id: empty}
        seq: [{id: e, type: nothing, repeat: eos}]
        types: {nothing: {seq: []}}
    """)
    data = tmp_path / "x.bin"
    data.write_bytes(b"\0" * 8)
    assert "took no bytes" in assert_clean_failure(fmt("parse", data, "--schema", schema))


def test_repeat_count_larger_than_the_file_is_refused_before_looping(tmp_path: Path, fmt: Fmt) -> None:
    schema = write_schema(tmp_path, """
        meta: {id: many}
        seq: [{id: n, type: u32}, {id: items, type: pair, repeat: n}]
        types: {pair: {seq: [{id: p, type: u8}, {id: q, type: u8}]}}
    """)
    data = tmp_path / "x.bin"
    data.write_bytes(b"\xff\xff\xff\xff\0\0")
    line = assert_clean_failure(fmt("parse", data, "--schema", schema))
    assert "field items at byte 4: 4294967295 elements expected, only 2 bytes left" in line


def test_tensor_roles_must_name_fields_of_the_right_kind(tmp_path: Path, fmt: Fmt) -> None:
    schema = write_schema(tmp_path, """
        meta: {id: badroles}
        seq: [{id: t, type: rec}]
        types:
          rec:
            tensor: {name: name, ggml_type: kind, ne: kind, data: data}
            seq:
              - {id: kind, type: u32}
              - {id: name, type: str, size: 1}
              - {id: data, type: payload, size: 4}
    """)
    data = tmp_path / "x.bin"
    data.write_bytes(b"\0\0\0\0w\0\0\0\0")
    line = assert_clean_failure(fmt("parse", data, "--schema", schema))
    assert "role ne must name a repeated integer field" in line


def test_text_where_a_number_is_checked_is_a_clear_error(tmp_path: Path, fmt: Fmt) -> None:
    schema = write_schema(tmp_path, """
        meta: {id: limited}
        params: {limit: {default: 4, doc: Largest count.}}
        seq: [{id: n, type: u8, valid: {max: limit}}]
    """)
    data = tmp_path / "x.bin"
    data.write_bytes(b"\x02")
    assert fmt("parse", data, "--schema", schema).code == 0
    line = assert_clean_failure(fmt("parse", data, "--schema", schema, "--set", "limit=x"))
    assert "field n at byte 0" in line


def test_switch_cases_may_be_primitives_and_guards_see_the_value(tmp_path: Path) -> None:
    schema = write_schema(tmp_path, """
        meta: {id: sw}
        seq:
          - {id: kind, type: u8}
          - {id: value, type: {switch-on: kind, cases: {1: u16, 2: u32}}, valid: {eq: 7, if: _ != 0}}
    """)
    data = tmp_path / "x.bin"
    data.write_bytes(b"\x02" + struct.pack("<I", 7))
    assert ggfmt.parse(data, str(schema)).fields["value"] == 7
    data.write_bytes(b"\x01" + struct.pack("<H", 0))  # the guard `_ != 0` sees the value: no check
    assert ggfmt.parse(data, str(schema)).fields["value"] == 0
    data.write_bytes(b"\x01" + struct.pack("<H", 5))
    with pytest.raises(FormatError, match="expected 7, got 5"):
        ggfmt.parse(data, str(schema))


def test_contents_with_a_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="without a `type`"):
        load_schema(write_schema(tmp_path, "seq: [{id: m, type: u32, contents: abcd}]"))


def test_expected_tensor_name_is_checked_not_only_its_length(tmp_path: Path) -> None:
    schema = write_schema(tmp_path, """
        meta: {id: named, imports: [tensor]}
        seq: [{id: t, type: tensor, name_expected: "'wxyzab'"}]
    """)
    data = bytearray(struct.pack("<3I1I", 1, 6, 0, 1) + b"weight")
    data += b"\0" * (-len(data) % 32) + bytes(4)
    path = tmp_path / "x.bin"
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=re.escape("field t.name at byte 16: expected 'wxyzab', got 'weight'")):
        ggfmt.parse(path, str(schema))


def test_a_new_layout_converts_with_yaml_alone(tmp_path: Path, fmt: Fmt, monkeypatch: pytest.MonkeyPatch) -> None:
    schemas, mappings = search_paths(tmp_path, monkeypatch)
    write_schema(schemas, """
        meta: {id: toyw, imports: [tensor]}
        doc: A magic, a width, one tensor.
        seq:
          - {id: magic, contents: TOYW, doc: Magic.}
          - {id: width, type: u32, doc: Columns.}
          - {id: weight, type: tensor, shape: [width], doc: The weights.}
    """, "toyw.yaml")
    (mappings / "toyw-gguf.yaml").write_text(textwrap.dedent("""
        doc: toyw -> GGUF
        architecture: toyw
        metadata:
          - {key: toyw.width, type: u32, value: width}
        tensors:
          - {from: weight, name: weight}
    """))
    data = bytearray(b"TOYW" + struct.pack("<I", 3) + struct.pack("<4I", 1, 1, 0, 3) + b"w")
    data += b"\0" * (-len(data) % 32) + struct.pack("<3f", 1.0, 2.0, 3.0)
    source = tmp_path / "toy.bin"
    source.write_bytes(bytes(data))
    result = fmt("to-gguf", source)  # schema found by its magic, mapping by its name
    assert result.code == 0, result.err
    reader = gguf.GGUFReader(tmp_path / "toy.gguf")
    assert reader.fields["toyw.width"].contents() == 3
    assert reader.fields["general.architecture"].contents() == "toyw"
    assert reader.tensors[0].name == "weight"
    assert reader.tensors[0].data.tolist() == [1.0, 2.0, 3.0]


def test_size_prefixed_values_parse_build_and_are_bounded(tmp_path: Path) -> None:
    schema = write_schema(tmp_path, """
        meta: {id: prefixed, trailing: true}
        seq:
          - {id: n, type: u8, rebuild: len(names)}
          - {id: names, type: str, size-prefix: u16, repeat: n}
          - {id: blob, type: bytes, size-prefix: u8}
          - {id: kind, type: u8}
          - {id: value, type: {switch-on: kind, cases: {1: u32, 2: {type: str, size-prefix: u32}}}}
          - {id: words, type: u16, repeat: 3}
    """)
    names = ["", "tok", "\u00e9t\u00e9"]
    data = bytes([3]) + b"".join(struct.pack("<H", len(s.encode())) + s.encode() for s in names)
    data += b"\x02ab" + b"\x02" + struct.pack("<I", 5) + b"hello" + struct.pack("<3H", 1, 65535, 7)
    source = tmp_path / "x.bin"
    source.write_bytes(data)
    doc = ggfmt.parse(source, str(schema))
    assert doc.fields["names"] == names and doc.fields["blob"] == b"ab" and doc.fields["value"] == "hello"
    assert doc.fields["words"] == [1, 65535, 7]
    out = tmp_path / "rebuilt.bin"
    build(out, doc.schema, with_payloads_from(doc))
    assert out.read_bytes() == data
    source.write_bytes(bytes([3]) + struct.pack("<H", 0) + struct.pack("<H", 900) + b"abc")
    with pytest.raises(FormatError, match=r"names\[1\] at byte 3: a size of 900 bytes, only 3 left"):
        ggfmt.parse(source, str(schema))
    bad = write_schema(tmp_path, "meta: {id: b}\nseq:\n  - {id: s, type: str, size-prefix: u128}\n", "bad.yaml")
    with pytest.raises(SchemaError, match="size-prefix"):
        load_schema(bad)


def test_ggml_types_come_from_gguf_py() -> None:
    """The registry agrees with gguf-py on every type it knows; expressions reach it."""
    from ggfmt import ggml_types

    for quant, (block, size) in gguf.GGML_QUANT_SIZES.items():
        assert ggml_types.type_name(int(quant)) == quant.name.lower()
        assert (ggml_types.block_size(int(quant)), ggml_types.type_size(int(quant))) == (block, size)
        assert ggml_types.type_id(quant.name) == int(quant)
    fields = {"t": int(gguf.GGMLQuantizationType.Q4_K), "ne": [512, 3]}
    assert Expression("ggml_nbytes(t, ne)")(fields.__getitem__) == 2 * 3 * 144
    assert Expression("ggml_type_name(t) + ':' + ggml_type_name(999)")(fields.__getitem__) == "q4_k:999"
    assert Expression("ggml_type_size(999)")(fields.__getitem__) == 0
    with pytest.raises(ExpressionError, match="whole number of q4_k blocks"):
        Expression("ggml_nbytes(t, [100])")(fields.__getitem__)


def test_a_legacy_vocabulary_becomes_tokenizer_keys_in_a_table(tmp_path: Path, fmt: Fmt,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A GGJT-style vocabulary (u32 length, text, f32 score per token) becomes tokenizer.ggml.tokens,
    scores and token_type through list comprehensions in a table: no Python, 3,000 tokens."""
    schemas, mappings = search_paths(tmp_path, monkeypatch)
    write_schema(schemas, """
        meta: {id: vocj, imports: [tensor]}
        doc: A GGJT-like file - magic, version, vocabulary, one tensor.
        seq:
          - {id: magic, contents: tjgg, doc: Magic.}
          - {id: version, type: u32, valid: 3, doc: Version.}
          - {id: n_vocab, type: u32, doc: Tokens.}
          - {id: vocab, type: token, repeat: n_vocab, doc: The vocabulary.}
          - {id: weight, type: tensor, shape: [4], doc: A tensor.}
        types:
          token:
            doc: One token.
            seq:
              - {id: length, type: u32, doc: Bytes of the text.}
              - {id: text, type: str, size: length, doc: The text.}
              - {id: score, type: f32, doc: Its score.}
    """, "vocj.yaml")
    (mappings / "vocj-gguf.yaml").write_text(textwrap.dedent("""
        doc: vocj -> GGUF
        architecture: llama
        metadata:
          - {key: tokenizer.ggml.model, type: string, value: "'llama'"}
          - {key: tokenizer.ggml.tokens, type: "string[]", value: "[t.text for t in vocab]"}
          - {key: tokenizer.ggml.scores, type: "f32[]", value: "[t.score for t in vocab]"}
          - key: tokenizer.ggml.token_type
            type: "i32[]"
            value: "[3 if startswith(t.text, '<') and endswith(t.text, '>') else 1 for t in vocab]"
        tensors:
          - {from: weight, name: token_embd.weight}
    """))
    tokens = ["<unk>", "<s>", "</s>", ""] + [f"tok{i}\u00e9" for i in range(2996)]
    scores = [float(-i) / 4 for i in range(len(tokens))]
    data = bytearray(b"tjgg" + struct.pack("<II", 3, len(tokens)))
    for text, score in zip(tokens, scores, strict=True):
        data += struct.pack("<I", len(text.encode())) + text.encode() + struct.pack("<f", score)
    data += struct.pack("<4I", 1, 1, 0, 4) + b"w"
    data += b"\0" * (-len(data) % 32) + struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)
    source = tmp_path / "vocab.bin"
    source.write_bytes(bytes(data))
    result = fmt("to-gguf", source, "-o", tmp_path / "v.gguf")
    assert result.code == 0, result.err
    reader = gguf.GGUFReader(tmp_path / "v.gguf")
    assert reader.fields["tokenizer.ggml.tokens"].contents() == tokens
    assert reader.fields["tokenizer.ggml.scores"].contents() == scores
    assert reader.fields["tokenizer.ggml.token_type"].contents() == [3, 3, 3] + [1] * (len(tokens) - 3)


def test_comprehensions_are_bounded_and_local() -> None:
    fields = {"items": list(range(10)), "x": 100}
    assert Expression("[x * 2 for x in items if x % 2]")(fields.__getitem__) == [2, 6, 10, 14, 18]
    assert Expression("[x for y in items][0]")(fields.__getitem__) == 100  # x is the outer field here
    assert Expression("[x for x in items]").names == {"items"}
    for refused in ("[a for a in items for b in items]", "[_ for _ in items]", "[a for (a, b) in items]"):
        with pytest.raises(ExpressionError, match="not allowed"):
            Expression(refused)
    big = {"items": list(range(300))}
    with pytest.raises(ExpressionError, match="comprehension making more than"):
        Expression("[[0] * 65536 for i in items]")(big.__getitem__)


def test_repeat_until_and_size_to_the_end(tmp_path: Path) -> None:
    schema = write_schema(tmp_path, """
        meta: {id: chunks}
        seq:
          - {id: chunks, type: chunk, repeat: {until: _.kind == 0}}
          - {id: rest, type: bytes, size: eos}
        types:
          chunk:
            seq:
              - {id: kind, type: u8}
              - {id: length, type: u8, rebuild: len(body)}
              - {id: body, type: bytes, size: length}
    """)
    data = b"\x01\x02ab" + b"\x02\x00" + b"\x00\x01z" + b"trailing bytes"
    source = tmp_path / "c.bin"
    source.write_bytes(data)
    doc = ggfmt.parse(source, str(schema))
    assert [c["kind"] for c in doc.fields["chunks"]] == [1, 2, 0]
    assert doc.fields["chunks"][2]["body"] == b"z" and doc.fields["rest"] == b"trailing bytes"
    out = tmp_path / "rebuilt.bin"
    build(out, doc.schema, with_payloads_from(doc))
    assert out.read_bytes() == data
    source.write_bytes(b"\x01\x02ab\x02\x00")  # no chunk of kind 0
    with pytest.raises(FormatError, match=r"field chunks at byte 6: the file ends before `repeat: until _.kind == 0`"):
        ggfmt.parse(source, str(schema))
    payload = write_schema(tmp_path, """
        meta: {id: tail}
        seq:
          - {id: n, type: u8}
          - {id: data, type: payload, size: eos}
    """, "tail.yaml")
    source.write_bytes(b"\x05" + bytes(1000))
    assert ggfmt.parse(source, str(payload)).fields["data"].nbytes == 1000
    bad = write_schema(tmp_path, "meta: {id: b}\nseq:\n  - {id: a, type: u8, repeat: {while: 1}}\n", "bad.yaml")
    with pytest.raises(SchemaError, match="until"):
        load_schema(bad)


def test_parameters_are_typed_and_visible_to_tables(tmp_path: Path, fmt: Fmt, monkeypatch: pytest.MonkeyPatch) -> None:
    schemas, mappings = search_paths(tmp_path, monkeypatch)
    write_schema(schemas, """
        meta: {id: toyp, imports: [tensor]}
        params:
          eps: {type: float, default: 0.00001, doc: Norm epsilon.}
          ctx: {type: int, default: 2048, doc: Context length.}
          name: {type: str, default: toy, doc: Model name.}
          tied: {type: bool, default: false, doc: Tied embeddings.}
        seq:
          - {id: magic, contents: TOYP, doc: Magic.}
          - {id: weight, type: tensor, shape: [4], doc: A tensor.}
    """, "toyp.yaml")
    (mappings / "toyp-gguf.yaml").write_text(textwrap.dedent("""
        architecture: llama
        metadata:
          - {key: llama.attention.layer_norm_rms_epsilon, type: f32, value: eps}
          - {key: llama.context_length, type: u32, value: ctx}
          - {key: general.name, type: string, value: name}
          - {key: toyp.tied, type: bool, value: tied}
        tensors:
          - {from: weight, name: token_embd.weight}
    """))
    data = bytearray(b"TOYP" + struct.pack("<4I", 1, 1, 0, 4) + b"w")
    data += b"\0" * (-len(data) % 32) + struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)
    source = tmp_path / "p.bin"
    source.write_bytes(bytes(data))
    result = fmt("to-gguf", source, "-o", tmp_path / "p.gguf", "--set", "eps=1e-6", "--set", "ctx=0x1000",
                 "--set", "name=12", "--set", "tied=yes")
    assert result.code == 0, result.err
    fields = gguf.GGUFReader(tmp_path / "p.gguf").fields
    assert fields["llama.attention.layer_norm_rms_epsilon"].contents() == pytest.approx(1e-6)
    assert fields["llama.context_length"].contents() == 4096
    assert fields["general.name"].contents() == "12"  # a str parameter stays text
    assert fields["toyp.tied"].contents() is True
    line = assert_clean_failure(fmt("to-gguf", source, "-o", tmp_path / "q.gguf", "--set", "ctx=many"))
    assert "--set ctx=many: ctx takes a value of type int, not 'many'" in line


MATCH_TABLE = """
    architecture: llama
    UNMATCHED
    metadata: []
    tensors:
      - {match: "layers.{bid}.{kind}.weight", gguf: ATTN_Q, when: "kind == 'wq'",
         transforms: [transpose, "scale(bid + 1)", "rope_permute(2)"]}
      - {match: "layers.{bid}.wk.weight", name: "blk.{bid}.attn_k.weight",
         when: "tensor.ne == [8, 4] and tensor.type == 'f32'", transforms: ["scale(tensor.ne[1] / 2)"]}
      - {match: norm, gguf: OUTPUT_NORM, transforms: ["cast('f32')"]}
"""


def test_tables_select_tensors_by_name_and_transform_them(tmp_path: Path, fmt: Fmt,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`match:` entries with captures and named transforms, against an independent numpy reference;
    an input tensor no entry selects is an error, or with `unmatched: warn` a warning naming it."""
    import numpy as np

    rng = np.random.default_rng(5)
    wq = [rng.standard_normal((8, 4)).astype(np.float32) for _ in range(2)]
    wk = rng.standard_normal((4, 8)).astype(np.float32)
    norm = rng.standard_normal(8).astype(np.float16)
    source = tmp_path / "in.gguf"
    writer = gguf.GGUFWriter(source, "llama")
    for bid, array in enumerate(wq):
        writer.add_tensor(f"layers.{bid}.wq.weight", array)
    writer.add_tensor("layers.1.wk.weight", wk)
    writer.add_tensor("norm", norm)
    writer.add_tensor("extra", np.zeros(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tables = tmp_path / "tables"
    tables.mkdir()
    monkeypatch.setenv("GGFMT_MAPPING_PATH", str(tables))
    (tables / "renamed-strict.yaml").write_text(textwrap.dedent(MATCH_TABLE).replace("UNMATCHED", ""))
    line = assert_clean_failure(fmt("to-gguf", source, "--mapping", "renamed-strict", "-o", tmp_path / "o.gguf"))
    assert "extra is selected by no entry of renamed-strict" in line
    (tables / "renamed.yaml").write_text(textwrap.dedent(MATCH_TABLE).replace("UNMATCHED", "unmatched: warn"))
    result = fmt("to-gguf", source, "--mapping", "renamed", "-o", tmp_path / "o.gguf")
    assert result.code == 0, result.err
    assert "extra is selected by no entry of renamed; not converted" in result.err
    out = {t.name: t for t in gguf.GGUFReader(tmp_path / "o.gguf").tensors}
    assert list(out) == ["blk.0.attn_q.weight", "blk.1.attn_q.weight", "blk.1.attn_k.weight", "output_norm.weight"]

    def permuted(rows: np.ndarray) -> np.ndarray:  # written here from the rope rule, not taken from ggfmt
        heads = 2
        half = rows.shape[0] // heads // 2
        return rows.reshape(heads, 2, half, rows.shape[1]).swapaxes(1, 2).reshape(rows.shape)

    for bid in range(2):
        expected = permuted(wq[bid].T * np.float32(bid + 1))
        assert np.array_equal(np.asarray(out[f"blk.{bid}.attn_q.weight"].data), expected)
    assert np.array_equal(np.asarray(out["blk.1.attn_k.weight"].data), wk * np.float32(2))  # ne[1] / 2 = 2
    assert out["output_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert np.array_equal(np.asarray(out["output_norm.weight"].data), norm.astype(np.float32))


@pytest.mark.parametrize(("entry", "why"), [
    ('{match: "a.{x}.{x}", name: y}', "not a capture"),
    ('{match: "a.{x}", name: "{y}"}', "is not one of {x}"),
    ('{match: a, name: b, transforms: [explode]}', "'explode' is not a transform"),
    ('{match: a, name: b, transforms: ["scale(1"]}', "not a transform call"),
    ('{from: a, match: a, name: b}', "one of `from`"),
])
def test_match_entries_are_checked_when_loaded(entry: str, why: str, tmp_path: Path, fmt: Fmt,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    tables = tmp_path / "tables"
    tables.mkdir()
    monkeypatch.setenv("GGFMT_MAPPING_PATH", str(tables))
    name = f"bad{abs(hash(entry))}"
    (tables / f"{name}.yaml").write_text(f"architecture: llama\nmetadata: []\ntensors:\n  - {entry}\n")
    line = assert_clean_failure(fmt("to-gguf", GENUINE / "tiny-llama-f32.gguf", "--mapping", name,
                                    "-o", tmp_path / "o.gguf"))
    assert why in line


def test_a_type_inside_itself_in_every_case_is_refused_when_loaded(tmp_path: Path, fmt: Fmt) -> None:
    endless = write_schema(tmp_path, """
        meta: {id: endless}
        seq:
          - {id: head, type: node}
        types:
          node: {seq: [{id: value, type: u8}, {id: next, type: other}]}
          other: {seq: [{id: back, type: node}]}
    """, "endless.yaml")
    line = assert_clean_failure(fmt("parse", GENUINE / "ggla-finetune.bin", "--schema", endless))
    assert "type 'node' contains itself in every case (node -> other -> node)" in line
    chain = write_schema(tmp_path, """
        meta: {id: chain, trailing: true}
        seq:
          - {id: head, type: node}
        types:
          node: {seq: [{id: more, type: u8}, {id: next, type: node, if: more != 0}]}
    """, "chain.yaml")
    source = tmp_path / "chain.bin"
    source.write_bytes(b"\x01\x01\x01\x00")
    fields = ggfmt.parse(source, str(chain)).fields
    assert fields["head"]["next"]["next"]["next"]["more"] == 0


def test_the_table_is_found_by_its_source_and_target(tmp_path: Path, fmt: Fmt, monkeypatch: pytest.MonkeyPatch) -> None:
    schemas, mappings = search_paths(tmp_path, monkeypatch)
    write_schema(schemas, """
        meta: {id: toys, imports: [tensor]}
        seq:
          - {id: magic, contents: TOYS, doc: Magic.}
          - {id: weight, type: tensor, shape: [3], doc: The weights.}
    """, "toys.yaml")
    (mappings / "any-name-at-all.yaml").write_text(textwrap.dedent("""
        source: toys
        target: gguf
        architecture: llama
        metadata: []
        tensors:
          - {from: weight, gguf: TOKEN_EMBD}
    """))
    data = bytearray(b"TOYS" + struct.pack("<4I", 1, 1, 0, 3) + b"w")
    data += b"\0" * (-len(data) % 32) + struct.pack("<3f", 1.0, 2.0, 3.0)
    source = tmp_path / "toy.bin"
    source.write_bytes(bytes(data))
    result = fmt("to-gguf", source, "-o", tmp_path / "toy.gguf")
    assert result.code == 0, result.err
    assert "via any-name-at-all" in result.out
    (mappings / "any-name-at-all.yaml").unlink()
    line = assert_clean_failure(fmt("to-gguf", source, "-o", tmp_path / "toy2.gguf"))
    assert "no mapping table with source: toys and target: gguf" in line


def test_tables_check_pair_order_and_warn(tmp_path: Path, fmt: Fmt, monkeypatch: pytest.MonkeyPatch) -> None:
    """`require`, `checks`, `warnings`, `order`, `tensor_values`, `{name:any}` and `arch_option`, in a
    table written here over the genuine ggla adapter (loraA/loraB pairs, header r 4)."""
    _, mappings = search_paths(tmp_path, monkeypatch)
    table = """
        architecture: llama
        arch_option: ARCH_OPTION
        values: {n_pairs: "len(input_tensors) // 2"}
        tensor_values: {base: "tensor.name[:-6]"}
        require:
          - {expr: "REQUIRE", message: "{base} fails the requirement"}
        checks:
          - {expr: "r == R", field: r, message: "r is {r}"}
        warnings:
          - {when: "n_pairs > 20", message: "{n_pairs} pairs"}
        order: "[0 - tensor.index]"
        metadata: []
        tensors:
          - {match: "blk.{bid}.{module}.weight.lora{ab:any}", name: "b{bid}.{module}.{ab}"}
          - {match: "{other:any}", name: "{other}"}
    """

    written: list[str] = []

    def write(**values: object) -> None:
        text = textwrap.dedent(table)
        for key, value in values.items():
            text = text.replace(key, str(value))
        written.append(f"pairs{len(written)}")  # a new name each time: tables are read once per process
        (mappings / f"{written[-1]}.yaml").write_text(text)

    def run(*extra: object) -> Result:
        return fmt("to-gguf", GENUINE / "ggla-finetune.bin", "--mapping", written[-1], "-o", tmp_path / "o.gguf",
                   "--force", *extra)

    write(ARCH_OPTION="false", REQUIRE="True", R=4)
    result = run()
    assert result.code == 0, result.err
    assert result.err == "fmt: warning: 21 pairs\n"
    names = [t.name for t in gguf.GGUFReader(tmp_path / "o.gguf").tensors]
    assert names[0] == "b1.ffn_up.B" and names[-1] == "token_embd.weight.loraA" and len(names) == 42
    assert "applies to conversions whose table allows it" in assert_clean_failure(run("--arch", "gemma"))
    assert "b1.ffn_up.B" in {t.name for t in gguf.GGUFReader(tmp_path / "o.gguf").tensors}  # kept as it was
    write(ARCH_OPTION="true", REQUIRE="True", R=4)
    assert run("--arch", "gemma").code == 0
    assert "not an architecture gguf-py knows" in assert_clean_failure(run("--arch", "nonesuch"))
    write(ARCH_OPTION="false", REQUIRE="tensor.index != 24", R=4)
    line = assert_clean_failure(run())
    assert "tensors[24]" in line and "blk.1.attn_norm.weight fails the requirement" in line
    write(ARCH_OPTION="false", REQUIRE="True", R=5)
    assert "field r at byte 8: r is 4" in assert_clean_failure(run())


def test_row_wise_transforms_stream_in_blocks(tmp_path: Path, fmt: Fmt, monkeypatch: pytest.MonkeyPatch) -> None:
    """scale and cast go a block of rows at a time; with blocks of one row the output is the same,
    and it is what numpy makes of the genuine adapter's values."""
    import ggfmt.sources.weights
    from legacy_reader import read_ggla

    _, mappings = search_paths(tmp_path, monkeypatch)
    (mappings / "halved.yaml").write_text(textwrap.dedent("""
        architecture: llama
        metadata: []
        tensors:
          - {match: "{name:any}", name: "{name}", transforms: ["scale(0.5)", "cast('f16')"]}
    """))
    whole, rows = tmp_path / "whole.gguf", tmp_path / "rows.gguf"
    assert fmt("to-gguf", GENUINE / "ggla-finetune.bin", "--mapping", "halved", "-o", whole).code == 0
    monkeypatch.setattr(ggfmt.sources.weights, "ROW_BLOCK_BYTES", 1)
    assert fmt("to-gguf", GENUINE / "ggla-finetune.bin", "--mapping", "halved", "-o", rows).code == 0
    assert rows.read_bytes() == whole.read_bytes()
    data = (GENUINE / "ggla-finetune.bin").read_bytes()
    written = {t.name: np.array(t.data) for t in gguf.GGUFReader(rows).tensors}
    for record in read_ggla(GENUINE / "ggla-finetune.bin")[1]:
        values = np.frombuffer(data[record.data_offset:record.data_offset + record.nbytes], np.float32)
        expected = (values * np.float32(0.5)).astype(np.float16).reshape(tuple(reversed(record.ne)))
        assert written[record.name].dtype == np.float16 and np.array_equal(written[record.name], expected)


def test_tensors_named_one_by_one_keep_the_tables_order(tmp_path: Path, fmt: Fmt,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`tensor:` entries take one input tensor by name, in the table's order (here layer 1 before
    layer 0); a name the input lacks is refused, and so is an input tensor no entry takes."""
    _, mappings = search_paths(tmp_path, monkeypatch)
    table = """
        architecture: llama
        metadata: []
        tensors:
          - for: "[1, 0]"
            as: layer
            items:
              - {tensor: "blk.{layer}.attn_q.weight.loraA", name: "q{layer}.a", transforms: ["scale(2)"]}
              - {tensor: "blk.{layer}.attn_q.weight.loraB", name: "q{layer}.b"}
          - {match: "{other:any}", drop: true, when: "OTHERS"}
    """
    (mappings / "named.yaml").write_text(textwrap.dedent(table.replace("OTHERS", "True")))
    out = tmp_path / "o.gguf"
    result = fmt("to-gguf", GENUINE / "ggla-finetune.bin", "--mapping", "named", "-o", out)
    assert result.code == 0, result.err
    written = gguf.GGUFReader(out).tensors
    assert [t.name for t in written] == ["q1.a", "q1.b", "q0.a", "q0.b"]
    records = {r.name: r for r in ggla_records()}
    data = (GENUINE / "ggla-finetune.bin").read_bytes()
    a = records["blk.1.attn_q.weight.loraA"]
    values = np.frombuffer(data[a.data_offset:a.data_offset + a.nbytes], np.float32) * np.float32(2)
    assert np.array_equal(np.array(written[0].data).ravel(), values)
    (mappings / "named2.yaml").write_text(textwrap.dedent(table.replace("OTHERS", "False")))
    line = assert_clean_failure(fmt("to-gguf", GENUINE / "ggla-finetune.bin", "--mapping", "named2", "-o", out,
                                    "--force"))
    assert "token_embd.weight.loraA is selected by no entry of named2" in line
    (mappings / "named3.yaml").write_text(textwrap.dedent(table.replace("OTHERS", "True").replace("[1, 0]", "[1, 9]")))
    line = assert_clean_failure(fmt("to-gguf", GENUINE / "ggla-finetune.bin", "--mapping", "named3", "-o", out,
                                    "--force"))
    assert "field blk.9.attn_q.weight.loraA: is missing from the input, but named3 expects it" in line


def ggla_records() -> list[Any]:
    from legacy_reader import read_ggla

    return read_ggla(GENUINE / "ggla-finetune.bin")[1]


# The schemas behind docs/schema-language.md's samples of refused schemas, and the lines it shows.
DOC_SAMPLES = {
    "e.yaml": ["meta: {id: e}\nseq:\n  - {id: n, type: u8}\n  - {id: b, type: u8, repeat: \"open('/etc/passwd')\"}\n",
               "meta: {id: e}\nseq:\n  - {id: n, type: u8}\n  - {id: b, type: u8, repeat: \"n.__class__\"}\n"],
    "t.yaml": ["meta: {id: t}\nseq:\n  - {id: a, type: u33}\n", "meta: {id: t}\nseq:\n  - {id: a, type: u8, sise: 3}\n",
               "meta: {id: t}\nseq:\n  - {id: a, type: u8, valid: {expr: \"1 +\"}}\n"],
}


def test_the_documents_samples_of_refused_schemas_are_what_fmt_says(tmp_path: Path) -> None:
    from conftest import ROOT, run_fmt

    doc = (ROOT / "docs" / "schema-language.md").read_text(encoding="utf-8").splitlines()
    (tmp_path / "x.bin").write_bytes(b"AB")
    for name, texts in DOC_SAMPLES.items():
        for text in texts:
            (tmp_path / name).write_text(text, encoding="utf-8")
            said = run_fmt("parse", "x.bin", "--schema", name, cwd=tmp_path).err.strip()
            assert said in doc, said


# (schema, file name, file bytes) behind docs/schema-language.md's samples of files that do not match
DOC_MISMATCHES = [
    ("meta: {id: s}\nseq:\n  - {id: a, type: u32}\n  - {id: more, type: u32}\n", "s.bin", b"ABCD"),
    ("meta: {id: s}\nseq:\n  - {id: n, type: i8}\n  - {id: x, type: u8, repeat: n}\n", "s.bin", b"\x99AB"),
    ("meta: {id: sw}\nseq:\n  - {id: kind, type: u8}\n"
     "  - {id: body, type: {switch-on: kind, cases: {1: u8, 2: u16}}}\n", "sw3.bin", b"\x03AB"),
    ("meta: {id: t}\nseq:\n  - {id: a, type: u16}\n", "s.bin", b"ABCD"),
]


@pytest.mark.parametrize(("schema", "name", "data"), DOC_MISMATCHES)
def test_the_documents_samples_of_mismatches_are_what_fmt_says(schema: str, name: str, data: bytes,
                                                               tmp_path: Path) -> None:
    from conftest import ROOT, run_fmt

    doc = (ROOT / "docs" / "schema-language.md").read_text(encoding="utf-8").splitlines()
    (tmp_path / "layout.yaml").write_text(schema, encoding="utf-8")
    (tmp_path / name).write_bytes(data)
    said = run_fmt("parse", name, "--schema", "layout.yaml", cwd=tmp_path).err.strip()
    assert said in doc, said
