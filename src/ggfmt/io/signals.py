"""The stop signals (Ctrl-C, SIGTERM, SIGHUP, SIGQUIT), and holding them back for a while.

Closing the terminal (SIGHUP) or Ctrl-\\ (SIGQUIT) must clean up like Ctrl-C and SIGTERM, so all
four are handled alike (see :mod:`ggfmt.cli`).

Python runs a signal's handler in the main thread only, while the kernel gives a signal sent to
the process to any thread that does not block it. A signal taken by another thread only marks
its handler as due; the main thread is not woken, and if it is waiting (on that very thread, or
on the disk) the stop is answered only when the wait ends. So the threads ggfmt starts block
the stop signals, started inside :func:`stop_signals_blocked` (a thread inherits the mask of
the thread that starts it): every stop signal reaches the main thread, at once.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
                     if hasattr(signal, name))


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Stop signals wait until the block ends, in this thread and in any thread started inside it
    (for good: the started thread keeps the mask it was born with)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
