"""`fmt schema export-ksy`: Kaitai Struct's own compiler (npm kaitai-struct-compiler, run by node)
accepts the .ksy of every shipped layout the export does not refuse, and the parser it makes reads
a genuine file as ggfmt does; the others are refused with what Kaitai cannot say."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import GENUINE, ROOT, Fmt, assert_clean_failure
from ggfmt.engine import parse

KSC = ROOT / ".venv" / "ksc" / "node_modules"
SCHEMAS = sorted(p.stem for p in (ROOT / "schemas").glob("*.yaml"))
ACCEPTED = ["ggla"]  # the shipped layouts Kaitai can say (the note of the change lists why the others are not)


def kaitai_compile(ksy_text: str, out: Path) -> list[str]:
    """The Python files Kaitai's compiler makes of a .ksy (written into ``out``)."""
    code = ("const c=require('kaitai-struct-compiler');let s='';process.stdin.on('data',d=>s+=d);"
            "process.stdin.on('end',()=>c.compile('python',JSON.parse(s),null,false).then("
            "f=>{for(const[k,v] of Object.entries(f))require('fs').writeFileSync(process.argv[1]+'/'+k,v);"
            "console.log(JSON.stringify(Object.keys(f)))},e=>{console.error(String(e));process.exit(1)}))")
    result = subprocess.run(["node", "-e", code, str(out)], input=json.dumps(yaml.safe_load(ksy_text)),
                            capture_output=True, text=True, env={**os.environ, "NODE_PATH": str(KSC)}, timeout=120)
    assert result.returncode == 0, result.stderr
    names: list[str] = json.loads(result.stdout)
    return names


@pytest.mark.parametrize("name", ACCEPTED)
def test_kaitai_accepts_the_export(name: str, tmp_path: Path, fmt: Fmt) -> None:
    result = fmt("schema", "export-ksy", name)
    assert result.code == 0, result.err
    assert kaitai_compile(result.out, tmp_path) == [f"{name}.py"]


def test_kaitais_parser_reads_a_genuine_ggla_as_ggfmt_does(tmp_path: Path, fmt: Fmt) -> None:
    source = GENUINE / "ggla-finetune.bin"
    kaitai_compile(fmt("schema", "export-ksy", "ggla").out, tmp_path)
    spec = importlib.util.spec_from_file_location("kaitai_ggla", tmp_path / "ggla.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kaitai_ggla"] = module
    spec.loader.exec_module(module)
    parsed = module.Ggla.from_file(str(source))
    doc = parse(source)
    assert (parsed.r, parsed.lora_alpha) == (doc.fields["r"], doc.fields["lora_alpha"])
    data = source.read_bytes()
    assert [(t.name, list(t.ne), t.data) for t in parsed.tensors] == \
        [(ref.name, list(ref.ne), data[ref.offset:ref.offset + ref.nbytes]) for ref in doc.tensors]


@pytest.mark.parametrize("name", [n for n in SCHEMAS if n not in ACCEPTED])
def test_the_other_layouts_are_refused_with_what_kaitai_cannot_say(name: str, fmt: Fmt) -> None:
    line = assert_clean_failure(fmt("schema", "export-ksy", name))
    assert f"{name}.yaml needs what Kaitai Struct cannot say: " in line


def test_export_to_a_file(tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / "ggla.ksy"
    assert fmt("schema", "export-ksy", "ggla", "-o", out).code == 0
    assert out.read_text().startswith("# Exported by `fmt schema export-ksy` from ggla.yaml")
    assert_clean_failure(fmt("schema", "export-ksy", "ggla", "-o", out))  # never replaced unless --force


TOY = "meta: {{id: {id}}}\nseq:\n  - {{id: magic, contents: {contents}, doc: d}}\n  - {{id: n, type: u32, doc: d}}\n" \
      "  - {{id: items, type: u8, repeat: \"{repeat}\", doc: d}}\n"


@pytest.mark.parametrize(("id_", "contents", "repeat", "words"), [
    ("toy", "'€€'", "n", "has characters beyond \\xff"),
    ("toy", "TOYS", "+".join(["1"] * 100_000), "is longer than 4096 characters"),
    ("'1abc'", "TOYS", "n", "'1abc' is not an id Kaitai takes"),
    ("'a b'", "TOYS", "n", "'a b' is not an id Kaitai takes"),
    ("''", "TOYS", "n", "'' is not an id Kaitai takes"),
])
def test_a_schema_kaitai_would_refuse_is_refused(id_: str, contents: str, repeat: str, words: str, tmp_path: Path,
                                                 fmt: Fmt) -> None:
    schema = tmp_path / "toy.yaml"
    schema.write_text(TOY.format(id=id_, contents=contents, repeat=repeat), encoding="utf-8")
    line = assert_clean_failure(fmt("schema", "export-ksy", schema, "-o", tmp_path / "out.ksy"))
    assert words in line, line
    assert not (tmp_path / "out.ksy").exists()


def test_a_file_name_cannot_add_lines_to_the_export(tmp_path: Path, fmt: Fmt) -> None:
    schema = tmp_path / "x\nmeta: {id: injected}\n#.yaml"
    schema.write_text(TOY.format(id="toy", contents="TOYS", repeat="n"), encoding="utf-8")
    result = fmt("schema", "export-ksy", schema)
    assert result.code == 0, result.err
    assert yaml.safe_load(result.out)["meta"]["id"] == "toy"
    assert result.out.splitlines()[0].startswith("# Exported by `fmt schema export-ksy` from x\\x0ameta")
