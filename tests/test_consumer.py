"""The consumer in the tests (tests/consumer.py) can never take the suite down: a crash of llama.cpp
is one failed test with its message, and every evaluation runs with llama.cpp's plain CPU kernels."""

from __future__ import annotations

from pathlib import Path

import pytest

import consumer
from conftest import GENUINE


def test_a_crash_of_the_consumer_is_one_failed_assertion() -> None:
    crash = "import os, signal, sys; print('about to crash', file=sys.stderr); os.kill(os.getpid(), signal.SIGSEGV)"
    with pytest.raises(AssertionError, match=r"killed by SIGSEGV; its last lines:\nabout to crash"):
        consumer.run_child(crash, {}, "evaluating a model")


def test_an_abort_of_the_consumer_is_one_failed_assertion() -> None:
    with pytest.raises(AssertionError, match="killed by SIGABRT"):
        consumer.run_child("import os; os.abort()", {}, "evaluating a model")


def test_a_refused_model_is_one_failed_assertion(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(20))
    with pytest.raises(AssertionError, match="exit status 1"):
        consumer.logits(broken, [1])


def test_evaluations_run_without_repacking() -> None:
    # the child asserts what llama.cpp was given; here the parameters it builds are checked directly
    probe = consumer._CHILD.split("llm = Llama(")[0] + "print(bindings.llama_model_default_params().use_extra_bufts)"
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", probe, '{"model": null}'], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert consumer.logits(GENUINE / "tiny-llama-f32.gguf", [1, 2]).shape[0] == 2
