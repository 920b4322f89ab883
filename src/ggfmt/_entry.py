"""The ``fmt`` and ``ggfmt`` programs (and ``python -m ggfmt``): what runs before anything else.

A stop signal (Ctrl-C, SIGTERM, SIGHUP, SIGQUIT) that arrives while Python is still importing
the command line would otherwise end in a KeyboardInterrupt traceback, or reach a handler whose
own imports are half done. Until :func:`ggfmt.cli.main` installs the real handlers, these say
what happened in one line and exit with 128 + the signal: nothing has been written yet. This
module imports only ``os`` and ``signal``, both already loaded by the interpreter.
"""

from __future__ import annotations

import os
import signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType

_WORDS = {"SIGINT": "interrupted", "SIGTERM": "terminated", "SIGHUP": "hung up", "SIGQUIT": "quit"}
_SIGNALS = {getattr(signal, name): word for name, word in _WORDS.items() if hasattr(signal, name)}


def _stopped_early(signum: int, frame: FrameType | None) -> None:
    os.write(2, f"fmt: {_SIGNALS[signum]}; no output was written\n".encode())
    os._exit(128 + signum)


for _number in _SIGNALS:
    # a signal ignored when fmt started (nohup, a shell's background job) stays ignored
    if signal.getsignal(_number) is not signal.SIG_IGN:
        signal.signal(_number, _stopped_early)

# ggfmt does no linear algebra (its numpy work is element-wise), and OpenBLAS, which numpy loads,
# starts a thread per core at import: under a tight address-space limit that start fails, and
# the failure surfaces as a KeyboardInterrupt. One thread is all ggfmt uses; a value the user
# set is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def run() -> None:
    from .cli import run as run_command

    run_command()
