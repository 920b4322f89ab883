"""CLIP (+ LLaVA projector) -> GGUF, equal to what the upstream converter wrote for each flag set."""

from __future__ import annotations

import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import FIXTURES, Fmt, assert_clean_failure, gguf_content

CLIP = FIXTURES / "clip"


def model_copy(tmp_path: Path) -> Path:
    directory = tmp_path / "tiny-clip"  # general.name comes from the directory's name
    shutil.copytree(CLIP / "tiny-clip", directory)
    return directory


@pytest.mark.parametrize(("reference", "flags"), [
    ("model-f16", []),
    ("mmproj-model-f16", ["--llava-projector", str(CLIP / "llava.projector")]),
    ("text-model-f32", ["--text-only", "--use-f32"]),
    ("vision-model-f16", ["--vision-only"]),
])
@pytest.mark.parametrize("block_bytes", [None, 96], ids=["whole", "rows"])
def test_equal_to_the_upstream_converter(reference: str, flags: list[str], block_bytes: int | None, tmp_path: Path,
                                         fmt: Fmt, monkeypatch: pytest.MonkeyPatch) -> None:
    """Also with tensors converted a few rows at a time (96 bytes: under one row of most tensors)."""
    import ggfmt.sources.weights

    if block_bytes is not None:
        monkeypatch.setattr(ggfmt.sources.weights, "ROW_BLOCK_BYTES", block_bytes)
    directory = model_copy(tmp_path)
    result = fmt("to-gguf", directory, *flags)
    assert result.code == 0, result.err
    out = directory / f"{reference}.gguf"  # the upstream converter's file name, in the model directory
    keys, tensors = gguf_content(out)
    ref_keys, ref_tensors = gguf_content(CLIP / "ref" / f"{reference}.gguf")
    assert keys == ref_keys
    assert [t[:3] for t in tensors] == [t[:3] for t in ref_tensors]
    for ours, theirs in zip(tensors, ref_tensors, strict=True):
        assert ours[3] == theirs[3], ours[0]


def test_image_statistics_can_be_given(tmp_path: Path, fmt: Fmt) -> None:
    directory = model_copy(tmp_path)
    (directory / "preprocessor_config.json").unlink()
    out = tmp_path / "v.gguf"
    line = assert_clean_failure(fmt("to-gguf", directory, "--vision-only", "-o", out))
    assert "--image-mean" in line
    assert fmt("to-gguf", directory, "--vision-only", "-o", out, "--image-mean", "0.5", "0.25", "0.125",
               "--image-std", "1", "2", "4").code == 0
    reader = gguf.GGUFReader(out)
    assert reader.fields["clip.vision.image_mean"].contents() == [0.5, 0.25, 0.125]
    assert reader.fields["clip.vision.image_std"].contents() == [1.0, 2.0, 4.0]


def test_unknown_and_missing_weights_are_named(tmp_path: Path, fmt: Fmt) -> None:
    directory = model_copy(tmp_path)
    weights = load_file(directory / "model.safetensors")
    weights["text_model.extra.weight"] = np.zeros(2, np.float32)
    save_file(weights, directory / "model.safetensors")
    line = assert_clean_failure(fmt("to-gguf", directory, "-o", tmp_path / "x.gguf"))
    assert "model.safetensors: field text_model.extra.weight" in line
    del weights["text_model.extra.weight"]
    del weights["vision_model.encoder.layers.1.mlp.fc2.bias"]
    save_file(weights, directory / "model.safetensors")
    line = assert_clean_failure(fmt("to-gguf", directory, "-o", tmp_path / "x.gguf"))
    assert "vision_model.encoder.layers.1.mlp.fc2.bias" in line and "missing" in line
    assert not (tmp_path / "x.gguf").exists()


def test_contradictory_options(tmp_path: Path, fmt: Fmt) -> None:
    directory = model_copy(tmp_path)
    result = fmt("to-gguf", directory, "--text-only", "--vision-only")  # argparse: the towers exclude each other
    assert result.code == 2 and "not allowed with argument" in result.err
    line = assert_clean_failure(fmt("to-gguf", CLIP / "llava.projector", "--use-f32"))
    assert "CLIP" in line


def test_a_projector_holds_projector_tensors_only(tmp_path: Path, fmt: Fmt) -> None:
    directory = model_copy(tmp_path)
    save_file({"model.mm_projector.0.weight": np.zeros((2, 2), np.float32),
               "model.other.weight": np.zeros(2, np.float32)}, tmp_path / "proj.safetensors")
    line = assert_clean_failure(fmt("to-gguf", directory, "--llava-projector", tmp_path / "proj.safetensors",
                                    "-o", tmp_path / "x.gguf"))
    assert "proj.safetensors: field model.other.weight" in line and "selected by no entry of clip-gguf" in line
    line = assert_clean_failure(fmt("to-gguf", directory, "--llava-projector", tmp_path / "none.bin",
                                    "-o", tmp_path / "x.gguf"))
    assert "--llava-projector" in line and "no such file" in line


def test_the_vocabulary_is_read_for_the_text_tower_only(tmp_path: Path, fmt: Fmt) -> None:
    directory = model_copy(tmp_path)
    (directory / "vocab.json").unlink()
    line = assert_clean_failure(fmt("to-gguf", directory, "-o", tmp_path / "x.gguf"))
    assert "vocab.json" in line and "--vision-only" in line
    assert fmt("to-gguf", directory, "--vision-only", "-o", tmp_path / "v.gguf").code == 0
    keys, _ = gguf_content(tmp_path / "v.gguf")
    ref_keys, _ = gguf_content(CLIP / "ref" / "vision-model-f16.gguf")
    assert keys == ref_keys
