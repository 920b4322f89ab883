"""Parsed YAML kept between runs (ggfmt.schema.yaml_cache): what is read back is what PyYAML
read, PyYAML is not imported once every file needed is kept, and an entry that is missing,
broken or not to be kept changes nothing but speed."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import GENUINE, Fmt
from ggfmt.errors import SchemaError
from ggfmt.schema import _parsed_yaml, read_yaml, yaml_cache

TEXT = b"""\
meta: {id: t, title: "caf\\u00e9"}
anchors:
  base: &base {1: u32, _: u64, 2.5: x, true: y, null: z}
  again: *base
numbers: [0, -7, 18446744073709551616, 1.5, .inf, -.inf, .nan, 0x10]
flags: [true, false, null, "", '\\0pairs']
nested: {a: [{b: [1, {c: d}]}], "\\0pairs": 3}
"""


def same(a: object, b: object) -> bool:
    """Equal values, NaN equal to NaN, and of the same types all the way down."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)  # type: ignore[index]
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]
    return a == b


def read(path: Path) -> object:
    _parsed_yaml.cache_clear()  # (as a new process would)
    return read_yaml(path)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "cache"
    monkeypatch.setenv("GGFMT_CACHE", str(where))
    return where


def test_kept_values_are_pyyamls(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_bytes(TEXT)
    expected = yaml.safe_load(TEXT)
    assert same(read(path), expected)  # read by PyYAML, then kept
    entries = list((cache / "yaml").iterdir())
    assert len(entries) == 1
    assert same(yaml_cache.load(TEXT), expected)  # read back from the entry
    assert same(read(path), expected)


def test_broken_entries_are_read_again(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_bytes(TEXT)
    read(path)
    (entry,) = (cache / "yaml").iterdir()
    for broken in (b"", b"{", b'{"\\u0000pairs": 5}', b"[1, 2]"):
        entry.write_bytes(broken)
        value = read(path)
        assert isinstance(value, dict) and same(value, yaml.safe_load(TEXT)), broken
        assert same(json.loads(entry.read_bytes(), object_hook=yaml_cache._decoded), yaml.safe_load(TEXT))


def test_an_entry_is_checked_as_the_yaml_is(tmp_path: Path, cache: Path) -> None:
    """An entry holds no more than its file's YAML could: too many values are refused the same way."""
    path = tmp_path / "t.yaml"
    path.write_bytes(b"meta: {id: t}\n")
    read(path)
    (entry,) = (cache / "yaml").iterdir()
    entry.write_text(json.dumps({"meta": {"id": "t"}, "x": [0] * 300_000}))
    with pytest.raises(SchemaError, match="holds more than 200000 values"):
        read(path)


def test_values_json_cannot_hold_are_not_kept(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_bytes(b"meta: {id: t}\nwhen: 2023-07-01\nbytes: !!binary aGk=\n")
    expected = yaml.safe_load(path.read_bytes())
    assert read(path) == expected
    assert not (cache / "yaml").exists() or not list((cache / "yaml").iterdir())


def test_nothing_is_kept_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GGFMT_CACHE", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = tmp_path / "t.yaml"
    path.write_bytes(TEXT)
    assert same(read(path), yaml.safe_load(TEXT))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.yaml"]


def test_an_unwritable_cache_is_no_error(tmp_path: Path, cache: Path, fmt: Fmt) -> None:
    cache.write_text("a file where the directory would be")
    result = fmt("parse", GENUINE / "ggcp-v0-adam.bin")
    assert result.code == 0 and result.err == ""


def test_parse_with_every_schema_kept_does_not_import_pyyaml(tmp_path: Path) -> None:
    env = dict(os.environ, GGFMT_CACHE=str(tmp_path / "cache"))
    code = ("import sys\nfrom ggfmt.cli import main\nassert main(['parse', sys.argv[1]]) == 0\n"
            "print('yaml' in sys.modules)")
    runs = [subprocess.run([sys.executable, "-c", code, str(GENUINE / "ggcp-v0-adam.bin")], env=env,
                           capture_output=True, text=True, check=True).stdout.splitlines()[-1] for _ in range(2)]
    assert runs == ["True", "False"]  # the first run reads the YAML and keeps it; the second reads JSON
