"""`import ggfmt` and `fmt --help` never import torch (nor does parsing or converting a checkpoint)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, GENUINE

# A stand-in torch that announces itself: if anything imports it, the marker file appears.
FAKE_TORCH = "import os\nopen(os.environ['TORCH_MARKER'], 'w').close()\n"


@pytest.mark.parametrize("code", [
    "import ggfmt",
    "import ggfmt.cli as c\ntry:\n    c.main(['--help'])\nexcept SystemExit:\n    pass",
    f"import ggfmt.cli as c; c.main(['parse', {str(GENUINE / 'ggcp-v0-adam.bin')!r}])",
    # a PEFT adapter saved as safetensors converts with numpy alone
    f"import ggfmt.cli as c, tempfile, os; d = tempfile.mkdtemp(); "
    f"assert c.main(['to-gguf', {str(FIXTURES / 'peft/adapter-safetensors')!r}, '--base', "
    f"{str(FIXTURES / 'peft/tiny-llama')!r}, '-o', os.path.join(d, 'x.gguf')]) == 0; "
    f"assert c.main(['to-ggla', {str(FIXTURES / 'peft/adapter-safetensors')!r}, '-o', os.path.join(d, 'x.bin')]) == 0",
])
def test_torch_is_not_imported(code: str, tmp_path: Path) -> None:
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(FAKE_TORCH)
    marker = tmp_path / "torch-was-imported"
    env = dict(os.environ, PYTHONPATH=str(tmp_path), TORCH_MARKER=str(marker))
    check = "\nimport sys\nassert 'torch' not in sys.modules, 'torch imported'\n"
    subprocess.run([sys.executable, "-c", code + check], env=env, check=True, capture_output=True, timeout=60)
    assert not marker.exists()


def test_fake_torch_would_be_noticed(tmp_path: Path) -> None:
    # The check above can fail: importing the stand-in does leave the marker.
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(FAKE_TORCH)
    marker = tmp_path / "torch-was-imported"
    env = dict(os.environ, PYTHONPATH=str(tmp_path), TORCH_MARKER=str(marker))
    subprocess.run([sys.executable, "-c", "import torch"], env=env, check=True, timeout=60)
    assert marker.exists()
