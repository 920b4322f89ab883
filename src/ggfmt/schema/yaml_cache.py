"""Parsed YAML kept between runs: what PyYAML made of a schema or table file, as JSON, under the
SHA-256 of the file's bytes.

A parse of a 2023 model file reads every schema's YAML to find the one whose magic the file
starts with; importing PyYAML and building its values took about a quarter of ``fmt parse``'s
work on a 32,000-token file (measured: 14 ms to import, 10 ms to read 13 schemas, of 90 ms).
The JSON standard library reads the same values several times faster and PyYAML is then not
imported at all. The file's bytes name the entry, so an entry is never stale; an entry that
cannot be read is ignored (read again from the YAML, written again). Where the entries live:
``$GGFMT_CACHE``, else ``$XDG_CACHE_HOME/ggfmt``, else ``~/.cache/ggfmt``; ``GGFMT_CACHE`` set
to an empty value keeps nothing. Nothing is kept of a file PyYAML refuses, nor of values JSON
cannot hold as they are (dates, binary): such files are read from their YAML each time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

FORMAT = b"ggfmt-yaml-cache-1\n"  # (in the key: a change of this encoding names new entries)
_PAIRS = "\0pairs"  # a mapping whose keys are not all text: its (key, value) pairs


def directory() -> Path | None:
    """Where the entries are kept, or None when nothing is to be kept."""
    given = os.environ.get("GGFMT_CACHE")
    if given is not None:
        return Path(given) if given else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ggfmt"


def _entry(raw: bytes) -> Path | None:
    where = directory()
    return where / "yaml" / f"{hashlib.sha256(FORMAT + raw).hexdigest()}.json" if where is not None else None


def load(raw: bytes) -> Any:
    """The values kept for a file of bytes ``raw``, or None."""
    entry = _entry(raw)
    if entry is None:
        return None
    try:
        return json.loads(entry.read_bytes(), object_hook=_decoded)
    except (OSError, ValueError, TypeError, RecursionError):
        return None


def store(raw: bytes, values: Any) -> None:
    """Keep ``values`` (what PyYAML read from ``raw``) when JSON holds them exactly; a cache that
    cannot be written is no error."""
    entry = _entry(raw)
    if entry is None:
        return
    try:
        text = json.dumps(_encoded(values))
    except (TypeError, ValueError, RecursionError):
        return  # (a date, binary, a set: read from the YAML each time)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=entry.parent, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(temporary, entry)  # (whole or not at all: another process may read it now)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError:
        return


def _encoded(value: Any) -> Any:
    if isinstance(value, dict):
        if all(type(k) is str for k in value) and _PAIRS not in value:
            return {k: _encoded(v) for k, v in value.items()}
        return {_PAIRS: [[_key(k), _encoded(v)] for k, v in value.items()]}
    if isinstance(value, list):
        return [_encoded(v) for v in value]
    if value is None or type(value) in (str, int, float, bool):
        return value
    raise TypeError(f"{type(value).__name__} is not kept")


def _key(key: Any) -> Any:
    if key is None or type(key) in (str, int, float, bool):
        return key
    raise TypeError(f"a key of type {type(key).__name__} is not kept")


def _decoded(mapping: dict[str, Any]) -> Any:
    if len(mapping) == 1 and _PAIRS in mapping:
        return {key: value for key, value in mapping[_PAIRS]}
    return mapping
