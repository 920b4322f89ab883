"""Grouped-query attention: k's lora_B rows are permuted per kv head, q's per head.

The adapter is made here with the real peft package on a random transformers llama with
4 heads and 2 kv heads; the expected row order is written out from the rule in layouts.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from safetensors import safe_open
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import Fmt

N_HEAD, N_HEAD_KV, HIDDEN = 4, 2, 32


def rope_row_order(n_rows: int, n_heads: int) -> list[int]:
    """Within each head, the rows of its two halves interleave: new row 2i + s of a head is old row
    s * half + i (current llama.cpp's permutation of q and k for rope)."""
    head_dim = n_rows // n_heads
    half = head_dim // 2
    return [h * head_dim + s * half + i for h in range(n_heads) for i in range(half) for s in range(2)]


def make_adapter(tmp_path: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=N_HEAD, num_key_value_heads=N_HEAD_KV, max_position_embeddings=32,
                         architectures=["LlamaForCausalLM"])  # as a saved model records it
    base = tmp_path / "base"
    config.save_pretrained(base)  # the converter reads config.json only
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      init_lora_weights=False)  # random A and B, so that a wrong permutation shows
    adapter = tmp_path / "adapter"
    get_peft_model(LlamaForCausalLM(config), lora).save_pretrained(adapter)
    return adapter, base


def test_grouped_query_attention(tmp_path: Path, fmt: Fmt) -> None:
    adapter, base = make_adapter(tmp_path)
    out = tmp_path / "gqa.gguf"
    result = fmt("to-gguf", adapter, "--base", base, "-o", out)
    assert result.code == 0, result.err
    written = {t.name: np.array(t.data).reshape([int(n) for n in reversed(t.shape)])
               for t in gguf.GGUFReader(out).tensors}
    peft: dict[str, Any] = {}
    with safe_open(str(adapter / "adapter_model.safetensors"), framework="numpy") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
            peft[key] = f.get_tensor(key)
    assert len(written) == 2 * 4 * 2
    for layer in range(2):
        def factors(module: str, layer: int = layer) -> tuple[Any, Any]:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            return peft[f"{prefix}.lora_A.weight"], peft[f"{prefix}.lora_B.weight"]

        for module, gguf_name, heads in [("q_proj", "attn_q", N_HEAD), ("k_proj", "attn_k", N_HEAD_KV),
                                         ("v_proj", "attn_v", None), ("o_proj", "attn_output", None)]:
            a, b = factors(module)
            name = f"blk.{layer}.{gguf_name}.weight"
            assert np.array_equal(written[f"{name}.lora_a"], a)
            expected = b[rope_row_order(b.shape[0], heads)] if heads else b
            assert np.array_equal(written[f"{name}.lora_b"], expected), name
        # The k check can fail: permuting k's 16 rows as if they had 4 heads gives another order.
        _, b_k = factors("k_proj")
        assert not np.array_equal(written[f"blk.{layer}.attn_k.weight.lora_b"], b_k[rope_row_order(16, N_HEAD)])
