"""`fmt to-gguf ckpt.bin --model-only --vocab-model VOCAB.gguf`: what a 2023 train-text-from-scratch
checkpoint trained, as a llama model GGUF that current llama.cpp runs. Its keys are those the 2023
trainer's --model-out wrote (fixtures/genuine/tiny-llama-f32.gguf is such a file, with the vocabulary
of ggcp-v0-adam.bin); its tensors are the checkpoint's model tensors, found by an independent reader
(tests/legacy_reader.py)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from conftest import GENUINE, SYNTH, Fmt, assert_clean_failure, gguf_content
from legacy_reader import read_checkpoint
from test_llama_runs import IDS, logits

VOCAB = GENUINE / "tiny-llama-f32.gguf"


def model_tensor_bytes(checkpoint: Path) -> list[bytes]:
    """The model tensors' bytes in the order the trainer's --model-out wrote them, read independently."""
    data = checkpoint.read_bytes()
    return [data[r.data_offset:r.data_offset + r.nbytes] for r in read_checkpoint(checkpoint).model_tensors]


def test_ggcp_v0_model_has_the_keys_the_2023_trainer_wrote_and_runs(tmp_path: Path, fmt: Fmt) -> None:
    checkpoint, out = GENUINE / "ggcp-v0-adam.bin", tmp_path / "model.gguf"
    result = fmt("to-gguf", checkpoint, "--model-only", "--vocab-model", VOCAB, "-c", "16", "-o", out)
    assert result.code == 0, result.err
    keys, tensors = gguf_content(out)
    reference_keys, reference_tensors = gguf_content(VOCAB)
    assert keys == reference_keys  # names, types and values, in the trainer's order
    assert [t[:3] for t in tensors] == [t[:3] for t in reference_tensors]  # names, types, shapes
    assert [t[3] for t in tensors] == model_tensor_bytes(checkpoint)
    got = logits(out)
    assert got.shape == (len(IDS), 275) and np.isfinite(got).all()


@pytest.mark.parametrize("outtype, type_name, file_type", [("f16", "F16", 1), ("q8_0", "Q8_0", 7)])
def test_outtype_of_the_model(outtype: str, type_name: str, file_type: int, tmp_path: Path, fmt: Fmt) -> None:
    out, f32 = tmp_path / "model.gguf", tmp_path / "f32.gguf"
    base = ["--model-only", "--vocab-model", VOCAB, "-c", "16"]
    assert fmt("to-gguf", GENUINE / "ggcp-v0-adam.bin", *base, "-o", f32).code == 0
    result = fmt("to-gguf", GENUINE / "ggcp-v0-adam.bin", *base, "--outtype", outtype, "-o", out)
    assert result.code == 0, result.err
    reader = gguf.GGUFReader(out)
    assert reader.fields["general.file_type"].contents() == file_type
    matrices = [t for t in reader.tensors if len(t.shape) == 2]
    assert matrices and all(t.tensor_type.name == type_name for t in matrices)
    # the model means the same, up to what the type costs
    assert np.abs(logits(out) - logits(f32)).max() <= (1e-3 if outtype == "f16" else 1e-2)


def test_ggcp_v1_model(tmp_path: Path, fmt: Fmt) -> None:
    """A checkpoint with an optimizer context of version 1 (n_vocab 40): its vocabulary model is
    written here by gguf-py, as a 40-token llama tokenizer."""
    vocab = tmp_path / "vocab.gguf"
    writer = gguf.GGUFWriter(vocab, "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"t{i}" for i in range(40)])
    writer.add_token_scores([float(-i) for i in range(40)])
    writer.add_token_types([2, 3, 3] + [1] * 37)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    checkpoint, out = SYNTH / "ggcp-v1-adam-past3.bin", tmp_path / "model.gguf"
    result = fmt("to-gguf", checkpoint, "--model-only", "--vocab-model", vocab, "-o", out)
    assert result.code == 0, result.err
    reader = gguf.GGUFReader(out)
    assert reader.fields["llama.context_length"].contents() == 128  # the trainer's default --ctx
    assert reader.fields["tokenizer.ggml.tokens"].contents()[:2] == ["t0", "t1"]
    assert reader.fields["tokenizer.ggml.bos_token_id"].contents() == 1  # the trainer's default
    assert [t.data.tobytes() for t in reader.tensors] == model_tensor_bytes(checkpoint)
    got = logits(out, [1, 17, 39, 3, 22])  # ids of its 40 tokens
    assert got.shape == (5, 40) and np.isfinite(got).all()


def test_model_only_and_vocab_model_go_together(tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "o.gguf"
    line = assert_clean_failure(fmt("to-gguf", GENUINE / "ggcp-v0-adam.bin", "--model-only", "-o", out), tmp_path)
    assert "--vocab-model: --model-only and --vocab-model go together" in line
    line = assert_clean_failure(fmt("to-gguf", GENUINE / "ggcp-v0-adam.bin", "--outtype", "f16", "-o", out),
                                tmp_path)
    assert "a training checkpoint keeps its f32 tensors" in line


def test_a_vocabulary_of_another_size_is_refused(tmp_path: Path, fmt: Fmt) -> None:
    line = assert_clean_failure(fmt("to-gguf", SYNTH / "ggcp-v1-adam-past3.bin", "--model-only", "--vocab-model",
                                    VOCAB, "-o", tmp_path / "o.gguf"), tmp_path)
    assert "its tokenizer has 275 tokens, the checkpoint's model 40" in line


def test_the_training_checkpoint_is_unchanged(tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "o.gguf"
    assert fmt("to-gguf", SYNTH / "ggcp-v1-adam-past3.bin", "-o", out).code == 0
    assert gguf_content(out) == gguf_content(SYNTH / "ggcp-v1-adam-past3.ref.gguf")


def vocabulary(path: Path, n: int, tokens_type: int = 8, n_scores: int | None = None,
               bos: int | None = None) -> Path:
    """A vocabulary GGUF written by hand from the GGUF specification (not by ggfmt, not by gguf-py,
    which would refuse some of these): architecture, tokenizer model, tokens, scores, token types."""
    import struct

    def text(b: bytes) -> bytes:
        return struct.pack("<Q", len(b)) + b

    def kv(key: bytes, value_type: int, payload: bytes) -> bytes:
        return text(key) + struct.pack("<I", value_type) + payload

    tokens = b"".join(text(b"t%d" % i) for i in range(n)) if tokens_type == 8 else bytes(n)
    n_scores = n if n_scores is None else n_scores
    kvs = [kv(b"general.architecture", 8, text(b"llama")), kv(b"tokenizer.ggml.model", 8, text(b"llama")),
           kv(b"tokenizer.ggml.tokens", 9, struct.pack("<IQ", tokens_type, n) + tokens),
           kv(b"tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, n_scores) + bytes(4 * n_scores)),
           kv(b"tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, n) + struct.pack(f"<{n}i", *[1] * n))]
    if bos is not None:
        kvs.append(kv(b"tokenizer.ggml.bos_token_id", 4, struct.pack("<I", bos)))
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))
    return path


@pytest.mark.parametrize(("damage", "words"), [
    ({"n_scores": 10}, "tokenizer.ggml.scores and tokenizer.ggml.token_type do not have one entry per token (275)"),
    ({"tokens_type": 0}, "its tokenizer keys are not of the types llama.cpp reads"),
    ({"bos": 99999}, "a special token id (tokenizer.ggml.*_token_id) is not a u32 naming one of its 275 tokens"),
    ({"bos": 275}, "is not a u32 naming one of its 275 tokens"),
])
def test_a_tokenizer_llama_cpp_cannot_load_is_refused(damage: dict[str, int], words: str, tmp_path: Path,
                                                      fmt: Fmt) -> None:
    vocab = vocabulary(tmp_path / "vocab.gguf", 275, **damage)
    out = tmp_path / "o.gguf"
    line = assert_clean_failure(fmt("to-gguf", GENUINE / "ggcp-v0-adam.bin", "--model-only", "--vocab-model", vocab,
                                    "-o", out))
    assert f"--vocab-model: {vocab}: " in line and words in line, line
    assert not out.exists()
    # the same vocabulary undamaged is taken (so what was refused is the damage)
    assert fmt("to-gguf", GENUINE / "ggcp-v0-adam.bin", "--model-only", "--vocab-model",
               vocabulary(tmp_path / "good.gguf", 275, bos=274), "-o", out).code == 0


@pytest.mark.parametrize("where", ["directory", "fifo", "/dev/zero"])
def test_a_vocab_model_that_is_not_a_file_is_refused_at_once(where: str, tmp_path: Path) -> None:
    import os

    from conftest import run_fmt

    path = {"directory": tmp_path, "fifo": tmp_path / "fifo", "/dev/zero": Path("/dev/zero")}[where]
    if where == "fifo":
        os.mkfifo(path)
    result = run_fmt("to-gguf", GENUINE / "ggcp-v0-adam.bin", "--model-only", "--vocab-model", path,
                     "-o", tmp_path / "o.gguf")
    assert result.code == 2 and len(result.err.splitlines()) == 1, result
    kind = {"directory": "is a directory", "fifo": "is a FIFO", "/dev/zero": "is a character device"}[where]
    assert kind in result.err and "no such file" not in result.err
