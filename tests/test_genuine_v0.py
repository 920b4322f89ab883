"""The genuine 2023 checkpoint (optimizer context version 0), checked against an independent reading."""

from __future__ import annotations

import json
from pathlib import Path

import gguf

from conftest import GENUINE, Fmt
from legacy_reader import read_checkpoint

V0 = GENUINE / "ggcp-v0-adam.bin"
MODEL_NAMES = ["token_embd.weight", "output_norm.weight", "output.weight"] + [
    f"blk.{b}.{n}.weight" for b in range(2)
    for n in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_down", "ffn_up")
]


def test_converts_with_the_values_the_file_holds(tmp_path: Path, fmt: Fmt) -> None:
    expected = read_checkpoint(V0)
    out = tmp_path / "v0.gguf"
    assert fmt("to-gguf", V0, "-o", out).code == 0
    reader = gguf.GGUFReader(out)
    kv = {f.name: f.contents() for f in reader.fields.values()}
    opt, header = expected.opt, expected.header
    assert kv["training.type"] == "train_model"
    assert kv["training.iteration_count"] == header["train_its"] == 5
    assert kv["training.sample_count"] == header["train_samples"] == 6
    assert kv["training.token_count"] == header["train_tokens"] == 96
    assert kv["llama.embedding_length"] == header["n_embd"]
    assert kv["llama.attention.head_count"] == header["n_head"]
    assert kv["llama.block_count"] == header["n_layer"]
    assert kv["llama.rope.dimension_count"] == header["n_rot"]
    assert kv["llama.feed_forward_length"] == 96
    assert kv["optimizer.type"] == "adam"
    assert kv["optimizer.parameter_count"] == opt["nx"] == 44384
    assert kv["optimizer.iteration_count"] == opt["iter"]
    assert kv["optimizer.convergence_past_count"] == opt["past"]
    assert kv["optimizer.just_initialized"] is bool(opt["just_initialized"])
    assert kv["optimizer.adam.best_loss"] == opt["fx_best"]
    assert kv["optimizer.adam.previous_loss"] == opt["fx_prev"]
    assert kv["optimizer.adam.no_improvement_count"] == opt["n_no_improvement"]
    assert not any(k.startswith("optimizer.lbfgs") for k in kv)

    data = V0.read_bytes()
    tensors = {t.name: t for t in reader.tensors}
    names = [*MODEL_NAMES, "optimizer.adam.first_moments", "optimizer.adam.second_moments"]
    assert list(tensors) == names  # past is 0: no past-loss tensor; x, g1, g2, mh, vh are scratch
    sources = [*expected.model_tensors, opt["tensors"]["m"], opt["tensors"]["v"]]
    for name, record in zip(names, sources, strict=True):
        tensor = tensors[name]
        assert [int(n) for n in tensor.shape] == list(record.ne)
        assert tensor.data.tobytes() == data[record.data_offset:record.data_offset + record.nbytes], name


def test_parse_reports_every_offset(fmt: Fmt) -> None:
    expected = read_checkpoint(V0)
    result = fmt("parse", V0, "--json")
    assert result.code == 0
    doc = json.loads(result.out)
    records = [*expected.model_tensors, *expected.opt["tensors"].values()]
    assert [(t["offset"], t["nbytes"], tuple(t["ne"])) for t in doc["tensors"]] == \
        [(r.data_offset, r.nbytes, r.ne) for r in records]
    assert [t["name"].encode() for t in doc["tensors"]] == [r.name for r in records]
    assert doc["fields"]["opt"]["version"] == 0
    assert doc["fields"]["opt"]["ctx"]["type"] == "adam"
    assert doc["fields"]["opt"]["ctx"]["nx"] == 44384


def test_parse_shows_version_type_and_offsets(fmt: Fmt) -> None:
    expected = read_checkpoint(V0)
    result = fmt("parse", V0)
    assert result.code == 0
    lines = result.out.splitlines()
    assert any(line.split() == ["opt.version", "0"] for line in lines)
    assert any(line.split() == ["opt.ctx.type", "adam"] for line in lines)
    assert any(line.split() == ["opt.ctx.nx", "44384"] for line in lines)
    for record in expected.model_tensors:
        row = next(line for line in lines if record.name.decode() in line.split())
        assert f"{record.data_offset:,}" in row.split()
