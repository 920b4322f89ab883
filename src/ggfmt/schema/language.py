"""The one statement of the schema and table languages: which keys exist where, their types and
their docs, as a JSON Schema (``language.json``, published as ``docs/ggfmt-schema.json``).

The loaders take their sets of allowed keys from it (:func:`keys`), so that a key is added to
the language in one place; ``fmt schema check`` validates whole files against it, and editors
that read JSON Schema complete and check ggfmt YAML with it.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

LANGUAGE = Path(__file__).with_name("language.json")


@cache
def definition() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(LANGUAGE.read_text(encoding="utf-8"))
    return loaded


def keys(name: str) -> frozenset[str]:
    """The keys an object of the definition ``name`` (``field``, ``meta``, ``table``...) may have."""
    return frozenset(definition()["$defs"][name]["properties"])


def enum(name: str, key: str) -> tuple[str, ...]:
    """The values the key ``key`` of the definition ``name`` may take."""
    return tuple(definition()["$defs"][name]["properties"][key]["enum"])
