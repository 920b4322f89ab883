"""docs/adding-a-layout.md stays true: the llama2.c example (docs/examples/llama2c) is written from its
description, is `fmt schema check` clean, parses, converts, and the model runs in llama.cpp; each
output tensor is the layer's slice of the stacked input, read here with numpy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from conftest import GENUINE, ROOT, Fmt, assert_clean_failure
from test_llama_runs import logits

EXAMPLE = ROOT / "docs" / "examples" / "llama2c"


@pytest.fixture
def model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GGFMT_SCHEMA_PATH", str(EXAMPLE))
    monkeypatch.setenv("GGFMT_MAPPING_PATH", str(EXAMPLE))
    path = tmp_path / "model.bin"
    subprocess.run([sys.executable, str(EXAMPLE / "make_sample.py"), str(path)], check=True)
    return path


def test_the_example_is_check_clean(model: Path, fmt: Fmt) -> None:
    result = fmt("schema", "check", EXAMPLE / "llama2c.yaml", EXAMPLE / "llama2c-gguf.yaml", "--parse", model)
    assert result.code == 0, result.out
    assert "2 files checked: no problems" in result.err


def test_the_example_converts_and_runs(model: Path, fmt: Fmt, tmp_path: Path) -> None:
    out = tmp_path / "model.gguf"
    line = assert_clean_failure(fmt("to-gguf", model, "--schema", "llama2c", "-o", out))
    assert "--option: give the tokenizer's GGUF with --option vocab_model=VOCAB.gguf" in line
    result = fmt("to-gguf", model, "--schema", "llama2c", "--option",
                 f"vocab_model={GENUINE / 'tiny-llama-f32.gguf'}", "-o", out)
    assert result.code == 0, result.err
    reader = gguf.GGUFReader(out)
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    raw = np.frombuffer(model.read_bytes()[28:], dtype="<f4")
    dim, hidden, layers, vocab = 32, 96, 2, 275
    sizes = [("token_embd", vocab * dim), ("attn_norm", layers * dim), ("attn_q", layers * dim * dim),
             ("attn_k", layers * dim * dim), ("attn_v", layers * dim * dim), ("attn_output", layers * dim * dim),
             ("ffn_norm", layers * dim), ("ffn_gate", layers * hidden * dim), ("ffn_down", layers * dim * hidden),
             ("ffn_up", layers * hidden * dim), ("output_norm", dim)]
    at = 0
    for name, size in sizes:
        block = raw[at:at + size]
        at += size
        if name in ("token_embd", "output_norm"):
            assert np.array_equal(tensors[f"{name}.weight"].reshape(-1), block)
            continue
        for layer, part in enumerate(np.split(block, layers)):
            assert np.array_equal(tensors[f"blk.{layer}.{name}.weight"].reshape(-1), part), (name, layer)
    assert "output.weight" not in tensors  # a shared classifier: llama.cpp uses the embedding table
    assert reader.fields["tokenizer.ggml.tokens"].contents()[:3] == ["<unk>", "<s>", "</s>"]
    got = logits(out)
    assert got.shape == (6, 275) and np.isfinite(got).all()
