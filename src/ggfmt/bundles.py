"""Directory inputs declared as data: which files a bundle holds, how it is recognised, which
reader reads each file, and what it must satisfy (``bundles/*.yaml``).

A bundle becomes a :class:`~ggfmt.document.Document` like any binary layout: JSON files become
fields (``config``, ``base``), and a safetensors file gives the named tensor references (read by
offset later, never loaded here), and so does a pickle in torch.save's zip format
(``tensors: {pickle: adapter_model.bin}``). A mapping table ``<bundle id>-gguf`` then converts it, with
``match:`` entries and named transforms: no Python per format.

    id: mlx-lora
    recognise: {files: [adapter_config.json, adapters.safetensors],
                keys: {adapter_config.json: [lora_parameters]}}
    fields: {config: {json: adapter_config.json}, base: {json: config.json, from: base}}
    tensors: {safetensors: adapters.safetensors}
    checks: [{file: adapter_config.json, field: fine_tune_type, expr: "config.fine_tune_type == 'lora'",
              message: "..."}]
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import FormatError, SchemaError, UsageError
from .resources import data_dirs

BUNDLE_KEYS = {"id", "title", "doc", "recognise", "fields", "tensors", "checks", "output"}


@dataclass(frozen=True)
class Check:
    file: str
    field: str
    expr: Any  # Expression
    message: str


@dataclass(frozen=True)
class Bundle:
    id: str
    title: str
    source: str
    files: list[str]
    keys: dict[str, list[str]]
    fields: dict[str, tuple[str, str]]  # field -> (JSON file, "input" or "base")
    tensors: str  # the weights file
    tensors_kind: str = "safetensors"  # or "pickle": a torch.save zip of plain tensors
    checks: list[Check] = field(default_factory=list)
    output: str | None = None  # the default output's name, in the directory

    def recognises(self, directory: Path) -> bool:
        """All its files are there, and its JSON files hold the keys that tell it apart."""
        from .sources.weights import read_json

        if not all((directory / name).is_file() for name in self.files):
            return False
        for name, keys in self.keys.items():
            try:
                data = read_json(directory / name)
            except (FormatError, UsageError):
                return False
            if not all(key in data for key in keys):
                return False
        return True


def bundle_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("GGFMT_BUNDLE_PATH", "").split(os.pathsep) if p]
    return [*extra, *data_dirs("bundles")]


def bundles() -> list[Bundle]:
    found: dict[str, Bundle] = {}
    for folder in bundle_dirs():
        for path in sorted(folder.glob("*.yaml")):
            bundle = load_bundle(path)
            found.setdefault(bundle.id, bundle)
    return list(found.values())


def recognise(directory: Path) -> Bundle | None:
    """The first declared bundle ``directory`` is, or None."""
    return next((b for b in bundles() if b.recognises(directory)), None)


def load_bundle(path: Path) -> Bundle:
    from .schema import read_yaml
    from .schema.expr import Expression, ExpressionError

    where = path.name
    data = read_yaml(path)
    unknown = set(data) - BUNDLE_KEYS
    if unknown:
        raise SchemaError(where, f"unknown keys {sorted(unknown)} (allowed: {sorted(BUNDLE_KEYS)})")
    try:
        recognise = data["recognise"]
        files = [str(f) for f in recognise["files"]]
        keys = {str(k): [str(x) for x in v] for k, v in (recognise.get("keys") or {}).items()}
        fields = {str(name): (str(spec["json"]), str(spec.get("from", "input")))
                  for name, spec in (data.get("fields") or {}).items()}
        kinds = [k for k in ("safetensors", "pickle") if k in data["tensors"]]
        if len(kinds) != 1 or set(data["tensors"]) != set(kinds):
            raise SchemaError(where, "`tensors` is {safetensors: FILE} or {pickle: FILE}")
        tensors_kind = kinds[0]
        tensors = str(data["tensors"][tensors_kind])
        checks = [Check(str(c["file"]), str(c["field"]), Expression(c["expr"]), str(c["message"]))
                  for c in data.get("checks") or []]
    except (KeyError, TypeError, AttributeError) as e:
        raise SchemaError(where, f"malformed bundle declaration ({type(e).__name__}: {e}); see "
                                 "docs/adding-a-conversion.md") from None
    except ExpressionError as e:
        raise SchemaError(where, str(e)) from None
    if any(origin not in ("input", "base") for _, origin in fields.values()):
        raise SchemaError(where, "a field's `from` is `input` (the directory) or `base` (--base DIR)")
    return Bundle(str(data.get("id", path.stem)), str(data.get("title", path.stem)), str(path), files, keys,
                  fields, tensors, tensors_kind, checks, str(data["output"]) if data.get("output") else None)


def read_bundle(bundle: Bundle, directory: Path, base: Path | None, *, converting: bool = True) -> Any:
    """The Document of ``directory``: its JSON files as fields, its safetensors tensors as references.
    Not ``converting`` (``fmt parse``): fields from an absent base are left out, and the checks
    (what a conversion cannot take) are not applied: the directory is shown as it is."""
    from .document import Document
    from .schema import Schema
    from .schema.expr import ExpressionError
    from .sources.weights import read_json

    fields: dict[str, Any] = {}
    for name, (file, origin) in bundle.fields.items():
        if origin == "base":
            if base is None and not converting:
                continue
            if base is None:
                raise UsageError(f"{directory}: this {bundle.title} needs its base model's {file}: pass --base DIR")
            fields[name] = read_json(base / file)
        else:
            fields[name] = read_json(directory / file)
    for check in bundle.checks if converting else []:
        try:
            holds = check.expr(lambda n: fields[n] if n in fields else _unknown(n))
        except ExpressionError as e:
            raise SchemaError(bundle.source, str(e)) from None
        if not holds:
            shown = _checked_value(bundle, fields, check)
            raise FormatError(check.field, None, f"{shown!r}: {check.message}", str(directory / check.file))
    weights = directory / bundle.tensors
    tensors = _pickled_refs(weights) if bundle.tensors_kind == "pickle" else _safetensors_refs(weights)
    import construct as cs

    schema = Schema(bundle.id, bundle.title, "", bundle.source, cs.Pass)
    return Document(source=weights, schema=schema, fields=fields, tensors=tensors,
                    size=weights.stat().st_size)


def _safetensors_refs(weights: Path) -> list[Any]:
    from .document import TensorRef
    from .ggml_types import type_id
    from .sources.weights import safetensors_index

    return [TensorRef(key, key, type_id(entry.dtype.ggml), tuple(reversed(entry.shape)), entry.begin,
                      entry.end - entry.begin)
            for key, entry in safetensors_index(weights).items()]


def _pickled_refs(weights: Path) -> list[Any]:
    """The tensors of a torch.save zip of plain tensors, as references (read later by offset)."""
    from .document import TensorRef
    from .ggml_types import type_id
    from .sources import torchzip
    from .sources.weights import checked_state_dict
    from .weight_dtypes import BY_TORCH

    tensors = []
    for key, tensor in checked_state_dict(weights, "a pickled state dict").items():
        if not isinstance(tensor, torchzip.TensorRef):
            raise FormatError(key, None, "is a tensor only torch reads (a legacy pickle); save it with a current "
                                         "torch.save to convert it through a table", str(weights))
        tensors.append(TensorRef(key, key, type_id(BY_TORCH[tensor.dtype].ggml), tuple(reversed(tensor.shape)),
                                 tensor.begin, tensor.nbytes))
    return tensors


def _unknown(name: str) -> Any:
    from .schema.expr import ExpressionError

    raise ExpressionError(f"unknown name {name!r}")


def _checked_value(bundle: Bundle, fields: Mapping[str, Any], check: Check) -> Any:
    """The value a failed check is about (for the message): its field in the check's file."""
    name = next((n for n, (file, origin) in bundle.fields.items() if file == check.file and origin == "input"), None)
    value = fields.get(name) if name is not None else None
    return value.get(check.field) if isinstance(value, Mapping) else None
