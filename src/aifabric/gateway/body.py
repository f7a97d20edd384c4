"""The request body as the client sent it: parsed once, checked, and with only `model` rewritten.

Parsing (`parse_json_body`) refuses, with a 400 and never a 5xx, what would make the request mean one
thing to the gateway and another to a backend, or what an upstream parser chokes on:
- nesting deeper than `MAX_DEPTH` (orjson stops at 1,024 levels and the stdlib's parser recurses until
  the interpreter's limit; some backends drop the connection far sooner, which looked like an outage);
- text that is not Unicode (a lone surrogate such as `"\\ud800"`: it cannot be encoded again);
- any top-level key written twice, plainly (`"stream"` twice) or where one spelling has escapes
  (`"mod\\u0065l"`, `"max_tok\\u0065ns"`, `"a\\/b"`): the gateway would route on one and the backend
  read the other, and backends' parsers disagree among themselves on which one wins (first, last, or an
  error).
The checks cost two C-speed passes over an ordinary body (brackets, a backslash) here, and in
`RequestBody` one regex pass counting each top-level key's `"name":` (it replaced the search for
`"model":` the rewrite needs anyway); a full decode with the key order kept runs only when those say it
might find something (a key spelled with escapes, a top-level key's name found twice).

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

from aifabric.errors import BadRequest
from aifabric.gateway.request_ids import shown

__all__ = ["MAX_DEPTH", "READ_KEYS", "RequestBody", "parse_json_body"]

MAX_DEPTH = 64  # JSON nesting accepted; OpenAI's own limit for a structured-output schema is far lower
READ_KEYS = ("model", "stream", "stream_options")  # the top-level keys the gateway interprets

_MODEL_KEY = re.compile(rb'"model"\s*:\s*("(?:[^"\\]|\\.)*")')
_KEY_ESCAPE = re.compile(rb"\\[u/]")  # the escapes that can spell one key two ways
_UNICODE_ESCAPE = re.compile(rb"\\u")
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def _too_deep(raw: bytes) -> bool:
    """Whether the JSON in `raw` nests deeper than MAX_DEPTH (C-speed passes, no recursion)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:  # one-byte counts: the fastest scans there are
        return False  # the common case: too few brackets to nest that deep
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    # Each pass removes the innermost level of pairs; whatever is left after MAX_DEPTH passes nests deeper.
    for _ in range(MAX_DEPTH):
        inner = brackets.replace(b"[]", b"").replace(b"{}", b"")
        if not inner or len(inner) == len(brackets):
            return False
        brackets = inner
    return bool(brackets)


def _repeated_key(raw: bytes) -> str | None:
    """The first key the top-level object holds twice (after unescaping), or None."""
    top: list[list[tuple[str, Any]]] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        top.append(items)  # the top-level object is the last one the decoder finishes
        return dict(items)

    json.loads(raw, object_pairs_hook=pairs)
    items = top[-1] if top else ()
    if len(items) == len({key for key, _ in items}):
        return None
    seen: set[str] = set()
    for key, _ in items:
        if key in seen:
            return key
        seen.add(key)
    return None  # pragma: no cover - the sizes differ only when a key repeats


def parse_json_body(body: bytes) -> dict[str, Any]:
    """The request's JSON object, or BadRequest saying what is wrong with it (never a 5xx)."""
    if not body:
        raise BadRequest("The request body is empty; send a JSON object with at least `model`.")
    if _too_deep(body):
        raise BadRequest(
            f"The JSON body nests deeper than {MAX_DEPTH} levels; flatten it.", code="json_too_deep"
        )
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:  # integers wider than 64 bits are valid JSON that orjson refuses
            payload = json.loads(body)
            # orjson also refuses lone surrogates, which the stdlib accepts: they cannot be encoded
            # again (to log, to forward, to echo), so they are refused here.
            json.dumps(payload, ensure_ascii=False).encode()
        except (ValueError, UnicodeError, RecursionError):
            raise BadRequest(
                f"We could not parse the JSON body of your request ({exc}). "
                "Send a JSON object, with `Content-Type: application/json`, in UTF-8 "
                "(no lone surrogates such as \\ud800)."
            ) from None
    if not isinstance(payload, dict):
        raise BadRequest("The request body must be a JSON object.")
    # A key may be spelled with escapes (`\\u0065`, or `\\/` for a slash): only a full decode can tell.
    # (The one-byte test first: most bodies have no backslash at all, and it is several times cheaper
    # than the regex, which looks for both escapes in one pass; regexes with a literal start scan
    # faster than `b"\\u" in body`.) A `\\/` can only spell twice a key that holds a slash, which
    # hardly any top-level key does: clients that escape every slash (PHP's json_encode) stay fast.
    if (
        b"\\" in body
        and (escape := _KEY_ESCAPE.search(body)) is not None
        and (
            escape[0] == b"\\u"
            or _UNICODE_ESCAPE.search(body, escape.end()) is not None
            or any("/" in key for key in payload)
        )
    ):
        _refuse_repeated(_repeated_key(body))
    return payload


_EXACT = re.compile(rb"(?!)")  # the marker of key sets only the exact decode checks
_KEY_PATTERNS: dict[tuple[str, ...], re.Pattern[bytes]] = {}
_MAX_PATTERNS = 256  # distinct key sets remembered; clients send a handful, a flood only recompiles
_MAX_PATTERN_KEYS = 64
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


def _key_pattern(keys: tuple[str, ...]) -> re.Pattern[bytes]:
    """The regex finding `"key":` for each of `keys` (compiled once per key set), or `_EXACT` for
    sets the plain spelling cannot stand for: many keys, or a key only escapes can write."""
    if len(keys) > _MAX_PATTERN_KEYS or any(not key or _NEEDS_ESCAPE.search(key) for key in keys):
        pattern = _EXACT
    else:
        names = b"|".join(re.escape(key.encode()) for key in keys)
        pattern = re.compile(rb'"(?:' + names + rb')"\s*:')
    if len(_KEY_PATTERNS) >= _MAX_PATTERNS:
        _KEY_PATTERNS.clear()
    _KEY_PATTERNS[keys] = pattern
    return pattern


def _refuse_repeated(key: str | None) -> None:
    if key is not None:
        raise BadRequest(
            f"The key `{shown(key, 64)}` appears more than once at the top level of the request body "
            "(perhaps spelled with escapes): the gateway and the backend could read different values; "
            "send it once.",
            param=key,
            code="duplicate_key",
        )


class RequestBody:
    """A parsed body (`parse_json_body`) ready to be sent with another `model`. Raises BadRequest
    when any key is written twice at the top level (the gateway and the backend could read
    different values; the splice would rewrite one `model`, the backend read the other)."""

    __slots__ = ("_span", "payload", "raw")

    def __init__(self, raw: bytes, payload: dict[str, Any]) -> None:
        self.raw = raw
        self.payload = payload
        self._span: tuple[int, int] | None = None
        keys = tuple(payload)
        pattern = _KEY_PATTERNS.get(keys) or _key_pattern(keys)
        # One pass finds every `"key":` of a top-level key's name, at any depth. Each top-level key is
        # there at least once (its spelling is plain: `parse_json_body` has already decoded exactly the
        # bodies with `\u`/`\/` escapes), so as many finds as keys means each key is written once.
        # More finds: a repeat, or the same name nested (a tool schema's `model` property): the exact
        # decode tells which.
        if pattern is _EXACT or len(pattern.findall(raw)) != len(keys):
            _refuse_repeated(_repeated_key(raw))
            return  # no repeat, but a key's name is also nested: with_model re-encodes (rare)
        if "model" not in payload:
            return
        # `"model"` is written once as a key: find it (as clients write it: `"model":"x"` or
        # `"model": "x"`) and its value without a regex call, which costs more than the search.
        at = raw.find(b'"model":')
        start = at + 8
        if at >= 0 and raw.startswith(b' "', start):
            start += 1
        end = raw.find(b'"', start + 1) if at >= 0 and raw.startswith(b'"', start) else -1
        if end > 0 and raw.find(b"\\", start, end) < 0:
            self._span = (start, end + 1)
        elif (match := _MODEL_KEY.search(raw)) is not None:  # other spacing, or escapes in the value
            self._span = match.span(1)
        # (Not a string: no span, with_model re-encodes.) A second spelling with escapes
        # (`"mod\\u0065l"`) was refused by parse_json_body's exact decode.

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
