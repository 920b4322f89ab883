"""`fmt edit`: an edited GGUF equals its source except for the edit (keys read by gguf-py's
GGUFReader, tensor bytes compared by hash)."""

from __future__ import annotations

import hashlib
import shutil
import struct
from pathlib import Path
from typing import Any

import gguf

from conftest import GENUINE, Fmt, assert_clean_failure

MODEL = GENUINE / "tiny-llama-f32.gguf"


def keys(path: Path) -> dict[str, Any]:
    reader = gguf.GGUFReader(path)
    return {f.name: (f.contents(), [t.name for t in f.types]) for f in reader.fields.values()
            if not f.name.startswith("GGUF.")}


def tensors(path: Path) -> dict[str, tuple[Any, ...]]:
    reader = gguf.GGUFReader(path)
    return {t.name: (int(t.tensor_type), [int(n) for n in t.shape], hashlib.sha256(t.data.tobytes()).hexdigest())
            for t in reader.tensors}


def test_set_add_delete_and_rename_change_only_what_was_asked(tmp_path: Path, fmt: Fmt) -> None:
    template = tmp_path / "template.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}\n{% endfor %}", encoding="utf-8")
    out = tmp_path / "out.gguf"
    result = fmt("edit", MODEL, "--set", "general.name=Mine", "--set", "llama.context_length=4096",
                 "--set-file", f"tokenizer.chat_template={template}", "--set-type", "my.ids=i16[]",
                 "--set", "my.ids=[1, -2, 300]", "--delete", "general.file_type",
                 "--rename-tensor", "output.weight=lm_head.weight", "-o", out)
    assert result.code == 0, result.err
    before, after = keys(MODEL), keys(out)
    expected = dict(before)
    del expected["general.file_type"]
    expected["general.name"] = ("Mine", ["STRING"])
    expected["llama.context_length"] = (4096, ["UINT32"])
    expected["tokenizer.chat_template"] = (template.read_text(encoding="utf-8"), ["STRING"])
    expected["my.ids"] = ([1, -2, 300], ["ARRAY", "INT16"])
    assert after == expected
    old, new = tensors(MODEL), tensors(out)
    old["lm_head.weight"] = old.pop("output.weight")
    assert new == old
    assert list(new) == [("lm_head.weight" if n == "output.weight" else n) for n in tensors(MODEL)]
    assert fmt("diff", MODEL, out).code == 1
    assert MODEL.read_bytes() == (GENUINE / "tiny-llama-f32.gguf").read_bytes()


def test_in_place_rewrites_the_header_when_it_fits_and_refuses_otherwise(tmp_path: Path, fmt: Fmt) -> None:
    path = tmp_path / "model.gguf"
    shutil.copy(MODEL, path)
    data_before = path.read_bytes()
    result = fmt("edit", path, "--set", "llama.context_length=2048", "--in-place")
    assert result.code == 0, result.err
    assert keys(path)["llama.context_length"] == (2048, ["UINT32"])
    assert tensors(path) == tensors(MODEL) and path.stat().st_size == len(data_before)
    assert not (tmp_path / "model.gguf.ggfmt-journal").exists()
    line = assert_clean_failure(fmt("edit", path, "--set", "general.name=" + "x" * 5000, "--in-place"))
    assert "bytes more room than the" in line
    assert keys(path)["llama.context_length"] == (2048, ["UINT32"])


def test_an_interrupted_in_place_edit_is_undone_by_the_next_edit(tmp_path: Path, fmt: Fmt) -> None:
    """What a stop between the header write and the journal's removal leaves: a torn header and the journal."""
    path = tmp_path / "model.gguf"
    shutil.copy(MODEL, path)
    original = path.read_bytes()
    start = int(gguf.GGUFReader(path).data_offset)
    journal = tmp_path / "model.gguf.ggfmt-journal"
    journal.write_bytes(struct.pack("<Q", start) + original[:start])
    torn = bytearray(original)
    torn[24:start // 2] = bytes(start // 2 - 24)
    path.write_bytes(bytes(torn))
    result = fmt("edit", path, "--set", "llama.context_length=99", "--in-place")
    assert result.code == 0, result.err
    assert "interrupted --in-place edit was undone" in result.err
    assert keys(path) == {**keys(MODEL), "llama.context_length": (99, ["UINT32"])}
    assert tensors(path) == tensors(MODEL) and not journal.exists()


def test_bad_edits_are_one_line_errors_and_write_nothing(tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "out.gguf"
    cases = [
        (["--set", "llama.context_length=-1"], "does not fit a u32"),
        (["--set", "llama.context_length=many"], "a u32 is an integer"),
        (["--delete", "no.such.key"], "has no such key"),
        (["--rename-tensor", "nope=x"], "has no tensor 'nope'"),
        (["--rename-tensor", "output.weight=output_norm.weight"], "exists already"),
        (["--set-type", "a.b=float", "--set", "a.b=1"], "not a GGUF type"),
        (["--set", "general.alignment=64"], "general.alignment cannot be edited"),
        (["--set-type", "a=u8[]", "--set", "a=[1, 256]"], "does not fit a u8"),
    ]
    for extra, message in cases:
        line = assert_clean_failure(fmt("edit", MODEL, *extra, "-o", out))
        assert message in line, (extra, line)
        assert not out.exists()
    out.write_bytes(b"keep")
    line = assert_clean_failure(fmt("edit", MODEL, "--set", "general.name=x", "-o", out))
    assert "already exists" in line and out.read_bytes() == b"keep"
    line = assert_clean_failure(fmt("edit", GENUINE / "ggcp-v0-adam.bin", "--set", "a=1", "-o", tmp_path / "c"))
    assert "fmt edit changes GGUF files" in line


def test_copy_in_pieces_moves_every_byte(tmp_path: Path, monkeypatch: Any) -> None:
    from ggfmt import edit

    source = tmp_path / "src.bin"
    data = bytes(range(256)) * 4099  # not a multiple of the piece size
    source.write_bytes(data)
    target = tmp_path / "dst.bin"
    target.write_bytes(b"HEADER")
    monkeypatch.setattr(edit, "COPY_PIECE", 4096)
    with open(source, "rb") as src, open(target, "r+b") as dst:
        edit._copy_range(src.fileno(), dst.fileno(), 100, len(data) - 100, 6)
    assert target.read_bytes() == b"HEADER" + data[100:]
