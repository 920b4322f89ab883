"""`import ggfmt`, `fmt --help` and the conversions that do not need them never import torch or
transformers (only a pickled input does, and then only torch)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, GENUINE

# Stand-ins that announce themselves: if anything imports one, its marker file appears.
HEAVY = ("torch", "transformers")
FAKE = "import os\nopen(os.path.join(os.environ['MARKERS'], __name__), 'w').close()\n"
CONVERT = "import ggfmt.cli as c, tempfile, os\nd = tempfile.mkdtemp()\n"


def run_with_stand_ins(code: str, tmp_path: Path) -> list[str]:
    markers = tmp_path / "markers"
    markers.mkdir()
    for name in HEAVY:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(FAKE)
    env = dict(os.environ, PYTHONPATH=str(tmp_path), MARKERS=str(markers))
    check = "\nimport sys\nassert not {'torch', 'transformers'} & set(sys.modules), 'imported'\n"
    subprocess.run([sys.executable, "-c", code + check], env=env, check=True, capture_output=True, timeout=120)
    return sorted(p.name for p in markers.iterdir())


@pytest.mark.parametrize("code", [
    "import ggfmt",
    "import ggfmt.cli as c\ntry:\n    c.main(['--help'])\nexcept SystemExit:\n    pass",
    f"import ggfmt.cli as c; c.main(['parse', {str(GENUINE / 'ggcp-v0-adam.bin')!r}])",
    # a PEFT adapter saved as safetensors converts with numpy alone
    CONVERT + f"assert c.main(['to-gguf', {str(FIXTURES / 'peft/adapter-safetensors')!r}, '--base', "
    f"{str(FIXTURES / 'peft/tiny-llama')!r}, '-o', os.path.join(d, 'x.gguf')]) == 0\n"
    f"assert c.main(['to-ggla', {str(FIXTURES / 'peft/adapter-safetensors')!r}, '-o', os.path.join(d, 'x.bin')]) == 0",
    # so does a CLIP model: its weights are read from model.safetensors, no model is instantiated
    CONVERT + f"assert c.main(['to-gguf', {str(FIXTURES / 'clip/tiny-clip')!r}, '-o', os.path.join(d, 'c.gguf')]) == 0",
    # pickles in torch.save's zip format are read by offset: a PEFT adapter_model.bin, a Gemma checkpoint
    CONVERT + f"assert c.main(['to-gguf', {str(FIXTURES / 'peft/adapter-bin')!r}, '--base', "
    f"{str(FIXTURES / 'peft/tiny-llama')!r}, '-o', os.path.join(d, 'x.gguf')]) == 0",
    CONVERT + f"assert c.main(['to-hf', {str(FIXTURES / 'gemma/gemma-mqa.ckpt')!r}, '--config', "
    f"{str(FIXTURES / 'gemma/gemma-mqa-config.json')!r}, '-o', os.path.join(d, 'hf')]) == 0",
], ids=["import", "help", "parse", "peft", "clip", "peft-bin", "gemma"])
def test_heavy_modules_are_not_imported(code: str, tmp_path: Path) -> None:
    assert run_with_stand_ins(code, tmp_path) == []


def test_stand_ins_would_be_noticed(tmp_path: Path) -> None:
    # The check above can fail: importing a stand-in does leave its marker.
    with pytest.raises(subprocess.CalledProcessError):
        run_with_stand_ins("import torch", tmp_path)
    assert (tmp_path / "markers" / "torch").exists()


@pytest.mark.parametrize("source", [GENUINE / "ggcp-v0-adam.bin", GENUINE / "tiny-llama-f32.gguf"])
def test_a_parse_does_not_import_numpy(source: Path) -> None:
    """numpy's import alone takes about 50 ms, more than a header's parse."""
    code = (f"import sys, ggfmt.cli as c\nassert c.main(['parse', {str(source)!r}]) == 0\n"
            "assert 'numpy' not in sys.modules, 'numpy imported'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
