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
    assert result.code == 0 and "(PEFT LoRA adapter -> GGUF via peft-lora-gguf)" in result.out, result


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
    assert "not one of the directory layouts ggfmt knows" in line


PEFT_BUNDLE = """
id: peft-pickle-test
title: PEFT adapter (pickled), as a declared bundle
recognise:
  files: [adapter_config.json, adapter_model.bin]
fields:
  config: {json: adapter_config.json}
  base: {json: config.json, from: base}
tensors: {pickle: adapter_model.bin}
"""
PEFT_TABLE = """
architecture: llama
metadata:
  - {key: adapter.lora.alpha, type: f32, value: config.lora_alpha}
tensors:
  - {match: "base_model.model.model.layers.{bid}.self_attn.q_proj.lora_B.weight", gguf: ATTN_Q,
     suffix: .weight.lora_b, transforms: ["rope_permute(base.num_attention_heads)"]}
  - {match: "base_model.model.model.layers.{bid}.self_attn.k_proj.lora_B.weight", gguf: ATTN_K,
     suffix: .weight.lora_b, transforms: ["rope_permute(base.num_key_value_heads)"]}
  - {match: "base_model.model.model.layers.{bid}.self_attn.{proj}.lora_{AB}.weight", name: "blk.{bid}.{proj}",
     suffix: ".weight.lora_{AB}"}
  - {match: "base_model.model.model.layers.{bid}.mlp.{proj}.lora_{AB}.weight", name: "blk.{bid}.{proj}",
     suffix: ".weight.lora_{AB}"}
"""


def test_a_pickled_adapter_converts_through_a_declared_bundle_and_a_table(tmp_path: Path, fmt: Fmt,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save's zip pickles are Documents too: tensors as references read by offset. A test-only
    bundle and table (written here) turn the pickled PEFT adapter into the reference tensors' data,
    q and k permuted for rope; names are compared after the table's own naming."""
    bundles, tables = tmp_path / "bundles", tmp_path / "tables"
    bundles.mkdir()
    tables.mkdir()
    (bundles / "peft-pickle-test.yaml").write_text(PEFT_BUNDLE)
    (tables / "peft-pickle-test-gguf.yaml").write_text(PEFT_TABLE)
    monkeypatch.setenv("GGFMT_BUNDLE_PATH", str(bundles))
    monkeypatch.setenv("GGFMT_MAPPING_PATH", str(tables))
    result = fmt("to-gguf", FIXTURES / "peft" / "adapter-bin", "--base", BASE, "-o", tmp_path / "x.gguf")
    assert result.code == 0, result.err
    assert "via peft-pickle-test-gguf" in result.out
    renamed = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
               "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down", "A": "a", "B": "b"}
    ours = {}
    for name, kind, ne, data in gguf_content(tmp_path / "x.gguf")[1]:
        for old, new in renamed.items():
            name = name.replace(f".{old}.", f".{new}.").replace(f"lora_{old}", f"lora_{new}")
        ours[name] = (kind, ne, data)
    _, tensors = gguf_content(FIXTURES / "peft" / "lora.ref.gguf")
    reference = {name: (kind, ne, data) for name, kind, ne, data in tensors}
    assert ours == reference


def test_dry_run_lists_what_would_be_written_and_writes_nothing(tmp_path: Path, fmt: Fmt) -> None:
    adapter = mlx_copy(tmp_path)
    result = fmt("to-gguf", adapter, "--base", BASE, "--dry-run")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith(f"would write {adapter / 'ggml-adapter-model.gguf'}")
    assert "28 tensors, 6 keys" in lines[0]
    keys = lines[lines.index("keys:") + 1:lines.index("tensors:") - 1]
    assert [line.split()[0] for line in keys][:2] == ["general.architecture", "general.type"]
    assert len({line.index(line.split()[1]) for line in keys}) == 1  # the type column lines up
    assert "blk.0.attn_q.weight.lora_b" in result.out
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter_config.json", "adapters.safetensors"]


QA, QB = "model.layers.0.self_attn.q_proj.lora_a", "model.layers.0.self_attn.q_proj.lora_b"


def _tensors_changed(directory: Path, change: str) -> None:
    import numpy as np
    from safetensors.numpy import load_file, save_file

    tensors = load_file(directory / "adapters.safetensors")
    if change == "lora_a transposed":
        tensors[QA] = np.ascontiguousarray(tensors[QA].T)
    elif change == "lora_b without lora_a":
        del tensors[QA]
    elif change == "no tensors":
        tensors = {}
    elif change == "a layer the base does not have":
        tensors[QA.replace(".0.", ".99.")], tensors[QB.replace(".0.", ".99.")] = tensors[QA], tensors[QB]
    elif change == "lora_b too wide":
        tensors[QB] = np.zeros((tensors[QB].shape[0], tensors[QB].shape[1] + 8), dtype=tensors[QB].dtype)
    save_file(tensors, directory / "adapters.safetensors")


@pytest.mark.parametrize(("config", "tensors", "words"), [
    ('"scale": NaN', None, "field lora_parameters.scale: nan: expected a finite number"),
    ('"scale": Infinity', None, "field lora_parameters.scale: inf: expected a finite number"),
    ('"scale": 1e300', None, "field lora_parameters.scale: 1e+300: expected a finite number"),
    ('"scale": null', None, "field lora_parameters.scale: None: expected a number"),
    ('"rank": 8', None, "its rank differs from lora_parameters.rank 8"),
    ('"rank": 0', None, "field lora_parameters.rank: 0: expected a positive integer"),
    ({"use_dora": True}, None, "field use_dora: True: true is not supported"),
    ("", "lora_a transposed", "do not share a non-zero rank (32 and 4)"),
    ("", "lora_b without lora_a", "has no model.layers.0.self_attn.q_proj.lora_a to pair with"),
    ("", "no tensors", "the adapter holds no LoRA factors"),
    ("", "a layer the base does not have", "is in layer 99, but the base model has 2 layers"),
    ("", "lora_b too wide", "output width 32 expected of attn_q (the base config's)"),
])
def test_an_adapter_llama_cpp_would_misapply_is_refused(config: str | dict[str, object], tensors: str | None,
                                                        words: str, tmp_path: Path, fmt: Fmt) -> None:
    # a text edit of lora_parameters (JSON's NaN and Infinity have no Python spelling), or top-level keys
    directory = mlx_copy(tmp_path, **config) if isinstance(config, dict) else mlx_copy(tmp_path)
    if isinstance(config, str) and config:
        text = (directory / "adapter_config.json").read_text()
        assert '"scale": 2.0' in text
        edited = text.replace('"scale": 2.0', config) if "scale" in config else \
            text.replace('"scale": 2.0', f'"scale": 2.0, {config}')
        (directory / "adapter_config.json").write_text(edited)
    if tensors:
        _tensors_changed(directory, tensors)
    out = tmp_path / "out.gguf"
    line = assert_clean_failure(fmt("to-gguf", directory, "--base", BASE, "-o", out))
    assert words in line, line
    assert "adapter_config.json" in line or "adapters.safetensors" in line
    assert not out.exists()


def test_a_broken_config_beside_mlx_weights_is_named(tmp_path: Path, fmt: Fmt) -> None:
    directory = mlx_copy(tmp_path)
    (directory / "adapter_config.json").write_text("{nope")
    line = assert_clean_failure(fmt("to-gguf", directory, "--base", BASE, "-o", tmp_path / "o.gguf"))
    assert f"{directory}/adapter_config.json: at byte 1: not valid JSON" in line


def test_a_base_model_that_makes_no_sense_is_refused_as_for_peft(tmp_path: Path, fmt: Fmt) -> None:
    base = shutil.copytree(BASE, tmp_path / "base")
    config = json.loads((base / "config.json").read_text())
    config["num_attention_heads"] = 0
    (base / "config.json").write_text(json.dumps(config))
    line = assert_clean_failure(fmt("to-gguf", MLX, "--base", base, "-o", tmp_path / "o.gguf"))
    assert "config.json: field num_attention_heads: 0: expected a positive integer" in line, line
