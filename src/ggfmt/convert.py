"""Which conversion an input needs, found as data, and where its output goes by default.

An input is a file (parsed through its schema) or a directory (read through the bundle
declaration that recognises it, ``bundles/*.yaml``). Either is a Document with an id; the
conversion to a target (``gguf``, or a schema id such as ``ggla``) is the mapping table whose
``source:`` and ``target:`` say so (:func:`ggfmt.mapping.table_for`), or the one ``--mapping``
names. Nothing here names a format.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:  # not at run time: the CLIP converter imports numpy, which a checkpoint's plan does not need
    from .clip import ClipOptions
    from .document import Document
    from .mapping import MappingTable
    from .plan import GGUFPlan


@dataclass
class Conversion:
    plan: GGUFPlan
    description: str
    target: str = "gguf"  # "gguf", or the id of the schema that writes the output
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the summary tells (tensors --outtype could not take)


def _retyped(conversion: Conversion, outtype: str | None, table: MappingTable) -> Conversion:
    """The conversion with its tensors in ``outtype``, which the table's ``outtypes`` must allow."""
    from .outtype import check_outtype, retype

    check_outtype(outtype, table.outtypes, f"this conversion ({table.name})")
    retyped = retype(conversion.plan.tensors, outtype)
    conversion.plan.tensors = retyped.tensors
    conversion.notes.extend(retyped.notes)
    return conversion


def default_output(source: Path, target: str = "gguf", clip: ClipOptions | None = None) -> Path:
    """Beside a file, its name with the target's extension; in a directory, the name its bundle
    declares for the target."""
    extension = ".gguf" if target == "gguf" else ".bin"
    if source.is_dir():
        from .bundles import recognise

        bundle = recognise(source)
        if bundle is not None:
            return source / bundle.outputs.get(target, f"{bundle.id}{extension}")
        if target == "gguf":
            from .clip import ClipOptions
            from .clip import default_output as clip_output

            return clip_output(source, clip or ClipOptions())
    return source.with_suffix(extension)


def convert(source: Path, target: str = "gguf", *, schema: str | None = None,
            params: Mapping[str, Any] | None = None, mapping: str | None = None, base: Path | None = None,
            arch: str | None = None, clip: ClipOptions | None = None, outtype: str | None = None) -> Conversion:
    """What ``source`` (a file or a declared directory) becomes in ``target``, planned, not written."""
    from .plan import check_plan

    if source.is_dir() and _bundle_of(source) is None:
        conversion = _clip(source, target, schema, params, mapping, base, arch, outtype, clip)
    else:
        if clip is not None:
            raise UsageError("the CLIP options apply to a CLIP model directory")
        doc, table = _document_and_table(source, target, schema, params, mapping, base)
        from .plan import plan_gguf

        plan = plan_gguf(doc, table, _architecture(arch, table))
        what = doc.schema.title if source.is_dir() else doc.schema.id
        conversion = _retyped(Conversion(plan, f"{what} -> {_shown(target)} via {table.name}",
                                         target, list(plan.warnings)), outtype, table)
    check_plan(conversion.plan, str(source))
    return conversion


def _shown(target: str) -> str:
    return "GGUF" if target == "gguf" else target


def _bundle_of(directory: Path) -> Any:
    from .bundles import recognise

    return recognise(directory)


def _document_and_table(source: Path, target: str, schema: str | None, params: Mapping[str, Any] | None,
                        mapping: str | None, base: Path | None) -> tuple[Document, MappingTable]:
    """The input as a Document, and the table that converts it to ``target``."""
    from .mapping import load_mapping, table_for, table_uses

    if source.is_dir():
        from .bundles import read_bundle

        bundle = _bundle_of(source)  # a directory layout declared in bundles/ (told apart by data)
        if schema or params:
            raise UsageError(f"{source}: this {bundle.title} is read by its bundle declaration; --schema and schema "
                             "parameters apply to files")
        name = mapping or table_for(bundle.id, target)
        if name is None:
            raise UsageError(f"{source}: ggfmt has no {_shown(target)} conversion for a {bundle.title} (no "
                             f"mapping table with source: {bundle.id} and target: {target})")
        table = load_mapping(name)
        if base is not None and not table_uses(table, "base"):
            raise UsageError(f"--base: this conversion ({table.name}) reads nothing from a base model")
        return read_bundle(bundle, source, base, with_base=table_uses(table, "base")), table
    if base is not None:
        raise UsageError("--base applies to a directory layout (an adapter and its base model), not to a file")
    from .engine import parse

    doc = parse(source, schema, params)
    name = mapping or table_for(doc.schema.id, target)  # the table whose source/target say it converts these
    if name is None:
        raise UsageError(f"{source}: ggfmt has no {_shown(target)} conversion for {doc.schema.id} files (no mapping "
                         f"table with source: {doc.schema.id} and target: {target}); `fmt parse` still shows what "
                         "is inside")
    return doc, load_mapping(name)


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


def _clip(source: Path, target: str, schema: str | None, params: Mapping[str, Any] | None, mapping: str | None,
          base: Path | None, arch: str | None, outtype: str | None, clip: ClipOptions | None) -> Conversion:
    from .clip import ClipOptions, clip_to_gguf, is_clip_directory

    if not is_clip_directory(source) or target != "gguf":
        raise UsageError(f"{source}: a directory, and not one ggfmt converts to {target} (the layouts declared in "
                         "bundles/, such as PEFT and mlx-lm adapters, or a CLIP model: config.json with model_type "
                         "clip)")
    if schema or params or mapping or arch or base is not None:
        raise UsageError("--schema, --mapping, --arch, --base and schema parameters do not apply to a CLIP model "
                         "directory")
    from .mapping import load_mapping
    from .outtype import check_outtype

    # The CLIP table's dtype policy takes the output type (clip.use_f32), tensor by tensor.
    check_outtype(outtype, load_mapping("clip-gguf").outtypes, "a CLIP model")
    return Conversion(clip_to_gguf(source, clip or ClipOptions()), "CLIP -> GGUF")
