"""`POST /v1/audio/transcriptions` on roles of kind `transcription`: the client's multipart upload
passed through to the backend's own route (vLLM, llama-server, OpenAI), only its `model` part rewritten.

The body is not parsed beyond the parts' headers: the audio bytes are never copied into a structure.
The answer is the backend's (`{"text": ...}`, or text/SRT/VTT as `response_format` asks), in one shape
whatever the backend's dialect:

    OpenAI            {"text", "usage"?}; streamed: `transcript.text.delta` events, one `transcript.text.done`
    llama-server      the same events (then `[DONE]`); unstreamed, the `done` event itself as the body
                      (`"type": "transcript.text.done"` beside `text` and `usage`)
    vLLM              {"text", "usage"?}; streamed: chat-like `transcription.chunk` objects
                      (`choices[0].delta.content`), a last `usage` chunk when asked, then `[DONE]`

Streams are rewritten event by event into OpenAI's (`TranscriptionStream`), nothing held back beyond one
incomplete SSE event; the unstreamed llama-server answer loses its `type`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from aifabric.config.schema import ClientApi
from aifabric.errors import BadRequest
from aifabric.gateway.dialects.base import Dialect, StreamTranslator, sse_events
from aifabric.observability.logging import redact

if TYPE_CHECKING:
    from aifabric.routing.table import Endpoint

__all__ = ["MultipartBody", "TranscriptionDialect", "TranscriptionStream"]

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_NAME = re.compile(rb'name="([^"]*)"', re.IGNORECASE)


class MultipartBody:
    """A multipart/form-data body with its text fields read (`payload`) and `model` replaceable."""

    __slots__ = ("_model_span", "payload", "raw")

    def __init__(self, raw: bytes, content_type: str) -> None:
        match = _BOUNDARY.search(content_type)
        if not content_type.lower().startswith("multipart/form-data") or match is None:
            raise BadRequest(
                "Send the audio as multipart/form-data (a `file` part and a `model` field).",
                code="invalid_body",
            )
        self.raw = raw
        self.payload: dict[str, Any] = {}
        self._model_span: tuple[int, int] | None = None
        delimiter = b"--" + match.group(1).encode("latin-1")
        position = raw.find(delimiter)
        while position != -1:
            head_start = position + len(delimiter) + 2  # past the boundary's CRLF
            head_end = raw.find(b"\r\n\r\n", head_start)
            if head_end == -1:
                break
            following = raw.find(b"\r\n" + delimiter, head_end)
            if following == -1:
                break
            head = raw[head_start:head_end]
            name = _NAME.search(head)
            if name is not None and b"filename=" not in head.lower():
                key = name.group(1).decode("utf-8", "replace")
                if key not in self.payload:  # small text fields only: the file is never decoded
                    self.payload[key] = raw[head_end + 4 : following].decode("utf-8", "replace")
                    if key == "model":
                        self._model_span = (head_end + 4, following)
            position = following + 2
        if self._model_span is None:
            raise BadRequest("You must provide a model parameter.", param="model", code="missing_model")

    def with_model(self, model: str, *, drop: tuple[str, ...] = ()) -> bytes:
        assert self._model_span is not None
        start, end = self._model_span
        return self.raw[:start] + model.encode() + self.raw[end:]


class TranscriptionDialect(Dialect):
    api: ClassVar[ClientApi] = ClientApi.TRANSCRIPTION
    native_path: ClassVar[str] = "/audio/transcriptions"

    def __init__(self, content_type: str) -> None:
        self.sent_content_type = content_type

    def native_answer(self, endpoint: Endpoint, data: bytes, model: str) -> bytes:
        # Only llama-server's JSON answer is rewritten, found without parsing the others (the quoted
        # name cannot occur inside the text, where JSON escapes quotes): its `type` names a stream
        # event, which the unstreamed answer is not.
        if data[:1] != b"{" or _DONE_TYPE not in data:
            return data
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return data
        if isinstance(doc, dict) and doc.get("type") == "transcript.text.done":
            del doc["type"]
            return orjson.dumps(doc)
        return data

    def native_stream(self) -> StreamTranslator:
        return TranscriptionStream()

    def stream_error(self, message: str) -> bytes:
        # OpenAI's transcription streams have no `[DONE]`: the error event ends it (the SDK raises).
        error = {"message": message, "type": "upstream_error", "param": None, "code": "stream_interrupted"}
        return b"\n\ndata: " + orjson.dumps({"error": error}) + b"\n\n"


_DONE_TYPE = b'"transcript.text.done"'


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _token_usage(usage: dict[str, Any]) -> dict[str, Any] | None:
    """OpenAI's `tokens` usage from a chat-style one (vLLM's `prompt_tokens`/`completion_tokens`)."""
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    total = usage.get("total_tokens")
    return {
        "type": "tokens",
        "input_tokens": prompt,
        "output_tokens": completion,
        "total_tokens": total if isinstance(total, int) else prompt + completion,
    }


class TranscriptionStream:
    """A backend's transcription stream as OpenAI's events, one upstream event at a time.

    OpenAI-shaped events (`transcript.text.*`: OpenAI, llama-server) go on as they came (`type` put
    first, which is how a stream's end is recognized, `forward._ends_stream`); a chat-like
    chunk (vLLM) becomes a `transcript.text.delta` per non-empty `delta.content`, its `usage` kept for
    the `transcript.text.done` written at the upstream's `[DONE]` (or end) with the text seen. An error
    event is passed on (redacted) and ends the stream; `[DONE]` itself is not passed on.
    """

    __slots__ = ("_buffer", "_ended", "_text", "_usage")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._text: list[str] = []
        self._usage: dict[str, Any] | None = None
        self._ended = False

    def feed(self, chunk: bytes) -> bytes:
        self._buffer += chunk
        out = [self._done() if obj is None else self._on(obj) for obj in sse_events(self._buffer)]
        return b"".join(out)

    def finish(self) -> bytes:
        out = self.feed(b"\n\n") if self._buffer.strip() else b""  # an unterminated last event
        return out + self._done()

    def _on(self, obj: dict[str, Any]) -> bytes:
        if self._ended:
            return b""
        kind = obj.get("type")
        if isinstance(kind, str) and kind.startswith("transcript.text."):
            self._ended = kind == "transcript.text.done"
            return _event({"type": kind, **obj})  # `type` first (llama-server sorts its keys)
        error = obj.get("error")
        if isinstance(error, dict):
            self._ended = True
            if isinstance(error.get("message"), str):
                error = dict(error, message=redact(error["message"]))
            return _event({"error": error})
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self._usage = usage
        out = []
        choices = obj.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and content:
                self._text.append(content)
                out.append(_event({"type": "transcript.text.delta", "delta": content}))
        return b"".join(out)

    def _done(self) -> bytes:
        if self._ended:
            return b""
        self._ended = True
        done: dict[str, Any] = {"type": "transcript.text.done", "text": "".join(self._text)}
        usage = _token_usage(self._usage) if self._usage is not None else None
        if usage is not None:
            done["usage"] = usage
        return _event(done)
