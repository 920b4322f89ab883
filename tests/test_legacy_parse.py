"""The 2023 llama model files (unversioned ggml, ggmf v1, ggjt v1-v3) parse with every tensor where an
independent reader, written here from the layout facts of fixtures/legacy/README.md, finds it."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from conftest import FIXTURES, Fmt, assert_clean_failure
from ggfmt.engine import parse

LEGACY = FIXTURES / "legacy"
FILES = sorted(LEGACY.glob("*.bin"))

# (elements, bytes) per block of each type word, by era (README "Block sizes in bytes per 32 weights")
OLD = {0: (1, 4), 1: (1, 2), 2: (32, 20), 3: (32, 24), 4: (16, 10), 6: (32, 22), 7: (32, 24), 8: (32, 36)}
V3 = {**OLD, 2: (32, 18), 3: (32, 20), 8: (32, 34)}
del V3[4]
OLD_NAMES = {2: "q4_0_v1", 3: "q4_1_v1", 4: "q4_2", 6: "q5_0_v1", 7: "q5_1_v1", 8: "q8_0_v1"}
V2_NAMES = {2: "q4_0_v2", 3: "q4_1_v2", 8: "q8_0_v2"}
TODAY = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 6: "q5_0", 7: "q5_1", 8: "q8_0"}


def independent_read(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    magic, pos, version = data[:4], 4, None
    if magic != b"lmgg":
        (version,) = struct.unpack_from("<I", data, 4)
        pos = 8
    hparams = struct.unpack_from("<7I", data, pos)
    pos += 28
    tokens = []
    for _ in range(hparams[0]):
        (n,) = struct.unpack_from("<I", data, pos)
        text = data[pos + 4:pos + 4 + n]
        pos += 4 + n
        score = None
        if magic != b"lmgg":
            (score,) = struct.unpack_from("<f", data, pos)
            pos += 4
        tokens.append((text, score))
    era = 3 if magic == b"tjgg" and version == 3 else 2 if magic == b"tjgg" and version == 2 else 1
    tensors = []
    while pos < len(data):
        n_dims, name_len, word = struct.unpack_from("<3I", data, pos)
        ne = struct.unpack_from(f"<{n_dims}I", data, pos + 12)
        pos += 12 + 4 * n_dims
        name = data[pos:pos + name_len].decode()
        pos += name_len
        if magic == b"tjgg":
            pos += -pos % 32
        block, size = (V3 if era == 3 else OLD)[word]
        nbytes = (ne[0] * (ne[1] if n_dims > 1 else 1)) // block * size
        type_name = TODAY[word] if era == 3 else (V2_NAMES if era == 2 else OLD_NAMES).get(word, TODAY.get(word))
        tensors.append((name, type_name, ne, pos, nbytes))
        pos += nbytes
    assert pos == len(data)
    return {"version": version, "hparams": hparams, "tokens": tokens, "tensors": tensors}


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_every_legacy_file_parses_as_the_spec_reads_it(path: Path) -> None:
    expected = independent_read(path)
    doc = parse(path)
    assert doc.schema.id == {b"lmgg": "ggml", b"fmgg": "ggmf", b"tjgg": "ggjt"}[path.read_bytes()[:4]]
    hp = doc.fields["hparams"]
    assert [hp[k] for k in ("n_vocab", "n_embd", "n_mult", "n_head", "n_layer", "n_rot", "ftype")] == \
        list(expected["hparams"])
    assert doc.fields.get("version") == expected["version"]
    assert [(t["text"], t["score"]) for t in doc.fields["vocab"]] == expected["tokens"]
    assert [(t.name, t.type_name, t.ne, t.offset, t.nbytes) for t in doc.tensors] == expected["tensors"]


def test_legacy_report_names_the_layout_and_the_2023_block_types(fmt: Fmt) -> None:
    result = fmt("parse", LEGACY / "ggjt-v1-q4_0.bin")
    assert result.code == 0, result.err
    assert "ggjt - llama.cpp model file, GGJT versions 1 to 3 (2023)" in result.out
    assert "format              GGJTv1" in result.out and "ftype_name  MOSTLY_Q4_0" in result.out
    assert "tok_embeddings.weight            q4_0_v1  32 x 275     3,904  5,500" in result.out


def test_a_q4_2_tensor_in_a_ggjt_v2_file_is_refused(tmp_path: Path, fmt: Fmt) -> None:
    data = bytearray((LEGACY / "ggjt-v2-q8_0.bin").read_bytes())
    header = data.index(b"tok_embeddings.weight") - 12 - 8  # n_dims, name_len, type word, ne[0], ne[1]
    struct.pack_into("<I", data, header + 8, 4)  # type word 4, q4_2, which GGJT v2 no longer had
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(data))
    line = assert_clean_failure(fmt("parse", bad))
    assert "tensors[0].type_word" in line and f"at byte {header + 8}" in line
