"""What a client API other than chat completions needs from the forwarder: a `Dialect`.

A dialect is fixed by the route a request came in on (`/v1/messages` -> Anthropic Messages). Per
attempt, the forwarder asks the target's endpoint whether it serves that API natively
(`Endpoint.serves_natively`):

    native      the client's body goes to the backend's own route (`native_request`), `model` rewritten,
                unless the request sets a field that route would ignore (`fields`, `Endpoint.honours`);
                the answer comes back as the backend wrote it (`native_answer` may normalize it)
    translated  `to_chat(payload)` -> POST /chat/completions -> `from_chat(answer)`; a stream goes through
                a `StreamTranslator` chunk by chunk as the chat chunks arrive (nothing is buffered
                beyond one incomplete SSE event)
    local       neither possible, but the gateway can answer itself (`local_answer`, e.g. an estimate)

The translation functions are pure (dicts in, dicts out), one module per dialect; the forwarder does
the I/O, the retries and the failover, which may cross from a native target to a translated one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import orjson

from aifabric.backends.base import RequestField
from aifabric.config.schema import ClientApi
from aifabric.observability.logging import redact

if TYPE_CHECKING:
    from aifabric.routing.table import Endpoint

__all__ = ["ChatStreamTranslator", "Dialect", "StreamTranslator", "sse_events"]


class StreamTranslator(Protocol):
    """Turns the bytes of an upstream chat-completions stream into the client's stream, as they come."""

    def feed(self, chunk: bytes) -> bytes:
        """Bytes of the upstream stream in, the client's bytes for the complete events among them out."""
        ...

    def finish(self) -> bytes:
        """The upstream stream ended: what the client still needs to see a complete stream."""
        ...


class BodyLike(Protocol):
    """The client's request body as the forwarder handles it (`gateway.body.RequestBody`)."""

    payload: dict[str, Any]

    def with_model(self, model: str, *, drop: tuple[str, ...] = ()) -> bytes: ...


class Dialect:
    """One client API and how to serve it on a target that does or does not speak it natively.

    Subclasses set `api` and `native_path` and override what their API needs; the defaults send the
    body natively with `model` rewritten and have no translation (such an API is only served by
    targets that speak it: the others are skipped).
    """

    api: ClassVar[ClientApi]
    native_path: ClassVar[str]  # under the backend's base URL ("/messages" -> /v1/messages)
    content_type: ClassVar[str] = "application/json"
    translatable: ClassVar[bool] = False  # to_chat/from_chat/stream_translator are implemented
    answers_locally: ClassVar[bool] = False  # local_answer is implemented
    # The Content-Type of the native request when it is not JSON (a multipart upload's, boundary and all).
    sent_content_type: str | None = None
    # The fields of `RequestField` this request sets, found once per request by dialects whose API has
    # such fields: a target whose native route ignores one of them gets the request translated.
    fields: frozenset[RequestField] = frozenset()

    def can_serve(self, endpoint: Endpoint, stream: bool) -> bool:
        """Whether a request of this API may be sent to `endpoint` at all (natively or translated)."""
        return self.translatable or self.answers_locally or self.native_route(endpoint, stream)

    def native_route(self, endpoint: Endpoint, stream: bool) -> bool:
        """Whether this attempt goes to the backend's own route (else translated, else local)."""
        if not endpoint.serves_natively(self.api, stream):
            return False
        return not self.fields or endpoint.honours(self.api, self.fields)  # mostly none: no call

    # -- native ---------------------------------------------------------------------------------------

    def native_request(self, endpoint: Endpoint, body: BodyLike, model: str) -> tuple[str, bytes]:
        """(path at the backend's origin, body) of the native request."""
        return endpoint.prefix + self.native_path, body.with_model(model)

    def native_headers(self) -> list[tuple[str, str]]:
        """Headers of the client's that the backend's own route may need (the API's version, say)."""
        return []

    def native_answer(self, endpoint: Endpoint, data: bytes, model: str) -> bytes:
        """A non-streamed native answer as the client gets it (normalized where kinds differ; its
        Content-Type is kept, so a normalized answer stays in the upstream's format)."""
        return data

    def native_stream(self) -> StreamTranslator | None:
        """A pass-through watcher for a native stream (it may rewrite events as they go), or None to
        relay the backend's bytes untouched."""
        return None

    # -- translated -----------------------------------------------------------------------------------

    def to_chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The chat-completions request that does what the client's request asks (without `model`)."""
        raise NotImplementedError

    def from_chat(self, chat: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        """The client's answer from the chat-completions answer."""
        raise NotImplementedError

    def stream_translator(self, payload: dict[str, Any], upstream_usage: bool) -> StreamTranslator:
        """A translator for one streamed answer; `upstream_usage`: the chat stream ends with a usage
        chunk (else the translator counts what it saw)."""
        raise NotImplementedError

    def local_answer(self, payload: dict[str, Any]) -> tuple[bytes, list[tuple[str, str]]]:
        """(body, extra headers) answered by the gateway itself when no native target is at hand."""
        raise NotImplementedError

    # -- errors ---------------------------------------------------------------------------------------

    def stream_error(self, message: str) -> bytes:
        """The end of a stream cut by a backend failure, as this API's clients expect to read it."""
        error = {"message": message, "type": "upstream_error", "param": None, "code": "stream_interrupted"}
        return b"\n\ndata: " + orjson.dumps({"error": error}) + b"\n\ndata: [DONE]\n\n"


def sse_events(buffer: bytearray) -> Iterator[dict[str, Any] | None]:
    """The complete SSE events at the head of `buffer` (consumed): each event's JSON `data`, or None
    for `[DONE]`. Comments, other fields and data that is not a JSON object are skipped."""
    while True:
        end = buffer.find(b"\n\n")
        cut = 2
        crlf = buffer.find(b"\r\n\r\n")
        if crlf != -1 and (end == -1 or crlf < end):
            end, cut = crlf, 4
        if end == -1:
            return
        event = bytes(buffer[:end])
        del buffer[: end + cut]
        data = b"".join(line[5:].strip() for line in event.splitlines() if line.startswith(b"data:"))
        if not data:
            continue
        if data == b"[DONE]":
            yield None
            continue
        with contextlib.suppress(orjson.JSONDecodeError):
            obj = orjson.loads(data)
            if isinstance(obj, dict):
                yield obj


class ChatStreamTranslator:
    """Base of the chat-stream translators: splits the upstream bytes into chat chunks (objects) and
    hands each to `on_chunk`; subclasses return the client's events as bytes."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        self._buffer += chunk
        out: list[bytes] = []
        for obj in sse_events(self._buffer):
            if obj is None:
                continue  # [DONE]: the end is written by finish(), once
            error = obj.get("error")
            if isinstance(error, dict):
                # An upstream's error event may quote the key the gateway sent it: every dialect's
                # error event is written from the redacted message.
                if isinstance(error.get("message"), str):
                    error = dict(error, message=redact(error["message"]))
                out.append(self.on_error(error))
                continue
            out.append(self.on_chunk(obj))
        return b"".join(out)

    def finish(self) -> bytes:
        if self.done:
            return b""
        self.done = True
        return self.on_end()

    def on_chunk(self, chunk: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def on_error(self, error: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def on_end(self) -> bytes:
        raise NotImplementedError
