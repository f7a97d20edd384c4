"""The Responses API as a `Dialect`: one instance per request, since it carries that request's state.

    native       vLLM, Ollama, `openai` clouds, llama-server (not its streams: see below): the body
                 goes to the backend's /v1/responses; with `previous_response_id` the gateway's stored
                 conversation is sent as `input` instead (backends share no response store, and a
                 failover may land anywhere); the answer's `id` is replaced by the gateway's own
    translated   any other chat backend: `responses.request_to_chat` -> /v1/chat/completions ->
                 `chat_to_response`, streams through `ResponsesStream`
    llama-server's native stream lacks `content_index` on its text deltas, which makes the official
    SDK's `responses.stream()` fail: its adapter lists `responses` in `translated_streams`. Its native
    route also ignores `text.format` (structured output), and says `completed` of an answer that
    `max_output_tokens` cut: a request that asks for a JSON schema or json_object, or sets
    `max_output_tokens`, is translated for it (`BackendAdapter.unhonoured`, `set_fields` below).

Either way `final` holds the finished Response object, which the route stores for a later
`previous_response_id`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from aifabric.backends.base import RequestField
from aifabric.config.schema import ClientApi
from aifabric.core import FailureClass
from aifabric.errors import BadRequest, UpstreamFailure
from aifabric.gateway.dialects.base import BodyLike, Dialect, StreamTranslator
from aifabric.gateway.dialects.count_tokens import tokenize_request
from aifabric.gateway.dialects.responses import (
    chat_to_response,
    input_items,
    request_to_chat,
    response_skeleton,
)
from aifabric.gateway.dialects.responses_stream import ResponsesStream

if TYPE_CHECKING:
    from aifabric.routing.table import Endpoint

__all__ = ["InputTokensDialect", "NativeResponsesStream", "ResponsesDialect", "set_fields"]

_NO_FIELDS: frozenset[RequestField] = frozenset()
_TEXT_FORMAT = frozenset({RequestField.TEXT_FORMAT})
_MAX_OUTPUT_TOKENS = frozenset({RequestField.MAX_OUTPUT_TOKENS})
_BOTH = _TEXT_FORMAT | _MAX_OUTPUT_TOKENS
_JSON_FORMATS = ("json_schema", "json_object")


def set_fields(payload: dict[str, Any]) -> frozenset[RequestField]:
    """The fields of `RequestField` this Responses request sets (a native route might not honour them).
    A request with neither `text` nor `max_output_tokens` costs two dict lookups."""
    limit = payload.get("max_output_tokens")
    text = payload.get("text")
    if limit is None and text is None:
        return _NO_FIELDS
    limited = type(limit) is int  # a bool or a float sets no limit
    if text is not None:
        fmt = text.get("format") if isinstance(text, dict) else None
        if isinstance(fmt, dict) and fmt.get("type") in _JSON_FORMATS:
            return _BOTH if limited else _TEXT_FORMAT
    return _MAX_OUTPUT_TOKENS if limited else _NO_FIELDS


_FINAL_EVENTS = (b'"response.completed"', b'"response.incomplete"', b'"response.failed"')
_SEQUENCE = re.compile(rb'"sequence_number"\s*:\s*(\d+)')


class ResponsesDialect(Dialect):
    api: ClassVar[ClientApi] = ClientApi.RESPONSES
    native_path: ClassVar[str] = "/responses"
    translatable: ClassVar[bool] = True

    def __init__(
        self,
        payload: dict[str, Any],
        response_id: str,
        history: list[dict[str, Any]] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.payload = payload
        self.response_id = response_id
        self.history = history
        self._clock = clock
        self._created_at = int(clock())
        self.final: dict[str, Any] | None = None
        self._stream: ResponsesStream | NativeResponsesStream | None = None
        self.fields = set_fields(payload)  # structured output, a token limit: see Dialect.native_route
        # Translated once, up front. What chat completions cannot carry (a built-in tool, a file input)
        # may still go to a backend that serves the Responses API itself: such a request is only sent
        # natively (`can_serve`), and the route answers the 400 when no target of the role can take it.
        self.untranslatable: BadRequest | None = None
        self._chat: dict[str, Any] = {}
        try:
            self._chat = request_to_chat(payload, history)
            self._chat.pop("model", None)
        except BadRequest as exc:
            self.untranslatable = exc

    def can_serve(self, endpoint: Endpoint, stream: bool) -> bool:
        # native_route: natively only where the backend's route acts on what the request asks.
        return self.untranslatable is None or self.native_route(endpoint, stream)

    def _skeleton(self, model: Any) -> dict[str, Any]:
        model = model if isinstance(model, str) and model else str(self.payload.get("model"))
        return response_skeleton(self.payload, self.response_id, self._created_at, model)

    # -- native ---------------------------------------------------------------------------------------

    def native_request(self, endpoint: Endpoint, body: BodyLike, model: str) -> tuple[str, bytes]:
        path = endpoint.prefix + self.native_path
        if self.history is None:
            return path, body.with_model(model)
        # The stored turns go as input: the backend need not know (or share) our response ids.
        native = {k: v for k, v in self.payload.items() if k != "previous_response_id"}
        native["model"] = model
        native["input"] = [*self.history, *input_items(self.payload.get("input"))]
        return path, orjson.dumps(native)

    def native_answer(self, endpoint: Endpoint, data: bytes, model: str) -> bytes:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("output"), list):
            raise UpstreamFailure(
                FailureClass.UPSTREAM_5XX, "the backend's /v1/responses answer is no Response"
            )
        doc["id"] = self.response_id
        if self.history is not None:
            doc["previous_response_id"] = self.payload.get("previous_response_id")
        self.final = doc
        return orjson.dumps(doc)

    def native_stream(self) -> StreamTranslator:
        """Watches a native stream as it passes: ids replaced, the final Response kept."""
        self._stream = NativeResponsesStream(self)
        return self._stream

    # -- translated -----------------------------------------------------------------------------------

    def to_chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self.untranslatable is not None:  # not reached: can_serve kept such a request native
            raise self.untranslatable
        return dict(self._chat)

    def from_chat(self, chat: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        self.final = chat_to_response(chat, self._skeleton(chat.get("model")), int(self._clock()))
        return self.final

    def stream_translator(self, payload: dict[str, Any], upstream_usage: bool) -> StreamTranslator:
        estimate = None if upstream_usage else _estimate_input(self._chat)
        self._stream = ResponsesStream(self._skeleton(None), self._clock, estimated_input=estimate)
        return self._stream

    def stream_done(self) -> dict[str, Any] | None:
        """The finished Response of the stream, once its last event has been produced."""
        stream = self._stream
        if isinstance(stream, ResponsesStream):
            return stream.response if stream.ended and stream.response["status"] != "failed" else None
        if stream is not None:
            return stream.final
        return None

    def stream_error(self, message: str) -> bytes:
        stream = self._stream
        if isinstance(stream, ResponsesStream):
            return stream.fail(message, "stream_interrupted")
        seq = stream.next_sequence if stream is not None else 0
        error = {
            "type": "error",
            "code": "stream_interrupted",
            "message": message,
            "param": None,
            "sequence_number": seq,
        }
        return b"\n\nevent: error\ndata: " + orjson.dumps(error) + b"\n\n"


def _estimate_input(chat: dict[str, Any]) -> int:
    chars = sum(len(m["content"]) + 16 for m in chat["messages"] if isinstance(m.get("content"), str))
    return max(1, chars // 4)


class NativeResponsesStream:
    """A backend's own Responses stream, passed through event by event. Events that carry the Response
    object (created, in_progress, completed, ...) get the gateway's id; the others go as they came."""

    def __init__(self, dialect: ResponsesDialect) -> None:
        self._dialect = dialect
        self._buf = bytearray()
        self.final: dict[str, Any] | None = None
        self.next_sequence = 0

    def feed(self, chunk: bytes) -> bytes:
        self._buf += chunk
        out: list[bytes] = []
        while True:
            end = self._buf.find(b"\n\n")
            if end < 0:
                break
            event = bytes(self._buf[: end + 2])
            del self._buf[: end + 2]
            out.append(self._event(event))
        return b"".join(out)

    def _event(self, event: bytes) -> bytes:
        seq = _SEQUENCE.search(event)
        if seq is not None:
            self.next_sequence = int(seq.group(1)) + 1
        if b'"response":' not in event:
            return event
        lines = event.split(b"\n")
        for i, line in enumerate(lines):
            if not line.startswith(b"data:"):
                continue
            try:
                doc = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                return event
            response = doc.get("response") if isinstance(doc, dict) else None
            if not isinstance(response, dict):
                return event
            response["id"] = self._dialect.response_id
            if self._dialect.history is not None:
                response["previous_response_id"] = self._dialect.payload.get("previous_response_id")
            if any(kind in event for kind in _FINAL_EVENTS) and doc.get("type") != "response.failed":
                self.final = response
            lines[i] = b"data: " + orjson.dumps(doc)
        return b"\n".join(lines)

    def finish(self) -> bytes:
        rest = bytes(self._buf)
        self._buf.clear()
        return self._event(rest) if rest.strip() else b""


class InputTokensDialect(Dialect):
    """`POST /v1/responses/input_tokens`: native where the backend serves it (OpenAI, llama-server),
    else the backend's own tokenizer (vLLM's /tokenize, llama-server's count_tokens), never an estimate:
    targets that cannot count are skipped, and a role with none is told so (a 400)."""

    api: ClassVar[ClientApi] = ClientApi.INPUT_TOKENS
    native_path: ClassVar[str] = "/responses/input_tokens"

    def __init__(self, payload: dict[str, Any], history: list[dict[str, Any]] | None = None) -> None:
        self.payload = payload
        self.history = history
        # As for ResponsesDialect: what chat messages cannot carry is only counted natively.
        self.untranslatable: BadRequest | None = None
        self._chat: dict[str, Any] = {}
        try:
            self._chat = request_to_chat({**payload, "input": payload.get("input") or []}, history)
        except BadRequest as exc:
            self.untranslatable = exc

    def native_route(self, endpoint: Endpoint, stream: bool) -> bool:
        return self.counts(endpoint)

    def can_serve(self, endpoint: Endpoint, stream: bool) -> bool:
        return self.counts(endpoint)

    def counts(self, endpoint: Endpoint) -> bool:
        """Whether `endpoint` can count this request: natively, or with its tokenizer."""
        if endpoint.serves_natively(ClientApi.INPUT_TOKENS, False):
            return True
        # Else with its tokenizer (vLLM's /tokenize), or where `apis:` leaves input_tokens out of a
        # kind that counts Anthropic-shaped messages natively (llama-server), on its count_tokens.
        if self.untranslatable is not None:
            return False
        adapter = endpoint.adapter
        if endpoint.tokenize_path is not None:
            return True
        return adapter.counts_translated_messages and endpoint.serves_natively(ClientApi.COUNT_TOKENS, False)

    def native_request(self, endpoint: Endpoint, body: BodyLike, model: str) -> tuple[str, bytes]:
        if endpoint.serves_natively(ClientApi.INPUT_TOKENS, False):
            native = {k: v for k, v in self.payload.items() if k != "previous_response_id"}
            native["model"] = model
            if self.history is not None:
                native["input"] = [*self.history, *input_items(self.payload.get("input"))]
            return endpoint.prefix + self.native_path, orjson.dumps(native)
        chat = self._chat
        if endpoint.tokenize_path is not None:
            return tokenize_request(endpoint, chat, model)
        return endpoint.prefix + "/messages/count_tokens", orjson.dumps(_anthropic_count_body(chat, model))

    def native_answer(self, endpoint: Endpoint, data: bytes, model: str) -> bytes:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            doc = None
        doc = doc if isinstance(doc, dict) else {}
        count = doc.get("input_tokens", doc.get("count"))
        if isinstance(count, bool) or not isinstance(count, int):
            raise UpstreamFailure(FailureClass.UPSTREAM_5XX, "the backend's token count has no count")
        return orjson.dumps({"object": "response.input_tokens", "input_tokens": count})


def _anthropic_count_body(chat: dict[str, Any], model: str) -> dict[str, Any]:
    """Chat messages as an Anthropic count_tokens request (system apart, tool turns as blocks)."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for message in chat["messages"]:
        role, content = message["role"], message.get("content")
        text = content if isinstance(content, str) else ""
        if isinstance(content, list):
            text = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if role == "system":
            system.append(text)
        elif role == "tool":
            block = {"type": "tool_result", "tool_use_id": message["tool_call_id"], "content": text}
            messages.append({"role": "user", "content": [block]})
        elif message.get("tool_calls"):
            blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
            for call in message["tool_calls"]:
                try:
                    arguments = orjson.loads(call["function"]["arguments"] or "{}")
                except orjson.JSONDecodeError:
                    arguments = {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call["id"],
                        "name": call["function"]["name"],
                        "input": arguments,
                    }
                )
            messages.append({"role": "assistant", "content": blocks})
        else:
            messages.append({"role": role, "content": text})
    body: dict[str, Any] = {"model": model, "messages": messages}
    if system:
        body["system"] = "\n".join(system)
    if chat.get("tools"):
        body["tools"] = [
            {
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters") or {"type": "object"},
            }
            for t in chat["tools"]
        ]
    return body
