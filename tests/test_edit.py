"""`fmt edit`: an edited GGUF equals its source except for the edit (keys read by gguf-py's
GGUFReader, tensor bytes compared by hash)."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import gguf
import pytest

from conftest import GENUINE, Fmt, assert_clean_failure, run_fmt

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


class Stopped(BaseException):
    """Stands for the process dying in the middle of a write (not an Exception: nothing catches it)."""


def interrupt_in_place_edit(path: Path, monkeypatch: Any, fmt: Fmt, *args: str) -> None:
    """Run ``fmt edit PATH ARGS --in-place`` and stop it after half of the new header is written,
    as a power cut would: the file is torn and the edit's journal lies beside it."""
    from ggfmt.edit import in_place

    real = in_place._write_synced

    def half(target: Path, header: bytes) -> None:
        real(target, header[: len(header) // 2])
        raise Stopped

    with monkeypatch.context() as patch:
        patch.setattr(in_place, "_write_synced", half)
        with pytest.raises(Stopped):
            fmt("edit", path, *args, "--in-place")
    assert (path.parent / (path.name + ".ggfmt-journal")).exists()


def test_an_interrupted_in_place_edit_is_undone_by_the_next_edit(tmp_path: Path, fmt: Fmt, monkeypatch: Any) -> None:
    path = tmp_path / "model.gguf"
    shutil.copy(MODEL, path)
    original = path.read_bytes()
    interrupt_in_place_edit(path, monkeypatch, fmt, "--set", "llama.context_length=12345")
    assert path.read_bytes() != original  # torn
    journal = tmp_path / "model.gguf.ggfmt-journal"
    # a command that only reads refuses a file whose header is half rewritten, and leaves it be
    for extra in (["-o", tmp_path / "copy.gguf"], ["--in-place", "--dry-run"]):
        line = assert_clean_failure(fmt("edit", path, "--set", "general.name=x", *extra))
        assert "was interrupted" in line and journal.exists()
    assert not (tmp_path / "copy.gguf").exists()
    result = fmt("edit", path, "--set", "general.file_type=1", "--in-place")
    assert result.code == 0, result.err
    assert "interrupted --in-place edit was undone" in result.err
    assert keys(path) == {**keys(MODEL), "general.file_type": (1, ["UINT32"])}  # context_length as it was
    assert tensors(path) == tensors(MODEL) and not journal.exists()
    # the old header itself came back: set the key back and the file is the original, byte for byte
    assert fmt("edit", path, "--set", "general.file_type=0", "--in-place").code == 0
    assert path.read_bytes() == original


def test_a_journal_that_is_not_this_files_is_never_applied(tmp_path: Path, fmt: Fmt, monkeypatch: Any) -> None:
    other = tmp_path / "other.gguf"
    shutil.copy(MODEL, other)
    interrupt_in_place_edit(other, monkeypatch, fmt, "--set", "llama.context_length=777")
    strangers: dict[str, Any] = {
        "another file's journal": (tmp_path / "other.gguf.ggfmt-journal").read_bytes(),
        "an older layout (length and header only)": struct.pack("<Q", 300000) + b"Z" * 300000,
        "empty": b"",
        "a FIFO": None,
    }
    for what, content in strangers.items():
        path = tmp_path / "model.gguf"
        shutil.copy(MODEL, path)
        journal = tmp_path / "model.gguf.ggfmt-journal"
        if content is None:
            os.mkfifo(journal)
        else:
            journal.write_bytes(content)
        # -o and --dry-run read the file and leave it and the stranger alone
        out = tmp_path / "out.gguf"
        result = fmt("edit", path, "--set", "general.name=a", "-o", out)
        assert result.code == 0, (what, result.err)
        assert keys(out)["general.name"] == ("a", ["STRING"])
        assert fmt("edit", path, "--set", "general.name=a", "--dry-run", "-o", out, "--force").code == 0
        # --in-place refuses: it cannot keep its own journal there, and will not apply this one
        line = assert_clean_failure(fmt("edit", path, "--set", "general.name=a", "--in-place"))
        assert "not the journal of an interrupted edit of model.gguf" in line or "cannot be read" in line, what
        assert path.read_bytes() == MODEL.read_bytes(), what
        journal.unlink()
        out.unlink()
    # this file's journal, but the file was replaced since (another download under the same name)
    path = tmp_path / "model.gguf"
    interrupt_in_place_edit(path, monkeypatch, fmt, "--set", "llama.context_length=778")
    replacement = tmp_path / "new.gguf"
    shutil.copy(MODEL, replacement)
    os.replace(replacement, path)
    line = assert_clean_failure(fmt("edit", path, "--set", "general.name=a", "--in-place"))
    assert "written for another file, or this one has changed since" in line
    assert path.read_bytes() == MODEL.read_bytes()


def test_an_edit_in_progress_locks_the_file_against_another(tmp_path: Path, fmt: Fmt) -> None:
    import fcntl

    path = tmp_path / "model.gguf"
    shutil.copy(MODEL, path)
    with open(path, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # what an --in-place edit under way holds
        for extra in (["--in-place"], ["-o", tmp_path / "out.gguf"]):
            line = assert_clean_failure(fmt("edit", path, "--set", "general.name=a", *extra))
            assert "another fmt edit of this file is in progress" in line
    assert path.read_bytes() == MODEL.read_bytes() and not (tmp_path / "out.gguf").exists()


def test_two_in_place_edits_at_once_never_lose_one_silently(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    context = keys(MODEL)["llama.context_length"][0]
    for _ in range(6):
        shutil.copy(MODEL, path)
        edits = [["--set", "general.file_type=1"], ["--set", f"llama.context_length={context + 1}"]]
        runs = [subprocess.Popen([sys.executable, "-m", "ggfmt", "edit", path, *e, "--in-place", "-q"],
                                 stderr=subprocess.PIPE, text=True) for e in edits]
        outcomes = [(run.wait(timeout=120), run.stderr.read() if run.stderr else "") for run in runs]
        for run in runs:
            if run.stderr:
                run.stderr.close()
        after = keys(path)
        done = [after["general.file_type"][0] == 1, after["llama.context_length"][0] == context + 1]
        for (code, err), applied in zip(outcomes, done, strict=True):
            assert code in (0, 2), err
            assert applied == (code == 0), (outcomes, after["general.file_type"], after["llama.context_length"])
            if code == 2:
                assert "another fmt edit of this file is in progress" in err
        assert not (tmp_path / "model.gguf.ggfmt-journal").exists()


def test_set_file_takes_regular_files_of_bounded_size_as_they_are(tmp_path: Path, fmt: Fmt, monkeypatch: Any) -> None:
    from ggfmt.edit import values as edit_values

    out = tmp_path / "out.gguf"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for source, message in ((Path("/dev/zero"), "is a character device"), (fifo, "is a FIFO"),
                            (tmp_path, "is a directory"), (tmp_path / "none", "no such file")):
        # in a process of its own: a FIFO waited on would hang it, not the suite
        result = run_fmt("edit", MODEL, "--set-file", f"tokenizer.chat_template={source}", "-o", out)
        assert result.code == 2 and len(result.err.splitlines()) == 1, result
        assert message in result.err and not out.exists()
    template = tmp_path / "t.jinja"
    template.write_bytes(b"{{ a }}\r\n{{ b }}\r\n")
    monkeypatch.setattr(edit_values, "VALUE_FILE_LIMIT", 10)
    line = assert_clean_failure(fmt("edit", MODEL, "--set-file", f"tokenizer.chat_template={template}", "-o", out))
    assert "bytes; a metadata string is at most" in line
    monkeypatch.undo()
    assert fmt("edit", MODEL, "--set-file", f"tokenizer.chat_template={template}", "-o", out).code == 0
    assert keys(out)["tokenizer.chat_template"][0] == "{{ a }}\r\n{{ b }}\r\n"  # line ends kept


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


def test_a_new_key_the_specification_names_takes_its_standard_type(tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "out.gguf"
    result = fmt("edit", MODEL, "--set", "general.name=2024", "--set", "tokenizer.ggml.add_bos_token=1",
                 "--set", "llama.rope.scaling.factor=2", "--set", "general.base_model.0.name=7",
                 "--set", "my.count=010", "--set", "my.big=5000000000", "--set", "my.huge=1e39", "-o", out)
    assert result.code == 0, result.err
    after = keys(out)
    # the types gguf-py's writer gives these keys, which llama.cpp requires
    assert after["general.name"] == ("2024", ["STRING"])
    assert after["tokenizer.ggml.add_bos_token"] == (True, ["BOOL"])
    assert after["llama.rope.scaling.factor"] == (2.0, ["FLOAT32"])
    assert after["general.base_model.0.name"] == ("7", ["STRING"])
    # other new keys: what the text reads as
    assert after["my.count"] == (10, ["UINT32"]) and after["my.big"] == (5000000000, ["INT64"])
    assert after["my.huge"] == (1e39, ["FLOAT64"])
    # a key the file has keeps its type
    result = fmt("edit", MODEL, "--set", "general.architecture=7", "-o", out, "--force")
    assert keys(out)["general.architecture"] == ("7", ["STRING"])


@pytest.mark.parametrize(("args", "words"), [
    (["--set", "llama.rope.freq_base=1e400"], "'1e400' does not fit an f32"),
    (["--set", "my.big=" + "9" * 5000], "does not fit any GGUF integer type"),
    (["--set", "k\udcff=1"], "--set: not UTF-8 text"),
    (["--rename-tensor", "output.weight=\udcff"], "--rename-tensor: not UTF-8 text"),
    (["--set-type", "x=u32[]", "--set", "x=" + "[" * 50000 + "]" * 50000], "nested too deeply"),
    (["--rename-key", "no.such=x"], "has no key 'no.such'"),
    (["--rename-key", "general.architecture=llama.block_count"], "a key 'llama.block_count' exists already"),
])
def test_values_that_cannot_be_written_are_refused(args: list[str], words: str, tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "out.gguf"
    line = assert_clean_failure(fmt("edit", MODEL, *args, "-o", out))
    assert words in line, line
    assert not out.exists()


def test_an_explicit_infinity_is_written(tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "out.gguf"
    assert fmt("edit", MODEL, "--set", "llama.rope.freq_base=inf", "-o", out).code == 0
    assert keys(out)["llama.rope.freq_base"] == (float("inf"), ["FLOAT32"])


def test_rename_key_keeps_type_value_and_place(tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "out.gguf"
    result = fmt("edit", MODEL, "--rename-key", "llama.context_length=llama.ctx", "-o", out)
    assert result.code == 0, result.err
    before, after = list(keys(MODEL).items()), list(keys(out).items())
    place = [k for k, _ in before].index("llama.context_length")
    assert after[place] == ("llama.ctx", before[place][1])
    assert after[:place] + after[place + 1:] == before[:place] + before[place + 1:]


def test_an_output_directory_takes_the_inputs_name(tmp_path: Path, fmt: Fmt) -> None:
    directory = tmp_path / "edited"
    directory.mkdir()
    for given in (f"{directory}/", str(directory)):
        result = fmt("edit", MODEL, "--set", "general.file_type=1", "-o", given, "--force")
        assert result.code == 0, result.err
        assert keys(directory / MODEL.name)["general.file_type"] == (1, ["UINT32"])
    line = assert_clean_failure(fmt("edit", MODEL, "--set", "general.file_type=1", "-o", f"{tmp_path}/none/"))
    assert "no such directory" in line


def test_dry_run_in_place_says_whether_the_edit_fits(tmp_path: Path, fmt: Fmt) -> None:
    path = tmp_path / "model.gguf"
    shutil.copy(MODEL, path)
    result = fmt("edit", path, "--set", "general.file_type=1", "--in-place", "--dry-run")
    assert result.code == 0, result.err
    assert "would set general.file_type (u32), written in place" in result.out and "nothing was written" in result.out
    line = assert_clean_failure(fmt("edit", path, "--set", "general.name=" + "x" * 9000, "--in-place", "--dry-run"))
    assert "bytes more room than the" in line
    assert path.read_bytes() == MODEL.read_bytes()
