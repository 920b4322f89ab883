"""Which conversion an input needs, and where its output goes by default.

A directory holding ``adapter_config.json`` is a PEFT adapter, one whose config.json says
CLIP is a CLIP model; a file is parsed through its schema and converted through its mapping
table (the one whose ``source:`` and ``target:`` say so).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:  # not at run time: the CLIP converter imports numpy, which a checkpoint's plan does not need
    from .clip import ClipOptions
    from .mapping import MappingTable
    from .plan import GGUFPlan

PEFT_OUTPUT = "ggml-adapter-model"  # the file name convert-lora-to-ggml.py chose, in the adapter directory


@dataclass
class GGUFConversion:
    plan: GGUFPlan
    description: str
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the summary tells (tensors --outtype could not take)


def _retyped(conversion: GGUFConversion, outtype: str | None, table: str) -> GGUFConversion:
    """The conversion with its tensors in ``outtype``, which the table's ``outtypes`` must allow."""
    from .mapping import load_mapping
    from .outtype import check_outtype, retype

    allowed = load_mapping(table).outtypes
    check_outtype(outtype, allowed, f"this conversion ({table})")
    retyped = retype(conversion.plan.tensors, outtype)
    conversion.plan.tensors = retyped.tensors
    conversion.notes.extend(retyped.notes)
    return conversion


def is_peft_directory(path: Path) -> bool:
    return path.is_dir() and (path / "adapter_config.json").is_file()


def default_gguf_output(source: Path, clip: ClipOptions | None = None) -> Path:
    if source.is_dir():
        from .bundles import recognise

        bundle = recognise(source)
        if bundle is not None and bundle.output:
            return source / bundle.output
        if is_peft_directory(source):
            return source / f"{PEFT_OUTPUT}.gguf"
        from .clip import ClipOptions, default_output

        return default_output(source, clip or ClipOptions())
    return source.with_suffix(".gguf")


def to_gguf(source: Path, *, schema: str | None = None, params: Mapping[str, Any] | None = None,
            mapping: str | None = None, base: Path | None = None, arch: str | None = None,
            clip: ClipOptions | None = None, outtype: str | None = None) -> GGUFConversion:
    """The GGUF that ``source`` (a file or a model or adapter directory) becomes, planned, not written."""
    from .plan import check_plan

    conversion = _plan_to_gguf(source, schema=schema, params=params, mapping=mapping, base=base, arch=arch,
                               clip=clip, outtype=outtype)
    check_plan(conversion.plan, str(source))
    return conversion


def _plan_to_gguf(source: Path, *, schema: str | None, params: Mapping[str, Any] | None, mapping: str | None,
                  base: Path | None, arch: str | None, clip: ClipOptions | None,
                  outtype: str | None) -> GGUFConversion:
    if source.is_dir():
        from .bundles import recognise

        bundle = recognise(source)  # a directory layout declared in bundles/ (told apart by data)
        if bundle is not None:
            if schema or params or arch or clip is not None:
                raise UsageError(f"{source}: this {bundle.title} takes --base, --mapping and --outtype, not "
                                 "--schema, --arch, schema parameters or the CLIP options")
            return _bundle_to_gguf(bundle, source, base, mapping, outtype)
        if schema or params or mapping or arch:
            raise UsageError("--schema, --mapping, --arch and schema parameters apply to files, not to a "
                             "model or adapter directory")
        if is_peft_directory(source):
            if clip is not None:
                raise UsageError("the CLIP options apply to a CLIP model directory, not to a PEFT adapter")
            return _retyped(_peft_to_gguf(source, base), outtype, "lora-gguf")
        from .clip import ClipOptions, clip_to_gguf, is_clip_directory

        if not is_clip_directory(source):
            raise UsageError(f"{source}: a directory to convert is a PEFT adapter (adapter_config.json) "
                             "or a CLIP model (config.json with model_type clip)")
        if base is not None:
            raise UsageError("--base applies to a PEFT adapter directory")
        from .mapping import load_mapping
        from .outtype import check_outtype

        # The CLIP table's dtype policy takes the output type (clip.use_f32), tensor by tensor.
        check_outtype(outtype, load_mapping("clip-gguf").outtypes, "a CLIP model")
        return GGUFConversion(clip_to_gguf(source, clip or ClipOptions()), "CLIP -> GGUF")
    if clip is not None:
        raise UsageError("the CLIP options apply to a CLIP model directory")
    if base is not None:
        raise UsageError("--base applies to a PEFT adapter directory, not to a file")
    from .engine import parse

    doc = parse(source, schema, params)
    from .mapping import load_mapping, table_for
    from .plan import plan_gguf

    found = mapping or table_for(doc.schema.id, "gguf")  # the table whose source/target say it converts these
    if found is None:
        raise UsageError(f"{source}: ggfmt has no GGUF conversion for {doc.schema.id} files (no mapping table with "
                         f"source: {doc.schema.id} and target: gguf); `fmt parse` still shows what is inside")
    table = load_mapping(found)
    plan = plan_gguf(doc, table, _architecture(arch, table))
    return _retyped(GGUFConversion(plan, f"{doc.schema.id} -> GGUF via {found}", list(plan.warnings)), outtype, found)


def _architecture(arch: str | None, table: MappingTable) -> str | None:
    """``--arch``, for the conversions whose table lets it name the architecture."""
    from .ggml_types import architectures

    if arch is None:
        return None
    if not table.arch_option:
        raise UsageError(f"--arch applies to conversions whose table allows it (such as ggla adapters), not to "
                         f"{table.name}")
    if arch not in architectures():
        raise UsageError(f"--arch {arch}: not an architecture gguf-py knows (for example llama)")
    return arch


def _bundle_to_gguf(bundle: Any, directory: Path, base: Path | None, mapping: str | None,
                    outtype: str | None) -> GGUFConversion:
    """A declared directory layout through its table (``<bundle id>-gguf``, or ``--mapping``)."""
    from .bundles import read_bundle
    from .mapping import load_mapping, table_for
    from .plan import plan_gguf

    doc = read_bundle(bundle, directory, base)
    name = mapping or table_for(bundle.id, "gguf")
    if name is None:
        raise UsageError(f"{directory}: no mapping table has source: {bundle.id} and target: gguf")
    table = load_mapping(name)
    plan = plan_gguf(doc, table)
    return _retyped(GGUFConversion(plan, f"{bundle.title} -> GGUF via {name}", list(plan.warnings)), outtype, name)


def _peft_to_gguf(directory: Path, base: Path | None) -> GGUFConversion:
    from .adapters import peft_to_gguf
    from .sources.hf_config import read_base_config
    from .sources.peft import read_peft

    if not is_peft_directory(directory):
        raise UsageError(f"{directory}: a directory to convert must be a PEFT adapter (with adapter_config.json)")
    adapter = read_peft(directory)
    if base is None:
        named = adapter.config.get("base_model_name_or_path")
        if isinstance(named, str) and named and Path(named).is_dir():
            base = Path(named)
        else:
            raise UsageError(f"{directory}: the base model's config.json is needed: pass --base DIR "
                             f"(base_model_name_or_path is {named!r}, not a local directory)")
    model = read_base_config(base)
    return GGUFConversion(peft_to_gguf(adapter, model), f"PEFT adapter -> GGUF LoRA adapter ({model.architecture})")


def ggla_fields(directory: Path, outtype: str | None = None) -> dict[str, Any]:
    from .adapters import peft_to_ggla_fields
    from .sources.peft import read_peft

    return peft_to_ggla_fields(read_peft(directory), outtype)
