"""The request body as the client sent it, with only `model` rewritten per target.

Why not decode-modify-encode: re-encoding costs time on every request and is not faithful (a
64-bit-overflowing integer, a float's spelling, key order, a vendor's odd field). The body is parsed
once to read `model` and `stream`; the rewrite then splices the new model id into the original
bytes. `"model":` can only appear unescaped as a JSON key (quotes inside strings are escaped), so a
single occurrence is the top-level key; with more than one (a tool schema with a `model` property),
or a key spelled with escapes, the body is re-encoded with the exact standard-library codec instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

__all__ = ["RequestBody"]

_MODEL_KEY = re.compile(rb'"model"\s*:\s*("(?:[^"\\]|\\.)*")')


class RequestBody:
    __slots__ = ("_span", "payload", "raw")

    def __init__(self, raw: bytes, payload: dict[str, Any]) -> None:
        self.raw = raw
        self.payload = payload
        self._span: tuple[int, int] | None = None
        matches = _MODEL_KEY.finditer(raw)
        first = next(matches, None)
        if first is not None and next(matches, None) is None:
            self._span = first.span(1)

    def with_model(self, model: str, *, drop: tuple[str, ...] = ()) -> bytes:
        """The body to send upstream: `model` replaced, the `drop` keys removed, all else as sent."""
        if self._span is not None and not drop:
            start, end = self._span
            return self.raw[:start] + orjson.dumps(model) + self.raw[end:]
        exact = json.loads(self.raw)
        exact["model"] = model
        for key in drop:
            exact.pop(key, None)
        return json.dumps(exact, ensure_ascii=False, separators=(",", ":")).encode()
