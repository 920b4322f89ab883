"""Every writer of a file has one verb, ``write(plan, target, out_path, progress) -> Summary``,
found by its target (ggfmt.emit.writer): what it writes is what the command writes, its summary
is the command's counts, and its progress adds up to the plan's payload bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import FIXTURES, SYNTH, Fmt
from ggfmt.convert import convert
from ggfmt.emit import Summary, writer


@pytest.mark.parametrize(("source", "target", "command", "nouns"), [
    (SYNTH / "ggcl-adam-past2.bin", "gguf", "to-gguf", ("tensor", "key")),
    (FIXTURES / "peft/adapter-safetensors", "ggla", "to-ggla", ("tensor", "header field")),
])
def test_writers_share_one_verb(source: Path, target: str, command: str, nouns: tuple[str, str], tmp_path: Path,
                                fmt: Fmt) -> None:
    plan = convert(source, target).plan
    written: list[int] = []
    summary = writer(target)(plan, target, tmp_path / "direct", written.append)
    assert isinstance(summary, Summary)
    assert [noun for _, noun in summary.counts] == list(nouns)
    assert summary.counts[0][0] == len(plan.tensors)
    assert sum(written) == plan.payload_bytes > 0
    result = fmt(command, source, "-o", tmp_path / "by-command")
    assert result.code == 0, result.err
    assert (tmp_path / "direct").read_bytes() == (tmp_path / "by-command").read_bytes()
    assert result.out.startswith(f"{tmp_path / 'by-command'}: {summary}, ")


def test_the_directory_writer_has_the_same_verb(tmp_path: Path, fmt: Fmt) -> None:
    source, config = FIXTURES / "gemma/gemma-mha.ckpt", FIXTURES / "gemma/gemma-mha-config.json"
    plan = convert(source, "hf", options={"config": config}).plan
    written: list[int] = []
    (tmp_path / "direct").mkdir()
    summary = writer("hf")(plan, "hf", tmp_path / "direct", written.append)
    assert [noun for _, noun in summary.counts] == ["tensor", "layer"] and summary.details == ("float32",)
    assert summary.counts[0][0] == len(plan.tensors)
    assert sum(written) == plan.payload_bytes > 0
    result = fmt("to-hf", source, "--config", config, "-o", tmp_path / "by-command")
    assert result.code == 0, result.err
    names = sorted(p.name for p in (tmp_path / "direct").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "by-command").iterdir()) == ["config.json", "model.safetensors"]
    for name in names:
        assert (tmp_path / "direct" / name).read_bytes() == (tmp_path / "by-command" / name).read_bytes()
    assert result.out.startswith(f"{tmp_path / 'by-command'}: {summary}, ")
