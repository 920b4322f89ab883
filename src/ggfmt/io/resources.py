"""Where ggfmt's data folders (``schemas/``, ``mappings/``) are.

In a source checkout (an editable install) they sit at the top of the repository; an
installed wheel carries them as ``ggfmt/data/<name>``.
"""

from __future__ import annotations

from pathlib import Path

# This module is ggfmt/io/resources.py: the package is its folder's parent.
_PACKAGE = Path(__file__).resolve().parent.parent


def data_dirs(name: str) -> list[Path]:
    candidates = [_PACKAGE / "data" / name, _PACKAGE.parent.parent / name]
    return [p for p in candidates if p.is_dir()]
