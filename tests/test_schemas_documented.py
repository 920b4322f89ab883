"""Every schema and mapping table shipped with ggfmt loads, and every field says what it holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ggfmt.convert.mapping import load_mapping
from ggfmt.schema import load_schema

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = sorted((ROOT / "schemas").glob("*.yaml"))
MAPPINGS = sorted((ROOT / "mappings").glob("*.yaml"))


def undocumented(spec: dict[str, Any], where: str) -> list[str]:
    missing = [] if spec.get("doc") or where.count(".") else [where]
    for item in spec.get("seq") or []:
        if "doc" not in item:
            missing.append(f"{where}.{item.get('id', 'align')}")
    for name, inst in (spec.get("instances") or {}).items():
        if "doc" not in inst:
            missing.append(f"{where}.{name}")
    for name, param in (spec.get("params") or {}).items():
        if not (param or {}).get("doc"):
            missing.append(f"{where}.params.{name}")
    for name, sub in (spec.get("types") or {}).items():
        missing += undocumented(sub, f"{where}.{name}")
    return missing


@pytest.mark.parametrize("path", SCHEMAS, ids=[p.stem for p in SCHEMAS])
def test_schema_loads_and_is_documented(path: Path) -> None:
    load_schema(path)
    assert undocumented(yaml.safe_load(path.read_text()), path.stem) == []


@pytest.mark.parametrize("path", MAPPINGS, ids=[p.stem for p in MAPPINGS])
def test_mapping_loads_and_is_documented(path: Path) -> None:
    table = load_mapping(path.stem)
    assert table.doc
