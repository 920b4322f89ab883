"""ggfmt: declarative, schema-driven parsing and conversion of legacy ggml / llama.cpp formats.

    >>> import ggfmt
    >>> doc = ggfmt.parse("ckpt.bin")            # schema detected from the magic
    >>> doc.fields["model"]["n_embd"], len(doc.tensors)

Heavy modules (construct, numpy, gguf) load on first use, so ``import ggfmt`` stays cheap.
"""

from __future__ import annotations

# typing is not imported: the programs' entry (ggfmt._entry) runs after this module, and answers a
# Ctrl-C from its first line; every module imported before it widens the window where Python
# itself would answer with a traceback (mypy takes any name TYPE_CHECKING as true).
TYPE_CHECKING = False

__version__ = "0.1.0"
__all__ = ["Document", "FormatError", "TensorRef", "Truncated", "ValidationFailed", "__version__", "load_schema",
           "parse"]

if TYPE_CHECKING:
    from typing import Any

    from .document import Document, TensorRef
    from .engine import parse
    from .errors import FormatError, Truncated, ValidationFailed
    from .schema import load_schema


def __getattr__(name: str) -> Any:
    if name == "parse":
        from .engine import parse

        return parse
    if name == "load_schema":
        from .schema import load_schema

        return load_schema
    if name in ("Document", "TensorRef"):
        from . import document

        return getattr(document, name)
    if name in ("FormatError", "Truncated", "ValidationFailed"):
        from . import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'ggfmt' has no attribute {name!r}")
