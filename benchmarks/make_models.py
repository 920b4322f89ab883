"""Large inputs for `make bench` that ../shared has no generator for: a PEFT LoRA adapter
(safetensors) with its base model's config, a CLIP model directory, and a native Gemma checkpoint.

Each is the matching tiny fixture scaled up: the same tensor names and layout, with dimensions
of a real model family (Llama-7B-shaped adapters, a ViT-B/16 CLIP, a Gemma-shaped checkpoint).
Tensors are written one at a time, so generating takes little memory (except the Gemma pickle,
which torch.save writes from tensors held in memory). Values are a cheap repeating pattern: what
is measured is how ggfmt moves bytes, not what they hold.

    python benchmarks/make_models.py peft  DIR --size-mb 770
    python benchmarks/make_models.py clip  DIR
    python benchmarks/make_models.py gemma FILE.ckpt --layers 4
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"  # the project's copies of the real files
PATTERN = (np.arange(4096, dtype=np.float32) % 251 - 125) / 1000  # small, finite, not all equal

DTYPES = {"F32": np.float32, "F16": np.float16}


def _filled(shape: tuple[int, ...], dtype: type) -> Iterator[bytes]:
    """The bytes of a tensor of ``shape`` filled with PATTERN, in pieces of at most 16 MiB."""
    count = int(np.prod(shape)) if shape else 1
    tile = np.resize(PATTERN, 1 << 22).astype(dtype)
    while count:
        n = min(count, tile.size)
        yield tile[:n].tobytes()
        count -= n


def write_safetensors(path: Path, tensors: list[tuple[str, str, tuple[int, ...]]],
                      metadata: dict[str, str] | None = None) -> None:
    """A safetensors file of ``(name, dtype, shape)`` tensors filled with PATTERN, one at a time."""
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, dtype, shape in tensors:
        size = int(np.prod(shape)) * np.dtype(DTYPES[dtype]).itemsize if shape else np.dtype(DTYPES[dtype]).itemsize
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-aligned, as the safetensors library writes it
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for _name, dtype, shape in tensors:
            for piece in _filled(shape, DTYPES[dtype]):
                f.write(piece)


# -- PEFT ------------------------------------------------------------------------------------------

LLAMA_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 32, "head_dim": 128}


def make_peft(directory: Path, base: Path, size_mb: float) -> Path:
    """A PEFT adapter of every llama projection, rank chosen to make the file about ``size_mb``."""
    dims = LLAMA_7B
    hidden, inter, layers = dims["hidden_size"], dims["intermediate_size"], dims["num_hidden_layers"]
    modules = {"self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (hidden, hidden),
               "self_attn.v_proj": (hidden, hidden), "self_attn.o_proj": (hidden, hidden),
               "mlp.gate_proj": (hidden, inter), "mlp.up_proj": (hidden, inter), "mlp.down_proj": (inter, hidden)}
    per_rank = layers * sum(n_in + n_out for n_in, n_out in modules.values()) * 4
    rank = max(1, round(size_mb * 1e6 / per_rank))
    tensors = []
    for bid in range(layers):
        for module, (n_in, n_out) in modules.items():
            prefix = f"base_model.model.model.layers.{bid}.{module}"
            tensors.append((f"{prefix}.lora_A.weight", "F32", (rank, n_in)))
            tensors.append((f"{prefix}.lora_B.weight", "F32", (n_out, rank)))
    directory.mkdir(parents=True, exist_ok=True)
    config = json.loads((FIXTURES / "peft" / "adapter-safetensors" / "adapter_config.json").read_text())
    config.update(r=rank, lora_alpha=2 * rank)
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=2))
    write_safetensors(directory / "adapter_model.safetensors", tensors)
    base.mkdir(parents=True, exist_ok=True)
    base_config = json.loads((FIXTURES / "peft" / "tiny-llama" / "config.json").read_text())
    base_config.update(dims, vocab_size=32000)
    (base / "config.json").write_text(json.dumps(base_config, indent=2))
    return directory


# -- CLIP ------------------------------------------------------------------------------------------

def make_clip(directory: Path, *, vision_layers: int = 12, text_layers: int = 12) -> Path:
    """A ViT-B/16-shaped CLIP model (vision 768 wide, text 512 wide), f32 as transformers saves it."""
    source = FIXTURES / "clip" / "tiny-clip"
    directory.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name != "model.safetensors":
            shutil.copy(item, directory / item.name)
    config = json.loads((source / "config.json").read_text())
    vision = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
              "num_hidden_layers": vision_layers, "image_size": 224, "patch_size": 16, "projection_dim": 512}
    text = {"hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8,
            "num_hidden_layers": text_layers, "max_position_embeddings": 77, "projection_dim": 512}
    config["vision_config"].update(vision)
    config["text_config"].update(text)
    config["projection_dim"] = 512
    (directory / "config.json").write_text(json.dumps(config, indent=2))

    def tower(prefix: str, width: int, inter: int, layers: int) -> list[tuple[str, str, tuple[int, ...]]]:
        out: list[tuple[str, str, tuple[int, ...]]] = []
        for bid in range(layers):
            p = f"{prefix}.encoder.layers.{bid}"
            for norm in ("layer_norm1", "layer_norm2"):
                out += [(f"{p}.{norm}.bias", "F32", (width,)), (f"{p}.{norm}.weight", "F32", (width,))]
            out += [(f"{p}.mlp.fc1.bias", "F32", (inter,)), (f"{p}.mlp.fc1.weight", "F32", (inter, width)),
                    (f"{p}.mlp.fc2.bias", "F32", (width,)), (f"{p}.mlp.fc2.weight", "F32", (width, inter))]
            for proj in ("k_proj", "out_proj", "q_proj", "v_proj"):
                out += [(f"{p}.self_attn.{proj}.bias", "F32", (width,)),
                        (f"{p}.self_attn.{proj}.weight", "F32", (width, width))]
        return out

    hv, ht = vision["hidden_size"], text["hidden_size"]
    patches = (vision["image_size"] // vision["patch_size"]) ** 2 + 1
    tensors: list[tuple[str, str, tuple[int, ...]]] = [("logit_scale", "F32", ())]
    tensors += [("text_model.embeddings.position_embedding.weight", "F32", (77, ht)),
                ("text_model.embeddings.token_embedding.weight", "F32", (config["text_config"]["vocab_size"], ht))]
    tensors += tower("text_model", ht, text["intermediate_size"], text_layers)
    tensors += [("text_model.final_layer_norm.bias", "F32", (ht,)),
                ("text_model.final_layer_norm.weight", "F32", (ht,)),
                ("text_projection.weight", "F32", (512, ht)),
                ("vision_model.embeddings.class_embedding", "F32", (hv,)),
                ("vision_model.embeddings.patch_embedding.weight", "F32", (hv, 3, 16, 16)),
                ("vision_model.embeddings.position_embedding.weight", "F32", (patches, hv))]
    tensors += tower("vision_model", hv, vision["intermediate_size"], vision_layers)
    tensors += [("vision_model.post_layernorm.bias", "F32", (hv,)),
                ("vision_model.post_layernorm.weight", "F32", (hv,)),
                ("vision_model.pre_layrnorm.bias", "F32", (hv,)),
                ("vision_model.pre_layrnorm.weight", "F32", (hv,)),
                ("visual_projection.weight", "F32", (512, hv))]
    write_safetensors(directory / "model.safetensors", tensors)
    return directory


# -- Gemma -----------------------------------------------------------------------------------------

GEMMA = {"vocab_size": 32000, "hidden_size": 2048, "intermediate_size": 8192, "num_attention_heads": 8,
         "num_key_value_heads": 1, "head_dim": 256, "max_position_embeddings": 2048}


def make_gemma(path: Path, config_path: Path, layers: int) -> Path:
    """A native Gemma checkpoint (``{'model_state_dict': ...}``, as gemma_pytorch saves it), MQA."""
    import torch

    dims = {**GEMMA, "num_hidden_layers": layers}
    hidden, inter, heads = dims["hidden_size"], dims["intermediate_size"], dims["num_attention_heads"]
    kv, head_dim = dims["num_key_value_heads"], dims["head_dim"]

    def filled(*shape: int) -> torch.Tensor:
        return torch.from_numpy(np.resize(PATTERN, shape).astype(np.float32))

    state = {"embedder.weight": filled(dims["vocab_size"], hidden)}
    for bid in range(layers):
        p = f"model.layers.{bid}"
        state[f"{p}.self_attn.qkv_proj.weight"] = filled((heads + 2 * kv) * head_dim, hidden)
        state[f"{p}.self_attn.o_proj.weight"] = filled(hidden, heads * head_dim)
        state[f"{p}.mlp.gate_proj.weight"] = filled(inter, hidden)
        state[f"{p}.mlp.up_proj.weight"] = filled(inter, hidden)
        state[f"{p}.mlp.down_proj.weight"] = filled(hidden, inter)
        state[f"{p}.input_layernorm.weight"] = filled(hidden)
        state[f"{p}.post_attention_layernorm.weight"] = filled(hidden)
    state["model.norm.weight"] = filled(hidden)
    state["freqs_cis"] = torch.zeros(dims["max_position_embeddings"], head_dim // 2, dtype=torch.complex64)
    torch.save({"model_state_dict": state}, path)
    config = json.loads((FIXTURES / "gemma" / "gemma-mqa-config.json").read_text())
    config.update(dims)
    config_path.write_text(json.dumps(config, indent=1))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("peft", "clip", "gemma"))
    parser.add_argument("output", type=Path, help="directory (peft, clip) or checkpoint file (gemma)")
    parser.add_argument("--size-mb", type=float, default=770, help="PEFT adapter size")
    parser.add_argument("--layers", type=int, default=4, help="Gemma layers")
    args = parser.parse_args()
    if args.kind == "peft":
        make_peft(args.output, args.output.with_name(args.output.name + "-base"), args.size_mb)
    elif args.kind == "clip":
        make_clip(args.output)
    else:
        make_gemma(args.output, args.output.with_suffix(".json"), args.layers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
