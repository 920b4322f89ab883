"""Records in bulk (ggfmt.schema.records): a long repeat of records read by the compiled reader
means exactly what the general path, record by record, reads; its errors are the same lines; and
what it reads is what an independent reader (struct, gguf-py) finds in files written here."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import FIXTURES, Fmt, assert_clean_failure, gguf_content
from ggfmt import engine
from ggfmt.document import TensorRef, TensorTable, to_plain
from ggfmt.schema import constructs, records
from ggfmt.schema.arrays import RecordList, TensorRecords
from ggfmt.view import json_tree

# value types of GGUF (the spec's numbering) and their struct codes
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
CODES = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?", U64: "Q", I64: "q",
         F64: "d"}


def gstr(text: bytes, width: str = "Q") -> bytes:
    return struct.pack("<" + width, len(text)) + text


def value(kind: int, item: Any, width: str = "Q") -> bytes:
    """A GGUF value of type ``kind``; an array is (item type, items)."""
    if kind == STR:
        return gstr(item, width)
    if kind == ARR:
        item_type, items = item
        return struct.pack("<I" + width, item_type, len(items)) + b"".join(value(item_type, i, width) for i in items)
    return struct.pack("<" + CODES[kind], item)


def gguf(path: Path, pairs: list[tuple[bytes, int, Any]], version: int = 3) -> Path:
    width = "I" if version == 1 else "Q"
    body = b"".join(gstr(k, width) + struct.pack("<I", t) + value(t, v, width) for k, t, v in pairs)
    path.write_bytes(b"GGUF" + struct.pack("<I" + width * 2, version, 0, len(pairs)) + body)
    return path


def gguf_with_tensors(path: Path, n: int, change: Any = None) -> Path:
    """A GGUF of ``n`` one-row f32 tensors of 8 elements (32 bytes each, aligned); ``change(i, info)``
    may alter the i-th info's fields (name, ne, type, offset)."""
    infos = b""
    for i in range(n):
        info = {"name": b"t.%d" % i, "ne": [8], "type": 0, "offset": 32 * i}
        if change is not None:
            change(i, info)
        ne = info["ne"]
        infos += gstr(info["name"]) + struct.pack(f"<I{len(ne)}Q", len(ne), *ne) \
            + struct.pack("<IQ", info["type"], info["offset"])
    head = b"GGUF" + struct.pack("<IQQ", 3, n, 1) + gstr(b"general.architecture") + struct.pack("<I", STR) \
        + gstr(b"llama") + infos
    path.write_bytes(head + bytes(-len(head) % 32) + bytes(32 * n))
    return path


def mixed_pairs(n: int) -> list[tuple[bytes, int, Any]]:
    """n pairs cycling through every value type, arrays of arrays included."""
    pairs: list[tuple[bytes, int, Any]] = [(b"general.architecture", STR, b"llama")]
    for i in range(n):
        kind = i % 13
        item: Any = {U8: i % 256, I8: -(i % 128), U16: i, I16: -i % 30000, U32: i * 7, I32: -i, F32: i / 4,
                     BOOL: i % 2 == 0, STR: f"text {i} \u00e9".encode(), U64: i << 33, I64: -(i << 33),
                     F64: i / 3}.get(kind)
        if kind == ARR:
            item = (ARR, [(U32, list(range(i % 5))), (STR, [b"a", b"bc"]), (ARR, [(I8, [-1, 2])])])
        pairs.append((b"key.%05d" % i, kind, item))
    return pairs


@pytest.fixture
def general_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The general path alone: no record type compiles."""
    monkeypatch.setattr(constructs, "codec_for", lambda element: None)


def both_ways(monkeypatch: pytest.MonkeyPatch, run: Any) -> tuple[Any, Any]:
    """``run()`` with every repeat of two or more records read in bulk, then by the general path alone."""
    with monkeypatch.context() as m:
        m.setattr(records, "MIN_RECORDS", 2)
        bulk = run()
    with monkeypatch.context() as m:
        m.setattr(constructs, "codec_for", lambda element: None)
        general = run()
    return bulk, general


def record_lists(value: Any) -> Iterator[RecordList]:
    if isinstance(value, RecordList):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            if not str(k).startswith("_"):
                yield from record_lists(v)
    elif isinstance(value, list):
        for v in value:
            yield from record_lists(v)


def comparable(value: Any) -> str:
    """A parsed tree as text (NaN compares equal to NaN here)."""
    return json.dumps(value, sort_keys=True, default=repr)


PARSED_FIXTURES = sorted(p for p in FIXTURES.rglob("*") if p.suffix in (".gguf", ".bin")
                         and p.name != "adapter_model.bin"  # PEFT's torch pickles: not a layout
                         and p.parent.name not in ("adapter-bin",) and p.stat().st_size < 64 << 20)


@pytest.mark.parametrize("path", PARSED_FIXTURES, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_every_fixture_reads_the_same_in_bulk(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def run() -> tuple[str, str, list[Any], int]:
        doc = engine.parse(path)
        return (comparable(to_plain(doc.fields)), comparable(json_tree(doc.fields)), doc.tensors,
                sum(1 for _ in record_lists(doc.fields)))

    (raw, view, tensors, lists), (raw_general, view_general, tensors_general, none) = both_ways(monkeypatch, run)
    assert none == 0
    assert (raw, view, tensors) == (raw_general, view_general, tensors_general)
    if path.suffix == ".gguf" or path.parent.name == "legacy":
        assert lists > 0, "the fixture should have been read in bulk"


def test_gguf_of_every_value_type_reads_as_written(tmp_path: Path, fmt: Fmt) -> None:
    path = gguf(tmp_path / "m.gguf", mixed_pairs(700))
    doc = engine.parse(path)
    assert isinstance(doc.fields["metadata"], RecordList)
    result = fmt("parse", path, "--json")
    assert result.code == 0, result.err
    metadata = json.loads(result.out)["fields"]["metadata"]
    for key, kind, item in mixed_pairs(700):
        got = metadata[key.decode()]
        if kind == STR:
            assert got == {"type": "str", "value": item.decode()}
        elif kind == F32:
            assert math.isclose(got["value"], item, rel_tol=1e-6)
        elif kind == ARR:
            assert got["type"] == "array[]"
            assert [(v["type"], len(v["value"])) for v in got["value"]] == [("u32[]", len(item[1][0][1])), ("str[]", 2),
                                                                             ("array[]", 1)]
        else:
            assert got["value"] == item, key
    # gguf-py, an independent reader, finds the same keys in the same order
    keys, _ = gguf_content(path)
    assert [k for k, _, _ in keys] == [k.decode() for k, _, _ in mixed_pairs(700)]


def test_report_of_pairs_read_in_bulk_is_the_general_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report reads a keyed section's key, type and value columns without making records: the
    lines are those of the records, every value type and arrays of arrays included."""
    from ggfmt.commands._parse_report import render

    path = gguf(tmp_path / "m.gguf", mixed_pairs(300))
    bulk, general = both_ways(monkeypatch, lambda: list(render(engine.parse(path))))
    assert bulk == general
    assert "  u64          key.00010 = 85899345920" in bulk
    assert "  [3 × array]  key.00009 = [0, 1, 2, 3], ['a', 'bc'], [[-1, 2]]" in bulk  # noqa: RUF001
    assert "  str          key.00008 = 'text 8 \u00e9'" in bulk


def test_numbers_of_a_keyed_section_share_their_typed_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pairs read in bulk give one Typed per (type, value) of a whole number, shared by the pairs
    that hold it (a diff holds one per pair): equal to what the general path makes for each, and
    never shared across types (u8 1, u32 1, bool true and i8 1 stay apart)."""
    from ggfmt.view import Section, items

    pairs: list[tuple[bytes, int, Any]] = [(b"general.architecture", STR, b"llama")]
    pairs += [(b"k.%03d" % i, (U8, U32, BOOL, I8)[i % 4], (1, 1, True, 1)[i % 4]) for i in range(200)]
    path = gguf(tmp_path / "m.gguf", pairs)

    def run() -> list[tuple[str, Any]]:
        section = next(v for _, v in items(engine.parse(path).fields) if isinstance(v, Section))
        return list(section.entries)

    bulk, general = both_ways(monkeypatch, run)
    assert [(k, t.type, type(t.value), t.value) for k, t in bulk] == \
        [(k, t.type, type(t.value), t.value) for k, t in general]
    assert [t.type for _, t in bulk[1:5]] == ["u8", "u32", "bool", "i8"]
    assert bulk[1][1] is bulk[5][1] and bulk[2][1] is bulk[6][1]  # (the same type and value)
    assert len({id(t) for _, t in bulk[1:]}) == 4


def test_version_1_widths_read_in_bulk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pairs = mixed_pairs(200)
    path = gguf(tmp_path / "v1.gguf", pairs, version=1)

    def run() -> str:
        return comparable(json_tree(engine.parse(path).fields))

    bulk, general = both_ways(monkeypatch, run)
    assert bulk == general
    assert json.loads(bulk)["metadata"]["key.00008"]["value"] == "text 8 \u00e9"
    assert json.loads(bulk)["metadata"]["key.00009"]["value"][1] == {"type": "str[]", "value": ["a", "bc"]}


def nested_arrays(n: int, inner: int = 0) -> tuple[int, list[Any]]:
    return ARR, [(U8, [i % 256] * inner) for i in range(n)]


def test_array_of_arrays_is_one_list_of_bytes(tmp_path: Path, fmt: Fmt) -> None:
    path = gguf(tmp_path / "aoa.gguf", [(b"general.architecture", STR, b"llama"), (b"x", ARR, nested_arrays(5000, 1))])
    doc = engine.parse(path)
    items = doc.fields["metadata"][1]["value"]["items"]
    assert isinstance(items, RecordList) and len(items) == 5000
    assert len(items.wire) == 5000 * (4 + 8 + 1)  # the file's own bytes, held once
    assert [items[i]["items"] for i in (0, 255, 256, 4999)] == [[0], [255], [0], [4999 % 256]]
    result = fmt("parse", path)
    assert result.code == 0 and "[5,000 \u00d7 array]" in result.out, result


def test_diff_finds_the_one_array_that_differs(tmp_path: Path, fmt: Fmt) -> None:
    n = 3000
    a = gguf(tmp_path / "a.gguf", [(b"x", ARR, nested_arrays(n, 2))])
    changed = nested_arrays(n, 2)
    changed[1][2345] = (U8, [7, 7])
    b = gguf(tmp_path / "b.gguf", [(b"x", ARR, changed)])
    result = fmt("diff", a, b)
    assert result.code == 1, result
    assert "~ x: [3,000 \u00d7 array]" in result.out and "first difference at [2,345]" in result.out, result.out
    assert fmt("diff", a, a).code == 0


def test_edit_writes_the_records_it_read(tmp_path: Path, fmt: Fmt) -> None:
    pairs = [(b"general.architecture", STR, b"llama"), (b"x", ARR, nested_arrays(2000, 3)), *mixed_pairs(100)[1:]]
    path = gguf(tmp_path / "in.gguf", pairs)
    out = tmp_path / "out.gguf"
    result = fmt("edit", path, "--set", "general.name=y", "-o", out)
    assert result.code == 0, result.err
    keys_in, _ = gguf_content(path)
    keys_out, _ = gguf_content(out)
    assert [k for k in keys_out if k[0] != "general.name"] == keys_in
    assert ("general.name", ["STRING"], "y") in keys_out


def test_upgrade_from_version_1_rewrites_every_record(tmp_path: Path, fmt: Fmt) -> None:
    """Version 1 counts and lengths are u32: the bytes of the records cannot be copied into a v3 file."""
    pairs = [(b"general.architecture", STR, b"llama"), (b"x", ARR, (STR, [b"t%d" % i for i in range(300)]))] \
        + [(b"k.%03d" % i, ARR, (U16, [i, i + 1])) for i in range(100)]
    path = gguf(tmp_path / "v1.gguf", pairs, version=1)
    out = tmp_path / "v3.gguf"
    result = fmt("to-gguf", path, "-o", out)
    assert result.code == 0, result.err
    keys, _ = gguf_content(out)
    found = {k: v for k, _, v in keys}
    assert found["x"] == [f"t{i}" for i in range(300)]
    assert all(found[f"k.{i:03d}"] == [i, i + 1] for i in range(100))


# -- errors: the general path's line, whichever path met the record ---------------------------


def damaged(tmp_path: Path, case: str) -> Path:
    pairs = mixed_pairs(150)
    if case == "type":
        path = gguf(tmp_path / "t.gguf", pairs)
        data = bytearray(path.read_bytes())
        at = data.index(b"key.00100") + len(b"key.00100")
        data[at:at + 4] = struct.pack("<I", 13)
        path.write_bytes(bytes(data))
    elif case == "truncated":
        path = gguf(tmp_path / "t.gguf", pairs)
        path.write_bytes(path.read_bytes()[:-700])
    elif case == "utf8":
        pairs[120] = (b"key.\xff\xfe", U8, 1)
        path = gguf(tmp_path / "t.gguf", pairs)
    elif case == "deep":
        deep: Any = (U8, [1])
        for _ in range(80):
            deep = (ARR, [deep])
        pairs[90] = (b"deep", ARR, deep)
        path = gguf(tmp_path / "t.gguf", pairs)
    elif case == "count":
        path = gguf(tmp_path / "t.gguf", [(b"x", ARR, nested_arrays(100, 1))])
        data = bytearray(path.read_bytes())
        at = 24 + 9 + 4 + 12 + 50 * 13 + 4  # the count of the 51st inner array
        data[at:at + 8] = struct.pack("<Q", 1 << 40)
        path.write_bytes(bytes(data))
    elif case in ("tensor type", "misaligned", "block", "dims", "duplicate", "overlap"):
        def change(i: int, info: dict[str, Any]) -> None:
            if i != 70:
                return
            if case == "tensor type":
                info["type"] = 4  # Q4_2: a 2023 type current GGUF readers refuse
            elif case == "misaligned":
                info["offset"] += 4
            elif case == "block":
                info["type"], info["ne"] = 2, [8]  # q4_0 blocks are 32 elements
            elif case == "dims":
                info["ne"] = [1, 1, 1, 1, 8]
            elif case == "duplicate":
                info["name"] = b"t.3"
            else:
                info["offset"] = 32 * 69
        path = gguf_with_tensors(tmp_path / "t.gguf", 100, change)
    else:
        raise AssertionError(case)
    return path


@pytest.mark.parametrize("case", ["type", "truncated", "utf8", "deep", "count", "tensor type", "misaligned",
                                  "block", "dims", "duplicate", "overlap"])
def test_errors_in_bulk_are_the_general_paths(case: str, tmp_path: Path, fmt: Fmt,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = damaged(tmp_path, case)
    bulk, general = both_ways(monkeypatch, lambda: fmt("parse", path))
    assert bulk.err == general.err
    line = assert_clean_failure(bulk)
    assert ("infos" if case in ("tensor type", "misaligned", "block", "dims", "duplicate", "overlap")
            else "metadata[") in line, line


@pytest.mark.parametrize("levels", range(58, 67))
def test_strings_at_the_depth_limit_read_as_the_general_path_reads_them(levels: int, tmp_path: Path, fmt: Fmt,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A string is checked at the level it would reach, as the general path counts it: arrays of
    arrays down to the limit, strings innermost, read alike (or refused alike) both ways."""
    deep: Any = (STR, [b"leaf"])
    for _ in range(levels):
        deep = (ARR, [deep])
    pairs = mixed_pairs(100)
    pairs[50] = (b"deep", ARR, deep)
    path = gguf(tmp_path / "d.gguf", pairs)
    bulk, general = both_ways(monkeypatch, lambda: fmt("parse", path, "--json"))
    assert (bulk.code, bulk.out, bulk.err) == (general.code, general.out, general.err)


def test_tensor_infos_in_bulk_read_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = gguf_with_tensors(tmp_path / "t.gguf", 300)
    doc = engine.parse(path)
    assert isinstance(doc.fields["infos"], RecordList)
    assert [(t.name, t.ggml_type, t.ne, t.offset, t.nbytes) for t in doc.tensors] == \
        [(f"t.{i}", 0, (8,), doc.fields["data_start"] + 32 * i, 32) for i in range(300)]
    _, tensors = gguf_content(path)
    assert [t[0] for t in tensors] == [t.name for t in doc.tensors]
    # the columns the scan kept for the unique and disjoint checks are the records' own fields
    infos = doc.fields["infos"]
    for name in ("name", "n_dims", "ne", "ggml_type", "offset", "nbytes"):
        assert infos.column(name) == [record[name] for record in infos], name


def test_tensor_records_held_as_columns_are_the_general_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             fmt: Fmt) -> None:
    """A long list of tensor records is held as columns and its records made when read: each is
    the container the general path makes (fields, tags, roles), and the report, --json and the
    tensor list are the same lines either way (names that need escaping and an empty one
    included: the table then shows each tensor's path)."""
    from ggfmt.commands._parse_report import render

    odd = {3: b"\x1b[2J", 4: "caf\u00e9 \u202e".encode(), 5: b"", 7: b'a "quoted" name'}

    def change(i: int, info: dict[str, Any]) -> None:
        info["name"] = odd.get(i, info["name"])
        if i % 3 == 0:
            info["ne"], info["type"] = [4, 2], 1  # f16, 2 rows: still 16 bytes of its 32
    path = gguf_with_tensors(tmp_path / "t.gguf", 150, change)

    def run() -> tuple[Any, ...]:
        doc = engine.parse(path)
        records_read = doc.fields["tensors"]
        return (type(records_read), [(type(r), {k: v for k, v in r.items() if k != "_io"}) for r in records_read],
                list(doc.tensors), list(render(doc)), list(render(doc, raw=True)))  # (_io: Construct's stream)

    bulk, general = both_ways(monkeypatch, run)
    assert bulk[0] is TensorRecords and general[0] is not TensorRecords
    assert bulk[1:] == general[1:]
    assert {kind for kind, _ in bulk[1]} == {constructs.TensorContainer}
    lines = bulk[3]
    assert any(line.split()[:3] == ["tensors[3]", "\\x1b[2J", "f16"] for line in lines), lines[:30]
    assert any(line.split()[:2] == ["tensors[5]", "-"] for line in lines)
    row = next(line.split()[:6] for line in lines if line.startswith("  tensors[7] "))
    assert row == ["tensors[7]", "a", '"quoted"', "name", "f32", "8"]
    result = fmt("parse", path, "--json")
    assert result.code == 0, result.err
    listed = json.loads(result.out)["tensors"]
    start = engine.parse(path).fields["data_start"]
    assert [(t["path"], t["name"], t["type"], t["ne"], t["offset"], t["nbytes"]) for t in listed] == \
        [(f"tensors[{i}]", odd.get(i, b"t.%d" % i).decode(), "f16" if i % 3 == 0 else "f32",
          [4, 2] if i % 3 == 0 else [8], start + 32 * i, 16 if i % 3 == 0 else 32) for i in range(150)]


def test_values_remembered_per_argument_are_each_arguments_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A function of integer fields is called once per distinct argument (ggml_nbytes(type, ne),
    ggml_block_size(type)): with room for 4 remembered values and 7 shapes of 2 types, every
    tensor still has its own size, and the records are those the general path reads."""
    from ggfmt.schema import exprgen

    monkeypatch.setattr(exprgen, "MEMO_VALUES", 4)
    shapes = [(0 if i % 2 else 1, [8 * (i % 7 + 1)]) for i in range(100)]  # f32 or f16, 8 to 56 elements
    sizes = [n[0] * (4 if t == 0 else 2) for t, n in shapes]
    offsets = [sum(-(-size // 32) * 32 for size in sizes[:i]) for i in range(100)]
    infos = b"".join(gstr(b"t.%d" % i) + struct.pack("<IQIQ", 1, ne[0], t, offsets[i])
                     for i, (t, ne) in enumerate(shapes))
    head = b"GGUF" + struct.pack("<IQQ", 3, 100, 0) + infos
    path = tmp_path / "shapes.gguf"
    path.write_bytes(head + bytes(-len(head) % 32) + bytes(offsets[-1] + 256))
    bulk, general = both_ways(monkeypatch, lambda: list(engine.parse(path).tensors))
    assert bulk == general
    assert [(t.ggml_type, list(t.ne), t.nbytes) for t in bulk] == [(t, ne, size) for (t, ne), size in
                                                                 zip(shapes, sizes, strict=True)]


@pytest.mark.parametrize("case", ["whole", "past the end", "duplicate name"])
def test_records_that_read_no_bytes_are_read_a_column_at_a_time(case: str, tmp_path: Path, fmt: Fmt,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A GGUF's tensor records read nothing (their data is placed by the infos): their values are
    computed a chunk of records at a time, a column per field, and mean what the per-record loop
    reads; a chunk with a record that fails a check (its data past the end of the file) is left
    to that loop, whose error is the general path's."""
    from ggfmt.schema import codegen

    def change(i: int, info: dict[str, Any]) -> None:
        if i == 2500 and case == "past the end":
            info["offset"] = 32 << 30
        if i == 2500 and case == "duplicate name":
            info["name"] = b"t.1"
    path = gguf_with_tensors(tmp_path / "t.gguf", 3000, change)
    chunks: list[bool] = []  # (whether each chunk the derived function was asked for was decided there)
    derived = codegen.Generated.derived

    def spied(self: Any) -> Any:
        function = derived(self)

        def run(*args: Any) -> Any:
            values = function(*args)
            chunks.append(values is not None)
            return values
        return run if function is not None else None

    monkeypatch.setattr(codegen.Generated, "derived", spied)
    monkeypatch.setattr(records, "_CODECS", {})
    columns = fmt("parse", path), fmt("parse", path, "--json")
    monkeypatch.setattr(codegen.Generated, "derived", lambda self: None)
    monkeypatch.setattr(records, "_CODECS", {})
    per_record = fmt("parse", path), fmt("parse", path, "--json")
    assert columns == per_record
    if case == "whole":
        assert columns[0].code == 0 and chunks == [True] * 6  # (3 chunks of 1,024, twice)
        assert "  t.2999  f32   8" in columns[0].out
    elif case == "past the end":
        assert chunks == [True, True, False] * 2
        assert "tensors[2500].data" in assert_clean_failure(columns[0])
    else:  # (refused by the infos' unique check, before the tensors are read)
        assert chunks == []
        assert "infos[2500].name" in assert_clean_failure(columns[0])


def test_tensor_table_reads_as_a_list_of_its_tensors() -> None:
    """A parse's tensors by column: indexed, sliced, iterated and compared as the list of TensorRefs
    they stand for, each path made from its list's path."""
    table = TensorTable()
    table.add("model.tok", "tok", 0, [4, 2], 100, 32)
    table.add_list("layers", ["a", "b", "c"], [1, 1, 0], [[2], [2, 2], [1]], [200, 210, 220], [4, 8, 4])
    table.add("model.out", "out", 0, [], 0, 0)
    expected = [TensorRef("model.tok", "tok", 0, (4, 2), 100, 32), TensorRef("layers[0]", "a", 1, (2,), 200, 4),
                TensorRef("layers[1]", "b", 1, (2, 2), 210, 8), TensorRef("layers[2]", "c", 0, (1,), 220, 4),
                TensorRef("model.out", "out", 0, (), 0, 0)]
    assert len(table) == 5
    assert list(table) == expected and table == expected
    assert [table[i] for i in range(5)] == expected
    assert table[-1] == expected[-1] and table[1:4] == expected[1:4] and table[::-2] == expected[::-2]
    assert list(table.paths()) == [t.path for t in expected]
    assert table != expected[:4] and table != [*expected[:4], TensorRef("model.out", "out", 0, (1,), 0, 0)]
    with pytest.raises(IndexError):
        table[5]
    with pytest.raises(IndexError):
        table[-6]


def test_a_record_the_fast_path_refuses_but_the_file_allows_is_read_by_the_general_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every check the compiled reader makes is a reason to hand the record to the general path,
    never a verdict: when the general path accepts it, the whole repeat is read that way."""
    path = gguf(tmp_path / "m.gguf", mixed_pairs(200))

    def refuse(buf: bytes, pos: int, i: int, *args: Any) -> Any:
        return i, pos, records.Reject  # (what a scan's loop returns at a record it does not decide)

    first = engine.parse(path).fields["metadata"]
    assert isinstance(first, RecordList)
    monkeypatch.setattr(first.reader.codec, "loop", lambda kind: refuse)  # what a scan runs
    doc = engine.parse(path)
    assert not isinstance(doc.fields["metadata"], RecordList)
    assert len(doc.fields["metadata"]) == 201


ENCLOSING_SCHEMA = """\
meta: {id: enclosing, title: records that read values of the scopes around them, trailing: true}
seq:
  - {id: count, type: u32}
  - {id: base, type: u32}
  - {id: scale, type: f32}
  - {id: items, type: item, repeat: count}
  - {id: views, type: view, repeat: count}
  - {id: x, type: u8}
  - {id: ts, type: t, repeat: 6}
  - {id: ps, type: p, shift: base, nth: _index, repeat: count}
  - {id: qs, type: p, shift: base, nth: 1, repeat: count}
types:
  p:
    params:
      shift: {doc: Added to each.}
      nth: {doc: The record's index.}
    seq:
      - {id: b, type: u8}
    instances:
      total: {value: "b + shift + nth"}
  item:
    seq:
      - {id: a, type: u32, valid: {expr: "(_ + base) % 2 == 0"}}
    instances:
      shifted: {value: a + base}
      ratio: {value: a % scale}
  view:
    seq: []
    instances:
      a: {value: "items[_index].a + base"}
      shifted: {value: "items[_index].shifted"}
  t:
    seq:
      - {id: k, type: u8}
      - {id: more, type: u, if: "k == 1"}
    instances:
      v: {value: "k + x"}
  u:
    seq:
      - {id: x, type: u8}
      - {id: inner, type: t}
"""


def test_records_read_their_enclosing_values_as_the_general_path(tmp_path: Path, fmt: Fmt,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """What a list's records read of the scopes around them (``base``, ``items[_index].a``, a float
    in an integer operation) is read once per list in bulk, and reads as the general path reads it;
    a type inside itself through another type (``t`` in ``u`` in ``t``) reads the ``x`` nearest to it."""
    schema = tmp_path / "enclosing.yaml"
    schema.write_text(ENCLOSING_SCHEMA)
    count = 40
    ts = [(0,), (1, 7, 1, 9, 0), (2,), (1, 5, 0), (3,), (0,)]  # t: k [, u: x, t: k [...]]
    data = struct.pack("<IIf", count, 6, 2.5) + struct.pack(f"<{count}I", *range(0, 2 * count, 2)) + bytes([40]) \
        + bytes(b for t in ts for b in t) + bytes(range(count)) * 2 \
        + bytes(count)  # (a record of no bytes still needs one in the file)
    path = tmp_path / "e.bin"
    path.write_bytes(data)

    def run() -> Any:
        result = fmt("parse", path, "--schema", schema, "--json")
        assert result.code == 0, result.err
        return json.loads(result.out)

    bulk, general = both_ways(monkeypatch, run)
    assert bulk == general
    fields = general["fields"]
    views = fields["views"]
    assert [v["a"] for v in views] == [2 * i + 6 for i in range(count)]
    assert [v["shifted"] for v in views] == [2 * i + 6 for i in range(count)]
    assert [i["ratio"] for i in fields["items"]] == [(2 * i) % 2.5 for i in range(count)]
    # the nested t reads its own u's x (7, then 5), the outer ones the root's (40)
    assert [t["v"] for t in fields["ts"]] == [40, 41, 42, 41, 43, 40]
    assert fields["ts"][1]["more"]["inner"]["v"] == 1 + 7
    assert fields["ts"][1]["more"]["inner"]["more"]["inner"]["v"] == 0 + 9
    # a parameterised type's arguments, the same for every record or not
    assert [p["total"] for p in fields["ps"]] == [i + 6 + i for i in range(count)]
    assert [p["total"] for p in fields["qs"]] == [i + 6 + 1 for i in range(count)]


def test_an_enclosing_value_that_breaks_a_check_is_reported_as_the_general_path(
        tmp_path: Path, fmt: Fmt, monkeypatch: pytest.MonkeyPatch) -> None:
    schema = tmp_path / "enclosing.yaml"
    schema.write_text(ENCLOSING_SCHEMA)
    data = struct.pack("<IIf", 30, 7, 2.5) + struct.pack("<30I", *range(30)) + bytes(40)  # (a + 7) odd for a = 0
    path = tmp_path / "e.bin"
    path.write_bytes(data)
    bulk, general = both_ways(monkeypatch, lambda: fmt("parse", path, "--schema", schema))
    assert bulk.err == general.err
    assert "items[0].a" in assert_clean_failure(bulk)


def test_tensors_in_json_are_what_the_tensor_table_reads(tmp_path: Path, fmt: Fmt) -> None:
    """Names of any text (quotes, control characters, non-ASCII) reach --json as JSON strings: the
    document reads back (the standard library's parser) as the names the file holds."""
    names = [b'a "quoted" \\ name', "caf\u00e9 \u202e".encode(), b"\x1b[2J", b"t.3"]

    def change(i: int, info: dict[str, Any]) -> None:
        if i < len(names):
            info["name"] = names[i]

    path = gguf_with_tensors(tmp_path / "t.gguf", 40, change)
    result = fmt("parse", path, "--json")
    assert result.code == 0, result.err
    assert result.out.isascii()
    tensors = json.loads(result.out)["tensors"]
    start = engine.parse(path).fields["data_start"]
    assert [t["name"] for t in tensors] == [n.decode() for n in names] + [f"t.{i}" for i in range(4, 40)]
    assert [(t["type"], t["ggml_type"], t["ne"], t["offset"], t["nbytes"]) for t in tensors] == \
        [("f32", 0, [8], start + 32 * i, 32) for i in range(40)]
    assert [t["path"] for t in tensors] == [f"tensors[{i}]" for i in range(40)]


def test_columns_kept_a_chunk_at_a_time_are_the_records_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scan that keeps columns joins its records' values to them a chunk of records at a time:
    with chunks of 7 records, every column still holds every record's field, in order."""
    monkeypatch.setattr(records, "CHUNK", 7)
    pairs = gguf(tmp_path / "m.gguf", mixed_pairs(200))
    tensors = gguf_with_tensors(tmp_path / "t.gguf", 100)
    for path, name in ((pairs, "metadata"), (tensors, "infos")):
        listed = engine.parse(path).fields[name]
        assert isinstance(listed, RecordList)
        kept = dict(listed.kept)
        assert set(kept) == set(listed.reader.codec.fields)
        listed.kept.clear()  # (read again through the loop, in chunks too)
        assert comparable(listed.kept or {n: listed.column(n) for n in kept}) == comparable(kept)
        assert comparable({n: [r[n] for r in listed] for n in kept}) == comparable(kept)
