"""What a bundle and a table say about a conversion beyond names: how a directory is told apart
(`recognise.when`), files that may be absent, options (typed, checked, a second weights file),
output names computed from them, values computed when used, and where `match:` tensors go."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import construct as cs
import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import Fmt, assert_clean_failure
from ggfmt.schema.expr import Expression, ExpressionError

BUNDLE = """
    id: toy
    title: toy model
    recognise: {files: [model.json], when: "get(config, 'kind') == 'toy'"}
    fields:
      config: {json: model.json}
      names: {json: names.json, optional: true}
    tensors: {safetensors: weights.safetensors}
    output: {gguf: {expr: "('half-' if halve else '') + 'toy.gguf'"}}
"""

TABLE = """
    source: toy
    target: gguf
    architecture: llama
    options:
      halve: {type: bool, default: false}
      aux: {type: weights}
    values:
      layers: config.layers
      broken: config.no_such_key  # used by no entry, so never computed
    metadata:
      - {key: toy.name, type: string, value: "get(config, '_name_or_path') or input_name"}
      - {key: toy.tokens, type: "string[]", value: "keys(names) if names is not None else ['none']"}
    tensors:
      - {match: "proj.{x}", name: "aux.{x}"}
      - for: range(layers)
        items:
          - {tensor: "layer.{bid}.w", name: "blk.{bid}.w", transforms: [squeeze, "scale(0.5 if halve else 1)"]}
      - {tensor: extra.bias, name: extra.bias}
"""

RNG = np.random.default_rng(7)
WEIGHTS = {"layer.0.w": RNG.standard_normal((1, 4)).astype(np.float32),
           "layer.1.w": RNG.standard_normal((1, 4)).astype(np.float32),
           "extra.bias": RNG.standard_normal(4).astype(np.float32)}


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for folder, text in (("bundles", BUNDLE), ("mappings", TABLE)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "toy.yaml").write_text(textwrap.dedent(text))
    (tmp_path / "mappings" / "toy.yaml").rename(tmp_path / "mappings" / "toy-gguf.yaml")
    monkeypatch.setenv("GGFMT_BUNDLE_PATH", str(tmp_path / "bundles"))
    monkeypatch.setenv("GGFMT_MAPPING_PATH", str(tmp_path / "mappings"))
    directory = tmp_path / "toy-dir"
    directory.mkdir()
    (directory / "model.json").write_text(json.dumps({"kind": "toy", "_name_or_path": "org/toy", "layers": 2}))
    (directory / "names.json").write_text(json.dumps({"b": 0, "a": 1}))
    save_file(WEIGHTS, directory / "weights.safetensors")
    return directory


def tensors(path: Path) -> dict[str, np.ndarray]:
    return {t.name: np.array(t.data) for t in gguf.GGUFReader(path).tensors}


def test_a_declared_directory_converts_with_its_defaults(toy: Path, fmt: Fmt) -> None:
    result = fmt("to-gguf", toy)
    assert result.code == 0, result.err
    out = toy / "toy.gguf"  # the bundle's output name, its option off
    reader = gguf.GGUFReader(out)
    assert reader.fields["toy.name"].contents() == "org/toy"  # a `_` key of a JSON config
    assert reader.fields["toy.tokens"].contents() == ["b", "a"]  # keys in the file's order
    assert [(t.name, list(t.shape)) for t in reader.tensors] == [("blk.0.w", [4]), ("blk.1.w", [4]),
                                                                ("extra.bias", [4])]  # squeezed
    written = tensors(out)
    assert np.array_equal(written["blk.1.w"], WEIGHTS["layer.1.w"].ravel())  # scale(1): copied


def test_options_change_the_conversion_and_its_output_name(toy: Path, tmp_path: Path, fmt: Fmt) -> None:
    aux = {"proj.w": RNG.standard_normal((2, 2)).astype(np.float32)}
    save_file(aux, tmp_path / "aux.safetensors")
    (toy / "names.json").unlink()  # optional: the field is None
    result = fmt("to-gguf", toy, "--option", "halve=yes", "--option", f"aux={tmp_path / 'aux.safetensors'}")
    assert result.code == 0, result.err
    out = toy / "half-toy.gguf"
    reader = gguf.GGUFReader(out)
    assert reader.fields["toy.tokens"].contents() == ["none"]
    # the `match:` entry is first in the table, so what it selects comes first
    assert [t.name for t in reader.tensors] == ["aux.w", "blk.0.w", "blk.1.w", "extra.bias"]
    written = tensors(out)
    assert np.array_equal(written["aux.w"], aux["proj.w"])
    assert np.array_equal(written["blk.0.w"], WEIGHTS["layer.0.w"].ravel() * np.float32(0.5))


@pytest.mark.parametrize(("args", "said"), [
    (["--option", "halve=maybe"], "--option halve=maybe: expected true or false"),
    (["--option", "nope=1"], "--nope does not apply to this conversion (toy-gguf)"),
    (["--text-only"], "--text-only does not apply to this conversion (toy-gguf); it applies to a Hugging Face "
                      "CLIP model directory (clip-gguf)"),
    (["--option", "aux=/no/such/file"], "--aux /no/such/file: no such file"),
    (["--option", "halve"], "expected NAME=VALUE"),
])
def test_options_are_checked(args: list[str], said: str, toy: Path, tmp_path: Path, fmt: Fmt) -> None:
    line = assert_clean_failure(fmt("to-gguf", toy, "-o", tmp_path / "x.gguf", *args))
    assert said in line
    assert not (tmp_path / "x.gguf").exists()


def test_a_second_weights_file_may_not_repeat_a_name(toy: Path, tmp_path: Path, fmt: Fmt) -> None:
    save_file({"extra.bias": np.zeros(4, np.float32)}, tmp_path / "aux.safetensors")
    line = assert_clean_failure(fmt("to-gguf", toy, "-o", tmp_path / "x.gguf", "--option",
                                    f"aux={tmp_path / 'aux.safetensors'}"))
    assert "aux.safetensors: field extra.bias" in line and "weights.safetensors too" in line


def test_recognised_by_what_the_config_says(toy: Path, tmp_path: Path, fmt: Fmt) -> None:
    (toy / "model.json").write_text(json.dumps({"kind": "other", "layers": 2}))
    line = assert_clean_failure(fmt("to-gguf", toy, "-o", tmp_path / "x.gguf"))
    assert "a directory, and not one ggfmt knows" in line


def test_a_value_is_computed_when_used_so_checks_come_first(toy: Path, tmp_path: Path, fmt: Fmt) -> None:
    """`layers` is only read when the tensors are walked; a config without it fails there, at
    the value, and the unused `broken` value never fails at all."""
    (toy / "model.json").write_text(json.dumps({"kind": "toy"}))
    line = assert_clean_failure(fmt("to-gguf", toy, "-o", tmp_path / "x.gguf"))
    assert "values.layers" in line and "no field 'layers'" in line


def test_underscore_keys_only_of_plain_json_objects() -> None:
    assert Expression("get(c, '_name_or_path')")(lambda n: {"_name_or_path": "x"}) == "x"
    record = cs.Container(_io=1, n=2)  # a parsed record: its `_` keys are the engine's own
    with pytest.raises(ExpressionError):
        Expression("get(r, '_io')")(lambda n: record)
    assert Expression("range(3)")(lambda n: 0) == [0, 1, 2]
    with pytest.raises(ExpressionError):
        Expression("range(10 ** 9)")(lambda n: 0)


def test_tensors_joined_and_split(toy: Path, tmp_path: Path, fmt: Fmt, monkeypatch: pytest.MonkeyPatch) -> None:
    """concat joins the tensors a `tensor:` list names; split takes a part back; a list without concat
    is refused when the table is loaded."""
    mappings = tmp_path / "mappings"
    (mappings / "toy-gguf.yaml").unlink()
    (mappings / "joined.yaml").write_text(textwrap.dedent("""
        source: toy
        target: gguf
        architecture: llama
        tensors:
          - {tensor: [layer.0.w, layer.1.w, layer.0.w], name: joined, transforms: ["concat(0)", "cast('f16')"]}
          - {tensor: layer.1.w, name: second, transforms: [squeeze, "split(0, [1, 3], 1)"]}
          - {tensor: extra.bias, name: extra.bias}
    """))
    result = fmt("to-gguf", toy, "-o", tmp_path / "j.gguf")
    assert result.code == 0, result.err
    written = tensors(tmp_path / "j.gguf")
    expected = np.concatenate([WEIGHTS["layer.0.w"], WEIGHTS["layer.1.w"], WEIGHTS["layer.0.w"]]).astype(np.float16)
    assert written["joined"].shape == (3, 4) and np.array_equal(written["joined"], expected)
    assert np.array_equal(written["second"], WEIGHTS["layer.1.w"].ravel()[1:])
    (mappings / "joined.yaml").unlink()  # (a table is cached by name: the next one has its own)
    (mappings / "unjoined.yaml").write_text(textwrap.dedent("""
        source: toy
        target: gguf
        architecture: llama
        tensors:
          - {tensor: [layer.0.w, layer.1.w], name: joined}
    """))
    line = assert_clean_failure(fmt("to-gguf", toy, "-o", tmp_path / "k.gguf"))
    assert "joined by concat(axis)" in line


def test_legacy_pickles_are_loaded_through_torch(tmp_path: Path, fmt: Fmt) -> None:
    """A state dict in torch's pre-1.6 format (no zip, so no offsets) is read through torch, each tensor
    when it is written: PEFT -> ggla equals the reference, Gemma -> Hugging Face the tensors of the zip."""
    import shutil

    import torch
    from safetensors.numpy import load_file

    from conftest import FIXTURES

    adapter = shutil.copytree(FIXTURES / "peft" / "adapter-bin", tmp_path / "legacy")
    state = torch.load(adapter / "adapter_model.bin", weights_only=True)
    torch.save(state, adapter / "adapter_model.bin", _use_new_zipfile_serialization=False)
    assert fmt("to-ggla", adapter, "-o", tmp_path / "a.bin").code == 0
    assert (tmp_path / "a.bin").read_bytes() == (FIXTURES / "peft" / "ggla.ref.bin").read_bytes()

    gemma = FIXTURES / "gemma"
    checkpoint = torch.load(gemma / "gemma-mqa.ckpt", weights_only=True)
    torch.save(checkpoint, tmp_path / "legacy.ckpt", _use_new_zipfile_serialization=False)
    for source, out in ((gemma / "gemma-mqa.ckpt", "zip-hf"), (tmp_path / "legacy.ckpt", "legacy-hf")):
        result = fmt("to-hf", source, "--config", gemma / "gemma-mqa-config.json", "-o", tmp_path / out,
                     "--outtype", "f16")
        assert result.code == 0, result.err
    zipped, legacy = (load_file(tmp_path / d / "model.safetensors") for d in ("zip-hf", "legacy-hf"))
    assert zipped.keys() == legacy.keys() and all(np.array_equal(zipped[k], legacy[k]) for k in zipped)


FLAGGED = """
    options_heading: "toy models (a directory with model.json)"
    options:
      halve: {type: bool, default: false, flags: [--halve, -H], doc: "halve every layer's weights"}
      aux: {type: weights, metavar: AUX.safetensors, doc: "more tensors, matched by proj.{x}"}
"""


def flag_the_options(toy: Path, text: str) -> None:
    table = toy.parent / "mappings" / "toy-gguf.yaml"
    declared = "    options:\n      halve: {type: bool, default: false}\n      aux: {type: weights}\n"
    assert declared in TABLE
    table.write_text(textwrap.dedent(TABLE.replace(declared, text)))


def test_a_tables_options_are_flags_of_the_command_under_its_heading(toy: Path, tmp_path: Path, fmt: Fmt) -> None:
    flag_the_options(toy, FLAGGED)
    shown = fmt("to-gguf", "--help").out
    heading = shown.index("toy models (a directory with model.json):")
    assert shown.index("-H", heading) < shown.index("halve every layer's weights", heading)
    assert "--aux AUX.safetensors" in shown[heading:]
    by_flag = fmt("to-gguf", toy, "-H", "-o", tmp_path / "flag.gguf")
    by_option = fmt("to-gguf", toy, "--option", "halve=yes", "-o", tmp_path / "option.gguf")
    assert by_flag.code == by_option.code == 0, by_flag.err + by_option.err
    assert (tmp_path / "flag.gguf").read_bytes() == (tmp_path / "option.gguf").read_bytes()
    assert np.array_equal(tensors(tmp_path / "flag.gguf")["blk.0.w"], WEIGHTS["layer.0.w"].ravel() * np.float32(0.5))


def test_options_of_one_exclusive_set_are_not_given_together(toy: Path, tmp_path: Path, fmt: Fmt) -> None:
    flag_the_options(toy, FLAGGED.replace("doc: \"halve", "exclusive: how, doc: \"halve")
                     .replace("metavar: AUX", "exclusive: how, metavar: AUX"))
    result = fmt("to-gguf", toy, "--halve", "--aux", tmp_path / "a.safetensors", "-o", tmp_path / "x.gguf")
    assert result.code == 2 and "not allowed with argument" in result.err
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.parametrize(("flags", "said"), [
    ("[--halve, -o]", "toy-gguf: options.halve: -o is already an option of fmt to-gguf; give it other `flags`"),
    ("[-H]", "toy-gguf.yaml: options.halve: `flags` include --halve"),
])
def test_a_table_whose_flags_cannot_be_is_one_line(flags: str, said: str, toy: Path, tmp_path: Path,
                                                    fmt: Fmt) -> None:
    flag_the_options(toy, FLAGGED.replace("[--halve, -H]", flags))
    result = fmt("to-gguf", toy, "-o", tmp_path / "x.gguf")
    if "include" in said:  # the table is passed over for --help; using it says what is wrong
        assert said in assert_clean_failure(result)
    else:
        assert assert_clean_failure(result) == f"fmt: error: {said}"
    assert not (tmp_path / "x.gguf").exists()
