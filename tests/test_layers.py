"""The tree shows the layers: a module imports only from its own layer or the layers before it.

The layers are README's list under ``src/ggfmt/``; every import counts, those inside functions too
(they are how the commands stay fast to start, not a way around the order).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "ggfmt"

# Items here are (layer, the modules and packages of ggfmt in it), first layer first.
LAYERS: list[tuple[str, set[str]]] = [
    ("shared tables and errors", {"errors", "ggml_types", "weight_dtypes"}),
    ("the machine", {"io"}),
    ("the layout language", {"schema"}),
    ("parsing", {"document", "view", "engine", "diff"}),
    ("readers", {"sources"}),
    ("conversions", {"convert"}),
    ("writers and author tools", {"emit", "edit", "workbench"}),
    ("commands", {"commands", "cli", "_entry", "__main__"}),
    ("the library's face (ggfmt.parse, ...: imports made on first use)", {"__init__"}),
]
RANK = {name: rank for rank, (_, names) in enumerate(LAYERS) for name in names}


def top_name(module: str) -> str:
    """``ggfmt.convert.plan`` -> ``convert``; ``ggfmt`` itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path, source: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every ggfmt module that ``source``, the text of ``path``, imports."""
    package = list(path.relative_to(SRC.parent).parts[:-1])
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            if node.module:
                found.append((node.lineno, target))
            else:
                found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ggfmt"):
            found.append((node.lineno, str(node.module)))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names if a.name.startswith("ggfmt"))
    return found


def test_every_top_level_name_has_a_layer() -> None:
    modules = {p.stem for p in SRC.glob("*.py")}
    packages = {p.parent.name for p in SRC.glob("*/__init__.py")}
    names = modules | packages
    assert names - RANK.keys() == set(), "a new module or package: put it in a layer (README and LAYERS)"


def test_no_module_imports_from_a_later_layer() -> None:
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        own = top_name(".".join(p for p in rel.parts if p != "__init__"))
        for line, target in imports_of(path, path.read_text()):
            theirs = top_name(target)
            if theirs == "__version__":
                continue
            if RANK[theirs] > RANK[own]:
                wrong.append(f"{path.relative_to(SRC)}:{line} imports {target} ({LAYERS[RANK[theirs]][0]})")
    assert wrong == []


def test_the_walk_finds_imports_inside_functions() -> None:
    # The commands import inside functions, to start fast; the walk must see those imports too.
    source = "import os\n\ndef f():\n    from ..convert.plan import Plan\n    from .. import view\n"
    found = imports_of(SRC / "io" / "text.py", source)
    assert found == [(4, "ggfmt.convert.plan"), (5, "ggfmt.view")]
    assert RANK[top_name(found[0][1])] > RANK["io"]
