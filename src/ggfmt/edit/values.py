"""How ``fmt edit`` reads a value given as text: the type it takes (``--set-type``, the key's present
type, the type the GGUF specification gives it, or what the text reads as), the value in that type,
range-checked, and the text of a ``--set-file``. Command-line text must be UTF-8.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import construct as cs

from ..errors import UsageError
from ..schema.compiler import FLOAT_MAX, INT_RANGES


def utf8(text: str, what: str) -> str:
    """``text`` from the command line, refused when it is not UTF-8 (a shell under LANG=C passes
    other bytes through as surrogates): GGUF keys, values and tensor names are UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        shown = text.encode("utf-8", "surrogateescape")[: e.start + 1]
        raise UsageError(f"{what}: not UTF-8 text (byte {shown[-1:]!r} after {shown[:-1]!r}); GGUF keys, values "
                         "and tensor names are UTF-8") from None
    return text


def pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for text in values:
        utf8(text, flag)
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise UsageError(f"{flag} {text!r}: expected NAME=VALUE")
        if name in out:
            raise UsageError(f"{flag} {name}: given twice")
        out[name] = value
    return out


def typed_value(key: str, type_name: str, text: str, codes: dict[str, int]) -> tuple[int, Any]:
    """(value_type code, value as the schema builds it) of ``text`` read as ``type_name``:
    u8 ... f64, bool, str, or an array TYPE[] given as JSON (``[1, 2]``, ``["a", "b"]``)."""
    if type_name.endswith("[]"):
        item_type = type_name[:-2]
        try:
            items = json.loads(text)
        except RecursionError:
            raise UsageError(f"--set {key}: the JSON value is nested too deeply (a GGUF array holds values, "
                             "not arrays of arrays)") from None
        except ValueError:
            raise UsageError(f"--set {key}: an array is given as JSON ([1, 2, 3] or [\"a\", \"b\"]), not "
                             f"{text[:60]!r}") from None
        if not isinstance(items, list):
            raise UsageError(f"--set {key}: a {type_name} value is a JSON list")
        if item_type not in codes or item_type == "array":
            raise UsageError(f"--set-type {key}={type_name}: arrays of {item_type} are not set from text")
        item_code = codes[item_type]
        values = [_item(key, item_type, v) for v in items]
        return codes["array"], cs.Container(item_type=item_code, count=len(values), items=cs.ListContainer(values))
    if type_name not in codes or type_name == "array":
        known = ", ".join(n for n in codes if n != "array")
        raise UsageError(f"--set-type {key}={type_name}: not a GGUF type (one of {known}, or TYPE[] for an array)")
    return codes[type_name], _item(key, type_name, text)


def _item(key: str, type_name: str, value: Any) -> Any:
    """One value of ``type_name`` from text or from a JSON item, range-checked."""
    what = f"--set {key}"
    if type_name == "str":
        if not isinstance(value, str):
            raise UsageError(f"{what}: expected a string, got {value!r}")
        return value
    if type_name == "bool":
        words = {"true": True, "false": False, "1": True, "0": False}
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in words:
            return words[value.lower()]
        raise UsageError(f"{what}: a bool is true or false, not {value!r}")
    if type_name in INT_RANGES:
        number = _integer(value) if isinstance(value, str) else value
        if not isinstance(number, int) or isinstance(number, bool):
            raise UsageError(f"{what}: a {type_name} is an integer, not {value!r}")
        lo, hi = INT_RANGES[type_name]
        if not lo <= number <= hi:
            raise UsageError(f"{what}: {number} does not fit a {type_name} ({lo} to {hi})")
        return number
    if type_name in ("f32", "f64"):
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise UsageError(f"{what}: a {type_name} is a number, not {_short(value)}") from None
        limit = FLOAT_MAX[type_name]
        written_infinite = isinstance(value, str) and value.strip().lstrip("+-").lower() in ("inf", "infinity")
        if not math.isnan(number) and abs(number) > limit and not written_infinite:
            raise UsageError(f"{what}: {_short(value)} does not fit an {type_name} (largest {limit:g}); "
                             "write inf for an infinity")
        return number
    raise UsageError(f"{what}: values of type {type_name} are not set from text")


# A metadata string is read into memory by every program that loads the model (llama.cpp reads the
# whole header at load): far above any chat template (kilobytes), far below what would hurt.
VALUE_FILE_LIMIT = 64 << 20


def read_value_file(key: str, path: Path) -> str:
    """The text of a regular file of at most VALUE_FILE_LIMIT bytes, exactly as it is (line ends kept)."""
    from ..io.inputs import open_input

    what = f"--set-file {key}={path}"
    try:
        fd = open_input(path)
    except UsageError as e:
        raise UsageError(f"{what}: {str(e).removeprefix(f'{path}: ')}") from None
    try:
        size = os.fstat(fd).st_size
        if size > VALUE_FILE_LIMIT:
            raise UsageError(f"{what}: {size:,} bytes; a metadata string is at most {VALUE_FILE_LIMIT >> 20} MiB "
                             "(every program that loads the model holds its header in memory)")
        data = os.pread(fd, size + 1, 0)
    except OSError as e:
        raise UsageError(f"{what}: cannot be read: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) != size:
        raise UsageError(f"{what}: the file changed size while it was read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{what}: not UTF-8 text (byte {e.start}); GGUF strings are UTF-8") from None


STANDARD_KEYS = Path(__file__).with_name("gguf-standard-keys.yaml")


@functools.cache
def _standard_keys() -> list[tuple[re.Pattern[str], str]]:
    import yaml

    table = yaml.safe_load(STANDARD_KEYS.read_text(encoding="utf-8"))
    holes = {re.escape("{arch}"): "[^.]+", re.escape("{n}"): "[0-9]+"}
    out = []
    for key, type_name in table.items():
        pattern = re.escape(key)
        for hole, matches in holes.items():
            pattern = pattern.replace(hole, matches)
        out.append((re.compile(pattern), str(type_name)))
    return out


def standard_type(key: str) -> str | None:
    """The type the GGUF specification gives ``key`` (edit/gguf-standard-keys.yaml), if it names one."""
    return next((type_name for pattern, type_name in _standard_keys() if pattern.fullmatch(key)), None)


_DECIMAL = re.compile(r"[+-]?[0-9]+")
_PREFIXED = re.compile(r"[+-]?0[xXoObB][0-9a-fA-F_]+")


def _integer(text: str) -> int | None:
    """An integer written in decimal (leading zeros allowed: ``010`` is ten) or with a 0x, 0o or 0b
    prefix; None for anything else, or for more digits than any GGUF integer has."""
    text = text.strip()
    if len(text) > 70:  # a u64 has 20 decimal digits, 66 characters in binary
        return None
    if _DECIMAL.fullmatch(text):
        return int(text, 10)
    if _PREFIXED.fullmatch(text):
        with contextlib.suppress(ValueError):
            return int(text, 0)
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def guess(key: str, text: str) -> str:
    """The type of a new key given without --set-type, from what the text reads as: bool, u32,
    i64 (u64 past it), f32 (f64 past its range), else str. Documented in ``fmt edit --help``."""
    if text.lower() in ("true", "false"):
        return "bool"
    if _DECIMAL.fullmatch(text.strip()):
        whole = _integer(text)
        for kind in ("u32", "i64", "u64"):
            lo, hi = INT_RANGES[kind]
            if whole is not None and lo <= whole <= hi:
                return kind
        raise UsageError(f"--set {key}: {_short(text)} does not fit any GGUF integer type; give --set-type "
                         f"{key}=str to keep it as text")
    try:
        number = float(text)
    except ValueError:
        return "str"
    return "f32" if math.isinf(number) or math.isnan(number) or abs(number) <= FLOAT_MAX["f32"] else "f64"
