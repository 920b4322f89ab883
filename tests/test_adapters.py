"""LoRA adapters: PEFT -> ggla (byte for byte), PEFT -> GGUF (as current llama.cpp's converter),
ggla -> GGUF (the same meaning, checked by merging both into the base model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from conftest import FIXTURES, GENUINE, Fmt, Keys, Tensors, assert_clean_failure, gguf_content
from legacy_reader import read_ggla

PEFT = FIXTURES / "peft"
IGNORED_KEYS = {"general.name", "general.tags", "general.quantization_version"}


def adapter_copy(tmp_path: Path, which: str = "adapter-safetensors", **config_changes: Any) -> Path:
    directory = tmp_path / which
    shutil.copytree(PEFT / which, directory)
    if config_changes:
        config_path = directory / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config.update(config_changes)
        config_path.write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize("which", ["adapter-bin", "adapter-safetensors"])
def test_peft_to_ggla_is_byte_identical_to_the_seed(which: str, tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "adapter.ggla"
    result = fmt("to-ggla", PEFT / which, "-o", out)
    assert result.code == 0, result.err
    assert out.read_bytes() == (PEFT / "ggla.ref.bin").read_bytes()


def test_ggla_is_detected_and_parsed(fmt: Fmt) -> None:
    header, records = read_ggla(GENUINE / "ggla-finetune.bin")
    result = fmt("parse", GENUINE / "ggla-finetune.bin", "--json")
    assert result.code == 0
    doc = json.loads(result.out)
    assert doc["schema"] == "ggla"
    assert (doc["fields"]["r"], doc["fields"]["lora_alpha"]) == (header["r"], header["lora_alpha"])
    assert [(t["name"], tuple(t["ne"]), t["offset"], t["nbytes"]) for t in doc["tensors"]] == \
        [(r.name, r.ne, r.data_offset, r.nbytes) for r in records]


def ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.startswith("general.base_model.")


def gguf_keys(path: Path) -> Keys:
    return gguf_content(path, ignored)[0]


def gguf_tensors(path: Path) -> Tensors:
    return gguf_content(path)[1]


@pytest.mark.parametrize("which", ["adapter-bin", "adapter-safetensors"])
def test_peft_to_gguf_equals_current_llama_cpp(which: str, tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "lora.gguf"
    result = fmt("to-gguf", PEFT / which, "--base", PEFT / "tiny-llama", "-o", out)
    assert result.code == 0, result.err
    reference = PEFT / "lora.ref.gguf"  # (written from the safetensors copy, whose keys safetensors sorts)
    assert gguf_keys(out) == gguf_keys(reference)
    written, expected = gguf_tensors(out), gguf_tensors(reference)
    if which == "adapter-bin":  # in the pickle's own order, as llama.cpp's converter keeps it
        assert [t[0] for t in written] != [t[0] for t in expected]
        written, expected = sorted(written), sorted(expected)
    assert written == expected


# What PEFT's save_pretrained writes beside an adapter whose base model has no name (as here).
MODEL_CARD = """---
base_model: ''
library_name: peft
pipeline_tag: text-generation
tags:
- "base_model:adapter:"
- lora
- transformers
---

# Model Card for Model ID
"""


def test_peft_to_gguf_has_every_key_of_current_llama_cpp(tmp_path: Path, fmt: Fmt) -> None:
    # The reference was converted from a folder named peft-st holding PEFT's model card.
    adapter = shutil.copytree(PEFT / "adapter-safetensors", tmp_path / "peft-st")
    (adapter / "README.md").write_text(MODEL_CARD)
    out = tmp_path / "lora.gguf"
    result = fmt("to-gguf", adapter, "--base", PEFT / "tiny-llama", "-o", out)
    assert result.code == 0, result.err
    reference = PEFT / "lora.ref.gguf"
    assert gguf_content(out)[0] == gguf_content(reference)[0]


def test_base_from_the_adapter_config_or_asked_for(tmp_path: Path, fmt: Fmt) -> None:
    missing = adapter_copy(tmp_path / "a", base_model_name_or_path="meta-llama/Llama-2-7b-hf")
    line = assert_clean_failure(fmt("to-gguf", missing))
    assert "--base" in line and "meta-llama/Llama-2-7b-hf" in line
    assert not (missing / "ggml-adapter-model.gguf").exists()
    local = adapter_copy(tmp_path / "b", base_model_name_or_path=str(PEFT / "tiny-llama"))
    assert fmt("to-gguf", local).code == 0
    assert gguf_tensors(local / "ggml-adapter-model.gguf") == gguf_tensors(PEFT / "lora.ref.gguf")


@pytest.mark.parametrize(("change", "field"), [
    ({"peft_type": "PREFIX_TUNING"}, "peft_type"),
    ({"fan_in_fan_out": True}, "fan_in_fan_out"),
    ({"bias": "all"}, "bias"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"lora_alpha": 8.5}, "lora_alpha"),
])
def test_seed_refusals_stay_refusals(change: dict[str, Any], field: str, tmp_path: Path, fmt: Fmt) -> None:
    directory = adapter_copy(tmp_path, **change)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    line = assert_clean_failure(fmt("to-ggla", directory, "-o", out_dir / "x.bin"), out_dir)
    assert f"adapter_config.json: field {field}" in line


def test_a_fractional_alpha_fits_a_gguf_adapter(tmp_path: Path, fmt: Fmt) -> None:
    directory = adapter_copy(tmp_path, lora_alpha=8.5)
    out = tmp_path / "x.gguf"
    assert fmt("to-gguf", directory, "--base", PEFT / "tiny-llama", "-o", out).code == 0
    assert gguf.GGUFReader(out).fields["adapter.lora.alpha"].contents() == 8.5


def test_broken_adapter_directories(tmp_path: Path, fmt: Fmt) -> None:
    broken = adapter_copy(tmp_path / "a")
    (broken / "adapter_config.json").write_text('{"r": 4,')
    line = assert_clean_failure(fmt("to-ggla", broken, "-o", tmp_path / "x.bin"))
    assert "adapter_config.json" in line and "not valid JSON" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "adapter_config.json").write_text("{}")
    assert "neither adapter_model.safetensors nor adapter_model.bin" in \
        assert_clean_failure(fmt("to-ggla", empty, "-o", tmp_path / "x.bin"))
    truncated = adapter_copy(tmp_path / "b")
    weights = truncated / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert "adapter_model.safetensors" in assert_clean_failure(fmt("to-ggla", truncated, "-o", tmp_path / "x.bin"))
    assert not (tmp_path / "x.bin").exists()


def test_a_pickle_that_runs_code_is_refused(tmp_path: Path, fmt: Fmt) -> None:
    import pickle

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(marker), "w"))

    directory = adapter_copy(tmp_path, "adapter-bin")
    (directory / "adapter_model.bin").write_bytes(pickle.dumps({"x": Exploit()}, protocol=2))
    line = assert_clean_failure(fmt("to-ggla", directory, "-o", tmp_path / "x.bin"))
    assert "adapter_model.bin" in line and "refused" in line and "would run code" in line
    assert not marker.exists()
    (directory / "adapter_model.bin").write_bytes(b"\x80\x05garbage")  # not a pickle torch.save writes
    line = assert_clean_failure(fmt("to-ggla", directory, "-o", tmp_path / "x.bin"))
    assert "adapter_model.bin" in line and ("not a PyTorch file" in line or "not a readable PyTorch file" in line)


# -- ggla -> GGUF: the same meaning in current llama.cpp -----------------------------------------

def base_weights() -> dict[str, np.ndarray[Any, Any]]:
    reader = gguf.GGUFReader(GENUINE / "tiny-llama-f32.gguf")
    return {t.name: np.array(t.data, dtype=np.float32).reshape([int(n) for n in reversed(t.shape)])
            for t in reader.tensors}


def merged_2023(weights: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    """2023 llama.cpp: W += ggml_mul_mat(loraA, loraB) * alpha / r, r from the header."""
    header, records = read_ggla(GENUINE / "ggla-finetune.bin")
    data = (GENUINE / "ggla-finetune.bin").read_bytes()
    arrays = {r.name: np.frombuffer(data[r.data_offset:r.data_offset + r.nbytes], np.float32)
              .reshape(tuple(reversed(r.ne))) for r in records}
    scale = np.float32(header["lora_alpha"] / header["r"])
    out = {}
    for name in {n.rsplit(".", 1)[0] for n in arrays}:
        a, b = arrays[f"{name}.loraA"], arrays[f"{name}.loraB"]  # numpy (n_in, r) and (n_out, r)
        delta = (b @ a.T) * scale  # ne [n_in, n_out] -> numpy (n_out, n_in)
        out[name] = weights[name] + delta.reshape(weights[name].shape)
    return out


def merged_current(path: Path, weights: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    """Current llama.cpp (layouts.md): W += B @ A * alpha / rank, rank = lora_b ne[0];
    token_embd's lora_a ne [r, n_vocab] and lora_b ne [r, n_embd] are A and B flipped."""
    reader = gguf.GGUFReader(path)
    alpha = float(reader.fields["adapter.lora.alpha"].contents())
    tensors = {t.name: np.array(t.data, dtype=np.float32).reshape([int(n) for n in reversed(t.shape)])
               for t in reader.tensors}
    out = {}
    for name in {n.rsplit(".", 1)[0] for n in tensors}:
        a, b = tensors[f"{name}.lora_a"], tensors[f"{name}.lora_b"]
        rank = b.shape[-1]  # lora_b ne[0]: the last numpy axis
        scale = np.float32(alpha / rank)
        if name.startswith("token_embd"):
            delta = (a @ b.T) * scale  # (n_vocab, r) @ (r, n_embd)
        else:
            delta = (b @ a) * scale  # (n_out, r) @ (r, n_in)
        out[name] = weights[name] + delta.reshape(weights[name].shape)
    return out


def test_ggla_converts_to_an_adapter_with_the_same_meaning(tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "adapter.gguf"
    result = fmt("to-gguf", GENUINE / "ggla-finetune.bin", "-o", out)
    assert result.code == 0, result.err
    assert result.err.count("\n") == 1 and "fmt: warning: 5 adapters of 1-D tensors kept" in result.err
    weights = base_weights()
    old, new = merged_2023(weights), merged_current(out, weights)
    assert sorted(old) == sorted(new) and len(old) == 21
    for name in old:
        assert np.array_equal(old[name], new[name]), name
        assert not np.array_equal(old[name], weights[name]), f"{name}: the adapter changed nothing"
    reader = gguf.GGUFReader(out)
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["general.architecture"].contents() == "llama"


def test_older_key_spelling_and_a_minigpt_projection(tmp_path: Path, fmt: Fmt) -> None:
    """Keys as older PEFT wrote them (lora_A.default.weight) convert to the same tensors; a
    llama_proj projection beside them is left out, as the table says; a factor without its
    partner, or of a layer the base lacks, is refused at that key."""
    from safetensors.numpy import load_file, save_file

    directory = adapter_copy(tmp_path)
    weights = directory / "adapter_model.safetensors"
    tensors = load_file(weights)
    older = {k.replace(".weight", ".default.weight"): v for k, v in tensors.items()}
    older["base_model.model.llama_proj.weight"] = np.zeros((2, 2), np.float32)
    save_file(older, weights)
    out = tmp_path / "x.gguf"
    result = fmt("to-gguf", directory, "--base", PEFT / "tiny-llama", "-o", out)
    assert result.code == 0, result.err
    assert gguf_tensors(out) == gguf_tensors(PEFT / "lora.ref.gguf")
    lonely = "base_model.model.model.layers.1.mlp.up_proj.lora_B.default.weight"
    save_file({k: v for k, v in older.items() if k != lonely}, weights)
    line = assert_clean_failure(fmt("to-gguf", directory, "--base", PEFT / "tiny-llama", "-o", tmp_path / "y.gguf"))
    assert "lora_A.default.weight at byte " in line and "layers.1.mlp.up_proj.lora_B.weight to pair with" in line
    save_file({**older, "base_model.model.model.layers.7.mlp.up_proj.lora_A.weight": np.zeros((4, 32), np.float32),
               "base_model.model.model.layers.7.mlp.up_proj.lora_B.weight": np.zeros((96, 4), np.float32)}, weights)
    line = assert_clean_failure(fmt("to-gguf", directory, "--base", PEFT / "tiny-llama", "-o", tmp_path / "y.gguf"))
    assert "is in layer 7, but the base model has 2 layers" in line
