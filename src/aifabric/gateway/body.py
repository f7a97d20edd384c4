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

    def with_model(self, model: str, *, drop: tuple[str, ...] = (), include_usage: bool = False) -> bytes:
        """The body to send upstream: `model` replaced, the `drop` keys removed, all else as sent.

        `include_usage` asks a stream for its final usage chunk (`stream_options.include_usage`), for
        the usage ledger: added in front of the client's own keys when it sent no `stream_options`."""
        if self._span is not None and not drop and not (include_usage and "stream_options" in self.payload):
            start, end = self._span
            body = self.raw[:start] + orjson.dumps(model) + self.raw[end:]
            if include_usage:
                brace = body.index(b"{") + 1  # `model` is in it, so another key follows
                body = body[:brace] + b'"stream_options":{"include_usage":true},' + body[brace:]
            return body
        exact = json.loads(self.raw)
        exact["model"] = model
        for key in drop:
            exact.pop(key, None)
        if include_usage:
            options = exact.get("stream_options")
            exact["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        return json.dumps(exact, ensure_ascii=False, separators=(",", ":")).encode()
