"""2023 model files of the ggml examples converted to the GGUF today's llama.cpp runs: the tokenizer
equals the one llama.cpp's own converter writes from the Hugging Face model (ref/<family>.ref.gguf),
and llama-cpp-python gives the logits of that reference (f32 files: to float noise; f16 files:
within their rounding) or, for quantized files, those the 2023 program itself computed from the
file (ggml/<file>.ggml2023-logits.npy), the quantized blocks kept byte for byte."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

import consumer
import ggfmt
from conftest import FIXTURES, Fmt

FAMILY = FIXTURES / "ggml-family"
FILES = FAMILY / "ggml"
REF = FAMILY / "ref"
IDS = [12, 17, 42, 99, 150, 201, 257, 300]  # from position 0, no BOS (ggml-family/README.md)
# the families converted, and the reference each file's family has
CONVERTED = {"gpt2": "gpt2", "gpt2-realvocab": "gpt2-realvocab", "mpt": "mpt", "replit": "replit", "falcon": "falcon",
             "falcon-ggmf": "falcon", "falcon-ggcc": "falcon", "starcoder": "starcoder", "gptneox": "gptneox",
             "dolly": "dolly"}
# the files whose vocabulary is the tokenizer's decoded text: converted with the model's own tokenizer
VOCAB_FROM = {"gptneox": FAMILY / "hf" / "gptneox", "dolly": FAMILY / "hf" / "dolly"}
# the fused q, k, v tensors a conversion rearranges, by family (their rows: the tests below):
# StarCoder's converter copied the one K/V head into n_head heads, GPT-NeoX interleaves them head by head
REARRANGED = {"starcoder": "/attn/c_attn/", "gptneox": ".attention.query_key_value.",
              "dolly": ".attention.query_key_value."}
# the families' tokenizers (only their tokenizer files are kept here)
HF = FAMILY / "hf"
# Replit's special ids: llama.cpp's converter writes fixed ones for MPT models with a sentencepiece
# vocabulary (pad 3, eos 1, unk 0: SEA-LION's), which are not Replit's; its spiece.model's are the truth
SPECIAL_IDS = ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
               "tokenizer.ggml.padding_token_id")
NOT_AS_REF = {"replit": SPECIAL_IDS}
FLOAT_NOISE = 1e-4
F16_ROUNDING = 3e-2  # f16 weights: 0.012 to 0.015 measured against the f32 reference
# today's llama.cpp and the 2023 programs differ by 0.13-0.26 on byte-identical quantized tensors;
# a wrong mapping moves logits by several units
QUANTIZED_RUNTIME_GAP = 0.5
TOKENIZER_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                  "tokenizer.ggml.merges", "tokenizer.ggml.scores", "tokenizer.ggml.bos_token_id",
                  "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id")


def family(stem: str) -> str:
    return stem.rsplit("-", 1)[0]


def files(kinds: tuple[str, ...]) -> list[str]:
    return sorted(p.stem for p in FILES.glob("*.bin") if family(p.stem) in CONVERTED and p.stem.endswith(kinds))


def converted(stem: str, tmp_path: Path, fmt: Fmt) -> Path:
    out = tmp_path / f"{stem}.gguf"
    given = VOCAB_FROM.get(family(stem))
    result = fmt("to-gguf", FILES / f"{stem}.bin", "-o", out, *(["--vocab-from", given] if given else []))
    assert result.code == 0, result.err
    return out


def read_both(stem: str, out: Path) -> tuple[Any, bytes, dict[str, Any]]:
    """The 2023 file parsed, its bytes, and the converted GGUF's tensors by name."""
    return (ggfmt.parse(FILES / f"{stem}.bin"), (FILES / f"{stem}.bin").read_bytes(),
            {t.name: t for t in gguf.GGUFReader(out).tensors})


def fields(path: Path, names: tuple[str, ...]) -> dict[str, Any]:
    reader = gguf.GGUFReader(path)
    return {name: reader.fields[name].contents() for name in names if name in reader.fields}


@pytest.mark.parametrize("stem", files(("-f32", "-f16", "-q4_0", "-q8_0")))
def test_the_tokenizer_is_the_one_llama_cpps_converter_writes(stem: str, tmp_path: Path, fmt: Fmt) -> None:
    out = converted(stem, tmp_path, fmt)
    reference = CONVERTED[family(stem)]
    compared = tuple(key for key in TOKENIZER_KEYS if key not in NOT_AS_REF.get(reference, ()))
    expected = fields(REF / f"{reference}.ref.gguf", compared)
    assert fields(out, compared) == expected
    assert len(expected["tokenizer.ggml.tokens"]) > 0


@pytest.mark.parametrize("reference", sorted(set(CONVERTED.values())))
def test_vocab_from_writes_the_models_own_tokenizer_for_every_family(reference: str, tmp_path: Path, fmt: Fmt) -> None:
    stem = next(stem for stem in files(("-q4_0", "-f32")) if CONVERTED[family(stem)] == reference)
    out = tmp_path / "out.gguf"
    result = fmt("to-gguf", FILES / f"{stem}.bin", "-o", out, "--vocab-from", HF / reference)
    assert result.code == 0, result.err
    compared = tuple(key for key in TOKENIZER_KEYS if key not in NOT_AS_REF.get(reference, ()))
    expected = fields(REF / f"{reference}.ref.gguf", compared)
    assert fields(out, compared) == expected
    assert len(expected["tokenizer.ggml.tokens"]) > 0


def sentencepiece_special_ids(model: Path) -> dict[str, int]:
    """The special ids of a sentencepiece model's TrainerSpec (ModelProto field 2; unk_id 40, bos_id
    41, eos_id 42, pad_id 43, defaults 0, 1, 2, -1), read from the protobuf wire format."""
    def varint(data: bytes, at: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            value |= (data[at] & 0x7F) << shift
            shift += 7
            at += 1
            if data[at - 1] < 0x80:
                return value, at

    def message(data: bytes) -> dict[int, Any]:
        out: dict[int, Any] = {}
        at = 0
        while at < len(data):
            key, at = varint(data, at)
            if key & 7 == 0:
                out[key >> 3], at = varint(data, at)
            elif key & 7 == 2:
                size, at = varint(data, at)
                out[key >> 3], at = data[at:at + size], at + size
            else:
                at += 4 if key & 7 == 5 else 8
        return out

    spec = message(message(model.read_bytes())[2])
    ids = {name: spec.get(number, default) for name, number, default in
           (("unk", 40, 0), ("bos", 41, 1), ("eos", 42, 2), ("pad", 43, -1))}
    return {name: value for name, value in ids.items() if value < 1 << 63 and value >= 0}


@pytest.mark.parametrize("vocab_from", [False, True])
def test_replits_special_ids_are_those_of_its_sentencepiece_model(vocab_from: bool, tmp_path: Path,
                                                                 fmt: Fmt) -> None:
    out = tmp_path / "replit.gguf"
    given = ["--vocab-from", HF / "replit" / "spiece.model"] if vocab_from else []
    assert fmt("to-gguf", FILES / "replit-f32.bin", "-o", out, *given).code == 0
    expected = sentencepiece_special_ids(HF / "replit" / "spiece.model")
    assert expected == {"unk": 1, "eos": 2, "pad": 0}  # (no BOS)
    names = {"tokenizer.ggml.unknown_token_id": "unk", "tokenizer.ggml.bos_token_id": "bos",
             "tokenizer.ggml.eos_token_id": "eos", "tokenizer.ggml.padding_token_id": "pad"}
    assert {names[key]: value for key, value in fields(out, SPECIAL_IDS).items()} == expected


@pytest.mark.parametrize("stem", files(("-f32",)))
def test_f32_files_give_the_logits_of_llama_cpps_own_conversion(stem: str, tmp_path: Path, fmt: Fmt) -> None:
    got = consumer.logits(converted(stem, tmp_path, fmt), IDS)
    expected = np.load(REF / f"{CONVERTED[family(stem)]}.ref-logits.npy")
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= FLOAT_NOISE


@pytest.mark.parametrize("stem", files(("-f16",)))
def test_f16_files_give_those_logits_within_their_rounding(stem: str, tmp_path: Path, fmt: Fmt) -> None:
    got = consumer.logits(converted(stem, tmp_path, fmt), IDS)
    expected = np.load(REF / f"{CONVERTED[family(stem)]}.ref-logits.npy")
    assert np.abs(got - expected).max() <= F16_ROUNDING


@pytest.mark.parametrize("stem", files(("-q4_0", "-q8_0")))
def test_quantized_files_keep_their_blocks_and_run_as_the_2023_program_ran_them(stem: str, tmp_path: Path,
                                                                               fmt: Fmt) -> None:
    out = converted(stem, tmp_path, fmt)
    source = ggfmt.parse(FILES / f"{stem}.bin")
    data = (FILES / f"{stem}.bin").read_bytes()
    written = {t.name: (t.tensor_type, bytes(t.data.tobytes())) for t in gguf.GGUFReader(out).tensors}
    rearranged = REARRANGED.get(family(stem))
    kept = [(int(t.ggml_type), data[t.offset:t.offset + t.nbytes]) for t in source.tensors
            if not (rearranged and rearranged in t.name)]
    assert sorted(kept) == sorted((int(kind), blob) for name, (kind, blob) in written.items()
                                  if not (rearranged and "attn_qkv" in name))
    got = consumer.logits(out, IDS)
    expected = np.load(FILES / f"{stem}.ggml2023-logits.npy")
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= QUANTIZED_RUNTIME_GAP


@pytest.mark.parametrize("stem", ["starcoder-f32", "starcoder-q4_0"])
def test_starcoder_keeps_one_copy_of_its_k_and_v_head_row_for_row(stem: str, tmp_path: Path, fmt: Fmt) -> None:
    out = converted(stem, tmp_path, fmt)
    source, data, written = read_both(stem, out)
    n_embd, n_head = source.fields["n_embd"], source.fields["n_head"]
    head = n_embd // n_head
    for bid in range(source.fields["n_layer"]):
        for part, suffix in (("w", "weight"), ("b", "bias")):
            tiled = next(t for t in source.tensors if t.name == f"model/h{bid}/attn/c_attn/{part}")
            rows = tiled.ne[-1] if len(tiled.ne) > 1 else 3 * n_embd
            row = tiled.nbytes // rows
            blob = data[tiled.offset:tiled.offset + tiled.nbytes]
            kept = blob[:(n_embd + head) * row] + blob[2 * n_embd * row:(2 * n_embd + head) * row]
            out_tensor = written[f"blk.{bid}.attn_qkv.{suffix}"]
            assert int(out_tensor.tensor_type) == int(tiled.ggml_type)
            assert bytes(out_tensor.data.tobytes()) == kept
            assert list(map(int, out_tensor.shape))[-1] == n_embd + 2 * head
    assert fields(out, ("starcoder.attention.head_count_kv",)) == {"starcoder.attention.head_count_kv": 1}


def test_k_and_v_heads_that_are_not_copies_are_kept_as_a_multi_head_model(tmp_path: Path, fmt: Fmt) -> None:
    """A K bias moved by one constant vector for one head moves that head's every score for a query
    by the same amount, which softmax takes away: the model computes what it did, and its K heads
    are no longer copies of one. So the reference's logits are still the truth, and the converter
    must keep all n_head heads (head_count_kv n_head) to reach them."""
    source = ggfmt.parse(FILES / "starcoder-f32.bin")
    bias = next(t for t in source.tensors if t.name == "model/h1/attn/c_attn/b")
    n_embd, n_head = source.fields["n_embd"], source.fields["n_head"]
    head = n_embd // n_head
    data = bytearray((FILES / "starcoder-f32.bin").read_bytes())
    values = np.frombuffer(bytes(data[bias.offset:bias.offset + bias.nbytes]), dtype=np.float32).copy()
    values[n_embd + head:n_embd + 2 * head] += np.linspace(0.25, 1.0, head, dtype=np.float32)  # head 1 of K
    data[bias.offset:bias.offset + bias.nbytes] = values.tobytes()
    changed = tmp_path / "starcoder-mha.bin"
    changed.write_bytes(bytes(data))
    out = tmp_path / "mha.gguf"
    result = fmt("to-gguf", changed, "-o", out)
    assert result.code == 0, result.err
    assert fields(out, ("starcoder.attention.head_count_kv",)) == {"starcoder.attention.head_count_kv": n_head}
    written = {t.name: t for t in gguf.GGUFReader(out).tensors}
    for tensor in source.tensors:
        if "/attn/c_attn/" in tensor.name:  # every head, as the file has it
            bid, part = tensor.name.split("/")[1][1:], tensor.name.rsplit("/", 1)[1]
            name = f"blk.{bid}.attn_qkv.{'weight' if part == 'w' else 'bias'}"
            assert bytes(written[name].data.tobytes()) == bytes(data[tensor.offset:tensor.offset + tensor.nbytes])
    # llama.cpp keeps K in f16 by default, whose rounding of K + c is not that of K (2e-3 measured):
    # both models are run with an f32 cache, and the reference run is tied to the stored logits
    reference = consumer.logits(REF / "starcoder.ref.gguf", IDS, f32_cache=True)
    assert np.abs(reference - np.load(REF / "starcoder.ref-logits.npy")).max() <= F16_ROUNDING
    got = consumer.logits(out, IDS, f32_cache=True)
    assert np.abs(got - reference).max() <= FLOAT_NOISE


def starcoder_table_changed(old: str, new: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped StarCoder table with ``old`` replaced by ``new``, found before it."""
    folder = tmp_path / "mappings"
    folder.mkdir()
    table = (Path(ggfmt.__file__).parent.parent.parent / "mappings" / "starcoder-gguf.yaml").read_text()
    assert old in table
    (folder / "starcoder-gguf.yaml").write_text(table.replace(old, new))
    monkeypatch.setenv("GGFMT_MAPPING_PATH", str(folder))


def test_detile_kv_alone_refuses_heads_that_are_not_copies_in_one_line(tmp_path: Path, fmt: Fmt,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # a table that de-tiles without testing first: the transform itself refuses
    starcoder_table_changed("when: kv_tiled", "when: 'True'", tmp_path, monkeypatch)
    source = ggfmt.parse(FILES / "starcoder-f32.bin")
    tiled = next(t for t in source.tensors if t.name == "model/h1/attn/c_attn/w")
    data = bytearray((FILES / "starcoder-f32.bin").read_bytes())
    n_embd = source.fields["n_embd"]
    row = tiled.nbytes // tiled.ne[-1]
    at = tiled.offset + (n_embd + n_embd - 1) * row  # the last K head's last row
    data[at:at + 4] = np.float32(123.0).tobytes()
    broken = tmp_path / "starcoder-mixed.bin"
    broken.write_bytes(bytes(data))
    result = fmt("to-gguf", broken, "-o", tmp_path / "x.gguf")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert "model/h1/attn/c_attn/w: the 4 heads of K are not copies of one head" in result.err
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.parametrize("stem", ["gptneox-f32", "dolly-q4_0"])
def test_a_lossy_vocabulary_is_refused_in_one_line_offering_vocab_from(stem: str, tmp_path: Path, fmt: Fmt) -> None:
    result = fmt("to-gguf", FILES / f"{stem}.bin", "-o", tmp_path / "x.gguf")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert f"{stem}.bin: field vocab at byte 36: is the tokenizer's decoded text (partial UTF-8 became U+FFFD, " \
           "padding ids are empty), from which the tokenizer cannot be rebuilt: pass --vocab-from HF_DIR" in result.err
    empty = tmp_path / "empty"
    empty.mkdir()
    result = fmt("to-gguf", FILES / f"{stem}.bin", "-o", tmp_path / "x.gguf", "--vocab-from", empty)
    assert result.code == 2 and "neither a tokenizer.json nor a directory with tokenizer.json" in result.err
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.parametrize("stem", ["gptneox-f32", "dolly-q4_0"])
def test_gpt_neox_qkv_rows_are_regrouped_as_llama_cpp_reads_them(stem: str, tmp_path: Path, fmt: Fmt) -> None:
    out = converted(stem, tmp_path, fmt)
    source, data, written = read_both(stem, out)
    n_embd, n_head = source.fields["n_embd"], source.fields["n_head"]
    head = n_embd // n_head
    for bid in range(source.fields["n_layer"]):
        for suffix in ("weight", "bias"):
            name = f"gpt_neox.layers.{bid}.attention.query_key_value.{suffix}"
            fused = next(t for t in source.tensors if t.name == name)
            row = fused.nbytes // (3 * n_embd)
            rows = [data[fused.offset + r * row:fused.offset + (r + 1) * row] for r in range(3 * n_embd)]
            # in the file: head h's q rows, its k rows, its v rows; today: every head's q, then k, then v
            regrouped = b"".join(rows[(h * 3 + part) * head + i] for part in range(3) for h in range(n_head)
                                 for i in range(head))
            assert bytes(written[f"blk.{bid}.attn_qkv.{suffix}"].data.tobytes()) == regrouped


@pytest.mark.parametrize(("damage", "said"), [
    (lambda model: model[:100], "field ModelProto at byte 94: protobuf field 1 runs past the end of its message"),
    (lambda model: b"\x0a\xff\xff", "field ModelProto at byte 1: a protobuf varint that does not end"),
    (lambda model: b"\x12\x02\x08\x01", "field pieces at byte 0: expected a sentencepiece model (tokenizer.model) "
                                        "with its pieces"),
    (lambda model: b"\x0a\x04\x0a\x02\xff\xfe", "field pieces[0] at byte 4: a piece that is not UTF-8 text"),
])
def test_a_broken_sentencepiece_model_is_one_line(damage: Any, said: str, tmp_path: Path, fmt: Fmt) -> None:
    model = tmp_path / "tokenizer.model"
    model.write_bytes(damage((HF / "replit" / "spiece.model").read_bytes()))
    result = fmt("to-gguf", FILES / "replit-f32.bin", "-o", tmp_path / "x.gguf", "--vocab-from", model)
    assert result.code == 2 and result.err.strip() == f"fmt: error: {model}: {said}"
    assert not (tmp_path / "x.gguf").exists()


def test_a_tokenizer_larger_than_the_model_is_refused(tmp_path: Path, fmt: Fmt) -> None:
    result = fmt("to-gguf", FILES / "gpt2-f32.bin", "-o", tmp_path / "x.gguf", "--vocab-from", HF / "gpt2-realvocab")
    assert result.code == 2 and result.err.strip() == ("fmt: error: --vocab-from: the tokenizer has 50257 tokens, "
                                                       "more than the model's 401: not this model's")


def test_a_tensor_test_that_selects_nothing_is_one_line(tmp_path: Path, fmt: Fmt,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    starcoder_table_changed("/attn/c_attn/{part}", "/attn/c_attention/{part}", tmp_path, monkeypatch)
    result = fmt("to-gguf", FILES / "starcoder-f32.bin", "-o", tmp_path / "x.gguf")
    assert result.code == 2 and result.err.strip() == (
        "fmt: error: starcoder-gguf.yaml: tensor_tests.kv_tiled: 'model/h{bid}/attn/c_attention/{part}' selects "
        "no input tensor")
