"""The real consumer of what ggfmt writes: a current llama.cpp (llama-cpp-python), run in a process
of its own for every evaluation.

Two things make this necessary rather than convenient:

- llama.cpp is C++: a crash inside it (a segmentation fault, an abort on a failed assertion)
  would end pytest itself, with no summary and every later test unrun. In a child process it
  is one failed test that says how the child died and what it printed last.
- On CPUs with AMX (Intel Sapphire Rapids and later) llama.cpp repacks weights into the "extra"
  buffer types of its CPU backend, and those AMX kernels crash on tiny quantized models (the
  upstream converter's own reference files crash the same way). The references were computed
  with the plain CPU kernels, so every evaluation runs with repacking off
  (``use_extra_bufts = False``, llama.cpp's ``--no-repack``), on every CPU alike.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

# Generous: a tiny model loads and evaluates in well under a second; the bound is for a hang.
TIMEOUT = 300

# What the child runs: load with repacking off, evaluate the ids in one batch on one thread, save
# the logits of every position. Kept as text so that the child imports nothing of the test suite.
_CHILD = r"""
import json, sys
import numpy as np
import llama_cpp.llama_cpp as bindings
from llama_cpp import Llama

request = json.loads(sys.argv[1])
default_params = bindings.llama_model_default_params

def plain_cpu_params():
    # Llama() takes its model parameters from this function and offers no argument for repacking
    params = default_params()
    params.use_extra_bufts = False  # llama.cpp's --no-repack: its plain CPU kernels
    return params

bindings.llama_model_default_params = plain_cpu_params
llm = Llama(model_path=request["model"], lora_path=request["lora"], n_ctx=request["n_ctx"], logits_all=True,
            seed=1, n_threads=1, verbose=False,
            # the K/V cache in f32 when asked (llama.cpp's --cache-type-k/v f32): no f16 rounding of K, V
            **({"type_k": 0, "type_v": 0} if request["f32_cache"] else {}))
assert llm.model_params.use_extra_bufts is False, "repacking could not be turned off"
llm.eval(request["ids"])
np.save(request["out"], np.array(llm.scores[: len(request["ids"])], dtype=np.float32))
llm.close()
"""


class ConsumerFailed(AssertionError):
    """llama.cpp refused, crashed or hung on a file: one failed test, with what it said."""


def _how_it_ended(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def run_child(code: str, request: dict[str, Any], what: str) -> None:
    """Run ``code`` with ``request`` (as JSON, its argument) in a child Python; a failure, a crash
    or a hang raises ConsumerFailed naming ``what`` and how the child ended."""
    try:
        child = subprocess.run([sys.executable, "-c", code, json.dumps(request)], capture_output=True, text=True,
                               errors="replace", timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise ConsumerFailed(f"llama.cpp did not finish {what} in {TIMEOUT} s") from e
    if child.returncode != 0:
        said = (child.stderr or child.stdout).strip().splitlines()[-12:]
        raise ConsumerFailed(f"llama.cpp {what}: {_how_it_ended(child.returncode)}; its last lines:\n"
                             + "\n".join(said))


def logits(model: Path, ids: list[int], lora: Path | None = None, n_ctx: int = 16,
           f32_cache: bool = False) -> np.ndarray[Any, Any]:
    """The logits llama.cpp computes for ``ids`` (one row per position) with ``model`` and, if given,
    the LoRA adapter ``lora`` (and, ``f32_cache``, its K/V cache in f32), in a child process; a
    refusal, crash or hang raises ConsumerFailed."""
    with tempfile.TemporaryDirectory(prefix="ggfmt-consumer-") as scratch:
        out = Path(scratch) / "logits.npy"
        request = {"model": os.fspath(model), "lora": os.fspath(lora) if lora else None, "ids": ids,
                   "n_ctx": n_ctx, "out": os.fspath(out), "f32_cache": f32_cache}
        run_child(_CHILD, request, f"evaluating {model}" + (f" with {lora}" if lora else ""))
        result: np.ndarray[Any, Any] = np.load(out)
        return result
