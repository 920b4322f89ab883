"""README's command lines run as written, one after the other in one folder, on files of the kinds
they name: none fails, and none picks a default output an earlier one wrote."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from conftest import FIXTURES, GENUINE, ROOT, SYNTH, run_fmt
from test_gguf_versions import write_v1

# every file name README's commands use, and the fixture of that kind it stands for
FILES = {
    "ckpt.bin": SYNTH / "ggcl-adam-past2.bin",  # parsed with --schema ggcl: a finetune checkpoint
    "scratch.bin": GENUINE / "ggcp-v0-adam.bin",
    "vocab.gguf": GENUINE / "tiny-llama-f32.gguf",  # its tokenizer is scratch.bin's
    "adapter.bin": GENUINE / "ggla-finetune.bin",
    "ggml-model-q4_0.bin": FIXTURES / "legacy" / "ggjt-v1-q4_0.bin",
    "model.gguf": GENUINE / "tiny-llama-f32.gguf",
    "peft-adapter": FIXTURES / "peft" / "adapter-safetensors",
    "mlx-adapter": FIXTURES / "mlx" / "adapter",
    "llama-hf": FIXTURES / "peft" / "tiny-llama",
}


def readme_commands() -> list[list[str]]:
    """The `.venv/bin/fmt ...` lines of README's first command block, without their comments."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for line in text.splitlines():
        if line.startswith(".venv/bin/fmt "):
            words = shlex.split(line, comments=True)
            commands.append(words[1:])
    return commands


def test_readme_has_the_commands_of_the_main_jobs() -> None:
    firsts = {tuple(c[:2]) for c in readme_commands()}
    assert {("parse", "ckpt.bin"), ("to-gguf", "ckpt.bin"), ("to-gguf", "old-v1.gguf"), ("edit", "model.gguf"),
            ("diff", "old-v1.gguf")} <= firsts


def test_readme_commands_run_as_written_one_after_the_other(tmp_path: Path) -> None:
    for name, source in FILES.items():
        if source.is_dir():
            shutil.copytree(source, tmp_path / name)
        else:
            shutil.copy(source, tmp_path / name)
    write_v1(tmp_path / "old-v1.gguf")
    (tmp_path / "t.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}", encoding="utf-8")
    fmt = ROOT / ".venv" / "bin" / "fmt"
    assert fmt.exists()
    for words in readme_commands():
        before = set(_tree(tmp_path))
        result = run_fmt(*words, cwd=tmp_path)
        allowed = (0, 1) if words[0] == "diff" else (0,)
        assert result.code in allowed, (words, result.err)
        if words[0] in ("to-gguf", "edit"):
            written = set(_tree(tmp_path)) - before
            assert len(written) == 1, (words, written)  # a new file, not one an earlier command wrote
            match = re.search(r"^(\S+): ", result.out, re.M)
            assert match is not None and (tmp_path / match.group(1)).resolve() in {tmp_path / w for w in written}


def _tree(root: Path) -> list[Path]:
    return [p.relative_to(root) for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize(("name", "words", "expected"), [
    ("m.gguf", ["--outtype", "f16"], "m-f16.gguf"), ("m.gguf", [], "m-v3.gguf"),
])
def test_a_gguf_input_is_never_its_own_default_output(name: str, words: list[str], expected: str,
                                                      tmp_path: Path) -> None:
    write_v1(tmp_path / name)
    result = run_fmt("to-gguf", tmp_path / name, *words)
    assert result.code == 0, result.err
    assert (tmp_path / expected).is_file()


def output_samples() -> list[tuple[list[str], list[str]]]:
    """README's ``$ .venv/bin/fmt ...`` samples: the command's words, and the lines shown (``...``
    stands for lines left out)."""
    samples, current = [], None
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("$ .venv/bin/fmt "):
            current = (shlex.split(line[2:])[1:], [])
            samples.append(current)
        elif line.startswith("```"):
            current = None
        elif current is not None:
            current[1].append(line)
    return samples


def test_readme_has_output_samples() -> None:
    assert len(output_samples()) >= 2


@pytest.mark.parametrize("index", range(2))
def test_readme_output_samples_are_what_fmt_prints(index: int) -> None:
    words, shown = output_samples()[index]
    result = run_fmt(*words, cwd=ROOT)
    assert result.code == 0, result.err
    printed = result.out.splitlines()
    at, skipping = 0, True
    for line in shown:  # in order, each shown line exactly; `...` skips any number of lines
        if line.strip() == "...":
            skipping = True
            continue
        assert line in printed[at:], (line, printed)
        found = printed.index(line, at)
        assert skipping or found == at, (line, "is not the line after the one before it")
        at, skipping = found + 1, False
