"""The standard streams of the ``fmt`` program, guarded.

stdout carries a command's product (``fmt parse``'s report) or only its summary (``fmt to-gguf``
writes a file); stderr carries errors and warnings. Either may be closed (``>&-``), full
(``>/dev/full``) or a pipe whose reader went away (``| head``):

* stderr failing never changes the outcome: what cannot be said is dropped, and the status is
  still the command's;
* stdout failing ends the command with :class:`StdoutFailed`, which the command line turns into
  the right status: a reader that went away is no error (and ``fmt diff`` keeps its 0 or 1), a
  closed or full stdout is one line on stderr and status 2, unless the command's output file was
  already written in full, which is then said, and the status is 0.
"""

from __future__ import annotations

import io
import sys
from typing import Any


class StdoutFailed(Exception):
    """Writing to stdout failed with ``error`` (an OSError)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _Guarded:
    """A text stream whose write failures are swallowed (stderr) or raised as StdoutFailed (stdout)."""

    def __init__(self, stream: Any, raising: bool) -> None:
        self._stream = stream
        self._raising = raising
        self.failed = False

    def _fail(self, error: OSError) -> None:
        self.failed = True
        if self._raising:
            raise StdoutFailed(error) from None

    def write(self, text: str) -> int:
        if self._stream is None:
            self._fail(OSError(9, "Bad file descriptor (it is closed)"))
            return len(text)
        if self.failed and not self._raising:
            return len(text)
        try:
            return int(self._stream.write(text))
        except (OSError, ValueError) as e:  # ValueError: the stream was closed under Python
            self._fail(e if isinstance(e, OSError) else OSError(9, str(e)))
            return len(text)

    def flush(self) -> None:
        if self._stream is None or (self.failed and not self._raising):
            return
        try:
            self._stream.flush()
        except (OSError, ValueError) as e:
            self._fail(e if isinstance(e, OSError) else OSError(9, str(e)))

    def isatty(self) -> bool:
        try:
            return self._stream is not None and bool(self._stream.isatty())
        except (OSError, ValueError):
            return False

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, ... of the stream itself
        if self._stream is None:
            raise AttributeError(name)
        return getattr(self._stream, name)


def guard_standard_streams() -> None:
    """Put the guards around sys.stdout and sys.stderr (the ``fmt`` program only, not a caller's)."""
    for stream in (sys.stdout, sys.stderr):
        # an encoding that cannot show a character (the multiplication sign of array types) gets it
        # escaped, not an error
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    sys.stdout = _Guarded(sys.stdout, raising=True)
    sys.stderr = _Guarded(sys.stderr, raising=False)
