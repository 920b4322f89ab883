"""The expression functions the 2023 families' tables use: byte-level text, BPE merges rebuilt
from a vocabulary's order, and the bytes basics. Each is checked against an independent truth:
GPT-2's published byte alphabet rule, the merges of the reference GGUF, Python itself."""

from __future__ import annotations

import struct

import gguf
import pytest

from conftest import FIXTURES
from ggfmt.schema.expr import Expression, ExpressionError


def value(source: str, **names: object) -> object:
    return Expression(source)(lambda name: names[name])


def test_byte_level_is_gpt2s_alphabet() -> None:
    # GPT-2's bytes_to_unicode: printable bytes stand for themselves, the 68 others from U+0100 on
    assert value("byte_level(t)", t=b" the\n") == "\u0120the\u010a"
    assert value("byte_level(t)", t=bytes(range(256)))[33:127] == "".join(map(chr, range(33, 127)))
    assert len(set(value("byte_level(t)", t=bytes(range(256))))) == 256
    # the bytes 0x20 0xE9 written as the characters U+0020 U+00E9, UTF-8 encoded
    assert value("byte_level_from_chars(t)", t=" \u00e9".encode()) == "\u0120\u00e9"
    assert value("byte_level_from_chars(t)", t="<|\u4e00|>".encode()) == "<|\u4e00|>"  # past U+00FF: the text itself
    assert value("decode(t)", t="▁héllo".encode()) == "▁héllo"
    with pytest.raises(ExpressionError, match="is not UTF-8"):
        value("decode(t)", t=b"\xff")


def test_bpe_merges_of_the_real_gpt2_vocabulary_are_its_merges() -> None:
    reference = gguf.GGUFReader(FIXTURES / "ggml-family" / "ref" / "gpt2-realvocab.ref.gguf")
    tokens = reference.fields["tokenizer.ggml.tokens"].contents()
    types = reference.fields["tokenizer.ggml.token_type"].contents()
    merges = value("bpe_merges(tokens, types)", tokens=tokens, types=types)
    assert merges == reference.fields["tokenizer.ggml.merges"].contents()
    assert len(merges) == 50_000


def test_a_vocabulary_not_in_merge_order_is_said_with_the_token() -> None:
    tokens = ["a", "b", "c", "abc", "ab"]  # "abc" before the "ab" it is made of
    with pytest.raises(ExpressionError, match=r"token 3 'abc' is not two tokens ranked before it"):
        value("bpe_merges(tokens, types)", tokens=tokens, types=[1] * 5)
    assert value("bpe_merges(tokens, types)", tokens=["a", "b", "c", "ab", "abc"], types=[1] * 5) == ["a b", "ab c"]
    assert value("bpe_merges(tokens, types)", tokens=["a", "b", "<|x|>"], types=[1, 1, 3]) == []


def test_bytes_basics() -> None:
    assert value("[b for b in t]", t=b"ab") == [97, 98]
    assert value("t[0] + ord('A')", t=b"a") == 97 + 65
    assert value("chr(0x120)") == "\u0120"
    assert value("t == b'GGML'", t=b"GGML") is True
    assert value("f32_from_bits(w)", w=0x3F800000) == 1.0
    assert value("f32_from_bits(w)", w=struct.unpack("<I", struct.pack("<f", -2.5))[0]) == -2.5
    assert value("get(lookup(tokens), '<|endoftext|>')", tokens=["a", "<|endoftext|>", "a"]) == 1
    assert value("lookup(tokens)", tokens=["a", "b", "a"]) == {"a": 0, "b": 1}
    assert value("index_of(tokens, 'b')", tokens=["a", "b"]) == 1 and value("index_of(t, 'z')", t=["a"]) is None
    assert value("range(2, 5)") == [2, 3, 4] and value("range(3)") == [0, 1, 2]
    for failing in ("ord('ab')", "chr(-1)", "f32_from_bits(-1)", "lookup([[1]])", "range(1, 2, 3)"):
        with pytest.raises(ExpressionError):
            value(failing)


def test_local_names_are_pythons_walrus() -> None:
    # a value computed once and read again, as Python computes it
    assert value("(w := n * 2) + w", n=3) == 12
    assert value("(n := 5) + n", n=3) == 10  # the local name hides the field of that name
    assert value("[(w := len(t)) * w for t in items]", items=["ab", "c"]) == [4, 1]
    assert value("[w for t in items if (w := len(t)) > 1]", items=["ab", "c", "xyz"]) == [2, 3]
    expression = Expression("(w := n * 2) + w")
    assert expression.names == {"n"}  # (w is no name a schema must define)
    assert [expression({"n": i}.__getitem__) for i in range(12)] == [4 * i for i in range(12)]
    with pytest.raises(ExpressionError, match=r"'w' is read before `w := \.\.\.` gives it a value"):
        value("w + (w := 1)")
    for refused in ("[(t := 1) for t in x]", "(_x := 1)"):
        with pytest.raises(ExpressionError, match="a local name is a plain name"):
            Expression(refused)


def test_the_adapter_functions() -> None:
    assert value("split(name, '.')", name="blk.3.attn_q") == ["blk", "3", "attn_q"]
    assert value("sqrt(16)") == 4.0
    patterns = {"q_proj": 4, "layers.1.self_attn.k_proj": 2}
    assert value("pattern_value(p, 'model.layers.0.self_attn.q_proj', 8)", p=patterns) == 4
    assert value("pattern_value(p, 'model.layers.1.self_attn.k_proj', 8)", p=patterns) == 2
    assert value("pattern_value(p, 'model.layers.0.self_attn.k_proj', 8)", p=patterns) == 8
    assert value("pattern_value(p, 'model.layers.0.self_attn.xq_proj', 8)", p=patterns) == 8  # a whole part only
    with pytest.raises(ExpressionError, match="is not a module name"):
        value("pattern_value(p, 'q_proj', 8)", p={".*q_proj": 4})
    # gguf-py's own map of Hugging Face names, the block number kept whatever it is
    assert value("gguf_name('model.layers.117.self_attn.qkv_proj', 'phi3')") == "blk.117.attn_qkv"
    assert value("gguf_name('gpt_neox.layers.2.attention.query_key_value.weight', 'gptneox')") == \
        "blk.2.attn_qkv.weight"
    assert value("gguf_name('model.layers.0.mlp.experts.3.up_proj', 'qwen2moe')") is None
    # a block number as Python writes it: layers.01 is no layer (it would be taken for layers.1)
    assert value("gguf_name('model.layers.01.self_attn.q_proj', 'llama')") is None


@pytest.mark.parametrize(("n_head", "n_head_kv"), [(4, 4), (8, 2), (4, 1)])
def test_regroup_qkv_is_llama_cpps_grouping(n_head: int, n_head_kv: int) -> None:
    import numpy as np

    from ggfmt.convert.transforms import regroup_qkv

    head, per_group = 3, n_head // n_head_kv + 2
    rows = np.arange((n_head + 2 * n_head_kv) * head * 2, dtype=np.float32).reshape(-1, 2)
    # stored: group g holds its q heads, then its k head, then its v head (llama.cpp's falcon.py and
    # gptneox.py read them so); written: every q head, then every k, then every v
    q = [(g * per_group + j) * head + i for g in range(n_head_kv) for j in range(per_group - 2) for i in range(head)]
    k = [(g * per_group + per_group - 2) * head + i for g in range(n_head_kv) for i in range(head)]
    v = [(g * per_group + per_group - 1) * head + i for g in range(n_head_kv) for i in range(head)]
    assert np.array_equal(regroup_qkv(rows, n_head, n_head_kv), rows[q + k + v])
