"""PEFT LoRA adapters of every architecture the fixtures hold, converted to the GGUF adapter llama.cpp
applies: names, shapes, alpha and bytes as llama.cpp's own converter writes them, and llama.cpp
applying the adapter to the folder's base.gguf (written by llama.cpp's converter) gives the logits
of transformers on the PEFT-merged model. rsLoRA and rank/alpha patterns, which llama.cpp's converter
gets wrong, are made here with peft on a fixture base and checked against transformers the same way."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

import consumer
from conftest import FIXTURES, Fmt

ADAPTERS = FIXTURES / "adapters"
ARCHS = sorted(p.name for p in ADAPTERS.iterdir() if (p / "peft" / "plain").is_dir())
# the fixtures' bound: llama.cpp applying llama.cpp's own conversion reproduces transformers within it
# (SiLU models ~2e-6; GELU models ~1e-3, from ggml's f16 GELU table: adapters/README.md)
MERGED_LOGITS = 5e-3


def ids(arch: str) -> list[int]:
    return list(json.loads((ADAPTERS / arch / "ids.json").read_text())["ids"])


def tensors(path: Path) -> dict[str, tuple[list[int], bytes]]:
    return {t.name: ([int(n) for n in t.shape], bytes(t.data.tobytes())) for t in gguf.GGUFReader(path).tensors}


def alpha(path: Path) -> float:
    return float(gguf.GGUFReader(path).fields["adapter.lora.alpha"].contents())


def convert(adapter: Path, base: Path, out: Path, fmt: Fmt) -> Any:
    result = fmt("to-gguf", adapter, "--base", base, "-o", out)
    assert result.code == 0, result.err
    return result


def fixture_converted(arch: str, adapter: str, tmp_path: Path, fmt: Fmt) -> Path:
    """The adapter ``adapter`` of the fixture folder ``arch``, converted against its base."""
    out = tmp_path / "adapter.gguf"
    convert(ADAPTERS / arch / adapter, ADAPTERS / arch / "base", out, fmt)
    return out


# every adapter of the fixtures: PEFT's (safetensors, and the pickled .bin of qwen2) and mlx-lm's copies of
# the same adapter, with the reference llama.cpp's converter wrote from the PEFT one
CASES = [(a, "peft/plain", "plain") for a in ARCHS] + [("qwen2", "peft/plain_bin", "plain_bin")] + \
    [(p.parent.parent.name, "mlx/plain", "plain") for p in sorted(ADAPTERS.glob("*/mlx/plain"))]


@pytest.mark.parametrize(("arch", "adapter", "case"), CASES)
def test_an_adapter_is_the_one_llama_cpps_converter_writes(arch: str, adapter: str, case: str, tmp_path: Path,
                                                           fmt: Fmt) -> None:
    folder = ADAPTERS / arch
    out = fixture_converted(arch, adapter, tmp_path, fmt)
    assert tensors(out) == tensors(folder / f"{case}.ref.gguf")
    # in the order llama.cpp's converter writes them: the adapter's own (a pickle's is not sorted)
    assert list(tensors(out)) == list(tensors(folder / f"{case}.ref.gguf"))
    if adapter.startswith("peft/"):  # (an mlx-lm folder has no model card, whose tags PEFT's has)
        assert out.read_bytes() == (folder / f"{case}.ref.gguf").read_bytes()
    assert alpha(out) == alpha(folder / f"{case}.ref.gguf")
    assert gguf.GGUFReader(out).fields["general.architecture"].contents() == \
        gguf.GGUFReader(folder / "base.gguf").fields["general.architecture"].contents()


@pytest.mark.parametrize(("arch", "adapter", "case"), CASES)
def test_llama_cpp_applying_it_gives_the_merged_models_logits(arch: str, adapter: str, case: str, tmp_path: Path,
                                                              fmt: Fmt) -> None:
    folder = ADAPTERS / arch
    out = fixture_converted(arch, adapter, tmp_path, fmt)
    got = consumer.logits(folder / "base.gguf", ids(arch), lora=out, f32_cache=True)
    expected = np.load(folder / "plain.merged.hf.logits.npy")  # (plain_bin is the same adapter, pickled)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= MERGED_LOGITS


def peft_adapter(arch: str, tmp_path: Path, **lora: Any) -> tuple[Path, np.ndarray[Any, Any]]:
    """An adapter made with peft on the fixture base of ``arch`` (random A and B), and the logits
    transformers computes of the PEFT-merged model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = ADAPTERS / arch / "base"
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, attn_implementation="eager")
    config = LoraConfig(**{"r": 8, "lora_alpha": 16, "target_modules": "all-linear", "lora_dropout": 0.0,
                           "init_lora_weights": False, **lora})
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    merged = peft_model.merge_and_unload().eval()
    with torch.no_grad():
        logits = merged(torch.tensor([ids(arch)])).logits[0].float().numpy()
    return adapter, logits


@pytest.mark.parametrize(("arch", "lora", "said"), [
    ("qwen2", {"use_rslora": True}, "use_rslora: adapter.lora.alpha is lora_alpha * sqrt(r)"),
    # per-module ranks alone: llama.cpp divides by each one's rank as PEFT does, nothing to fold
    ("qwen2", {"rank_pattern": {"q_proj": 4, "down_proj": 2}}, None),
    ("qwen2", {"rank_pattern": {"q_proj": 4}, "use_rslora": True}, "the lora_b of 2 modules multiplied"),
    ("qwen2", {"alpha_pattern": {"layers.0.self_attn.v_proj": 64}, "use_rslora": True},
     "the lora_b of 1 modules multiplied"),
    ("gemma2", {"rank_pattern": {"k_proj": 4}, "alpha_pattern": {"o_proj": 3}}, "the lora_b of 2 modules multiplied"),
])
def test_rslora_and_patterns_give_pefts_scale_in_llama_cpp(arch: str, lora: dict[str, Any], said: str | None,
                                                           tmp_path: Path, fmt: Fmt) -> None:
    adapter, expected = peft_adapter(arch, tmp_path, **lora)
    out = tmp_path / "adapter.gguf"
    result = convert(adapter, ADAPTERS / arch / "base", out, fmt)
    # the summary says what was folded
    notes = [line for line in result.out.splitlines() if line.startswith("  note: ")]
    assert any(said in line for line in notes) if said else not any("multiplied" in line for line in notes)
    got = consumer.logits(ADAPTERS / arch / "base.gguf", ids(arch), lora=out, f32_cache=True)
    assert np.abs(got - expected).max() <= MERGED_LOGITS
    # the check can fail: applied at alpha / r with nothing folded, the adapter means something else
    unfolded = tmp_path / "unfolded"
    shutil.copytree(adapter, unfolded)
    config = json.loads((unfolded / "adapter_config.json").read_text())
    plain = {**config, "use_rslora": False, "alpha_pattern": {}}
    (unfolded / "adapter_config.json").write_text(json.dumps(plain))
    wrong = tmp_path / "wrong.gguf"
    if config.get("rank_pattern"):  # per-module ranks are read from the factors: only the alphas can be left out
        plain["rank_pattern"] = config["rank_pattern"]
        (unfolded / "adapter_config.json").write_text(json.dumps(plain))
    convert(unfolded, ADAPTERS / arch / "base", wrong, fmt)
    if lora.get("use_rslora") or lora.get("alpha_pattern"):
        misread = consumer.logits(ADAPTERS / arch / "base.gguf", ids(arch), lora=wrong, f32_cache=True)
        assert np.abs(misread - expected).max() > 10 * MERGED_LOGITS


def test_a_class_the_table_does_not_name_is_one_line(tmp_path: Path, fmt: Fmt) -> None:
    base = tmp_path / "base"
    shutil.copytree(ADAPTERS / "qwen2" / "base", base, ignore=shutil.ignore_patterns("*.safetensors"))
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "architectures": ["RwkvForCausalLM"]}))
    result = fmt("to-gguf", ADAPTERS / "qwen2" / "peft" / "plain", "--base", base, "-o", tmp_path / "x.gguf")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert "config.json: field architectures: RwkvForCausalLM: ggfmt converts adapters of the model classes" \
        in result.err
    assert not (tmp_path / "x.gguf").exists()


def test_an_embedding_adapter_is_applied_as_peft_applies_it(tmp_path: Path, fmt: Fmt) -> None:
    adapter, expected = peft_adapter("qwen2", tmp_path, target_modules=["embed_tokens", "q_proj", "down_proj"])
    out = tmp_path / "adapter.gguf"
    convert(adapter, ADAPTERS / "qwen2" / "base", out, fmt)
    written = tensors(out)
    assert written["token_embd.weight.lora_a"][0] == [8, 512] and written["token_embd.weight.lora_b"][0] == [8, 64]
    got = consumer.logits(ADAPTERS / "qwen2" / "base.gguf", ids("qwen2"), lora=out, f32_cache=True)
    assert np.abs(got - expected).max() <= MERGED_LOGITS


def test_what_llama_cpp_cannot_apply_is_refused_in_one_line_saying_what_works(tmp_path: Path, fmt: Fmt) -> None:
    # tied input and output embeddings (Gemma 2): llama.cpp would abort on load
    adapter, _ = peft_adapter("gemma2", tmp_path / "tied", target_modules=["embed_tokens", "q_proj"])
    result = fmt("to-gguf", adapter, "--base", ADAPTERS / "gemma2" / "base", "-o", tmp_path / "x.gguf")
    # (the last line: transformers, run in this process above, may have written progress before it)
    assert result.code == 2 and result.err.strip().splitlines()[-1].endswith(
        "field base_model.model.model.embed_tokens.lora_embedding_A at byte 131976: adapts the input embeddings of "
        "a model whose output "
        "shares them (tie_word_embeddings), which llama.cpp cannot apply (it aborts on load): merge the adapter into "
        "the model (PEFT's merge_and_unload) and convert that"), result.err
    # DoRA: its magnitude vectors, named, when the config does not say it
    dora, _ = peft_adapter("qwen2", tmp_path / "dora", use_dora=True)
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": False}))
    result = fmt("to-gguf", dora, "--base", ADAPTERS / "qwen2" / "base", "-o", tmp_path / "x.gguf")
    assert result.code == 2 and "lora_magnitude_vector" in result.err and "is a DoRA magnitude: llama.cpp applies " \
        "plain LoRA only; merge the adapter into the model (PEFT's merge_and_unload) and convert that" in result.err
    assert not (tmp_path / "x.gguf").exists()


def test_dry_run_lists_what_would_be_written_and_every_refusal(tmp_path: Path, fmt: Fmt) -> None:
    adapter, _ = peft_adapter("gemma2", tmp_path, target_modules=["embed_tokens", "q_proj"], use_dora=True)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "use_dora": False}))
    out = tmp_path / "x.gguf"
    result = fmt("to-gguf", adapter, "--base", ADAPTERS / "gemma2" / "base", "-o", out, "--dry-run")
    assert result.code == 2
    listed = result.out.split("would refuse ", 1)[1].splitlines()
    assert listed[0] == "5 input tensors:"  # the embedding's two factors; the three magnitudes (q_proj's, its)
    assert sum("is a DoRA magnitude" in line for line in listed) == 3
    assert sum("tie_word_embeddings" in line for line in listed) == 2
    assert "blk.0.attn_q.weight.lora_a" in result.out and "blk.1.attn_q.weight.lora_b" in result.out
    assert result.err.strip().splitlines()[-1].endswith("5 input tensors would be refused (listed above); "
                                                        "nothing written")
    assert not out.exists()


@pytest.mark.parametrize(("change", "field"), [
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"bias": "lora_only"}, "bias"),
    ({"use_dora": True}, "use_dora"),
])
def test_a_config_no_lora_adapter_can_hold_is_refused_saying_what_works(change: dict[str, Any], field: str,
                                                                        tmp_path: Path, fmt: Fmt) -> None:
    adapter = shutil.copytree(ADAPTERS / "qwen2" / "peft" / "plain", tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, **change}))
    result = fmt("to-gguf", adapter, "--base", ADAPTERS / "qwen2" / "base", "-o", tmp_path / "x.gguf")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert f"adapter_config.json: field {field}" in result.err
    assert "merge the adapter into the model (PEFT's merge_and_unload) and convert that" in result.err
    assert not (tmp_path / "x.gguf").exists()


def refusal_with_weights(tmp_path: Path, fmt: Fmt, change: Callable[[dict[str, Any]], dict[str, Any]]) -> str:
    """qwen2's PEFT adapter with its weights changed by ``change``, converted: the one line it is refused in."""
    from safetensors.numpy import load_file, save_file

    adapter = shutil.copytree(ADAPTERS / "qwen2" / "peft" / "plain", tmp_path / "adapter")
    save_file(change(load_file(adapter / "adapter_model.safetensors")), adapter / "adapter_model.safetensors")
    result = fmt("to-gguf", adapter, "--base", ADAPTERS / "qwen2" / "base", "-o", tmp_path / "x.gguf")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert not (tmp_path / "x.gguf").exists()
    return str(result.err)


def test_a_key_that_is_no_lora_factor_is_refused_at_it(tmp_path: Path, fmt: Fmt) -> None:
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    err = refusal_with_weights(tmp_path, fmt, lambda w: {**w, key.replace("lora_A", "lora_C"): w[key]})
    assert "q_proj.lora_C.weight at byte " in err and "is neither a lora_A nor a lora_B factor" in err


def test_a_module_gguf_py_does_not_name_is_refused_saying_what_works(tmp_path: Path, fmt: Fmt) -> None:
    # a per-expert module, as older transformers' MoE models had them: llama.cpp stacks experts, no tensor is
    # named for one expert alone
    def per_expert(weights: dict[str, Any]) -> dict[str, Any]:
        module = "model.layers.0.mlp.gate_proj"
        renamed = {k.replace(module, "model.layers.0.mlp.experts.0.gate_proj"): v for k, v in weights.items()}
        assert renamed.keys() != weights.keys()
        return renamed

    err = refusal_with_weights(tmp_path, fmt, per_expert)
    assert "field base_model.model.model.layers.0.mlp.experts.0.gate_proj.lora_A.weight at byte " in err
    assert err.strip().endswith(
        "gguf-py names no qwen2 tensor model.layers.0.mlp.experts.0.gate_proj, so llama.cpp would not apply it: "
        "leave the module out of target_modules, or merge the adapter into the model (PEFT's merge_and_unload) "
        "and convert that"), err
