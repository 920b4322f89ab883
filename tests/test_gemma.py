"""`fmt to-hf`: native Gemma checkpoints become Hugging Face directories that transformers loads and
that compute what the original model computed."""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import GemmaConfig, GemmaForCausalLM

from conftest import FIXTURES, Fmt, assert_clean_failure
from ggfmt.convert.mapping import load_mapping
from ggfmt.emit.hf import SafetensorsTensor, write_safetensors
from ggfmt.errors import UsageError
from ggfmt.io.output import atomic_directory

GEMMA = FIXTURES / "gemma"
INPUT_IDS = [[2, 17, 99, 250, 3, 42]]
TOLERANCE = 1e-5


def logits(directory: Path) -> np.ndarray[Any, Any]:
    model = GemmaForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    with torch.no_grad():
        result: np.ndarray[Any, Any] = model(torch.tensor(INPUT_IDS)).logits.numpy()
    return result


def tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - safe_open is not a dict


def native_state(path: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=True)["model_state_dict"]
    return state


@pytest.mark.parametrize("variant", ["mqa", "mha"])
def test_converted_fixture_reproduces_the_original_logits(variant: str, tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "hf"
    result = fmt("to-hf", GEMMA / f"gemma-{variant}.ckpt", "--config", GEMMA / f"gemma-{variant}-config.json",
                 "-o", out)
    assert result.code == 0, result
    assert result.out.startswith(f"{out}: 20 tensors, 2 layers, float32, ")
    assert result.out.rstrip().endswith("(Gemma checkpoint -> Hugging Face)")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no temporary left beside it
    expected = np.load(GEMMA / f"gemma-{variant}-logits.npy")
    got = logits(out)
    assert got.shape == expected.shape == (1, 6, 300)
    assert np.abs(got - expected).max() <= TOLERANCE

    written = tensors(out / "model.safetensors")
    assert "lm_head.weight" not in written and "freqs_cis" not in written
    assert not any("qkv_proj" in name for name in written)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["GemmaForCausalLM"]
    assert config["model_type"] == "gemma"
    assert config["tie_word_embeddings"] is True
    assert config["dtype"] == "float32"
    original = json.loads((GEMMA / f"gemma-{variant}-config.json").read_text())
    assert {k: config[k] for k in original if k not in ("architectures", "dtype")} == \
        {k: v for k, v in original.items() if k not in ("architectures", "dtype")}


def make_grouped_query_checkpoint(directory: Path) -> tuple[Path, Path, GemmaForCausalLM]:
    """A random grouped-query model (4 heads sharing 2 key-value heads), saved as Google's release saved theirs."""
    config = GemmaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64)
    torch.manual_seed(20240221)
    model = GemmaForCausalLM(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # the norms start at zero: make every weight count
            parameter.normal_(0.0, 0.2)
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    native: dict[str, torch.Tensor] = {"embedder.weight": state.pop("model.embed_tokens.weight")}
    state.pop("lm_head.weight", None)
    for bid in range(config.num_hidden_layers):
        prefix = f"model.layers.{bid}.self_attn."
        native[prefix + "qkv_proj.weight"] = torch.cat(
            [state.pop(prefix + f"{p}_proj.weight") for p in "qkv"], dim=0)
    native.update(state)
    native["freqs_cis"] = torch.polar(torch.ones(64, 8), torch.rand(64, 8))
    checkpoint, config_file = directory / "gemma-gqa.ckpt", directory / "gemma-gqa-config.json"
    torch.save({"model_state_dict": native}, checkpoint)
    config.to_json_file(str(config_file))
    return checkpoint, config_file, model


def test_grouped_query_attention_is_split_by_head_counts(tmp_path: Path, fmt: Fmt) -> None:
    checkpoint, config_file, model = make_grouped_query_checkpoint(tmp_path)
    out = tmp_path / "hf"
    result = fmt("to-hf", checkpoint, "--config", config_file, "-o", out)
    assert result.code == 0, result
    with torch.no_grad():
        expected = model(torch.tensor(INPUT_IDS)).logits.numpy()
    assert np.abs(logits(out) - expected).max() <= TOLERANCE

    written = tensors(out / "model.safetensors")
    original = model.state_dict()
    for bid in range(2):
        for p, rows in (("q", 64), ("k", 32), ("v", 32)):
            name = f"model.layers.{bid}.self_attn.{p}_proj.weight"
            assert written[name].shape == (rows, 32)
            assert torch.equal(written[name], original[name])
    assert torch.equal(written["model.embed_tokens.weight"], original["model.embed_tokens.weight"])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_output_dtype(dtype: str, tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "hf"
    result = fmt("to-hf", GEMMA / "gemma-mha.ckpt", "--config", GEMMA / "gemma-mha-config.json", "-o", out,
                 "--dtype", dtype)
    assert result.code == 0, result
    assert f", {dtype}, " in result.out
    torch_dtype = getattr(torch, dtype)
    written = tensors(out / "model.safetensors")
    assert {t.dtype for t in written.values()} == {torch_dtype}
    native = native_state(GEMMA / "gemma-mha.ckpt")
    qkv = native["model.layers.1.self_attn.qkv_proj.weight"]
    assert torch.equal(written["model.layers.1.self_attn.v_proj.weight"], qkv[128:].to(torch_dtype))
    assert torch.equal(written["model.norm.weight"], native["model.norm.weight"].to(torch_dtype))
    assert json.loads((out / "config.json").read_text())["dtype"] == dtype

    model = GemmaForCausalLM.from_pretrained(out)
    assert model.dtype == torch_dtype
    with torch.no_grad():
        got = model.float().eval()(torch.tensor(INPUT_IDS)).logits.numpy()
    # rounded weights, same model: close to the original's logits (which reach about 0.66)
    assert np.abs(got - np.load(GEMMA / "gemma-mha-logits.npy")).max() < 1e-2


def test_presets_are_the_upstream_configs() -> None:
    presets = load_mapping("gemma-hf").constants["presets"]
    upstream = {
        "7B": GemmaConfig(),
        "2B": GemmaConfig(num_hidden_layers=18, num_attention_heads=8, num_key_value_heads=1, hidden_size=2048,
                          intermediate_size=16384),
    }
    assert sorted(presets) == sorted(upstream)
    for size, config in upstream.items():
        expected = config.to_dict()
        assert presets[size] == {key: expected[key] for key in presets[size]}
        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "head_dim", "rms_norm_eps", "hidden_act", "rope_parameters"):
            assert key in presets[size]


# -- errors and output safety ------------------------------------------------------------------

def test_size_that_does_not_match_the_checkpoint(tmp_path: Path, fmt: Fmt) -> None:
    line = assert_clean_failure(fmt("to-hf", GEMMA / "gemma-mqa.ckpt", "--size", "2B", "-o", tmp_path / "hf"),
                                tmp_path)
    assert "embedder.weight" in line and "[300, 32]" in line and "[256000, 2048]" in line and "--size 2B" in line


def test_config_that_does_not_match_the_checkpoint(tmp_path: Path, fmt: Fmt) -> None:
    line = assert_clean_failure(fmt("to-hf", GEMMA / "gemma-mqa.ckpt", "--config", GEMMA / "gemma-mha-config.json",
                                    "-o", tmp_path / "hf"), tmp_path)
    assert "model.layers.0.self_attn.qkv_proj.weight" in line and "[96, 32]" in line and "[192, 32]" in line


def test_unknown_size(tmp_path: Path, fmt: Fmt) -> None:
    line = assert_clean_failure(fmt("to-hf", GEMMA / "gemma-mqa.ckpt", "--size", "9B", "-o", tmp_path / "hf"),
                                tmp_path)
    assert "2B" in line and "7B" in line


@pytest.mark.parametrize("edit", ["missing", "extra-layer", "integer"])
def test_damaged_checkpoint(edit: str, tmp_path: Path, fmt: Fmt) -> None:
    state = native_state(GEMMA / "gemma-mqa.ckpt")
    if edit == "missing":
        del state["model.layers.1.mlp.up_proj.weight"]
        name = "model.layers.1.mlp.up_proj.weight"
    elif edit == "extra-layer":
        state["model.layers.2.input_layernorm.weight"] = torch.ones(32)
        name = "model.layers.2.input_layernorm.weight"
    else:
        state["model.norm.weight"] = state["model.norm.weight"].to(torch.int32)
        name = "model.norm.weight"
    inputs = tmp_path / "in"
    inputs.mkdir()
    torch.save({"model_state_dict": state}, inputs / "damaged.ckpt")
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    line = assert_clean_failure(fmt("to-hf", inputs / "damaged.ckpt", "--config", GEMMA / "gemma-mqa-config.json",
                                    "-o", out_parent / "hf"), out_parent)
    assert name in line


def test_not_a_checkpoint(tmp_path: Path, fmt: Fmt) -> None:
    source = tmp_path / "in.ckpt"
    source.write_bytes(b"not a pickle at all")
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    line = assert_clean_failure(fmt("to-hf", source, "--size", "2B", "-o", out_parent / "hf"), out_parent)
    assert "in.ckpt" in line and "not a PyTorch file" in line


def test_pickle_that_would_run_code_is_refused(tmp_path: Path, fmt: Fmt) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.mkdir, (str(marker),))

    source = tmp_path / "in.ckpt"
    torch.save({"model_state_dict": {"embedder.weight": Payload()}}, source)
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    line = assert_clean_failure(fmt("to-hf", source, "--size", "2B", "-o", out_parent / "hf"), out_parent)
    assert "refused" in line and "weights_only=True" in line
    assert not marker.exists()


def test_pickle_without_model_state_dict(tmp_path: Path, fmt: Fmt) -> None:
    source = tmp_path / "in.ckpt"
    torch.save(native_state(GEMMA / "gemma-mqa.ckpt"), source)  # a bare state dict
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    line = assert_clean_failure(fmt("to-hf", source, "--config", GEMMA / "gemma-mqa-config.json",
                                    "-o", out_parent / "hf"), out_parent)
    assert "model_state_dict" in line


@pytest.mark.parametrize("dimensions", [[], ["--size", "2B", "--config", str(GEMMA / "gemma-mqa-config.json")]],
                         ids=["neither", "both"])
def test_size_or_config_exactly_one(dimensions: list[str], tmp_path: Path, fmt: Fmt) -> None:
    result = fmt("to-hf", GEMMA / "gemma-mqa.ckpt", *dimensions, "-o", tmp_path / "hf")
    assert result.code == 2
    assert "--size" in result.err and "--config" in result.err
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_without_force(tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "hf"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    args = ("to-hf", GEMMA / "gemma-mqa.ckpt", "--config", GEMMA / "gemma-mqa-config.json", "-o", out)
    line = assert_clean_failure(fmt(*args))
    assert "--force" in line
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]

    result = fmt(*args, "--force")
    assert result.code == 0, result
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # the old one is gone, nothing left aside
    assert np.abs(logits(out) - np.load(GEMMA / "gemma-mqa-logits.npy")).max() <= TOLERANCE


def test_empty_output_directory_is_used(tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "hf"
    out.mkdir()
    result = fmt("to-hf", GEMMA / "gemma-mqa.ckpt", "--config", GEMMA / "gemma-mqa-config.json", "-o", out)
    assert result.code == 0, result
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]


def test_output_that_holds_the_input_is_refused_even_with_force(tmp_path: Path, fmt: Fmt) -> None:
    source = tmp_path / "model.ckpt"
    source.write_bytes((GEMMA / "gemma-mqa.ckpt").read_bytes())
    line = assert_clean_failure(fmt("to-hf", source, "--config", GEMMA / "gemma-mqa-config.json",
                                    "-o", tmp_path, "--force"))
    assert "holds the input" in line
    assert source.read_bytes() == (GEMMA / "gemma-mqa.ckpt").read_bytes()


def test_output_that_is_a_file(tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "hf"
    out.write_text("a file")
    line = assert_clean_failure(fmt("to-hf", GEMMA / "gemma-mqa.ckpt", "--size", "2B", "-o", out, "--force"))
    assert "is a file" in line
    assert out.read_text() == "a file"


def test_failure_while_writing_keeps_the_old_directory(tmp_path: Path) -> None:
    out = tmp_path / "hf"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_directory(out, force=True) as temporary:
        (temporary / "half.bin").write_bytes(b"\0" * 10)
        raise KeyboardInterrupt
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_directory_appearing_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "hf"
    with pytest.raises(UsageError, match="--force"), atomic_directory(out, force=False) as temporary:
        (temporary / "new.txt").write_text("new")
        out.mkdir()
        (out / "theirs.txt").write_text("theirs")
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_tokenizer_needs_its_packages(tmp_path: Path, fmt: Fmt, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # makes `import sentencepiece` fail
    model_file = tmp_path / "tokenizer.model"
    model_file.write_bytes(b"\n\x05hello")
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    line = assert_clean_failure(fmt("to-hf", GEMMA / "gemma-mqa.ckpt", "--config", GEMMA / "gemma-mqa-config.json",
                                    "-o", out_parent / "hf", "--tokenizer", model_file), out_parent)
    assert "sentencepiece" in line and "pip install" in line


def test_missing_tokenizer_file(tmp_path: Path, fmt: Fmt) -> None:
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    line = assert_clean_failure(fmt("to-hf", GEMMA / "gemma-mqa.ckpt", "--config", GEMMA / "gemma-mqa-config.json",
                                    "-o", out_parent / "hf", "--tokenizer", tmp_path / "nope.model"), out_parent)
    assert "nope.model" in line


# -- the safetensors writer --------------------------------------------------------------------

def test_safetensors_writer_streams_a_file_the_reference_reader_reads(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    arrays = {"a": rng.standard_normal((3, 5)).astype(np.float32),
              "bb.weight": rng.standard_normal(7).astype(np.float16)}
    bf16 = torch.randn(2, 3).to(torch.bfloat16)
    computed: list[str] = []

    def source(name: str, array: np.ndarray[Any, Any]) -> Any:
        def blocks() -> Any:  # in two blocks of rows, as the converters give them
            computed.append(name)
            yield array[:1]
            yield array[1:]
        return blocks

    specs = [SafetensorsTensor("a", "F32", (3, 5), source("a", arrays["a"])),
             SafetensorsTensor("bb.weight", "F16", (7,), source("bb.weight", arrays["bb.weight"])),
             SafetensorsTensor("c", "BF16", (2, 3), source("c", bf16.view(torch.int16).numpy()))]
    path = tmp_path / "x.safetensors"
    size = write_safetensors(path, specs)
    assert computed == ["a", "bb.weight", "c"]
    raw = path.read_bytes()
    assert size == len(raw)
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0 and size == 8 + n + 15 * 4 + 7 * 2 + 6 * 2
    assert json.loads(raw[8:8 + n])["__metadata__"] == {"format": "pt"}
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert np.array_equal(f.get_tensor("a").numpy(), arrays["a"])
        assert np.array_equal(f.get_tensor("bb.weight").numpy(), arrays["bb.weight"])
        assert torch.equal(f.get_tensor("c"), bf16)


def test_bf16_rounding_is_torchs() -> None:
    from ggfmt.convert.transforms import to_bf16_bits

    values = torch.randn(100_000) * torch.logspace(-40, 38, 100_000)
    edge = torch.tensor([float("nan"), -float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 3.4028235e38,
                         -3.4028235e38, 1.0000001, 1.00390625, 1.01171875, 1e-45])  # ties round to even
    values = torch.cat([values, edge])
    expected = values.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(to_bf16_bits(values.numpy()), expected)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_tensors_converted_in_blocks_of_rows_without_torch(dtype: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of a few rows (here 2 of the 32-wide rows), and torch unimportable while converting."""
    import ggfmt.sources.weights
    from ggfmt.cli import main

    monkeypatch.setattr(ggfmt.sources.weights, "ROW_BLOCK_BYTES", 256)
    out = tmp_path / "hf"
    outtype = {"float32": "f32", "bfloat16": "bf16"}[dtype]
    real_torch = sys.modules["torch"]
    sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` fail
    try:
        status = main(["to-hf", str(GEMMA / "gemma-mha.ckpt"), "--config", str(GEMMA / "gemma-mha-config.json"),
                       "-o", str(out), "--outtype", outtype, "-q"])
    finally:
        sys.modules["torch"] = real_torch
    assert status == 0
    written = tensors(out / "model.safetensors")
    native = native_state(GEMMA / "gemma-mha.ckpt")
    qkv = native["model.layers.1.self_attn.qkv_proj.weight"]
    torch_dtype = getattr(torch, dtype)
    assert torch.equal(written["model.layers.1.self_attn.k_proj.weight"], qkv[64:128].to(torch_dtype))
    assert torch.equal(written["model.embed_tokens.weight"], native["embedder.weight"].to(torch_dtype))
