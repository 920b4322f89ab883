"""`fmt to-gguf old.gguf`: a GGUF of version 1 (written here from the v1 specification) or 2 becomes
version 3 with every key, value, type and tensor kept, as gguf-py reads them; a version 3 file is
already current unless --outtype converts its tensors."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np

from conftest import GENUINE, Fmt, assert_clean_failure, gguf_content
from test_gguf_versions import write_v1, write_v3


def test_version_1_becomes_version_3_with_the_same_content(tmp_path: Path, fmt: Fmt) -> None:
    v1, out, same_in_v3 = tmp_path / "v1.gguf", tmp_path / "out.gguf", tmp_path / "v3.gguf"
    write_v1(v1)
    write_v3(same_in_v3)  # the same keys and tensors, written by gguf-py
    result = fmt("to-gguf", v1, "-o", out)
    assert result.code == 0, result.err
    assert gguf.GGUFReader(out).fields["GGUF.version"].contents() == 3
    assert gguf_content(out) == gguf_content(same_in_v3)


def test_version_2_becomes_version_3_with_the_same_content(tmp_path: Path, fmt: Fmt) -> None:
    source = GENUINE / "tiny-llama-f32.gguf"  # written by the 2023 trainer: version 2
    assert gguf.GGUFReader(source).fields["GGUF.version"].contents() == 2
    out = tmp_path / "out.gguf"
    assert fmt("to-gguf", source, "-o", out).code == 0
    assert gguf.GGUFReader(out).fields["GGUF.version"].contents() == 3
    assert gguf_content(out) == gguf_content(source)
    assert fmt("diff", source, out).code == 0


def test_the_alignment_a_file_sets_is_kept(tmp_path: Path, fmt: Fmt) -> None:
    source, out = tmp_path / "aligned.gguf", tmp_path / "out.gguf"
    writer = gguf.GGUFWriter(source, "tiny")
    writer.add_custom_alignment(256)
    writer.add_tensor("a.weight", np.arange(10, dtype=np.float32))
    writer.add_tensor("b.weight", np.arange(7, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    data = bytearray(source.read_bytes())
    struct.pack_into("<I", data, 4, 2)  # the same layout, as version 2
    source.write_bytes(bytes(data))
    assert fmt("to-gguf", source, "-o", out).code == 0
    reader = gguf.GGUFReader(out)
    assert reader.fields["general.alignment"].contents() == 256
    assert all(t.data_offset % 256 == 0 for t in reader.tensors)
    assert gguf_content(out) == gguf_content(source)


def test_a_current_file_is_refused_unless_outtype_converts_it(tmp_path: Path, fmt: Fmt) -> None:
    current, out = tmp_path / "v3.gguf", tmp_path / "out.gguf"
    write_v3(current)
    line = assert_clean_failure(fmt("to-gguf", current, "-o", out), None)
    assert "field version at byte 4: the file is already GGUF version 3" in line and not out.exists()
    result = fmt("to-gguf", current, "--outtype", "f16", "-o", out)
    assert result.code == 0, result.err
    keys, tensors = gguf_content(out)
    source_keys, _ = gguf_content(current)
    assert keys == source_keys
    by_name = {name: (kind, shape, data) for name, kind, shape, data in tensors}
    tok = by_name["tok.weight"]
    assert tok[0] == "F16" and np.array_equal(np.frombuffer(tok[2], "<f2").astype(np.float32),
                                              np.arange(64, dtype=np.float32))
    assert by_name["norm.weight"][0] == "F32"  # vectors stay f32, as in llama.cpp's converters


def test_a_whole_file_type_follows_outtype(tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "out.gguf"
    assert fmt("to-gguf", GENUINE / "tiny-llama-f32.gguf", "--outtype", "f16", "-o", out).code == 0
    fields = gguf.GGUFReader(out).fields
    assert fields["general.file_type"].contents() == 1  # mostly f16, as llama.cpp's converters say


def test_the_upgraded_model_runs_as_the_original(tmp_path: Path, fmt: Fmt) -> None:
    from test_llama_runs import logits

    source, out = GENUINE / "tiny-llama-f32.gguf", tmp_path / "out.gguf"
    assert fmt("to-gguf", source, "-o", out).code == 0
    assert np.array_equal(logits(out), logits(source))
