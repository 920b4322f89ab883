"""Each synthetic legacy checkpoint converts to what the upstream converter wrote (the .ref.gguf)."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from conftest import SYNTH, Fmt, gguf_content


@pytest.mark.parametrize("name", ["ggcp-v1-adam-past3", "ggcp-v1-lbfgs", "ggcl-adam-past2", "ggcl-lbfgs-past4"])
def test_matches_upstream_reference(name: str, tmp_path: Path, fmt: Fmt) -> None:
    out = tmp_path / f"{name}.gguf"
    result = fmt("to-gguf", SYNTH / f"{name}.bin", "-o", out)
    assert result.code == 0, result.err
    keys, tensors = gguf_content(out)
    ref_keys, ref_tensors = gguf_content(SYNTH / f"{name}.ref.gguf")
    assert [k[0] for k in keys] == [k[0] for k in ref_keys]
    for ours, theirs in zip(keys, ref_keys, strict=True):
        assert ours == theirs
    assert [t[:3] for t in tensors] == [t[:3] for t in ref_tensors]
    for ours_t, theirs_t in zip(tensors, ref_tensors, strict=True):
        assert ours_t[3] == theirs_t[3], f"payload of {ours_t[0]} differs"
    assert gguf.GGUFReader(out).fields["GGUF.version"].contents() == 3
