"""The GGUF writer packs a long array in one call: the bytes are gguf-py's own packing, item by
item (the reference is gguf-py's ``GGUFWriter._pack_val`` itself, not ggfmt's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import pytest

from ggfmt.convert.plan import _checked
from ggfmt.emit.gguf import _writer_class

VT = gguf.GGUFValueType

ARRAYS: list[tuple[Any, list[Any]]] = [
    (VT.UINT8, [0, 255, 7]), (VT.INT8, [-128, 127]), (VT.UINT16, [65535, 1]), (VT.INT16, [-32768, 5]),
    (VT.UINT32, list(range(1000))), (VT.INT32, [-(2**31), 2**31 - 1]), (VT.UINT64, [2**64 - 1, 0]),
    (VT.INT64, [-(2**63)]), (VT.FLOAT32, [0.5, -1e30, 3.0]), (VT.FLOAT64, [1e300, -0.0]), (VT.BOOL, [True, False]),
    (VT.STRING, ["a", "\u00e9t\u00e9", "", "\u2581x"]), (VT.STRING, [b"\xff\x00raw", b""]),
    (VT.STRING, ["text", b"bytes"]),
]


@pytest.mark.parametrize(("sub_type", "items"), ARRAYS, ids=lambda v: getattr(v, "name", None) or str(len(v)))
def test_an_array_packs_as_gguf_py_packs_it(sub_type: Any, items: list[Any], tmp_path: Path) -> None:
    fast = _writer_class()(tmp_path / "a.gguf", "llama")
    plain = gguf.GGUFWriter(tmp_path / "b.gguf", "llama")
    for add_vtype in (True, False):
        assert fast._pack_val(items, VT.ARRAY, add_vtype, sub_type=sub_type) == \
            plain._pack_val(items, VT.ARRAY, add_vtype, sub_type=sub_type)


def test_values_out_of_range_are_refused_by_name() -> None:
    from ggfmt.errors import FormatError

    with pytest.raises(FormatError, match="256 does not fit in u8"):
        _checked(list(range(300)), "u8[]", "k", "src")
    with pytest.raises(FormatError, match="expected an integer, got True"):
        _checked([1, True], "i32[]", "k", "src")
    with pytest.raises(FormatError, match="expected a string, got 3"):
        _checked(["a", 3], "string[]", "k", "src")
    assert _checked([1, 2.5], "f32[]", "k", "src") == [1.0, 2.5]
    assert _checked([0, 1], "bool[]", "k", "src") == [False, True]
    assert _checked(["a", b"b"], "string[]", "k", "src") == ["a", b"b"]
