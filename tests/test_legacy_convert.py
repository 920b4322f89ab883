"""`fmt to-gguf` of the 2023 llama model files: each output equals the 2023 upstream converter's GGUF
(fixtures/legacy/*.ref.gguf, read by gguf-py) key for key and tensor for tensor; the quantized blocks
ggml has changed since are rewritten so that gguf-py dequantizes them to what the 2023 ggml did
(fixtures/legacy/dequant/*.npz), within the cost of an f16 scale."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize

from conftest import FIXTURES, Fmt, assert_clean_failure, gguf_content

LEGACY = FIXTURES / "legacy"
WITH_REFERENCE = sorted(p.name[: -len(".ref.gguf")] for p in LEGACY.glob("*.ref.gguf"))
REWRITTEN = ["ggjt-v1-q4_0", "ggjt-v1-q4_1", "ggjt-v1-q4_2", "ggjt-v1-q5_0", "ggjt-v1-q8_0", "ggjt-v2-q4_0",
             "ggjt-v2-q8_0"]
DEQUANT_TOLERANCE = 2e-4  # an f32 scale rounded to f16

LAYER_NAMES = {"attention.wq": "attn_q", "attention.wk": "attn_k", "attention.wv": "attn_v",
               "attention.wo": "attn_output", "feed_forward.w1": "ffn_gate", "feed_forward.w2": "ffn_down",
               "feed_forward.w3": "ffn_up", "attention_norm": "attn_norm", "ffn_norm": "ffn_norm"}


def gguf_name(legacy: str) -> str:
    top = {"tok_embeddings.weight": "token_embd.weight", "norm.weight": "output_norm.weight",
           "output.weight": "output.weight"}
    if legacy in top:
        return top[legacy]
    block, rest = re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", legacy).groups()  # type: ignore[union-attr]
    return f"blk.{block}.{LAYER_NAMES[rest]}.weight"


@pytest.mark.parametrize("stem", WITH_REFERENCE)
def test_output_equals_the_2023_converters(stem: str, tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "out.gguf"
    source = tmp_path / f"{stem}.bin"  # general.name is the input's file name
    source.write_bytes((LEGACY / f"{stem}.bin").read_bytes())
    result = fmt("to-gguf", source, "-o", out)
    assert result.code == 0, result.err
    assert gguf_content(out) == gguf_content(LEGACY / f"{stem}.ref.gguf")
    assert gguf.GGUFReader(out).fields["GGUF.version"].contents() == 3


@pytest.mark.parametrize("stem", REWRITTEN)
def test_rewritten_blocks_dequantize_as_the_2023_ggml_did(stem: str, tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "out.gguf"
    result = fmt("to-gguf", LEGACY / f"{stem}.bin", "-o", out)
    assert result.code == 0, result.err
    kind = stem.split("-")[2]
    legacy_name = "q4_2" if kind == "q4_2" else f"{kind}_{stem.split('-')[1]}"
    assert f"note: 16 tensors in the 2023 {legacy_name} block layout written as" in result.out
    # v2 dequantizes bitwise as v1 did (fixtures/legacy/README.md), so the v1 values hold for both
    reference = np.load(LEGACY / "dequant" / f"ggjt-v1-{kind}.dequant.npz")
    tensors = {t.name: t for t in gguf.GGUFReader(out).tensors}
    assert len(reference.files) == 21  # the 16 matrices, and the 5 norms (f32)
    for name in reference.files:
        tensor = tensors[gguf_name(name)]
        expected_type = "F32" if reference[name].ndim == 1 else "F16" if kind == "q4_2" else kind.upper()
        assert tensor.tensor_type.name == expected_type
        values = dequantize(tensor.data, tensor.tensor_type).reshape(reference[name].shape)
        assert np.abs(values - reference[name]).max() <= DEQUANT_TOLERANCE, name


def test_q4_2_is_exact_in_f32(tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "out.gguf"
    assert fmt("to-gguf", LEGACY / "ggjt-v1-q4_2.bin", "--outtype", "f32", "-o", out).code == 0
    reference = np.load(LEGACY / "dequant" / "ggjt-v1-q4_2.dequant.npz")
    tensors = {t.name: t for t in gguf.GGUFReader(out).tensors}
    for name in reference.files:
        tensor = tensors[gguf_name(name)]
        assert tensor.tensor_type.name == "F32"
        assert np.array_equal(np.asarray(tensor.data).reshape(reference[name].shape), reference[name]), name


def test_the_upstream_options(tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "out.gguf"
    result = fmt("to-gguf", LEGACY / "ggjt-v3-f32.bin", "-o", out, "--context-length", "4096", "--gqa", "2",
                 "--eps", "1e-5", "--name", "Tiny", "--desc", "a test")
    assert result.code == 0, result.err
    fields = gguf.GGUFReader(out).fields
    assert fields["llama.context_length"].contents() == 4096
    assert fields["llama.attention.head_count_kv"].contents() == 2
    assert fields["llama.attention.layer_norm_rms_epsilon"].contents() == pytest.approx(1e-5)
    assert fields["general.name"].contents() == "Tiny"
    assert fields["general.description"].contents() == "a test"


def test_a_gqa_that_does_not_divide_the_heads_is_refused(tmp_path: Path, fmt: Fmt) -> None:
    line = assert_clean_failure(fmt("to-gguf", LEGACY / "ggjt-v3-f32.bin", "-o", tmp_path / "o.gguf",
                                    "--gqa", "3"), tmp_path)
    assert "hparams.n_head" in line and "4 heads do not split into groups of --gqa 3" in line


# -- k-quants: no 2023 quantizer made one for a model this small; a file is written from the layout --

def ggjt_v3(tensors: list[tuple[str, int, tuple[int, ...], bytes]], n_embd: int, n_vocab: int) -> bytes:
    """A GGJT v3 file: magic, version, seven hparams, n_vocab (length, text, score), tensor records."""
    out = bytearray(b"tjgg" + struct.pack("<I", 3) + struct.pack("<7I", n_vocab, n_embd, 256, 1, 1, n_embd, 15))
    for i in range(n_vocab):
        text = b"<unk>" if i == 0 else b"<s>" if i == 1 else b"</s>" if i == 2 else b"t%d" % i
        out += struct.pack("<I", len(text)) + text + struct.pack("<f", -float(i))
    for name, word, ne, data in tensors:
        raw = name.encode()
        out += struct.pack(f"<3I{len(ne)}I", len(ne), len(raw), word, *ne) + raw
        out += bytes(-len(out) % 32) + data
    return bytes(out)


def k_blocks(type_name: str, n_blocks: int, rng: np.random.Generator) -> bytes:
    """Random blocks with finite f16 scales where the layout puts them (gguf-py's block layouts)."""
    size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]][1]
    blocks = rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
    scales = rng.uniform(0.001, 0.01, (n_blocks, 2)).astype("<f2").view(np.uint8)
    if type_name == "Q6_K":  # ql[128], qh[64], scales[16], d (f16) last
        blocks[:, -2:] = scales[:, :2]
    else:  # Q4_K: d, dmin (f16) first
        blocks[:, :4] = scales
    return blocks.tobytes()


def test_k_quant_tensors_are_copied_as_they_are(tmp_path: Path, fmt: Fmt) -> None:
    rng = np.random.default_rng(7)
    n_embd, n_vocab, n_ff = 256, 8, 256
    q4k, q6k = k_blocks("Q4_K", n_ff, rng), k_blocks("Q6_K", n_vocab, rng)
    f32 = np.ones(n_embd, dtype="<f4").tobytes()
    tensors = [("tok_embeddings.weight", 14, (n_embd, n_vocab), q6k), ("norm.weight", 0, (n_embd,), f32),
               ("output.weight", 14, (n_embd, n_vocab), q6k),
               ("layers.0.feed_forward.w1.weight", 12, (n_embd, n_ff), q4k)]
    source = tmp_path / "k.bin"
    source.write_bytes(ggjt_v3(tensors, n_embd, n_vocab))
    out = tmp_path / "k.gguf"
    result = fmt("to-gguf", source, "-o", out)
    assert result.code == 0, result.err
    written = {t.name: t for t in gguf.GGUFReader(out).tensors}
    for name, word, ne, data in tensors:
        tensor = written[gguf_name(name)]
        assert tensor.tensor_type == gguf.GGMLQuantizationType(word)
        assert [int(n) for n in tensor.shape] == list(ne)
        assert tensor.data.tobytes() == data
        if word != 0:
            expected = dequantize(np.frombuffer(data, dtype=np.uint8), gguf.GGMLQuantizationType(word))
            assert np.array_equal(dequantize(tensor.data, tensor.tensor_type).reshape(-1), expected.reshape(-1))
