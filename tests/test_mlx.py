"""mlx-lm LoRA adapters -> GGUF adapters, declared as data only (bundles/mlx-lora.yaml and
mappings/mlx-lora-gguf.yaml): the reference is the GGUF llama.cpp's converter wrote for the same
adapter saved by PEFT (fixtures/peft/lora.ref.gguf)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import pytest

from conftest import FIXTURES, Fmt, assert_clean_failure, gguf_content

MLX = FIXTURES / "mlx" / "adapter"
BASE = FIXTURES / "peft" / "tiny-llama"


def mlx_copy(tmp_path: Path, **config: object) -> Path:
    directory = shutil.copytree(MLX, tmp_path / "adapter")
    data = json.loads((directory / "adapter_config.json").read_text())
    for key, value in config.items():
        if key == "lora_parameters":
            data[key].update(value)
        else:
            data[key] = value
    (directory / "adapter_config.json").write_text(json.dumps(data))
    return directory


def test_mlx_adapter_becomes_the_reference_gguf_adapter(tmp_path: Path, fmt: Fmt) -> None:
    result = fmt("to-gguf", MLX, "--base", BASE, "-o", tmp_path / "x.gguf")
    assert result.code == 0, result.err
    assert "mlx-lm LoRA adapter -> GGUF via mlx-lora-gguf" in result.out
    _, tensors = gguf_content(tmp_path / "x.gguf")
    _, reference = gguf_content(FIXTURES / "peft" / "lora.ref.gguf")
    assert tensors == reference  # names, types, shapes and bytes, in order
    fields = gguf.GGUFReader(tmp_path / "x.gguf").fields
    assert fields["adapter.lora.alpha"].contents() == 8.0
    assert fields["adapter.type"].contents() == "lora" and fields["general.type"].contents() == "adapter"


@pytest.mark.parametrize("fine_tune_type", ["dora", "full"])
def test_dora_and_full_fine_tunes_are_refused(fine_tune_type: str, tmp_path: Path, fmt: Fmt) -> None:
    adapter = mlx_copy(tmp_path, fine_tune_type=fine_tune_type)
    line = assert_clean_failure(fmt("to-gguf", adapter, "--base", BASE, "-o", tmp_path / "x.gguf"))
    assert f"adapter_config.json: field fine_tune_type: '{fine_tune_type}': only LoRA adapters convert" in line


def test_only_the_last_num_layers_and_the_named_keys_are_adapted(tmp_path: Path, fmt: Fmt) -> None:
    adapter = mlx_copy(tmp_path, num_layers=1)  # the base has 2 layers: only layer 1 may be adapted
    line = assert_clean_failure(fmt("to-gguf", adapter, "--base", BASE, "-o", tmp_path / "x.gguf"))
    assert "model.layers.0.mlp.down_proj.lora_a is selected by no entry of mlx-lora-gguf" in line
    shutil.rmtree(adapter)
    adapter = mlx_copy(tmp_path, lora_parameters={"keys": ["self_attn.q_proj", "self_attn.v_proj"]})
    line = assert_clean_failure(fmt("to-gguf", adapter, "--base", BASE, "-o", tmp_path / "x.gguf"))
    assert "model.layers.0.mlp.down_proj.lora_a is selected by no entry" in line


def test_mlx_is_told_apart_from_peft_and_needs_the_base(tmp_path: Path, fmt: Fmt) -> None:
    line = assert_clean_failure(fmt("to-gguf", MLX, "-o", tmp_path / "x.gguf"))
    assert "mlx-lm LoRA adapter needs its base model's config.json: pass --base DIR" in line
    result = fmt("to-gguf", FIXTURES / "peft" / "adapter-safetensors", "--base", BASE, "-o", tmp_path / "p.gguf")
    assert result.code == 0 and "PEFT adapter" in result.out, result


def test_parse_shows_a_declared_directory(tmp_path: Path, fmt: Fmt) -> None:
    result = fmt("parse", MLX)
    assert result.code == 0, result.err
    assert "mlx-lora - mlx-lm LoRA adapter" in result.out and "28 tensors" in result.out
    assert "config.lora_parameters.rank     4" in result.out
    assert "model.layers.1.self_attn.v_proj.lora_b" in result.out
    doc = json.loads(fmt("parse", MLX, "--base", BASE, "--json").out)
    assert doc["fields"]["base"]["num_attention_heads"] == 4 and len(doc["tensors"]) == 28
    dora = mlx_copy(tmp_path, fine_tune_type="dora")  # shown as it is; only a conversion refuses it
    assert fmt("parse", dora).code == 0
    line = assert_clean_failure(fmt("parse", FIXTURES / "peft" / "tiny-llama"))
    assert "not one of the layouts declared in bundles/" in line
