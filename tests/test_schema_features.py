"""One feature of the schema language per line, in the spirit of Construct's ``common()``: the
bytes parse to the fields, the fields build the same bytes again, and the static size is the one
the compiled schema states (None where it depends on the file)."""

from __future__ import annotations

import struct
import textwrap
from pathlib import Path
from typing import Any

import pytest

import ggfmt
from ggfmt.engine import build, with_payloads_from
from ggfmt.schema import namespace_of


def roundtrip(tmp_path: Path, seq: str, data: bytes, fields: dict[str, Any], size: int | None,
              types: str = "") -> None:
    """Parse ``data`` with a schema of ``seq`` (and ``types``), check ``fields``, build it again,
    and compare the static size."""
    schema = tmp_path / "feature.yaml"
    text = "meta: {id: feature}\nseq:\n" + textwrap.indent(textwrap.dedent(seq).strip(), "  ") + "\n"
    if types:
        text += "types:\n" + textwrap.indent(textwrap.dedent(types).strip(), "  ") + "\n"
    schema.write_text(text)
    source = tmp_path / "data.bin"
    source.write_bytes(data)
    doc = ggfmt.parse(source, str(schema))
    assert {name: doc.fields[name] for name in fields} == fields
    built = tmp_path / "built.bin"
    build(built, str(schema), with_payloads_from(doc))
    assert built.read_bytes() == data
    assert namespace_of(schema).type_size("feature") == size


POINT = "point: {seq: [{id: x, type: i16, doc: x}, {id: y, type: i16, doc: y}]}"
SIZED = "sized: {params: {n: {type: int}}, seq: [{id: v, type: u8, repeat: n, doc: v}]}"
NAMED = "named: {seq: [{id: name, type: str, size-prefix: u8, doc: a name}]}"


@pytest.mark.parametrize(("seq", "data", "fields", "size", "types"), [
    ("- {id: a, type: u8}\n- {id: b, type: u16}\n- {id: c, type: u32}", b"\x01\x02\x00\x03\x00\x00\x00",
     {"a": 1, "b": 2, "c": 3}, 7, ""),
    ("- {id: a, type: i8}\n- {id: f, type: f32}", b"\xff" + struct.pack("<f", 0.5), {"a": -1, "f": 0.5}, 5, ""),
    ("- {id: magic, contents: GGFM}", b"GGFM", {"magic": b"GGFM"}, 4, ""),
    ("- {id: v, type: u16, repeat: 3}", struct.pack("<3H", 1, 2, 3), {"v": [1, 2, 3]}, 6, ""),
    ("- {id: n, type: u8}\n- {id: v, type: u16, repeat: n}", b"\x02" + struct.pack("<2H", 7, 8),
     {"n": 2, "v": [7, 8]}, None, ""),
    ("- {id: s, type: str, size-prefix: u32}", struct.pack("<I", 2) + b"hi", {"s": "hi"}, None, ""),
    ("- {id: b, type: bytes, size: 3}", b"abc", {"b": b"abc"}, 3, ""),
    ("- {id: a, type: u8}\n- {align: 4}\n- {id: b, type: u8}", b"\x01\0\0\0\x02", {"a": 1, "b": 2}, None, ""),
    ("- {id: n, type: u8}\n- {id: extra, type: u8, if: n > 0}", b"\x01\x09", {"n": 1, "extra": 9}, None, ""),
    ("- {id: p, type: point}", struct.pack("<2h", -3, 4), {"p": {"x": -3, "y": 4}}, 4, POINT),
    ("- {id: p, type: point, repeat: 2}", struct.pack("<4h", 1, 2, 3, 4),
     {"p": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]}, 8, POINT),
    ("- {id: k, type: u8}\n- {id: v, type: {switch-on: k, cases: {1: u8, 2: u16}}}", b"\x02\x05\x00",
     {"k": 2, "v": 5}, None, ""),
    ("- {id: v, type: {switch-on: 1, cases: {1: u16, 2: i16}}}", b"\x05\x00", {"v": 5}, 2, ""),
    ("- {id: s, type: sized, n: 3}", b"\x01\x02\x03", {"s": {"v": [1, 2, 3]}}, None, SIZED),
    # a switch case passes arguments to its type
    ("- {id: k, type: u8}\n- {id: v, type: {switch-on: k, cases: {1: {type: sized, n: 1}, _: {type: sized, n: k}}}}",
     b"\x03\x07\x08\x09", {"k": 3, "v": {"v": [7, 8, 9]}}, None, SIZED),
    ("- {id: n, type: named, repeat: 2}", b"\x01a\x02bc", {"n": [{"name": "a"}, {"name": "bc"}]}, None, NAMED),
    ("- {id: big, one-of: {short: point, long: sized}, by: size, choice: kind}", struct.pack("<2h", 1, 2),
     {"kind": "short", "big": {"x": 1, "y": 2}}, None, POINT + "\n" + SIZED.replace("n: {type: int}",
                                                                                   "n: {type: int, default: 9}")),
    ("- {id: start, type: u32}\n- {id: data, type: payload, size: 2, at: start}\n- {id: tail, type: payload, size: 2}",
     struct.pack("<I", 4) + b"zz", {"start": 4}, 6, ""),
    ("- {id: here, type: offset}\n- {id: a, type: u8}", b"\x07", {"here": 0, "a": 7}, 1, ""),
])
def test_a_feature_parses_builds_and_has_its_size(seq: str, data: bytes, fields: dict[str, Any],
                                                  size: int | None, types: str, tmp_path: Path) -> None:
    roundtrip(tmp_path, seq, data, fields, size, types)


def test_the_helper_can_fail(tmp_path: Path) -> None:
    # a wrong field, a wrong size: each is noticed
    with pytest.raises(AssertionError):
        roundtrip(tmp_path, "- {id: a, type: u8}", b"\x01", {"a": 2}, 1)
    with pytest.raises(AssertionError):
        roundtrip(tmp_path, "- {id: a, type: u8}", b"\x01", {"a": 1}, 2)


def test_one_reading_of_a_schema_serves_the_engine_and_the_tools(tmp_path: Path) -> None:
    schema = tmp_path / "feature.yaml"
    schema.write_text(textwrap.dedent("""
        meta: {id: feature}
        params: {scale: {type: int, default: 1}}
        seq:
          - {id: n, type: u8, valid: {max: "scale + 5"}}
          - {id: v, type: u16, repeat: n * scale}
          - {align: "4"}
          - {id: k, type: {switch-on: n, cases: {1: point, _: u8}}}
          - {id: s, type: sized, count: n}
        instances:
          total: {value: "n + len(v)"}
        types:
          point: {seq: [{id: x, type: i16}]}
          sized: {params: {count: {type: int}}, seq: [{id: w, type: u8, repeat: count}]}
    """))
    namespace = namespace_of(schema)
    layout = namespace.types["feature"].layout
    assert [(f.index, f.id, f.is_align) for f in layout.fields] == [(0, "n", False), (1, "v", False),
                                                                     (2, None, True), (3, "k", False),
                                                                     (4, "s", False)]
    assert list(layout.expressions()) == [(("seq", 0, "valid", "max"), "scale + 5"),
                                          (("seq", 1, "repeat"), "n * scale"), (("seq", 2, "align"), "4"),
                                          (("seq", 3, "type", "switch-on"), "n"), (("seq", 4, "count"), "n"),
                                          (("instances", "total", "value"), "n + len(v)")]
    assert set(layout.defines()) == {"n", "v", "k", "s", "total", "scale"}
    assert list(layout.type_names()) == ["u8", "u16", "point", "u8", "sized"]
    assert list(namespace.types["sized"].layout.defines()) == ["w", "count"]
    # the engine reads the same fields: what it parses is what the layout lists
    data = tmp_path / "data.bin"
    data.write_bytes(b"\x02" + struct.pack("<2H", 5, 6) + b"\0\0\0" + b"\x07" + b"\x08\x09")
    doc = ggfmt.parse(data, str(schema))
    assert [name for name in doc.fields if not name.startswith("_")] == ["n", "v", "k", "s", "total"]
    assert doc.fields["total"] == 4 and doc.fields["s"]["w"] == [8, 9]


def test_a_switch_case_with_an_argument_its_type_lacks_is_one_line(tmp_path: Path) -> None:
    from ggfmt.errors import SchemaError

    schema = tmp_path / "feature.yaml"
    schema.write_text("meta: {id: feature}\nseq:\n  - {id: v, type: {switch-on: 1, cases: {1: {type: sized, m: 2}}}}\n"
                      "types:\n  " + SIZED + "\n")
    with pytest.raises(SchemaError) as caught:
        namespace_of(schema).type_size("feature")
    assert "case 1: m not a parameter of sized (its parameters: n)" in str(caught.value)
