"""What the gateway reads of a stream's usage on the way through, without parsing it as JSON.

UsageTap      for the usage ledger: keeps the backend's `"usage": {...}` objects as they pass
              (and takes the usage-only chunk out when only the gateway asked for it), else counts
              the content events
UsageCounter  for a client that asked `stream_options.include_usage` of a backend that ignores it
              (llama-cpp-python): counts the content chunks and adds the final usage chunk
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import orjson

__all__ = ["UsageCounter", "UsageTap", "split_events", "wants_usage"]

_DONE = b"data: [DONE]\n\n"

# How bytes that end at an event boundary end: a blank line after LF or CRLF lines.
_EVENT_ENDS = (b"\n\n", b"\n\r\n")


def split_events(held: bytes, data: bytes) -> tuple[bytes, bytes]:
    """`held` (what an earlier read left incomplete) and `data`, split into their whole server-sent
    events and the incomplete rest to hold until more comes: the cut is after the last blank line.
    A read that ends an event, as nearly every read of a stream does, costs one `endswith`."""
    if held:
        data = held + data
    if data.endswith(_EVENT_ENDS):
        return data, b""
    lf = data.rfind(b"\n\n")
    crlf = data.rfind(b"\n\r\n")
    whole = max(lf + 2 if lf >= 0 else 0, crlf + 3 if crlf >= 0 else 0)
    return data[:whole], data[whole:]


_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_CONTENT = re.compile(rb'"(?:content|text)"\s*:\s*"(?!")')


class UsageTap:
    """Watches a stream for the usage ledger: keeps the backend's usage object when one passes (and
    takes its chunk out when only the gateway asked for it), else counts the content events (one
    token each, as llama.cpp's servers stream them). No JSON is parsed here."""

    __slots__ = ("count", "events", "held", "hide", "tokens", "usage")

    def __init__(self, *, hide: bool, count: bool) -> None:
        self.hide = hide
        self.count = count
        self.tokens = 0
        self.events = 0
        self.usage: bytes | None = None
        # While hiding: the incomplete event a read ended with, until its rest comes. The usage-only
        # event is taken out whole or not at all; cut between two reads, neither read holds it whole
        # and the client would get the event (or its second half) it never asked for.
        self.held = b""

    @property
    def completion_tokens(self) -> int:
        """Counted content events; for a backend that should have sent usage and did not, its events
        less the role and finish ones (a rough figure: the row is marked estimated either way)."""
        return self.tokens if self.count else max(0, self.events - 3)

    def feed(self, chunk: bytes, last: bool = False) -> bytes:
        """`chunk` as the client gets it: whole events only while hiding (`last`: what `flush` passes
        on, held no longer). A read that ends an event, as nearly all do, costs one `endswith`."""
        if self.hide and not last and (self.held or not chunk.endswith(_EVENT_ENDS)):
            chunk, self.held = split_events(self.held, chunk)
        self.events += chunk.count(b"data:")
        if self.count:
            self.tokens += len(_CONTENT.findall(chunk))
        if b'"usage"' not in chunk:
            return chunk
        # Every usage object is kept (bounded): an Anthropic stream has one at its start (input) and
        # one near its end (output), maybe in one chunk; OpenAI's has one, in the last chunk.
        hide_at = -1
        for found in _USAGE_OBJECT.finditer(chunk):
            at = found.start()
            if self.usage is None:
                self.usage = chunk[at : at + 1024]
                hide_at = at if self.hide else -1
            elif len(self.usage) < 4096:
                self.usage += b"\n" + chunk[at : at + 1024]
        return chunk if hide_at < 0 else _without_event(chunk, hide_at)

    def flush(self) -> bytes:
        """The stream is over (ended, or broke off): what was held of its last event, looked at and
        passed on as it came (an event the backend did not end with a blank line is still one)."""
        held, self.held = self.held, b""
        return self.feed(held, last=True) if held else held


def _without_event(chunk: bytes, at: int) -> bytes:
    """`chunk` without the SSE event around offset `at`, when that event is a usage-only chunk."""
    start = chunk.rfind(b"\n\n", 0, at)
    start = 0 if start < 0 else start + 2
    end = chunk.find(b"\n\n", at)
    end = len(chunk) if end < 0 else end + 2
    event = chunk[start:end]
    if not event.startswith(b"data:") or not re.search(rb'"choices"\s*:\s*\[\s*\]', event):
        return chunk  # usage riding on a content chunk: the client gets it as the backend sent it
    return chunk[:start] + chunk[end:]


def wants_usage(payload: dict[str, Any]) -> bool:
    opts = payload.get("stream_options")
    return isinstance(opts, dict) and bool(opts.get("include_usage"))


class UsageCounter:
    """For backends that ignore `stream_options.include_usage` (llama-cpp-python): count the content
    chunks as they pass (one token each there) and add the final usage chunk the client asked for.
    Prompt tokens are counted with the model's tokenizer when it is local and loaded, else estimated
    from the prompt's length; the response says so in a header."""

    def __init__(self, payload: dict[str, Any], prompt: int | None = None) -> None:
        self._buf = b""
        self._completion = 0
        self._meta: dict[str, Any] = {}
        self._prompt = _estimate_prompt_tokens(payload) if prompt is None else prompt
        self._held_done = False

    def feed(self, chunk: bytes) -> bytes:
        self._buf += chunk
        out = []
        while b"\n\n" in self._buf:
            event, self._buf = self._buf.split(b"\n\n", 1)
            if event.strip() == b"data: [DONE]":
                self._held_done = True  # re-sent after the usage chunk
                continue
            self._count(event)
            out.append(event + b"\n\n")
        return b"".join(out)

    def _count(self, event: bytes) -> None:
        if not event.startswith(b"data:"):
            return
        with contextlib.suppress(orjson.JSONDecodeError):
            obj = orjson.loads(event[5:])
            if isinstance(obj, dict):
                for key in ("id", "created", "model", "object"):
                    if key in obj:
                        self._meta[key] = obj[key]
                choices = obj.get("choices")
                for choice in choices if isinstance(choices, list) else ():
                    if not isinstance(choice, dict):
                        continue  # not ours to judge: passed through as sent, not counted
                    delta = choice.get("delta")
                    if (isinstance(delta, dict) and delta.get("content")) or choice.get("text"):
                        self._completion += 1

    def finish(self) -> bytes:
        usage_chunk = dict(self._meta)
        usage_chunk["choices"] = []
        usage_chunk["usage"] = {
            "prompt_tokens": self._prompt,
            "completion_tokens": self._completion,
            "total_tokens": self._prompt + self._completion,
        }
        return self._buf + b"data: " + orjson.dumps(usage_chunk) + b"\n\n" + _DONE


def _estimate_prompt_tokens(payload: dict[str, Any]) -> int:
    text = 0
    for message in payload.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            text += len(content) + 4  # role markers of the chat template
    prompt = payload.get("prompt")
    if isinstance(prompt, str):
        text += len(prompt)
    return max(1, text // 4)
