"""The built wheel, installed into a fresh virtual environment, converts a fixture from another
directory: its schemas and mapping tables travel inside the wheel, nothing is read from the
source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import FIXTURES, ROOT, SYNTH, gguf_content


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_wheel_installs_and_converts_from_elsewhere(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", dist, ROOT)
    [wheel] = dist.glob("ggfmt-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ggfmt/data/schemas/ggcp.yaml" in names and "ggfmt/data/mappings/ggcp-gguf.yaml" in names
    assert "ggfmt/data/bundles/mlx-lora.yaml" in names
    assert "ggfmt/py.typed" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    source = elsewhere / "ckpt.bin"
    source.write_bytes((SYNTH / "ggcp-v1-adam-past3.bin").read_bytes())
    result = run(venv / "bin" / "ggfmt", "to-gguf", "ckpt.bin", cwd=elsewhere)
    assert "ckpt.gguf: " in result.stdout
    where = run(venv / "bin" / "python", "-c", "import ggfmt.io.resources as r; print(r.data_dirs('schemas'))",
                cwd=elsewhere).stdout
    assert str(venv) in where and str(ROOT) not in where
    assert gguf_content(elsewhere / "ckpt.gguf") == gguf_content(SYNTH / "ggcp-v1-adam-past3.ref.gguf")
    # a declared directory layout, found through the wheel's own bundles/
    run(venv / "bin" / "ggfmt", "to-gguf", FIXTURES / "mlx" / "adapter", "--base", FIXTURES / "peft" / "tiny-llama",
        "-o", "mlx.gguf", cwd=elsewhere)
    assert gguf_content(elsewhere / "mlx.gguf")[1] == gguf_content(FIXTURES / "peft" / "lora.ref.gguf")[1]
    # what pip says of it, and what a wheel user is pointed to: nothing of a clone's tree
    shown = run(venv / "bin" / "python", "-m", "pip", "show", "ggfmt").stdout
    assert "License: MIT" in shown and "Author: The ggfmt authors" in shown
    helps = [run(venv / "bin" / "ggfmt", *words, "--help").stdout for words in
             [[], ["parse"], ["to-gguf"], ["to-ggla"], ["to-hf"], ["diff"], ["edit"], ["schema"],
              ["schema", "list"], ["schema", "show"], ["schema", "check"], ["schema", "export-ksy"]]]
    for text in helps:
        for clone_path in (" docs/", "(docs/", " bundles/", " mappings/", " schemas/"):
            assert clone_path not in text, (clone_path, text)
    # the standard key types travel in the wheel too
    run(venv / "bin" / "ggfmt", "edit", "ckpt.gguf", "--set", "general.name=2024", "-o", "named.gguf", cwd=elsewhere)
    import gguf

    field = gguf.GGUFReader(elsewhere / "named.gguf").fields["general.name"]
    assert field.contents() == "2024" and field.types == [gguf.GGUFValueType.STRING]
