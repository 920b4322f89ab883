"""Text from files, shown safely: what a terminal would act on is shown escaped instead.

Names, keys, values and file names come from files a user may have downloaded. Printed as
they are, an ESC sequence clears the screen or retitles the terminal, a CR or LF forges an
output line, and a bidi override reorders what the user reads. :func:`escape` shows every
such character as a Python-style escape (``\\x1b``, ``\\u202e``) and every byte that was not
valid UTF-8 (a file name read with ``surrogateescape``) as ``\\xNN``; everything else,
non-ASCII letters included, is left as it is.
"""

from __future__ import annotations

# Characters that change the direction of the text around them: shown escaped even though
# Python calls some of them printable.
_BIDI = frozenset({0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)})


def _escaped(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def counted(n: int, noun: str) -> str:
    """``1 tensor``, ``2 tensors``: a count with its noun, as a summary line says it."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def escape(text: str) -> str:
    """``text`` with control characters, bidi controls and undecodable bytes escaped."""
    if text.isascii() and text.isprintable():
        return text
    if text.isprintable() and not any(ord(ch) in _BIDI for ch in text if ord(ch) >= 0x61C):
        return text
    return "".join(ch if ch.isprintable() and ord(ch) not in _BIDI else _escaped(ch) for ch in text)

