"""Write a tiny llama2.c checkpoint (the `model.bin` of github.com/karpathy/llama2.c, the original
"version 0" export) from its layout: seven int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
vocab_size, seq_len; a negative vocab_size means the classifier is not shared), then the f32
weights in run.c's order, each layer's tensors stacked.

    python make_sample.py model.bin
"""

import struct
import sys

import numpy as np

dim, hidden, layers, heads, kv_heads, vocab, seq_len = 32, 96, 2, 4, 4, 275, 64
head = dim // heads
rng = np.random.default_rng(0)


def weights(*shape: int) -> bytes:
    return (rng.standard_normal(shape) * 0.05).astype("<f4").tobytes()


with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<7i", dim, hidden, layers, heads, kv_heads, vocab, seq_len))
    f.write(weights(vocab, dim))                      # token_embedding_table
    f.write(np.ones((layers, dim), "<f4").tobytes())  # rms_att_weight
    f.write(weights(layers, dim, dim))                # wq
    f.write(weights(layers, kv_heads * head, dim))    # wk
    f.write(weights(layers, kv_heads * head, dim))    # wv
    f.write(weights(layers, dim, dim))                # wo
    f.write(np.ones((layers, dim), "<f4").tobytes())  # rms_ffn_weight
    f.write(weights(layers, hidden, dim))             # w1
    f.write(weights(layers, dim, hidden))             # w2
    f.write(weights(layers, hidden, dim))             # w3
    f.write(np.ones(dim, "<f4").tobytes())            # rms_final_weight
    f.write(weights(seq_len, head // 2))              # freq_cis_real (unused since 2023-08)
    f.write(weights(seq_len, head // 2))              # freq_cis_imag
