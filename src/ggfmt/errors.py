"""The errors ggfmt reports to its users.

Every problem with an input becomes one line: which file, which field (its path in the
schema), which byte offset and what was expected.  The command line prints ``str(error)``
and exits with status 2; nothing else is shown.
"""

from __future__ import annotations


class GgfmtError(Exception):
    """Base class of the errors that end a command with exit status 2."""


class UsageError(GgfmtError):
    """The command line or its arguments cannot be acted on."""


class SchemaError(GgfmtError):
    """A schema or mapping table is malformed (a problem of the schema, not of the input)."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.message = message


class FormatError(GgfmtError):
    """An input file does not match its schema.

    ``path`` is the field's dotted path in the schema (``opt.ctx.state.m.ne``), ``offset``
    the absolute byte offset where that field starts.  ``file`` is filled in by the engine
    once the error has travelled up to the place that knows the file name.
    """

    def __init__(self, path: str, offset: int | None, message: str, file: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset
        self.message = message
        self.file = file

    def __str__(self) -> str:
        parts = []
        if self.path:
            parts.append(f"field {self.path}")
        if self.offset is not None:
            parts.append(f"at byte {self.offset}")
        where = " ".join(parts)
        head = ": ".join(x for x in (self.file, where) if x)
        return f"{head}: {self.message}" if head else self.message


class Truncated(FormatError):
    """The file ends inside a field: ``needed`` bytes from ``offset``, ``available`` left.

    The message is the one line users read; the numbers are for code that decides on the kind
    (a prefix of a file, a probe of a size) without reading the message.
    """

    def __init__(self, path: str, offset: int | None, needed: int, available: int, message: str | None = None,
                 file: str | None = None) -> None:
        super().__init__(path, offset, message or f"{needed} bytes expected, only {available} left in the file", file)
        self.needed = needed
        self.available = available


class ValidationFailed(FormatError):
    """A field was read whole but its value is not one its schema allows: ``expected`` (a value,
    a list of values, a bound or an expression's text), ``actual`` the value read."""

    def __init__(self, path: str, offset: int | None, expected: object, actual: object, message: str,
                 file: str | None = None) -> None:
        super().__init__(path, offset, message, file)
        self.expected = expected
        self.actual = actual


class InputShrank(GgfmtError):
    """An input ended before bytes its header (checked against its size when it was parsed) says
    it has: it shrank while it was read, as when a download restarts over it. ``file`` is filled
    in where the name is known."""

    def __init__(self, offset: int, missing: int, file: str | None = None) -> None:
        super().__init__(offset, missing, file)
        self.offset, self.missing, self.file = offset, missing, file

    def __str__(self) -> str:
        return (f"{self.file or 'an input'}: the file ended at byte {self.offset:,}, {self.missing:,} bytes short "
                "of what it held when it was opened: it shrank while it was read (is another program writing it?)")
