"""Header-heavy 2023 files: a 250,880-token vocabulary (BLOOM's size) converts, and every token,
score and type in the GGUF is what the file holds under the llama tokenizer's rules, as gguf-py
reads the output; and expressions compiled to Python compute, refuse and say what the evaluator
does."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import Fmt
from ggfmt.schema import expr as language
from ggfmt.schema.expr import UNKNOWN, Expression, ExpressionError, input_room

N_VOCAB, N_EMBD = 250_880, 32


def token(i: int) -> bytes:
    if i < 3:
        return [b"<unk>", b"<s>", b"</s>"][i]
    if i <= 258:
        return bytes([i - 3])  # the 256 byte tokens
    if i == 1000:
        return b""  # an empty token: a control token
    return b" tok%d" % i


def legacy_file(path: Path) -> Path:
    """A GGJT v3 file (n_embd 32, one layer, q4_0 matrices) written with struct from the layout."""
    block = struct.pack("<e", 0.01) + bytes(range(16))  # q4_0 (v3): an f16 scale and 16 bytes of nibbles
    with open(path, "wb") as f:
        f.write(b"tjgg" + struct.pack("<I7I", 3, N_VOCAB, N_EMBD, 256, 4, 1, 128, 2))
        for i in range(N_VOCAB):
            text = token(i)
            f.write(struct.pack("<I", len(text)) + text + struct.pack("<f", -i / 8))

        def tensor(name: str, ne: tuple[int, ...], quantized: bool) -> None:
            f.write(struct.pack(f"<3I{len(ne)}I", len(ne), len(name), 2 if quantized else 0, *ne) + name.encode())
            f.write(bytes(-f.tell() % 32))
            n = int(np.prod(ne))
            f.write(block * (n // 32) if quantized else np.ones(n, dtype="<f4").tobytes())

        tensor("tok_embeddings.weight", (N_EMBD, N_VOCAB), True)
        tensor("norm.weight", (N_EMBD,), False)
        tensor("output.weight", (N_EMBD, N_VOCAB), True)
        tensor("layers.0.attention_norm.weight", (N_EMBD,), False)
        for w in ("wq", "wk", "wv", "wo"):
            tensor(f"layers.0.attention.{w}.weight", (N_EMBD, N_EMBD), True)
        tensor("layers.0.ffn_norm.weight", (N_EMBD,), False)
        tensor("layers.0.feed_forward.w1.weight", (N_EMBD, 96), True)
        tensor("layers.0.feed_forward.w2.weight", (96, N_EMBD), True)
        tensor("layers.0.feed_forward.w3.weight", (N_EMBD, 96), True)
    return path


def expected_text(i: int) -> str:
    """llama.cpp's convert_llama_ggml_to_gguf.py: <unk>, <s>, </s>; <0xXX> for a byte token; else
    the text with each space as ▁ (U+2581)."""
    text = token(i)
    if i < 3:
        return text.decode()
    if i <= 258 and len(text) == 1:
        return f"<0x{text[0]:02X}>"
    return text.decode().replace(" ", "\u2581")


def expected_type(i: int) -> int:
    """Unknown 2, control 3 (<s>, </s>, an empty token), byte 6, normal 1."""
    text = token(i)
    return 2 if i == 0 else 3 if i <= 2 or not text else 6 if i <= 258 and len(text) == 1 else 1


def test_a_vocabulary_of_250880_tokens_converts(tmp_path: Path, fmt: Fmt) -> None:
    import gguf

    source = legacy_file(tmp_path / "bloom-sized.bin")
    out = tmp_path / "out.gguf"
    result = fmt("to-gguf", source, "-o", out, "--quiet")
    assert result.code == 0, result.err
    reader = gguf.GGUFReader(out)
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    scores = reader.fields["tokenizer.ggml.scores"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    assert len(tokens) == len(scores) == len(types) == N_VOCAB
    assert tokens == [expected_text(i) for i in range(N_VOCAB)]
    assert scores == [-i / 8 for i in range(N_VOCAB)]  # exact in f32 (multiples of 1/8 below 2^21)
    assert types == [expected_type(i) for i in range(N_VOCAB)]


# -- expressions as Python --------------------------------------------------------------------

NAMES: dict[str, Any] = {
    "n": 7, "xs": [3, 1, 4, 1, 5], "text": "a b c", "data": b"\x01\x02", "rec": {"key": "k", "value": 3},
    "recs": [{"key": "a", "value": 1}, {"key": "b", "value": 2}], "flag": True, "nothing": None, "f": 2.5,
    "unknown": UNKNOWN, "_root": {"version": 3}, "_index": 2,
}

CASES = [
    "n * 4 + 1", "n // 2", "-n", "not flag", "n if flag else 0", "n if nothing else xs", "xs[1]", "xs[-1]",
    "xs[1:3]", "text[::-1]", "rec.key", "recs[1].value", "recs[5].value", "rec.missing", "len(xs)",
    "[x * 2 for x in xs if x > 1]", "[r.key for r in recs]", "[[y for y in xs if y < x] for x in xs]",
    "flag and n", "nothing or n", "flag and nothing and n", "0 or 0 or 5", "n > 3", "n in xs", "5 in xs",
    "nothing is None", "find(recs, 'key', 'b')", "get(rec, 'value', 0)", "{'a': n, 'b': xs}", "format(n, '03d')",
    "replace(text, ' ', '_')", "[0] * 70000", "1 << 300", "n + 'a'", "undefined_name", "_root.version",
    "_index + 1", "'%s' % n", "xs[n]", "unknown + 1", "unknown and n", "flag and unknown", "unknown if flag else n",
    "n if unknown else n", "unknown > 3", "[x for x in unknown]", "unknown.key", "len(text) == 5 and n > 1",
    "1 < n < 10",
    # a comprehension reading only fields of its records (over their columns when read in bulk)
    "[r.missing for r in recs]", "[r.value for r in recs if r.key == 'b']", "[r.key for r in xs]",
    "[r.key for r in n]", "[r.value for r in [r for r in recs]]", "[r.key + r.key for r in recs]",
    "[r.key for r in unknown]", "[r.value for r in recs if unknown]", "[r.value * unknown for r in recs]",
    "[[r.key for r in recs if r.value < s.value] for s in recs]",
    # over range(n): the numbers counted, never listed first
    "[i * 2 for i in range(n)]", "[i for i in range(-3)]", "[i for i in range(flag)]", "[i for i in range(f)]",
    "[i for i in range(1 << 40)]", "[i for i in range(unknown)]", "[xs[i] for i in range(len(xs)) if i > 1]",
    # a list's fields by the comprehension's variable (a column found once for all the items)
    "[recs[i].value for i in range(2)]", "[recs[i].key + recs[i].key for i in range(2) if recs[i].value > 1]",
    "[recs[i].value for i in range(9)]", "[undefined_name[i].key for i in range(0)]",
    "[undefined_name[i].key for i in range(2)]", "[recs[i].missing for i in range(2)]",
    "[unknown[i].key for i in range(2)]", "[recs[i].key for i in range(unknown)]", "[xs[i].key for i in range(2)]",
]


def run(expression: Expression, compiled: bool) -> tuple[str, Any]:
    if compiled:
        expression._compile_python()
    else:
        expression._tree = None  # never written as Python: the evaluator walks the tree
    try:
        value = expression(lambda name: NAMES[name] if name in NAMES else (_ for _ in ()).throw(
            ExpressionError(f"unknown name {name!r}")))
    except ExpressionError as e:
        return "error", str(e)
    return "value", value


@pytest.mark.parametrize("source", CASES)
def test_an_expression_as_python_is_the_evaluator(source: str) -> None:
    assert run(Expression(source), compiled=True) == run(Expression(source), compiled=False)


@pytest.mark.parametrize("source", [c for c in CASES if "unknown" not in c])
def test_a_tables_expression_as_plain_python_is_the_evaluator(source: str) -> None:
    """A mapping table's expressions never meet UNKNOWN: Python's own operators compute the same."""
    assert run(Expression(source, known=True), compiled=True) == run(Expression(source), compiled=False)


@pytest.mark.parametrize("source", ["[t.score if t.score is not None else 0.0 for t in vocab]",
                                    "[len(t.text) for t in vocab if t.length > 1]", "[t for t in vocab][70].text",
                                    "[t.nothing for t in vocab]", "[vocab[i].text for i in range(len(vocab))]",
                                    "[vocab[i].score for i in range(-3, 0)]", "[vocab[i].nothing for i in range(2)]",
                                    "[vocab[i].text for i in range(len(vocab) + 1)]"])
def test_a_comprehension_over_records_read_in_bulk_is_the_evaluators(source: str, tmp_path: Path) -> None:
    from ggfmt import engine
    from ggfmt.schema.arrays import RecordList

    vocab = engine.parse(legacy_file(tmp_path / "m.bin")).fields["vocab"]
    assert isinstance(vocab, RecordList)

    def evaluate(compiled: bool) -> tuple[str, Any]:
        expression = Expression(source)
        if compiled:
            expression._compile_python()
        else:
            expression._tree = None
        try:
            return "value", expression({"vocab": vocab}.__getitem__)
        except ExpressionError as e:
            return "error", str(e)

    assert evaluate(compiled=True) == evaluate(compiled=False)


def test_every_case_is_written_as_python_but_chains() -> None:
    from ggfmt.schema.exprgen import compile_function

    written = [source for source in CASES if compile_function(Expression(source)._tree, source) is not None]  # type: ignore[arg-type]
    assert sorted(set(CASES) - set(written)) == ["1 < n < 10"]


def test_sequences_may_be_as_long_as_the_input() -> None:
    make = Expression("[0] * n")
    with input_room(300_000):
        assert len(make(lambda name: 300_000)) == 300_000
        with pytest.raises(ExpressionError, match="more than 300000"):
            make(lambda name: 300_001)
    with pytest.raises(ExpressionError, match=f"more than {language.MAX_SEQUENCE}"):
        make(lambda name: 300_000)
