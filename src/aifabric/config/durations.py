"""Durations (`30s`, `5m`, `1h30m`, `250ms`, bare seconds) and sizes (`32MiB`, `1MB`) in the fabric file.

Pure parsing: the loader turns a `ValueError` from here into a located problem with a fix.
"""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_duration", "parse_size"]

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# One or more `<number><unit>` parts, Go style: `1h30m`, `1.5s`, `250ms`.
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h|d)")
_DURATION_WHOLE = re.compile(r"(?:(?:\d+(?:\.\d+)?|\.\d+)(?:ms|s|m|h|d))+")

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")


def parse_duration(value: object) -> float:
    """Seconds from `30s`, `5m`, `1h`, `250ms`, `1h30m`, or a bare non-negative number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            if not _DURATION_WHOLE.fullmatch(text):
                raise ValueError(f"{value!r} is not a duration") from None
            seconds = sum(float(num) * _DURATION_UNITS[unit] for num, unit in _DURATION_PART.findall(text))
    else:
        raise ValueError(f"{value!r} is not a duration")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a duration (it must be finite and not negative)")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from `32MiB`, `1MB`, `512KiB`, `1GB` or a bare number of bytes (decimal units are powers of
    1000, binary units powers of 1024, as the IEC prefixes say)."""
    if isinstance(value, bool):
        raise ValueError("a size, not a boolean")
    if isinstance(value, int):
        size = float(value)
    elif isinstance(value, str):
        match = _SIZE.fullmatch(value.strip().lower())
        if not match or match.group(2) not in _SIZE_UNITS:
            raise ValueError(f"{value!r} is not a size")
        size = float(match.group(1)) * _SIZE_UNITS[match.group(2)]
    else:
        raise ValueError(f"{value!r} is not a size")
    if size < 0 or size != int(size):
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(size)


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration, for messages: 300.0 -> `5m`, 0.25 -> `250ms`."""
    for unit, factor in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= factor and (seconds / factor).is_integer():
            return f"{int(seconds / factor)}{unit}"
    if seconds == 0:
        return "0s"
    millis = seconds * 1000
    if millis.is_integer():
        return f"{int(millis)}ms"
    return f"{seconds:g}s"
