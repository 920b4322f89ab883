"""A model folder's card (README.md front matter) and name, as fields, through gguf-py's own
``Metadata`` heuristics: what current llama.cpp's converter writes as ``general.name``,
``general.base_model.*`` and ``general.tags`` comes from the same code here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import FormatError
from ..io.inputs import note_input

SCALARS = ("name", "author", "version", "organization", "finetune", "basename", "description", "size_label",
           "license")
BASE_MODEL_FIELDS = ("name", "organization", "version", "repo_url")


def read_model_card(directory: Path) -> dict[str, Any]:
    """{name, author, ..., license: text or None; base_models: [{name, organization, version,
    repo_url}, ...] (absent parts left out); tags, languages: [text]}. Empty text is None."""
    import gguf

    readme = directory / "README.md"
    if readme.is_file():
        note_input(readme)
    try:
        card = gguf.Metadata.load(None, directory, None, 0)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:  # a model card gguf-py cannot read
        raise FormatError("", None, f"its model card cannot be read: {' '.join(str(e).split())[:200]}",
                          str(readme)) from None
    fields: dict[str, Any] = {}
    for name in SCALARS:
        value = getattr(card, name, None)
        fields[name] = str(value) if value is not None and str(value) != "" else None
    bases = card.base_models if isinstance(card.base_models, list) else []
    fields["base_models"] = [{k: str(m[k]) for k in BASE_MODEL_FIELDS
                              if isinstance(m, dict) and m.get(k) is not None and str(m[k]) != ""} for m in bases]
    fields["tags"] = [str(t) for t in card.tags] if isinstance(card.tags, list) else []
    fields["languages"] = [str(t) for t in card.languages] if isinstance(card.languages, list) else []
    return fields
