"""Inputs an adversary would write, built here, each ending in a valid output or the one-line error.

Every case is one of the defects an adversarial pass found: untrusted text reaching the terminal,
sizes that would take gigabytes, outputs that are not regular files, inputs that contradict
themselves. Each must end with exit 0 and a valid output, or exit 2 and one line on stderr free of
control characters, with nothing left behind.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ggfmt.io.output
from conftest import FIXTURES, GENUINE, SYNTH, Fmt, assert_clean_failure, run_fmt

PEFT = FIXTURES / "peft"
CHECKPOINT = SYNTH / "ggcp-v1-adam-past3.bin"  # converts without a warning
ESC = "\x1b[2J\x1b]0;title\x07\r\nforged line\u202e"


def gstr(b: bytes) -> bytes:
    return struct.pack("<Q", len(b)) + b


def gguf_file(path: Path, kvs: bytes, n_kv: int, tensors: bytes = b"", n_tensors: int = 0, data: bytes = b"") -> Path:
    out = bytearray(b"GGUF") + struct.pack("<IQQ", 3, n_tensors, n_kv) + kvs + tensors
    out += bytes(-len(out) % 32) + data
    path.write_bytes(bytes(out))
    return path


def no_control(text: str) -> bool:
    return not any((ord(c) < 32 and c != "\n") or c in "\x7f\u202e" for c in text)


# -- untrusted text -------------------------------------------------------------------------------

def test_parse_shows_names_and_values_escaped(tmp_path: Path, fmt: Fmt) -> None:
    evil = ESC.encode()
    kvs = gstr(b"general.architecture") + struct.pack("<I", 8) + gstr(b"llama")
    kvs += gstr(b"general.name") + struct.pack("<I", 8) + gstr(evil)
    info = gstr(b"t" + evil) + struct.pack("<IQIQ", 1, 8, 0, 0)
    source = gguf_file(tmp_path / f"name{ESC[:8]}.gguf", kvs, 2, info, 1, bytes(32))
    result = fmt("parse", source)
    assert result.code == 0, result.err
    assert no_control(result.out) and "\\x1b[2J" in result.out and "\\u202e" in result.out
    assert "\\x0d\\x0aforged line" in result.out


def test_json_stays_valid_json(tmp_path: Path, fmt: Fmt) -> None:
    kvs = b"".join(gstr(k) + struct.pack("<If", 6, v)
                   for k, v in ((b"a", float("inf")), (b"b", float("-inf")), (b"c", float("nan"))))
    result = fmt("parse", gguf_file(tmp_path / "inf.gguf", kvs, 3), "--json")
    assert result.code == 0
    document = json.loads(result.out, parse_constant=lambda c: pytest.fail(c))
    values = [entry["value"] for entry in document["fields"]["metadata"].values()]
    assert values == ["Infinity", "-Infinity", "NaN"]


def test_error_lines_escape_names_from_the_file(tmp_path: Path, fmt: Fmt) -> None:
    name = b"blk.0.attn_q.weight" + ESC.encode() + b".loraA"
    record = struct.pack("<iii", 2, len(name), 0) + struct.pack("<2i", 4, 32) + name
    data = bytearray(b"algg") + struct.pack("<iii", 1, 4, 8) + record
    data += bytes(-len(data) % 32) + bytes(512)
    source = tmp_path / "evil.bin"
    source.write_bytes(bytes(data))
    line = assert_clean_failure(fmt("to-gguf", source, "-o", tmp_path / "out.gguf"))
    assert no_control(line) and "\\x1b" in line


def test_usage_errors_are_one_line(fmt: Fmt) -> None:
    for args in (("parse",), ("to-gguf",), ("parse", "x.bin", "--ff", "abc"), ("to-gguf", "x", "--outtype", "q4")):
        line = assert_clean_failure(fmt(*args))
        assert "usage: fmt" in line and "--help" in line


# -- outputs --------------------------------------------------------------------------------------

def test_output_that_is_not_a_regular_file_is_refused_even_with_force(tmp_path: Path, fmt: Fmt) -> None:
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    line = assert_clean_failure(fmt("to-gguf", GENUINE / "ggla-finetune.bin", "-o", fifo, "--force"))
    assert "FIFO" in line and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    if os.geteuid() == 0:  # only root can make a device node
        node = tmp_path / "null"
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        assert "character device" in assert_clean_failure(fmt("to-gguf", GENUINE / "ggla-finetune.bin", "-o", node,
                                                               "--force"))
        assert stat.S_ISCHR(os.lstat(node).st_mode)


def test_output_mode_follows_the_umask(tmp_path: Path, fmt: Fmt) -> None:
    previous = os.umask(0o022)
    try:
        assert fmt("to-gguf", GENUINE / "ggla-finetune.bin", "-o", tmp_path / "a.gguf").code == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "a.gguf").st_mode) == 0o644


def test_dangling_symlink_needs_force_and_dir_slash_means_into(tmp_path: Path, fmt: Fmt) -> None:
    link = tmp_path / "link.gguf"
    link.symlink_to(tmp_path / "nowhere")
    assert "--force" in assert_clean_failure(fmt("to-gguf", GENUINE / "ggla-finetune.bin", "-o", link))
    into = tmp_path / "into"
    into.mkdir()
    assert fmt("to-gguf", SYNTH / "ggcp-v1-lbfgs.bin", "--outfile", f"{into}/").code == 0
    assert [p.name for p in into.iterdir()] == ["ggcp-v1-lbfgs.gguf"]
    assert "no such directory" in assert_clean_failure(fmt("to-gguf", SYNTH / "ggcp-v1-lbfgs.bin", "-o",
                                                           f"{tmp_path}/missing/"))


def test_files_inside_an_input_directory_are_never_the_output(tmp_path: Path, fmt: Fmt) -> None:
    adapter = shutil.copytree(PEFT / "adapter-safetensors", tmp_path / "adapter")
    base = shutil.copytree(PEFT / "tiny-llama", tmp_path / "base")
    for target in (adapter / "adapter_config.json", adapter / "adapter_model.safetensors", base / "config.json"):
        before = target.read_bytes()
        line = assert_clean_failure(fmt("to-gguf", adapter, "--base", base, "-o", target, "--force"))
        assert "is also an input" in line and target.read_bytes() == before


def test_output_that_appears_while_converting_is_not_replaced(tmp_path: Path, fmt: Fmt,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.gguf"
    import ggfmt.emit.gguf as emit

    real = emit.write_gguf

    def write_and_race(*args: object, **kwargs: object) -> None:
        real(*args, **kwargs)  # type: ignore[arg-type]
        out.write_bytes(b"someone else's")

    monkeypatch.setattr(emit, "write_gguf", write_and_race)
    line = assert_clean_failure(fmt("to-gguf", CHECKPOINT, "-o", out))
    assert "--force" in line and out.read_bytes() == b"someone else's"
    assert [p.name for p in tmp_path.iterdir()] == ["out.gguf"]


# -- the environment --------------------------------------------------------------------------------

def test_full_disk_is_reported_not_a_bug(tmp_path: Path, fmt: Fmt, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ggfmt.io.output.os, "fsync", full)
    line = assert_clean_failure(fmt("to-gguf", CHECKPOINT, "-o", tmp_path / "o.gguf"), tmp_path)
    assert "o.gguf: no space left" in line and "bug" not in line


def test_file_size_limit_is_reported(tmp_path: Path) -> None:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = subprocess.run([sys.executable, "-m", "ggfmt", "to-gguf", str(CHECKPOINT), "-o",
                           str(tmp_path / "o.gguf")], capture_output=True, text=True, preexec_fn=limit, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "ulimit -f" in proc.stderr and list(tmp_path.iterdir()) == []


def test_zip_pickles_need_no_torch_and_legacy_ones_say_how_to_install_it(tmp_path: Path) -> None:
    code = "import sys; sys.modules['torch'] = None\nfrom ggfmt.cli import run\nrun()"

    def without_torch(adapter: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code, "to-gguf", str(adapter), "--base", str(PEFT / "tiny-llama"),
                               "-o", str(tmp_path / "o.gguf"), "--force"], capture_output=True, text=True, timeout=120)

    proc = without_torch(PEFT / "adapter-bin")  # torch.save's zip format: read by offset
    assert proc.returncode == 0, proc.stderr
    legacy = shutil.copytree(PEFT / "adapter-bin", tmp_path / "legacy")
    state = torch.load(legacy / "adapter_model.bin", weights_only=True)
    torch.save(state, legacy / "adapter_model.bin", _use_new_zipfile_serialization=False)
    proc = without_torch(legacy)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "torch==2.13.0" in proc.stderr and "whl/cpu" in proc.stderr


# -- pickles ----------------------------------------------------------------------------------------

def pickled_adapter(tmp_path: Path, change: object) -> Path:
    adapter = shutil.copytree(PEFT / "adapter-bin", tmp_path / "adapter")
    state = torch.load(adapter / "adapter_model.bin", weights_only=True)
    key = next(k for k in state if "q_proj.lora_A" in k)
    state[key] = change
    torch.save(state, adapter / "adapter_model.bin")
    return adapter


@pytest.mark.parametrize("tensor, why", [
    (torch.zeros(1).expand(4, 130_000_000), "its storage holds"),
    (torch.zeros(4, 32).to_sparse(), "sparse"),
    (torch.zeros(4, 32, device="meta"), "meta"),
    (torch.tensor(1.0), "0-D"),
    (torch.zeros(4, 32, dtype=torch.int64), "dtype int64"),
], ids=["stride-0", "sparse", "meta", "0-D", "int64"])
def test_odd_pickled_tensors_are_refused(tensor: torch.Tensor, why: str, tmp_path: Path, fmt: Fmt) -> None:
    adapter = pickled_adapter(tmp_path, tensor)
    line = assert_clean_failure(fmt("to-gguf", adapter, "--base", PEFT / "tiny-llama", "-o", tmp_path / "o.gguf"))
    assert why in line


def test_compressed_pickle_records_are_refused(tmp_path: Path, fmt: Fmt) -> None:
    import zipfile

    adapter = shutil.copytree(PEFT / "adapter-bin", tmp_path / "adapter")
    source = adapter / "adapter_model.bin"
    with zipfile.ZipFile(source) as zin:
        records = [(i.filename, zin.read(i.filename)) for i in zin.infolist()]
    with zipfile.ZipFile(source, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for name, data in records:
            zout.writestr(name, data)
    assert "compressed record" in assert_clean_failure(fmt("to-ggla", adapter, "-o", tmp_path / "o.bin"))


def test_text_file_as_pickle(tmp_path: Path, fmt: Fmt) -> None:
    adapter = shutil.copytree(PEFT / "adapter-bin", tmp_path / "adapter")
    (adapter / "adapter_model.bin").write_text("hello, this is not a pickle\n")
    line = assert_clean_failure(fmt("to-ggla", adapter, "-o", tmp_path / "o.bin"))
    assert "not a" in line and "PyTorch" in line


# -- configs, schemas, tables -----------------------------------------------------------------------

def adapter_with(tmp_path: Path, **config: object) -> Path:
    adapter = shutil.copytree(PEFT / "adapter-safetensors", tmp_path / "adapter")
    data = json.loads((adapter / "adapter_config.json").read_text())
    data.update(config)
    (adapter / "adapter_config.json").write_text(json.dumps(data))
    return adapter


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), 1e300])
def test_non_finite_alpha_is_refused(alpha: float, tmp_path: Path, fmt: Fmt) -> None:
    adapter = adapter_with(tmp_path, lora_alpha=alpha)
    for args in (("to-gguf", adapter, "--base", PEFT / "tiny-llama", "-o", tmp_path / "o.gguf"),
                 ("to-ggla", adapter, "-o", tmp_path / "o.bin")):
        assert "lora_alpha" in assert_clean_failure(fmt(*args))


def test_base_config_that_cannot_describe_the_adapter(tmp_path: Path, fmt: Fmt) -> None:
    adapter = adapter_with(tmp_path)
    base = shutil.copytree(PEFT / "tiny-llama", tmp_path / "base")
    config = json.loads((base / "config.json").read_text())
    for change, field in (({"num_attention_heads": True}, "num_attention_heads"),
                          ({"architectures": [["LlamaForCausalLM"]]}, "architectures"),
                          ({"hidden_size": 48}, "width"), ({"num_hidden_layers": 1}, "layer")):
        (base / "config.json").write_text(json.dumps({**config, **change}))
        assert field in assert_clean_failure(fmt("to-gguf", adapter, "--base", base, "-o", tmp_path / "o.gguf"))


def test_json_too_deep_or_too_big(tmp_path: Path, fmt: Fmt) -> None:
    adapter = shutil.copytree(PEFT / "adapter-safetensors", tmp_path / "adapter")
    for text in ("[" * 100_000, '{"r": ' + "9" * 5000 + "}"):
        (adapter / "adapter_config.json").write_text(text)
        assert "adapter_config.json" in assert_clean_failure(fmt("to-ggla", adapter, "-o", tmp_path / "o.bin"))


def test_yaml_alias_bomb_is_refused(tmp_path: Path, fmt: Fmt) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
              for i in range(1, 10)]
    schema = tmp_path / "bomb.yaml"
    schema.write_text("meta: {id: bomb}\ndoc: *a9\n" .replace("doc: *a9", "\n".join(lines) + "\ndoc: *a9"))
    assert "aliases" in assert_clean_failure(fmt("parse", GENUINE / "ggla-finetune.bin", "--schema", schema))


def test_nested_gguf_arrays_are_a_clean_error(tmp_path: Path, fmt: Fmt) -> None:
    value = struct.pack("<IQ", 0, 0)  # an empty array of u8
    for _ in range(400):
        value = struct.pack("<IQ", 9, 1) + value
    kvs = gstr(b"deep") + struct.pack("<I", 9) + value
    line = assert_clean_failure(fmt("parse", gguf_file(tmp_path / "deep.gguf", kvs, 1)))
    assert "nested too deeply: more than 64 structures" in line
    assert "schema expression" not in line  # the file's fault, not the schema's


def test_empty_elements_cannot_multiply(tmp_path: Path, fmt: Fmt) -> None:
    schema = tmp_path / "empty.yaml"
    schema.write_text("meta: {id: empty, trailing: true}\n"
                      "seq:\n  - {id: n, type: u32, doc: count}\n"
                      "  - {id: outer, type: row, repeat: n, doc: rows}\n"
                      "types:\n  row:\n    doc: a row\n    seq:\n"
                      "      - {id: cells, type: nothing, repeat: _root.n, doc: c}\n"
                      "  nothing:\n    doc: reads nothing\n    seq: []\n")
    source = tmp_path / "data.bin"
    source.write_bytes(struct.pack("<I", 3000) + bytes(100_000))
    assert "take no bytes" in assert_clean_failure(fmt("parse", source, "--schema", schema))


def test_gguf_alignment_is_followed(tmp_path: Path, fmt: Fmt) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "a128.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_custom_alignment(128)
    writer.add_tensor("a", np.arange(8, dtype=np.float32))
    writer.add_tensor("b", np.arange(16, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    expected = {t.name: int(t.data_offset) for t in gguf.GGUFReader(path).tensors}
    result = fmt("parse", path, "--json")
    assert {t["name"]: t["offset"] for t in json.loads(result.out)["tensors"]} == expected
    for alignment in (0, 3):
        kvs = gstr(b"general.alignment") + struct.pack("<II", 4, alignment)
        assert "alignment" in assert_clean_failure(fmt("parse", gguf_file(tmp_path / f"{alignment}.gguf", kvs, 1)))


# -- values that would make an unusable output ----------------------------------------------------

def ggla_file(path: Path, records: list[tuple[bytes, list[int]]], r: int = 4) -> Path:
    """A ggla adapter as 2023's finetune wrote one: header, then each tensor f32, data 32-aligned."""
    out = bytearray(b"algg") + struct.pack("<iii", 1, r, 8)
    for name, ne in records:
        out += struct.pack("<iii", len(ne), len(name), 0) + struct.pack(f"<{len(ne)}i", *ne) + name
        out += bytes(-len(out) % 32) + struct.pack("<f", 1.0) * (ne[0] * ne[1])
    path.write_bytes(bytes(out))
    return path


@pytest.mark.parametrize(("records", "r", "why"), [
    ([(b"zzz.loraA", [4, 32]), (b"zzz.loraB", [4, 32])], 4, "not a tensor of a llama model"),
    ([(b"a" * 4090 + b".loraA", [4, 32]), (b"a" * 4090 + b".loraB", [4, 32])], 4, "63 bytes"),
    ([(b"blk.0.attn_q.weight.loraA", [4, 32]), (b"blk.0.attn_q.weight.loraB", [4, 32])], 0x7FFFFFFF,
     "larger than every tensor's rank"),
    ([(b"blk.0.attn_q.weight.loraA", [0, 32]), (b"blk.0.attn_q.weight.loraB", [0, 32])], 4, "zero dimension"),
])
def test_ggla_adapter_no_model_could_take_is_refused(records: list[tuple[bytes, list[int]]], r: int, why: str,
                                                     tmp_path: Path, fmt: Fmt) -> None:
    source = ggla_file(tmp_path / "a.bin", records, r)
    out = tmp_path / "out"
    out.mkdir()
    assert why in assert_clean_failure(fmt("to-gguf", source, "-o", out / "a.gguf"), out)


@pytest.mark.parametrize(("word", "value", "field"), [(32, 0, "n_head"), (32, 0xFFFFFFFF, "n_head"),
                                                     (40, 0xFFFFFFFF, "n_rot"), (40, 3, "n_rot")])
def test_checkpoint_hyperparameters_are_checked(word: int, value: int, field: str, tmp_path: Path,
                                                fmt: Fmt) -> None:
    data = bytearray((GENUINE / "ggcp-v0-adam.bin").read_bytes())
    struct.pack_into("<I", data, word, value)  # model.n_head at byte 32, model.n_rot at byte 40
    source = tmp_path / "c.bin"
    source.write_bytes(bytes(data))
    line = assert_clean_failure(fmt("to-gguf", source, "-o", tmp_path / "o.gguf"))
    assert f"field model.{field} at byte {word}" in line


def gguf_tensor_infos(infos: list[tuple[bytes, list[int], int, int]]) -> bytes:
    return b"".join(gstr(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne) +
                    struct.pack("<IQ", ggml_type, offset) for name, ne, ggml_type, offset in infos)


@pytest.mark.parametrize(("infos", "why"), [
    ([(b"t", [8], 0, 0), (b"t", [8], 0, 32)], "infos[1].name 't' is also infos[0]'s"),
    ([(b"a", [16], 0, 0), (b"b", [8], 0, 32)], "infos[1]'s bytes [32, 64) overlap infos[0]'s [0, 64)"),
    ([(b"t", [7], 2, 0)], "field infos[0].ggml_type"),  # q4_0 holds blocks of 32
])
def test_gguf_tensor_table_llama_cpp_refuses(infos: list[tuple[bytes, list[int], int, int]], why: str,
                                             tmp_path: Path, fmt: Fmt) -> None:
    source = gguf_file(tmp_path / "t.gguf", b"", 0, gguf_tensor_infos(infos), len(infos), bytes(128))
    assert why in assert_clean_failure(fmt("parse", source))


def test_schema_valid_clauses_unique_and_disjoint_are_checked_when_loaded(tmp_path: Path, fmt: Fmt) -> None:
    for clause, why in (("{unique: _io}", "dotted field path"), ("{disjoint: [a]}", "START, SIZE")):
        schema = tmp_path / "s.yaml"
        schema.write_text("meta: {id: s}\nseq:\n  - {id: n, type: u8, repeat: 2, valid: " + clause + "}\n")
        assert why in assert_clean_failure(fmt("parse", GENUINE / "ggla-finetune.bin", "--schema", schema))


def test_nested_for_groups_have_a_budget(tmp_path: Path, fmt: Fmt) -> None:
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "ggcp-gguf.yaml").write_text(
        "architecture: llama\nmetadata: []\ntensors:\n  - for: '[0]*65536'\n    items:\n"
        "      - for: '[0]*65536'\n        items:\n          - {from: tok_embeddings, name: x, when: 'False'}\n")
    result = run_fmt("to-gguf", GENUINE / "ggcp-v0-adam.bin", "-o", tmp_path / "o.gguf",
                     env={**os.environ, "GGFMT_MAPPING_PATH": str(tables)})
    assert "more than 100000 entries" in assert_clean_failure(result)


@pytest.mark.parametrize(("body", "why"), [
    ("  - {id: s, type: str, size: 4, encoding: rot13}\n", "not a text encoding"),
    ("  - {id: v, type: {switch-on: 1, cases: {3: [u8]}}}\n", "switch case 3"),
    ("  - {id: m, contents: \"\\u0100\"}\n", "beyond \\xff"),
])
def test_malformed_schemas_are_schema_errors(body: str, why: str, tmp_path: Path, fmt: Fmt) -> None:
    schema = tmp_path / "s.yaml"
    schema.write_text("meta: {id: s}\nseq:\n" + body)
    assert why in assert_clean_failure(fmt("parse", GENUINE / "ggla-finetune.bin", "--schema", schema))


def test_a_failing_python_schema_is_the_authors_error(tmp_path: Path, fmt: Fmt) -> None:
    module = tmp_path / "mine.py"
    module.write_text("raise RuntimeError('my schema module failed')\n")
    line = assert_clean_failure(fmt("parse", GENUINE / "ggla-finetune.bin", "--schema", module))
    assert "failed while loading: RuntimeError: my schema module failed" in line


def test_gemma_state_dict_with_odd_keys(tmp_path: Path, fmt: Fmt) -> None:
    gemma = FIXTURES / "gemma"
    state = torch.load(gemma / "gemma-mqa.ckpt", weights_only=True)
    for key, why in ((5, "has the key 5 (int)"), ("model.layers." + "9" * 5000 + ".x", "belongs to layer 999")):
        changed = {**state, "model_state_dict": {**state["model_state_dict"], key: torch.zeros(1)}}
        torch.save(changed, tmp_path / "g.ckpt")
        result = fmt("to-hf", tmp_path / "g.ckpt", "--config", gemma / "gemma-mqa-config.json", "-o", tmp_path / "hf")
        assert why in assert_clean_failure(result)


def test_huge_integers_in_configs(tmp_path: Path, fmt: Fmt) -> None:
    adapter = adapter_with(tmp_path, lora_alpha=10 ** 4000)
    assert "an integer of 13288 bits" in assert_clean_failure(fmt("to-ggla", adapter, "-o", tmp_path / "o.bin"))
    (adapter / "adapter_config.json").write_text('{"r": ' + "9" * 5000 + "}")
    line = assert_clean_failure(fmt("to-ggla", adapter, "-o", tmp_path / "o.bin"))
    assert "more than 4300 digits" in line and "set_int_max_str_digits" not in line


def test_zip_pickle_asking_for_code_is_refused_without_torch(tmp_path: Path) -> None:
    """torch.save's zip layout whose data.pkl calls builtins.open: refused by ggfmt's own
    unpickler, with torch not even importable, and nothing is opened."""
    import pickle
    import zipfile

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, ...]:
            return (open, (str(marker), "w"))

    adapter = shutil.copytree(PEFT / "adapter-bin", tmp_path / "adapter")
    source = adapter / "adapter_model.bin"
    with zipfile.ZipFile(source) as zin:
        records = [(i.filename, zin.read(i.filename)) for i in zin.infolist()]
    with zipfile.ZipFile(source, "w") as zout:
        for name, data in records:
            zout.writestr(name, pickle.dumps({"x": Exploit()}, protocol=2) if name.endswith("data.pkl") else data)
    code = "import sys; sys.modules['torch'] = None\nfrom ggfmt.cli import run\nrun()"
    proc = subprocess.run([sys.executable, "-c", code, "to-ggla", str(adapter), "-o", str(tmp_path / "o.bin")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "would run code" in proc.stderr and "GLOBAL io.open" in proc.stderr  # open, as pickle names it
    assert not marker.exists() and not (tmp_path / "o.bin").exists()
