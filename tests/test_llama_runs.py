"""What ggfmt writes runs in a current llama.cpp (llama-cpp-python, a test dependency that builds one):
every converted 2023 model file loads and evaluates the token ids the references were made with,
giving the logits of the 2023 converter's GGUF in the same llama.cpp (fixtures/legacy/*.logits.npy),
or, where that converter refused the file, those of the 2023 build that read it
(*.legacy-logits.npy) within the gap fixtures/legacy/README.md measures between the two runtimes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import consumer
from conftest import FIXTURES, Fmt

LEGACY = FIXTURES / "legacy"
IDS = [1, 17, 99, 250, 3, 42]  # the ids every reference was evaluated with
WITH_REFERENCE = sorted(p.name[: -len(".logits.npy")] for p in LEGACY.glob("*.logits.npy")
                        if not p.name.endswith(".legacy-logits.npy"))
WITHOUT_REFERENCE = sorted(p.stem for p in LEGACY.glob("*.bin") if p.stem not in WITH_REFERENCE)
FLOAT_NOISE = 1e-4
# fixtures/legacy/README.md: quantized models give logits up to 9.8e-4 apart in the 2023 builds and
# in today's llama.cpp, from the same tensor bytes
RUNTIME_GAP = 1e-3


def logits(model: Path, ids: list[int] = IDS) -> np.ndarray[Any, Any]:
    """The logits of ``ids``, evaluated as the references were: llama-cpp-python, one batch, one thread
    (in a process of its own, with llama.cpp's plain CPU kernels: tests/consumer.py)."""
    return consumer.logits(model, ids)


def converted(stem: str, tmp_path: Path, fmt: Fmt) -> Path:
    out = tmp_path / f"{stem}.gguf"
    result = fmt("to-gguf", LEGACY / f"{stem}.bin", "-o", out)
    assert result.code == 0, result.err
    return out


def test_every_legacy_file_is_covered() -> None:
    assert len(WITH_REFERENCE) == 15 and len(WITHOUT_REFERENCE) == 7


@pytest.mark.parametrize("stem", WITH_REFERENCE)
def test_logits_equal_those_of_the_2023_converters_gguf(stem: str, tmp_path: Path, fmt: Fmt) -> None:
    got = logits(converted(stem, tmp_path, fmt))
    expected = np.load(LEGACY / f"{stem}.logits.npy")
    assert got.shape == expected.shape == (6, 275)
    assert np.abs(got - expected).max() <= FLOAT_NOISE


@pytest.mark.parametrize("stem", WITHOUT_REFERENCE)
def test_files_the_2023_converter_refused_run_as_the_2023_build_ran_them(stem: str, tmp_path: Path,
                                                                         fmt: Fmt) -> None:
    got = logits(converted(stem, tmp_path, fmt))
    expected = np.load(LEGACY / f"{stem}.legacy-logits.npy")
    assert np.isfinite(got).all()
    assert np.abs(got - expected).max() <= RUNTIME_GAP
