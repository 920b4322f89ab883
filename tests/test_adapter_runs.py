"""The GGUF adapters ggfmt makes of 2023 adapters mean what the 2023 ones meant, in a current llama.cpp
(llama-cpp-python): the base model with the adapter gives the logits of the base model with the
adapter's deltas merged in numpy by the 2023 rule (llama_apply_lora_from_file: W += mul_mat(loraA,
loraB) * alpha / r, r the header's). The factors are read by an independent reader
(tests/legacy_reader.py), the merged model written by gguf-py.

Current llama.cpp applies an adapter to the matrices only; the adapters of the norms (1-D), which
2023 llama.cpp merged too, it applies when merging (llama-export-lora), not at inference, and ggfmt
says so when it converts them. The merge here is therefore of the matrices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

import consumer
from conftest import GENUINE, SYNTH, Fmt, assert_clean_failure
from legacy_reader import read_checkpoint, read_ggla
from test_legacy_convert import gguf_name
from test_llama_runs import logits

MERGE_TOLERANCE = 1e-5


def factors(data: bytes, records: list[Any], dtype: str = "<f4") -> dict[str, np.ndarray[Any, Any]]:
    """name -> numpy array (shape: reversed ne) of each record."""
    out = {}
    for r in records:
        name = r.name.decode() if isinstance(r.name, bytes) else r.name
        out[name] = np.frombuffer(data[r.data_offset:r.data_offset + r.nbytes], dtype=dtype).reshape(r.ne[::-1])
    return out


def deltas(pairs: dict[str, np.ndarray[Any, Any]], suffix_a: str, suffix_b: str,
           scale: float) -> dict[str, np.ndarray[Any, Any]]:
    """base tensor name -> mul_mat(loraA, loraB) * scale, numpy (n_out, n_in), for the matrices."""
    out = {}
    for name, a in pairs.items():
        if not name.endswith(suffix_a):
            continue
        base = name[: -len(suffix_a)]
        b = pairs[base + suffix_b]
        if b.shape[0] == 1 and base.endswith("norm.weight"):  # a norm's adapter: not applied at inference
            continue
        out[base] = (b.astype(np.float64) @ a.astype(np.float64).T * scale).astype(np.float32)
    return out


def write_merged(base: Path, merged: Path, add: dict[str, np.ndarray[Any, Any]]) -> None:
    """``base`` with ``add`` added to its tensors (by GGUF name), every key copied, by gguf-py."""
    reader = gguf.GGUFReader(base)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(merged, arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        kind = gguf.GGUFValueType(field.types[0])
        sub = gguf.GGUFValueType(field.types[-1]) if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    used = set()
    for tensor in reader.tensors:
        data = np.array(tensor.data, dtype=np.float32)
        if tensor.name in add:
            data = data + add[tensor.name]
            used.add(tensor.name)
        writer.add_tensor(tensor.name, data)
    assert used == set(add), set(add) - used
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def adapted_logits(base: Path, adapter: Path, ids: list[int] | None = None) -> np.ndarray[Any, Any]:
    from test_llama_runs import IDS

    return consumer.logits(base, ids or IDS, lora=adapter)


def test_a_ggla_adapter_means_in_llama_cpp_what_it_meant_in_2023(tmp_path: Path, fmt: Fmt) -> None:
    source, base = GENUINE / "ggla-finetune.bin", GENUINE / "tiny-llama-f32.gguf"
    adapter, merged = tmp_path / "adapter.gguf", tmp_path / "merged.gguf"
    assert fmt("to-gguf", source, "-o", adapter).code == 0
    header, records = read_ggla(source)
    assert all(r.ftype == 0 for r in records)
    pairs = factors(source.read_bytes(), records)
    write_merged(base, merged, deltas(pairs, ".loraA", ".loraB", header["lora_alpha"] / header["r"]))
    got, expected = adapted_logits(base, adapter), logits(merged)
    assert np.abs(got - logits(base)).max() > 100 * MERGE_TOLERANCE  # the adapter changes something
    assert np.abs(got - expected).max() <= MERGE_TOLERANCE


def test_a_ggcl_adapter_means_what_the_finetunes_lora_out_meant(tmp_path: Path, fmt: Fmt) -> None:
    """The ggcl checkpoint and the ggcp model of fixtures/synth share their dimensions: the model is
    the base (its 40-token vocabulary written here), the checkpoint's adapter applied to it with the
    finetune's --lora-r 2 and --lora-alpha 3 (a scale of 1.5)."""
    vocab, base = tmp_path / "vocab.gguf", tmp_path / "base.gguf"
    writer = gguf.GGUFWriter(vocab, "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"t{i}" for i in range(40)])
    writer.add_token_scores([0.0] * 40)
    writer.add_token_types([2, 3, 3] + [1] * 37)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    assert fmt("to-gguf", SYNTH / "ggcp-v1-adam-past3.bin", "--model-only", "--vocab-model", vocab, "-c", "16",
               "-o", base).code == 0
    source, adapter, merged = SYNTH / "ggcl-adam-past2.bin", tmp_path / "adapter.gguf", tmp_path / "merged.gguf"
    result = fmt("to-gguf", source, "--adapter-only", "--lora-r", "2", "--lora-alpha", "3", "-o", adapter)
    assert result.code == 0, result.err
    assert "adapters of the norms are kept" in result.err
    assert gguf.GGUFReader(adapter).fields["adapter.lora.alpha"].contents() == 3.0
    pairs = factors(source.read_bytes(), read_checkpoint(source).model_tensors)
    merged_deltas = {gguf_name(k): v for k, v in deltas(pairs, ".lora_a", ".lora_b", 3 / 2).items()}
    write_merged(base, merged, merged_deltas)
    ids = [1, 17, 39, 3, 22, 8]  # of its 40 tokens
    got, expected = adapted_logits(base, adapter, ids), logits(merged, ids)
    assert np.abs(got - logits(base, ids)).max() > 100 * MERGE_TOLERANCE
    assert np.abs(got - expected).max() <= MERGE_TOLERANCE


@pytest.mark.parametrize(("option", "value", "words"), [
    ("--lora-alpha", "nan", "--lora-alpha nan: expected a finite number"),
    ("--lora-alpha", "inf", "--lora-alpha inf: expected a finite number"),
    ("--lora-alpha", "1e400", "--lora-alpha inf: expected a finite number"),
    ("--lora-alpha", "1e39", "--lora-alpha 1e+39: expected at most"),
    ("--lora-alpha", "1e-50", "--lora-alpha 1e-50: expected at least"),
    ("--lora-alpha", "0", "--lora-alpha 0.0: expected at least"),
    ("--lora-alpha", "-2", "--lora-alpha -2.0: expected at least"),
    ("--lora-r", "0", "--lora-r 0: expected at least 1"),
    ("--lora-r", "-1", "--lora-r -1: expected at least 1"),
])
def test_lora_options_that_cannot_be_written_are_refused(option: str, value: str, words: str, tmp_path: Path,
                                                         fmt: Fmt) -> None:
    out = tmp_path / "adapter.gguf"
    line = assert_clean_failure(fmt("to-gguf", SYNTH / "ggcl-adam-past2.bin", "--adapter-only", option, value,
                                    "-o", out))
    assert words in line, line
    assert not out.exists()
