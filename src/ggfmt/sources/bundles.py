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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

from ..errors import FormatError, SchemaError, UsageError
from ..io.resources import data_dirs
from ..schema.language import keys as language_keys

# The bundle language is part of the one definition (schema/language.json, `bundle`): a bundle is a
# directory (`recognise: {files: [...]}`) or a single torch.save file (`recognise: {pickle:
# [model_state_dict]}`, `tensors: {pickle: ., under: model_state_dict}`).
BUNDLE_KEYS = language_keys("bundle")
# What a field is read with, by the key that names it: (module, function), imported when used.
# The keys are the language's (bundle_field); a reader is added here and there.
FIELD_READERS = {"json": (".weights", "read_json"), "model_card": (".model_card", "read_model_card")}
READERS = tuple(sorted(language_keys("bundle_field") - {"from", "optional"}))
WEIGHTS = tuple(sorted(language_keys("bundle_weights") - {"under"}))


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
    fields: dict[str, tuple[str, str, str]]  # field -> (reader, file, "input" or "base")
    optional: frozenset[str]  # fields whose file may be absent (then the field is None)
    # the weights file: the first of these that is there, (kind, file) with kind "safetensors"
    # or "pickle" (a torch.save zip of plain tensors)
    weights: list[tuple[str, str]]
    checks: list[Check] = field(default_factory=list)
    # target -> the default output's name in the directory: a name, or an Expression of the
    # conversion's options and outtype
    outputs: dict[str, Any] = field(default_factory=dict)
    base_default: Any = None  # Expression: the base directory when --base is not given
    when: Any = None  # Expression over the JSON files of `recognise.keys`: what else tells it apart
    # a single torch.save file rather than a directory: the keys its top-level dict has
    pickle_keys: list[str] | None = None
    under: str | None = None  # the key of the file's dict whose dict holds the tensors

    @property
    def is_file(self) -> bool:
        return self.pickle_keys is not None

    @property
    def specificity(self) -> int:
        """How much it takes to recognise: the most specific declaration that fits a folder wins."""
        return len(self.files) + sum(len(k) for k in self.keys.values()) + (self.when is not None) + \
            len(self.pickle_keys or [])

    def recognises(self, directory: Path) -> bool:
        """All its files are there, and its JSON files hold the keys that tell it apart."""
        from ..schema.expr import ExpressionError
        from .weights import read_json

        if self.is_file or not all((directory / name).is_file() for name in self.files):
            return False
        read: dict[str, Any] = {}
        for name, keys in self.keys.items():
            try:
                read[name] = read_json(directory / name)
            except (FormatError, UsageError):
                return False
            if not all(key in read[name] for key in keys):
                return False
        if self.when is None:
            return True
        # `when` sees the JSON fields read from the directory's own files
        values: dict[str, Any] = {}
        for field_name, (reader, file, origin) in self.fields.items():
            if reader == "json" and origin == "input" and (directory / file).is_file():
                try:
                    values[field_name] = read[file] if file in read else read_json(directory / file)
                except (FormatError, UsageError):
                    return False
        try:
            return bool(self.when(lambda n: values[n] if n in values else _unknown(n)))
        except ExpressionError:
            return False


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
    """The declared bundle ``directory`` is, or None: of those that fit, the one that takes the most
    files and keys to recognise (an mlx-lm folder fits the PEFT declaration too, by its
    adapter_config.json, but the mlx-lm one asks for more), the first found among equals."""
    fitting = [b for b in bundles() if b.recognises(directory)]
    best = max(fitting, key=lambda b: b.specificity) if fitting else None
    # a more specific bundle whose files are all there but one it reads to tell it apart is broken:
    # that file is what is wrong (a broken adapter_config.json beside adapters.safetensors is not a
    # PEFT adapter without weights)
    from .weights import read_json

    for bundle in bundles():
        if bundle.is_file or (best is not None and bundle.specificity <= best.specificity):
            continue
        if all((directory / name).is_file() for name in bundle.files):
            for name in bundle.keys:
                read_json(directory / name)  # raises the file's own one-line error
    return best


def load_bundle(path: Path, including: tuple[str, ...] = ()) -> Bundle:
    """The declaration at ``path``; ``including``: the declarations whose checks include it."""
    from ..schema import read_yaml
    from ..schema.expr import Expression, ExpressionError

    where = path.name
    if path.stem in including:
        raise SchemaError(where, f"includes itself through {' -> '.join((*including, path.stem))}")
    data = read_yaml(path)
    unknown = set(data) - BUNDLE_KEYS
    if unknown:
        raise SchemaError(where, f"unknown keys {sorted(unknown)} (allowed: {sorted(BUNDLE_KEYS)})")
    try:
        recognise = data["recognise"]
        pickle_keys = [str(k) for k in recognise["pickle"]] if "pickle" in recognise else None
        files = [str(f) for f in recognise.get("files", [])] if pickle_keys is not None else \
            [str(f) for f in recognise["files"]]
        keys = {str(k): [str(x) for x in v] for k, v in (recognise.get("keys") or {}).items()}
        when = Expression(recognise["when"]) if "when" in recognise else None
        fields = {str(name): _field(spec, where) for name, spec in (data.get("fields") or {}).items()}
        optional = frozenset(str(name) for name, spec in (data.get("fields") or {}).items() if spec.get("optional"))
        tensor_specs = data["tensors"] if isinstance(data["tensors"], list) else [data["tensors"]]
        under = next((str(spec["under"]) for spec in tensor_specs if "under" in spec), None)
        weights = [_weights({k: v for k, v in spec.items() if k != "under"}, where) for spec in tensor_specs]
        checks = [check for c in data.get("checks") or [] for check in _checks(c, (*including, path.stem))]
        output = data.get("output")
        outputs = {str(k): _output_name(v, where) for k, v in output.items()} if isinstance(output, Mapping) \
            else {"gguf": str(output)} if output else {}
        base_default = Expression(data["base"]["default"]) if data.get("base") else None
    except (KeyError, TypeError, AttributeError) as e:
        raise SchemaError(where, f"malformed bundle declaration ({type(e).__name__}: {e}); see "
                                 "https://github.com/ggfmt/ggfmt/blob/main/docs/adding-a-conversion.md") from None
    except ExpressionError as e:
        raise SchemaError(where, str(e)) from None
    if not weights:
        raise SchemaError(where, "`tensors` names at least one weights file")
    return Bundle(str(data.get("id", path.stem)), str(data.get("title", path.stem)), str(path), files, keys,
                  fields, optional, weights, checks, outputs, base_default, when, pickle_keys, under)


def _checks(spec: Mapping[str, Any], chain: tuple[str, ...]) -> list[Check]:
    """A check, or ``{include: BUNDLE, file: FILE}``: the checks another declaration makes of FILE
    (the base model's config.json, which PEFT and mlx-lm adapters check alike)."""
    from ..schema.expr import Expression

    if "include" not in spec:
        return [Check(str(spec["file"]), str(spec["field"]), Expression(spec["expr"]), str(spec["message"]))]
    if set(spec) != {"include", "file"}:
        raise SchemaError(chain[-1], "an included check list is {include: BUNDLE, file: FILE}")
    found = [folder / f"{spec['include']}.yaml" for folder in bundle_dirs()
             if (folder / f"{spec['include']}.yaml").is_file()]
    if not found:
        raise SchemaError(chain[-1], f"include: no bundle declaration {spec['include']!r}")
    return [c for c in load_bundle(found[0], chain).checks if c.file == str(spec["file"])]


def _output_name(spec: Any, where: str) -> Any:
    """``ggml-adapter-model.gguf``, or ``{expr: EXPR}``: a name computed from the options."""
    from ..schema.expr import Expression

    if isinstance(spec, Mapping):
        if set(spec) != {"expr"}:
            raise SchemaError(where, "an output is a file name or {expr: EXPR} (of the conversion's options)")
        return Expression(spec["expr"])
    return str(spec)


def output_name(bundle: Bundle, target: str, settings: Mapping[str, Any]) -> str | None:
    """The file name the bundle declares for ``target``'s output, given the conversion's settings."""
    spec = bundle.outputs.get(target)
    if spec is None or isinstance(spec, str):
        return spec
    return declared_name(spec, settings, f"{bundle.source}: output.{target}")


def declared_name(spec: Any, settings: Mapping[str, Any], where: str) -> str:
    """The file name an ``output`` expression (a bundle's or a table's) gives with ``settings``."""
    from ..schema.expr import ExpressionError

    try:
        name = spec(lambda n: settings[n] if n in settings else _unknown(n))
    except ExpressionError as e:
        raise SchemaError(where, str(e)) from None
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise SchemaError(where, f"{name!r} is not a file name")
    return name


def _field(spec: Any, where: str) -> tuple[str, str, str]:
    """``{json: config.json, from: base}`` -> ("json", "config.json", "base")."""
    readers = [r for r in READERS if r in spec]
    if len(readers) != 1 or set(spec) - {readers[0], "from", "optional"}:
        raise SchemaError(where, f"a field is read by one of {', '.join(READERS)}, and may say `from: base` and "
                                 "`optional: true`")
    origin = str(spec.get("from", "input"))
    if origin not in ("input", "base"):
        raise SchemaError(where, "a field's `from` is `input` (the directory) or `base` (--base DIR)")
    return readers[0], str(spec[readers[0]]), origin


def _weights(spec: Any, where: str) -> tuple[str, str]:
    kinds = [k for k in WEIGHTS if k in spec]
    if len(kinds) != 1 or set(spec) != set(kinds):
        raise SchemaError(where, "`tensors` is {safetensors: FILE} or {pickle: FILE}, or a list of them "
                                 "(the first that is there is read)")
    return kinds[0], str(spec[kinds[0]])


def base_directory(bundle: Bundle, directory: Path, base: Path | None) -> Path | None:
    """--base, or where the bundle's `base: {default: EXPR}` says the base model is (when that
    names a local directory); None when the bundle reads nothing from a base."""
    from ..schema.expr import ExpressionError

    if base is not None or not any(origin == "base" for _, _, origin in bundle.fields.values()):
        return base
    named = None
    if bundle.base_default is not None:
        inputs = {name: _read_field(reader, directory / file)
                  for name, (reader, file, origin) in bundle.fields.items() if origin == "input" and reader == "json"}
        try:
            named = bundle.base_default(lambda n: inputs[n] if n in inputs else _unknown(n))
        except ExpressionError:  # a config without the key: no default, as if it named none
            named = None
        if isinstance(named, str) and named and Path(named).is_dir():
            return Path(named)
    file = next(file for _, file, origin in bundle.fields.values() if origin == "base")
    said = f" ({bundle.base_default.source} is {named!r}, not a local directory)" if bundle.base_default else ""
    raise UsageError(f"{directory}: this {bundle.title} needs its base model's {file}: pass --base DIR{said}")


def _read_field(reader: str, path: Path) -> Any:
    module, function = FIELD_READERS[reader]
    read: Callable[[Path], Any] = getattr(import_module(module, __package__), function)
    return read(path)


def read(bundle: Bundle, path: Path, base: Path | None = None, *, converting: bool = True,
         with_base: bool = True) -> Any:
    """The Document of ``path``, an input ``bundle`` declares: a directory (its JSON files as
    fields, its weights' tensors as references) or a single container file (its tensors). The one
    verb of every bundle, whichever kind; :func:`ggfmt.engine.parse` is that of files a schema reads."""
    if bundle.is_file:
        return _read_file(bundle, path)
    return _read_directory(bundle, path, base, converting=converting, with_base=with_base)


def _read_directory(bundle: Bundle, directory: Path, base: Path | None, *, converting: bool = True,
                    with_base: bool = True) -> Any:
    """The Document of ``directory``: its JSON files as fields, its safetensors tensors as references.
    Not ``converting`` (``fmt parse``): fields from an absent base are left out, and the checks
    (what a conversion cannot take) are not applied: the directory is shown as it is."""
    from ..schema.expr import ExpressionError, shown

    fields: dict[str, Any] = {}
    field_files: dict[str, Path] = {}
    present = [(kind, directory / file) for kind, file in bundle.weights if (directory / file).is_file()]
    if not present:
        names = [file for _, file in bundle.weights]
        raise UsageError(f"{directory}: " + (f"no {names[0]}" if len(names) == 1 else
                                             f"neither {' nor '.join(names)} is there"))
    if converting and with_base:
        base = base_directory(bundle, directory, base)
    elif not with_base:
        base = None  # the conversion reads nothing from a base model
    for name, (reader, file, origin) in bundle.fields.items():
        folder = base if origin == "base" else directory
        if folder is None:
            continue  # fmt parse without --base: the directory as it is
        field_files[name] = folder / file
        absent = name in bundle.optional and not (folder / file).exists()
        fields[name] = None if absent else _read_field(reader, folder / file)
    for check in bundle.checks if converting else []:
        if check.expr.names - set(fields):
            continue  # about a file not read (the base model's, when the conversion needs none)
        try:
            holds = check.expr(lambda n: fields[n] if n in fields else _unknown(n))
        except ExpressionError as e:
            raise SchemaError(bundle.source, str(e)) from None
        if not holds:
            about = next((n for n, f in field_files.items() if f.name == check.file), None)
            value = fields.get(about) if about is not None else None
            for part in check.field.split("."):  # a nested field: lora_parameters.scale
                value = value.get(part) if isinstance(value, Mapping) else None
            shown_value = shown(value)
            raise FormatError(check.field, None, f"{shown_value}: {check.message}",
                              str(field_files[about] if about is not None else directory / check.file))
    kind, weights = present[0]
    return _document(bundle, weights, kind, fields, field_files, directory)


def _document(bundle: Bundle, weights: Path, kind: str, fields: dict[str, Any], field_files: dict[str, Path],
              directory: Path | None) -> Any:
    import construct as cs

    from ..document import Document
    from ..schema import Schema

    unread: dict[str, str] = {}
    tensors = _pickled_refs(weights, bundle.under, unread) if kind == "pickle" else _safetensors_refs(weights)
    schema = Schema(bundle.id, bundle.title, "", bundle.source, cs.Pass)
    return Document(source=weights, schema=schema, fields=fields, tensors=tensors, size=weights.stat().st_size,
                    field_files=field_files, directory=directory, unread=unread)


def recognise_file(path: Path) -> Bundle | None:
    """The declared single-file input ``path`` is (a torch.save zip whose dict has the keys its
    bundle names), or None. Only zip checkpoints are looked into: they are read without torch."""
    import zipfile

    candidates = [b for b in bundles() if b.is_file]
    if not candidates or not path.is_file() or not zipfile.is_zipfile(path):
        return None
    from .weights import load_pickle

    try:
        top = load_pickle(path, "a PyTorch file")
    except (FormatError, UsageError):
        return None
    fitting = [b for b in candidates if isinstance(top, dict) and all(k in top for k in b.pickle_keys or [])]
    return max(fitting, key=lambda b: b.specificity) if fitting else None


def _read_file(bundle: Bundle, path: Path) -> Any:
    """The Document of a single-file input declared as a bundle: its tensors, no fields."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    return _document(bundle, path, "pickle", {}, {}, None)


def tensor_refs(weights: Path) -> list[Any]:
    """The tensors of a weights file a conversion option names (``--llava-projector FILE``): a
    torch.save zip or a safetensors file, told apart by their first bytes; each reference says
    which file holds it."""
    import dataclasses
    import zipfile

    if not weights.is_file():
        raise UsageError(f"{weights}: no such file")
    refs = _pickled_refs(weights) if zipfile.is_zipfile(weights) else _safetensors_refs(weights)
    return [dataclasses.replace(ref, file=weights) for ref in refs]


def _safetensors_refs(weights: Path) -> list[Any]:
    from ..document import TensorRef
    from ..ggml_types import type_id
    from .weights import safetensors_index

    return [TensorRef(key, key, type_id(entry.dtype.ggml), tuple(reversed(entry.shape)), entry.begin,
                      entry.end - entry.begin)
            for key, entry in safetensors_index(weights).items()]


def _torch_array(tensor: Any) -> Any:
    """A function giving a torch tensor's array as stored (bf16 as its 16-bit patterns)."""

    def load() -> Any:
        import torch

        data = tensor.detach().contiguous()
        return (data.view(torch.int16) if data.dtype == torch.bfloat16 else data).numpy()

    return load


def _pickled_refs(weights: Path, under: str | None = None, unread: dict[str, str] | None = None) -> list[Any]:
    """The tensors of a torch.save zip of plain tensors (the file's dict, or the dict under its key
    ``under``), as references read later by offset, or, for a file only torch could read (a legacy
    pickle), loaded through torch when written. A tensor that cannot be read (a complex or sparse
    one, a view) goes into ``unread`` with the reason: an error when a conversion needs it,
    nothing when its table drops it."""
    from ..document import TensorRef
    from ..ggml_types import type_id
    from ..weight_dtypes import BY_TORCH
    from . import torchzip
    from .weights import check_tensor, state_dict

    tensors = []
    for key, tensor in state_dict(weights, "a pickled state dict", under).items():
        why = None
        if not isinstance(tensor, torchzip.TensorRef | torchzip.UnreadTensor) and not hasattr(tensor, "shape"):
            why = f"is a {type(tensor).__name__}, not a tensor"
        else:
            try:
                check_tensor(key, tensor, weights)
            except FormatError as e:
                why = e.message
        if why is None and not isinstance(tensor, torchzip.TensorRef):  # read by torch: loaded when written
            dtype = str(tensor.dtype).removeprefix("torch.")
            tensors.append(TensorRef(key, key, type_id(BY_TORCH[dtype].ggml), tuple(reversed(tensor.shape)), 0,
                                     tensor.numel() * tensor.element_size(), file=weights,
                                     load=_torch_array(tensor)))
            continue
        if why is not None:
            if unread is None:
                raise FormatError(key, None, why, str(weights))
            unread[key] = why
            continue
        tensors.append(TensorRef(key, key, type_id(BY_TORCH[tensor.dtype].ggml), tuple(reversed(tensor.shape)),
                                 tensor.begin, tensor.nbytes))
    return tensors


def _unknown(name: str) -> Any:
    from ..schema.expr import ExpressionError

    raise ExpressionError(f"unknown name {name!r}")
